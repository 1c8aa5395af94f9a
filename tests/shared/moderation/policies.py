"""Small policies for tests, as TOML text (factories: override any part)."""

from __future__ import annotations

from pathlib import Path

BASE = """
name = "test"
[scoring]
temperature = 0.05
[blocklist]
max_distance = 0.05
band = "block"
[contrast]
image = ["safe image"]
text = ["safe text", "another safe text"]
audio = ["safe sound"]
[categories.violence]
review = 0.5
block = 0.8
[categories.violence.prompts]
image = ["violent image"]
text = ["violent text", "more violent text"]
audio = ["violent sound"]
[categories.spam]
review = 0.6
block = 0.9
[categories.spam.prompts]
text = ["spam text"]
"""


def write_policy(directory: Path, text: str = BASE, name: str = "policy.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path
