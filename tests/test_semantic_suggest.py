"""The semantic layer inside an index: entry vectors, documents, fusion and student checks."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pytest

from tests.lexical_fixtures import build_small_index, write_tsv
from tests.student_fixtures import tiny_student
from typeahead.corpus import read_rows
from typeahead.errors import ArtifactError
from typeahead.suggest.index import BuildOptions, LoadedIndex, build_index, load_index
from typeahead.suggest.service import SuggestService

ROWS = [("cheap flights paris", 50), ("london weather forecast", 40), ("paris weather", 30),
        ("the cat sat on the mat", 20), ("pizza hut", 10), ("paris", 5)]
DOCS = [
    {"paragraph_id": "Paris#0", "title": "Paris",
     "text": "Cheap flights to Paris. Paris is in France."},
    {"paragraph_id": "Rhine#0", "title": "Rhine", "text": "The river Rhine flows past France."},
]


def build(tmp: Path, student_dir: Path, *, docs: bool = True) -> LoadedIndex:
    docs_file = tmp / "docs.jsonl.gz"
    docs_file.write_bytes(gzip.compress("".join(json.dumps(d) + "\n" for d in DOCS).encode()))
    return build_small_index(tmp, ROWS, 3, vectors=True, vector_factory="flat",
                             student_dir=student_dir, docs=docs_file if docs else None)


@pytest.fixture
def index(tmp_path: Path) -> LoadedIndex:
    tiny_student(tmp_path / "student")
    return build(tmp_path, tmp_path / "student")


def test_manifest_records_the_student_and_counts(index: LoadedIndex) -> None:
    sem = index.manifest["semantic"]
    assert index.semantic is not None
    assert sem["student"]["fingerprint"] == index.semantic.student.fingerprint
    assert sem["vectors"]["count"] == index.entries
    assert sem["docs"]["count"] == len(DOCS)


def test_semantic_neighbours_fill_free_slots_below_lexical(index: LoadedIndex) -> None:
    assert index.semantic is not None
    loose = dataclasses.replace(index, semantic=dataclasses.replace(index.semantic,
                                                                    min_similarity=-1.0))
    service = SuggestService(index=loose, results_k=0)
    body = service.suggest("paris", 5)
    sources = [s["source"] for s in body["suggestions"]]
    # Lexical matches keep their places; semantic neighbours only fill the free slots below.
    assert body["suggestions"][0]["text"] == "paris weather"
    assert sources[: sources.index("semantic")] == ["prefix"] * sources.index("semantic")
    texts = [s["text"] for s in body["suggestions"]]
    assert len(texts) == len(set(texts)) == 5
    lexical_only = SuggestService(index=loose, semantic=False, results_k=0).suggest("paris", 5)
    assert [s["text"] for s in lexical_only["suggestions"]] == texts[: len(
        lexical_only["suggestions"])]


def test_no_semantic_when_lexical_fills_k(index: LoadedIndex) -> None:
    service = SuggestService(index=index, results_k=0)
    body = service.suggest("paris", 1)
    assert [s["source"] for s in body["suggestions"]] == ["prefix"]


def test_instant_results_from_documents(index: LoadedIndex) -> None:
    body = SuggestService(index=index, results_k=2).suggest("cheap flights par", 5)
    assert body["results"] and body["results"][0]["id"] == "Paris#0"
    assert set(body["results"][0]) == {"id", "title", "snippet", "score"}


def test_a_different_student_is_refused(tmp_path: Path, index: LoadedIndex) -> None:
    tiny_student(tmp_path / "other", seed=99)
    with pytest.raises(ArtifactError, match="student"):
        load_index(index.path, student_dir=tmp_path / "other")


def test_vectors_must_match_the_entries(tmp_path: Path, index: LoadedIndex) -> None:
    import shutil

    other = tmp_path / "other"
    other.mkdir()
    corpus = write_tsv(other / "c.tsv", ROWS[:3])
    build_index(read_rows(corpus, text_col="query", weight_col="count"), other / "idx",
                BuildOptions("query", "count", 3, vectors=True, vector_factory="flat",
                             student_dir=tmp_path / "student"), corpus, progress=None)
    shutil.rmtree(index.path / "vectors")
    shutil.copytree(other / "idx" / "vectors", index.path / "vectors")
    with pytest.raises(ArtifactError, match="entry vectors for"):
        load_index(index.path, student_dir=tmp_path / "student")


def test_cached_answers_are_the_encoded_answer_and_are_not_recomputed(
        index: LoadedIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    service = SuggestService(index=index, results_k=2, cache_size=8)
    service.warm()  # runs every tier without filling the cache
    first = service.encoded("paris", 5)
    assert json.loads(first) == service.suggest("paris", 5)
    calls: list[str] = []
    real = SuggestService.suggest

    def counting(self: SuggestService, query: str, k: int) -> dict[str, object]:
        calls.append(query)
        return real(self, query, k)

    monkeypatch.setattr(SuggestService, "suggest", counting)
    assert service.encoded("paris", 5) is first
    service.encoded("london", 5)
    assert calls == ["london"]
