"""Key options for corpora of titles: punctuation folding and leading articles (build-index
``--fold-punctuation``, ``--leading-articles``); query-log indexes keep the plain keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lexical_fixtures import build_small_index
from typeahead.normalize import fold_punctuation, normalize
from typeahead.suggest.index import load_index

TITLES: list[tuple[str, int]] = [
    ("The Hunger Games (The Hunger Games, #1)", 4_780_653),
    ("Harry Potter and the Sorcerer's Stone (Harry Potter, #1)", 4_602_479),
    ("Hunger (Gone, #2)", 44_000),
    ("Hungry Ghosts", 5_000),
    ("Spider-Man: Homecoming", 3_000),
    ("J.K. Rowling: A Biography", 1_000),
    ("A Game of Thrones (A Song of Ice and Fire, #1)", 1_300_000),
]


@pytest.mark.parametrize(("text", "key"), [
    ("sorcerer's stone", "sorcerers stone"),
    ("sorcerer\u2019s stone", "sorcerers stone"),
    ("j.k. rowling", "jk rowling"),
    ("spider-man: homecoming", "spider man: homecoming"),
    ("plain words", "plain words"),
    ("don't - stop", "dont stop"),
])
def test_fold_punctuation(text: str, key: str) -> None:
    assert fold_punctuation(normalize(text)) == key
    assert fold_punctuation(key) == key  # idempotent


def titles(tmp_path: Path, on: bool):  # type: ignore[no-untyped-def]
    return build_small_index(tmp_path, TITLES, min_count=1, name="on" if on else "off",
                             fold_punctuation=on, leading_articles=on,
                             piece_min_queries=0).lexical


def test_a_title_is_found_without_its_article_and_ranks_by_popularity(tmp_path: Path) -> None:
    found = titles(tmp_path, True).suggest("hunger", 10)
    assert found[0].text == "The Hunger Games (The Hunger Games, #1)"
    assert found[0].source == "prefix" and found[0].spans == ((4, 10),)
    assert [s.text for s in found[:3]][1] == "Hunger (Gone, #2)"
    assert titles(tmp_path, True).suggest("game of", 3)[0].text.startswith("A Game of Thrones")


def test_folded_punctuation_matches_both_spellings(tmp_path: Path) -> None:
    engine = titles(tmp_path, True)
    for typed in ("sorcerers stone", "sorcerer's stone", "harry potter and the sorcerers"):
        top = engine.suggest(typed, 5)[0]
        assert top.text.startswith("Harry Potter and the Sorcerer's Stone"), typed
    top = engine.suggest("sorcerers stone", 5)[0]
    assert [top.text[a:b] for a, b in top.spans] == ["Sorcerer's", "Stone"]
    assert engine.suggest("spider man", 3)[0].text == "Spider-Man: Homecoming"
    assert engine.suggest("jk row", 3)[0].text == "J.K. Rowling: A Biography"


def test_query_log_indexes_keep_plain_keys(tmp_path: Path) -> None:
    engine = titles(tmp_path, False)
    assert engine.suggest("hunger", 10)[0].text == "Hunger (Gone, #2)"
    assert engine.suggest("sorcerers stone", 10) == []
    index = load_index(tmp_path / "off")
    assert not index.lexical.data.fold and not index.lexical.data.articles
    assert index.manifest["normalization"] == "nfkc+casefold+strip-accents+collapse-whitespace"
