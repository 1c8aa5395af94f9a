"""Reusable test helpers that start real services (factories, never mocks)."""
