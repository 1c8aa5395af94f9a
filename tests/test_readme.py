"""The README is a front page: its first screen says what omnibind is, who it is for, the two
commands and the model's licence; it stays short and links each topic to its page in docs/."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIRST_SCREEN_LINES = 40
MAX_LINES = 150


def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_names_the_two_commands_ci_uses() -> None:
    text = readme()
    assert "make demo" in text and "make test" in text
    assert "exec make test" in (ROOT / ".ci" / "run").read_text()


def test_first_screen_says_what_it_is_who_it_is_for_the_two_commands_and_the_model_licence() -> None:
    screen = "\n".join(readme().splitlines()[:FIRST_SCREEN_LINES])
    assert "ImageBind" in screen and "embed" in screen
    assert re.search(r"\*\*Who it is for", screen), "no 'who it is for' on the first screen"
    assert "make demo" in screen and "make test" in screen
    assert "CC BY-NC-SA 4.0" in screen and "non-commercial" in screen


def test_readme_is_short() -> None:
    assert len(readme().splitlines()) < MAX_LINES


def test_settings_table_lives_in_docs_configuration_not_in_the_readme() -> None:
    text = readme()
    assert "settings-table:start" not in text and "| `OMNIBIND_" not in text
    assert "docs/configuration.md" in text


def test_every_readme_section_links_to_its_docs_page() -> None:
    sections = re.split(r"^## ", readme(), flags=re.M)[1:]
    for section in sections:
        title = section.splitlines()[0]
        if title in ("The two commands", "Using it"):
            continue
        assert re.search(r"\]\((?:docs/[\w./#-]+)\)", section), f"section {title!r} links to no docs/ page"


def test_every_docs_link_of_the_readme_exists() -> None:
    for target in re.findall(r"\]\((docs/[^)#]+)", readme()):
        assert (ROOT / target).exists(), target
