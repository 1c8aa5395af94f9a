"""Parameter ids that read like the value and are the same in every process.

`repr` of a set follows the string hash seed, which differs between processes; pytest-xdist
refuses to run when its workers collected different test ids, so ids built from values that
hold sets order those sets first."""

from __future__ import annotations

import dataclasses
from typing import Any


def stable_repr(value: Any) -> str:
    """`repr(value)` with the members of every set or frozenset inside it sorted."""
    if isinstance(value, set | frozenset):
        members = ", ".join(sorted(stable_repr(member) for member in value))
        return f"{{{members}}}" if isinstance(value, set) else f"frozenset({{{members}}})"
    if isinstance(value, tuple):
        return "(" + ", ".join(stable_repr(item) for item in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(stable_repr(item) for item in value) + "]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = (f"{field.name}={stable_repr(getattr(value, field.name))}" for field in dataclasses.fields(value))
        return f"{type(value).__name__}({', '.join(fields)})"
    return repr(value)
