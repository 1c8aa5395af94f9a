"""The list of every OMNIBIND_* variable, read off the `Settings` model itself, so the
configuration table of docs/configuration.md can never drift from the code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shared.config import Settings


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str
    description: str
    secret: bool
    path: tuple[str, ...]  # attribute path in Settings, e.g. ("objects", "bucket")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "(computed)"
    if field.default is PydanticUndefined or field.default is None:
        return ""
    return str(field.default).lower() if isinstance(field.default, bool) else str(field.default)


def _is_group(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def env_reference() -> list[EnvVar]:
    rows: list[EnvVar] = []

    def walk(model: type[BaseModel], path: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            if _is_group(field):
                walk(field.annotation, (*path, name))  # type: ignore[arg-type]
                continue
            full = (*path, name)
            rows.append(
                EnvVar(
                    name="OMNIBIND_" + "__".join(full).upper(),
                    default=_default(field),
                    description=field.description or "",
                    secret="SecretStr" in str(field.annotation),
                    path=full,
                )
            )

    walk(Settings, ())
    return rows


def current_value(settings: Settings, var: EnvVar) -> str:
    """The effective value of `var` in `settings`, secrets masked."""
    value: Any = settings
    for part in var.path:
        value = getattr(value, part)
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return "********"
    return str(value).lower() if isinstance(value, bool) else str(value)


def markdown_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for var in env_reference():
        meaning = var.description + (" (secret)" if var.secret else "")
        lines.append(f"| `{var.name}` | {var.default and f'`{var.default}`'} | {meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - prints the configuration table
    print(markdown_table())
