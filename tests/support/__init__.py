"""Reusable test helpers that start real services as subprocesses on loopback (factories, never mocks)."""
