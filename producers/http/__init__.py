"""The HTTP API (FastAPI): `create_app(settings)`; run it with `omnibind serve`."""

from producers.http.app import create_app

__all__ = ["create_app"]
