"""Reusable helpers for tests: real services started as subprocesses on loopback."""
