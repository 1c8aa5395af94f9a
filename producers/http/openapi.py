"""The published OpenAPI document, docs/openapi.json (regenerate with
``python -m producers.http.openapi``; a test keeps the file in sync with the code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from producers.http.app import create_app
from shared.config import Settings

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def published_openapi() -> dict[str, Any]:
    """The API's OpenAPI document as deployed by default (/metrics behind the API key)."""
    settings = Settings(api={"metrics_public": False})  # type: ignore[arg-type]
    return create_app(settings).openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_openapi(path: Path = DOCUMENT) -> Path:
    path.write_text(render(published_openapi()), encoding="utf-8")
    return path


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    print(write_openapi())
