"""Property-based fuzzing of the query normaliser and the suggestion engine.

Any Unicode string (lone surrogates, controls, bidi marks, combining runs included) must be
handled without an exception; normalisation is idempotent; every suggestion is an entry of the
served set (the corpus above the privacy floor), and a prefix of a served entry finds it.
"""

from __future__ import annotations

import dataclasses
import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lexical_fixtures import ROWS, build_small_index
from tests.student_fixtures import tiny_student
from typeahead.normalize import display_form, normalize
from typeahead.suggest.index import LoadedIndex
from typeahead.suggest.service import SuggestService

FLOOR = 3
DOCS = [
    {"id": "d1", "title": "New York", "text": "New York is a city."},
    {"id": "d2", "title": "Paris", "text": "Café culture in Paris."},
]

# Every code point category, lone surrogates included: a Python str can hold them although no
# UTF-8 request can (the API refuses invalid UTF-8 and orjson refuses "\\ud800").
ANY_CHAR = st.characters(codec=None, categories=None)
ANY_TEXT = st.text(alphabet=ANY_CHAR, max_size=80)
ODD = (
    "\t\n\r\x00\x0b\x1f\x7f\u00a0\u200b\u200d\u2028\u202e\ufeff\u0301\u0308 "
    "ﬁẞİı𝔸Ⅻ①ｎｅｗ ＹＯＲＫ😀👩‍👩‍👧東京タワーcafé"
)
ODD_TEXT = st.text(alphabet=st.sampled_from(ODD + "\ud800\udfff"), max_size=40)
# What an HTTP request can carry: every scalar value (no surrogates).
SCALAR_CHAR = st.characters(codec=None, exclude_categories=["Cs"])
REQUEST_TEXT = st.one_of(
    st.text(alphabet=SCALAR_CHAR, max_size=80), st.text(alphabet=st.sampled_from(ODD), max_size=40)
)


def served_keys(rows: list[tuple[str, int]], floor: float) -> set[str]:
    totals: dict[str, float] = {}
    for text, count in rows:
        key = normalize(text)
        totals[key] = totals.get(key, 0) + count
    return {key for key, total in totals.items() if key and total >= floor}


SERVED = served_keys(ROWS, FLOOR)
BELOW_FLOOR = {normalize(t) for t, _ in ROWS} - SERVED
# Words of the served entries: a generated completion is built from such pieces only (the
# privacy rule itself is tested in tests/test_generated.py).
SERVED_WORDS = {w for key in SERVED for w in key.split()}
SERVED_TEXTS = sorted({" ".join(t.split()) for t, _ in ROWS if normalize(t) in SERVED})


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> LoadedIndex:
    tmp = tmp_path_factory.mktemp("fuzz")
    tiny_student(tmp / "student")
    docs = tmp / "docs.jsonl.gz"
    docs.write_bytes(gzip.compress("".join(json.dumps(d) + "\n" for d in DOCS).encode()))
    return build_small_index(tmp, ROWS, FLOOR, vectors=True, vector_factory="flat",
                             student_dir=tmp / "student", docs=docs)


@pytest.fixture(scope="module")
def service(index: LoadedIndex) -> SuggestService:
    # Accept every neighbour, however far: the semantic path is exercised on every query.
    assert index.semantic is not None
    loose = dataclasses.replace(index.semantic, min_similarity=-1.0)
    return SuggestService(index=dataclasses.replace(index, semantic=loose), results_k=2)


FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(st.one_of(ANY_TEXT, ODD_TEXT))
def test_normalise_never_raises_and_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.strip() and "  " not in once
    assert normalize(display_form(text)) == once


def test_the_served_set_is_the_corpus_above_the_floor(index: LoadedIndex) -> None:
    table = index.lexical.data.display
    shown = {normalize(t) for t in table.many(list(range(len(table))))}
    assert shown == SERVED
    assert "private person name" not in shown


def check_answer(body: dict[str, object], k: int) -> None:
    suggestions = body["suggestions"]
    assert isinstance(suggestions, list) and len(suggestions) <= k
    texts = [normalize(s["text"]) for s in suggestions]
    seen = {normalize(s["text"]) for s in suggestions if s["source"] != "generated"}
    assert seen <= SERVED, seen - SERVED
    generated = set(texts) - seen
    assert not generated & BELOW_FLOOR
    assert all(set(text.split()) <= SERVED_WORDS for text in generated), generated
    assert len(texts) == len(set(texts))
    scores = [s["score"] for s in suggestions]
    assert scores == sorted(scores, reverse=True)
    assert all(s["source"] in ("prefix", "fuzzy", "semantic", "generated") for s in suggestions)
    results = body["results"]
    assert isinstance(results, list)
    assert {r["id"] for r in results} <= {d["id"] for d in DOCS}


@FUZZ
@given(st.one_of(ANY_TEXT, ODD_TEXT), st.integers(min_value=1, max_value=50))
def test_lexical_engine_takes_any_str(index: LoadedIndex, text: str, k: int) -> None:
    found = index.lexical.suggest(text, k)
    assert len(found) <= k
    assert {normalize(s.text) for s in found} <= SERVED


@FUZZ
@given(REQUEST_TEXT, st.integers(min_value=1, max_value=50))
def test_any_string_gives_served_suggestions_only(
    service: SuggestService, text: str, k: int
) -> None:
    check_answer(service.suggest(text, k), k)


@st.composite
def near_misses(draw: st.DrawFn) -> str:
    """A prefix of a served entry, then maybe a typo, a case change or stray spaces."""
    text = draw(st.sampled_from(SERVED_TEXTS))
    prefix = text[: draw(st.integers(min_value=1, max_value=len(text)))]
    edit = draw(st.sampled_from(["none", "upper", "insert", "delete", "spaces"]))
    at = draw(st.integers(min_value=0, max_value=len(prefix)))
    if edit == "upper":
        return prefix.upper()
    if edit == "insert":
        return prefix[:at] + draw(SCALAR_CHAR) + prefix[at:]
    if edit == "delete" and len(prefix) > 1:
        return prefix[:at] + prefix[at + 1 :]
    if edit == "spaces":
        return "  " + prefix.replace(" ", "   ")
    return prefix


@FUZZ
@given(near_misses(), st.integers(min_value=1, max_value=50))
def test_near_misses_give_served_suggestions_only(
    service: SuggestService, text: str, k: int
) -> None:
    check_answer(service.suggest(text, k), k)


@FUZZ
@given(st.sampled_from(SERVED_TEXTS), st.data())
def test_every_prefix_of_a_served_entry_finds_it(
    service: SuggestService, text: str, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(min_value=1, max_value=len(text)))
    prefix = text[:cut]
    if not normalize(prefix):
        return  # only spaces: nothing to complete
    found = {normalize(s["text"]) for s in service.suggest(prefix, 50)["suggestions"]}
    assert normalize(text) in found, (prefix, found)
