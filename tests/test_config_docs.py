"""docs/config.md is the schema's: every setting documented, the page regenerated."""
from dataclasses import dataclass
from pathlib import Path

import pytest

from enas.config import docs

PAGE = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_docs_config_md_is_what_the_schema_generates():
    assert PAGE.read_text(encoding="utf-8") == docs.page(), (
        f"docs/config.md is stale: regenerate it with `{docs.COMMAND}`")


def test_every_setting_has_a_comment_and_a_row():
    page = docs.page()
    for prefix, cls in docs.SECTIONS:
        notes = docs.comments(cls)
        for key in prefix.split(" / "):
            for name, text in notes.items():
                assert text and f"`{key}.{name}`" in page, (key, name)


@dataclass(frozen=True)
class _Undocumented:
    said: int = 1  # what it does
    silent: int = 2


def test_a_setting_without_a_comment_is_refused():
    with pytest.raises(ValueError, match="_Undocumented.silent has no comment"):
        docs.comments(_Undocumented)


def test_comments_above_a_setting_are_joined():
    from enas.config import SearchSection

    assert docs.comments(SearchSection)["uniform_shared"].startswith("Probability that a shared step trains")
