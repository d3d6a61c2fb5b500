from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tests.student_fixtures import WORDS, tiny_student
from typeahead.errors import ArtifactError, ConfigError, DataError
from typeahead.manifest import sha256_file
from typeahead.retrieval.documents import (
    CANDIDATES,
    PREFIX_EXPANSION,
    SENTENCE_OFFSETS,
    SENTENCES,
    Bm25,
    DocsIndex,
    _sentences,
    build_docs_index,
    docs_dir,
    load_documents,
    sentence_vectors,
    snippet,
)

DOCS = [
    {"paragraph_id": "Cats#0", "title": "Cats", "text": "The cat sat on the mat. A cat is a pet."},
    {
        "paragraph_id": "Paris#0",
        "title": "Paris",
        "text": "Cheap flights to Paris leave daily. Paris is in France.",
    },
    {
        "paragraph_id": "Rhine#0",
        "title": "Rhine",
        "text": "The river Rhine flows through Normandy? No. It flows past France.",
    },
    {
        "paragraph_id": "Oxygen#0",
        "title": "Oxygen",
        "text": "Oxygen is a chemistry element. Oxygenation matters.",
    },
]


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def built(tmp_path: Path) -> tuple[DocsIndex, Path]:
    student = tiny_student(tmp_path / "student", dim=16)
    source = _write(tmp_path / "docs.jsonl.gz", DOCS)
    build_docs_index(source, tmp_path / "index" / "docs", student)
    return DocsIndex.load(docs_dir(tmp_path / "index"), student), tmp_path


def test_search_returns_contract_fields(built: tuple[DocsIndex, Path]) -> None:
    index, _ = built
    results = index.search("cheap flights paris", k=2)
    assert results[0].id == "Paris#0" and results[0].title == "Paris"
    assert results[0].snippet == "Cheap flights to Paris leave daily."
    assert set(results[0].to_json()) == {"id", "title", "snippet", "score"}
    assert results[0].score >= results[-1].score and len(results) == 2


@pytest.mark.parametrize("mode", ["fused", "semantic", "lexical"])
def test_each_mode_finds_the_obvious_document(built: tuple[DocsIndex, Path], mode: str) -> None:
    index, _ = built
    assert index.search("oxygen chemistry element", k=1, mode=mode)[0].id == "Oxygen#0"


def test_partial_last_word_matches_by_prefix(built: tuple[DocsIndex, Path]) -> None:
    index, _ = built
    assert index.search("oxyg", k=1, mode="lexical", partial=True)[0].id == "Oxygen#0"
    assert index.search("oxyg", k=1, mode="lexical", partial=False) == []


def test_manifest_and_student_mismatch(built: tuple[DocsIndex, Path]) -> None:
    index, tmp_path = built
    assert index.manifest["count"] == 4 and len(index) == 4
    other = tiny_student(tmp_path / "other", dim=16, seed=5)
    with pytest.raises(ArtifactError, match="built with student"):
        DocsIndex.load(tmp_path / "index" / "docs", other)


def test_tampered_docs_file_is_refused(built: tuple[DocsIndex, Path]) -> None:
    index, tmp_path = built
    path = tmp_path / "index" / "docs" / "docs.jsonl"
    path.write_text(path.read_text().replace("Paris", "Lyon"))
    with pytest.raises(ArtifactError, match="corrupt"):
        DocsIndex.load(path.parent, index._student)


def test_sentence_vectors_are_stored_and_checked(built: tuple[DocsIndex, Path]) -> None:
    index, tmp_path = built
    root = tmp_path / "index" / "docs"
    rows, offsets = np.load(root / SENTENCES), np.load(root / SENTENCE_OFFSETS)
    assert offsets.tolist() == [0, *np.cumsum([len(_sentences(d["text"])) for d in DOCS])]
    expected = sentence_vectors(index._docs, index._student)
    np.testing.assert_array_equal(rows, expected[0])
    # An index whose manifest lists none (built before) embeds them when loaded: the same.
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["files"][SENTENCES], manifest["files"][SENTENCE_OFFSETS]
    (root / "manifest.json").write_text(json.dumps(manifest))
    np.testing.assert_array_equal(DocsIndex.load(root, index._student)._sentence_rows, rows)
    # Offsets that do not fit the documents are refused, checksums aside.
    np.save(root / SENTENCE_OFFSETS, offsets[::-1].copy())
    manifest["files"][SENTENCES] = sha256_file(root / SENTENCES)
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="sentence vectors do not fit"):
        DocsIndex.load(root, index._student, verify=False)
    with pytest.raises(ArtifactError, match="corrupt"):
        manifest["files"][SENTENCE_OFFSETS] = sha256_file(root / SENTENCES)
        (root / "manifest.json").write_text(json.dumps(manifest))
        DocsIndex.load(root, index._student)


def test_bad_search_arguments(built: tuple[DocsIndex, Path]) -> None:
    index, _ = built
    with pytest.raises(ConfigError):
        index.search("cat", k=0)
    with pytest.raises(ConfigError):
        index.search("cat", mode="magic")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"title": "x", "text": "y"}], "no id"),
        ([{"id": "a", "text": ""}], "no text"),
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "duplicate"),
        ([], "no documents"),
    ],
)
def test_bad_documents_are_data_errors(
    tmp_path: Path, rows: list[dict[str, str]], message: str
) -> None:
    student = tiny_student(tmp_path / "student")
    with pytest.raises(DataError, match=message):
        build_docs_index(_write(tmp_path / "d.jsonl.gz", rows), tmp_path / "out", student)


def test_documents_read_through_the_corpus_reader(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text('id,title,text\nA#0,A,"one, two"\nA#1,A,\n')
    with pytest.raises(DataError, match=r"d.csv:3: document 'A#1' has no text"):
        load_documents(tmp_path / "d.csv")
    (tmp_path / "d.tsv").write_text('id\ttitle\ttext\nA#0\tA\tsay "hi"\n')
    assert load_documents(tmp_path / "d.tsv") == [("A#0", "A", 'say "hi"')]
    with pytest.raises(DataError, match=r"none\.tsv: no such file"):
        load_documents(tmp_path / "none.tsv")
    with pytest.raises(ArtifactError, match="no documents index"):
        docs_dir(tmp_path)


def test_snippet_prefers_the_matching_sentence() -> None:
    text = "Alpha beta. Gamma delta epsilon. " + "long " * 100
    assert snippet(text, "delta") == "Gamma delta epsilon."
    assert len(snippet("word " * 100, "word", width=50)) <= 50


def test_snippet_counts_distinct_shared_words_first_sentence_on_a_tie() -> None:
    text = "Cats purr. Dogs bark at cats! Dogs and cats and dogs? Nothing here."
    assert snippet(text, "dogs cats") == "Dogs bark at cats!"  # 2 words beat 1, first of two
    assert snippet(text, "cats cats") == "Cats purr."
    assert snippet(text, "zebra") == "Cats purr."  # nothing shared: the first sentence
    assert snippet(text, "here") == "Nothing here."


def test_long_prefixes_expand_to_the_most_widespread_terms_every_time() -> None:
    # 12 terms start with "ab"; term i appears in i + 1 documents.
    texts = [" ".join(f"ab{i:02d}" for i in range(12) if i >= doc) for doc in range(12)]
    bm25 = Bm25.build(texts)
    expected = tuple(f"ab{i:02d}" for i in range(11, 11 - PREFIX_EXPANSION, -1))
    assert tuple(bm25._expand("ab")) == expected
    assert tuple(bm25._expand("ab")) == expected  # remembered, same answer
    assert list(bm25._expand("ab0")) == [f"ab0{i}" for i in range(10)][-PREFIX_EXPANSION:][::-1]
    first = bm25.scores("ab", partial=True)
    np.testing.assert_array_equal(bm25.scores("ab", partial=True), first)


def test_a_partial_last_word_scores_its_best_completion_not_their_sum() -> None:
    # Document 1 holds five b-words; document 0 holds the one meant, "bowl".
    texts = ["super bowl", "super by be but both british", "nothing here at all"]
    bm25 = Bm25.build(texts)
    typed = bm25.scores("super b", partial=True)
    best = max(bm25.scores(f"super {word}")[1] for word in ("by", "be", "but", "both", "british"))
    assert typed[1] == pytest.approx(best)  # summed, it would be four b-words more
    assert typed[0] == pytest.approx(bm25.scores("super bowl")[0])
    assert int(np.argmax(typed)) == 0 and typed[2] == 0
    # One completion only: the same as the whole word.
    np.testing.assert_allclose(bm25.scores("super bow", partial=True), bm25.scores("super bowl"))


def test_the_word_being_typed_is_embedded_completed(built: tuple[DocsIndex, Path]) -> None:
    index, _ = built
    typed, whole = index.search("oxyg", k=1, partial=True), index.search("oxygen", k=1)
    assert typed[0].id == whole[0].id == "Oxygen#0"
    assert typed[0].score == pytest.approx(whole[0].score)  # the same vector, the same BM25


def test_completion_is_the_most_widespread_term_the_last_word_begins() -> None:
    bm25 = Bm25.build(["rhine river", "rhine valley", "rhineland wine", "the rhino"])
    assert bm25.completed("cruises on the rhi") == "cruises on the rhine"
    assert bm25.completed("RHINEL") == "rhineland"
    assert bm25.completed("rhine") is None  # a word the documents hold stays as typed
    assert bm25.completed("rhin") == "rhine"
    assert bm25.completed("rhi ") is None  # a trailing space: the word is finished
    assert bm25.completed("zzz") is None and bm25.completed("") is None
    popes = Bm25.build(["cat food", "catholic church", "catholic mass", "catholic pope"])
    assert popes.completed("cat") is None and popes.completed("catho") == "catholic"


def test_min_score_drops_weak_documents_only(built: tuple[DocsIndex, Path]) -> None:
    index, _ = built
    everything = index.search("cheap flights paris", k=len(DOCS))
    cut = (everything[0].score + everything[-1].score) / 2
    kept = index.search("cheap flights paris", k=len(DOCS), min_score=cut)
    assert kept == [r for r in everything if r.score >= cut] and 0 < len(kept) < len(everything)


def test_passages_are_the_search_hits_whole(built: tuple[DocsIndex, Path]) -> None:
    """Grounding gets whole documents, in the order and with the scores of the search."""
    index, _ = built
    hits = index.search("cheap flights paris", k=3)
    whole = index.passages("cheap flights paris", k=3)
    assert [(h.id, h.title, h.score) for h in hits] == [(d, t, round(s, 6)) for d, t, _, s in whole]
    assert whole[0][2] == "Cheap flights to Paris leave daily. Paris is in France."


def test_served_docs_ground_on_the_served_index_else_build_the_fallback_once(
    built: tuple[DocsIndex, Path],
) -> None:
    from typeahead.generation.grounding import ServedDocs
    from typeahead.generation.prompt import Doc

    index, _ = built
    served: list[DocsIndex | None] = [index]
    built_fallbacks: list[int] = []

    class Fallback:
        def search(self, query: str, k: int) -> list[Doc]:
            return [Doc("f", "Fallback", "from the fallback", 0.5)]

    def make() -> Fallback:
        built_fallbacks.append(1)
        return Fallback()

    docs = ServedDocs(lambda: served[0], make)
    first = docs.search("oxygen chemistry element", 1)[0]
    assert first.id == "Oxygen#0"
    assert first.text == "Oxygen is a chemistry element. Oxygenation matters."
    assert built_fallbacks == []
    served[0] = None  # e.g. a reload to an index without documents
    assert [d.id for d in docs.search("x", 1)] == ["f"]
    assert [d.id for d in docs.search("y", 1)] == ["f"] and built_fallbacks == [1]


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[DocsIndex, DocsIndex]:
    """More documents than CANDIDATES, loaded twice: scored whole (dense) and through FAISS."""
    rng = np.random.default_rng(7)
    words = WORDS[2:]
    rows = [{"id": f"d{i}", "title": "", "text": " ".join(rng.choice(words, size=6)) + "."}
            for i in range(3 * CANDIDATES)]
    student = tiny_student(tmp_path / "student", dim=16)
    build_docs_index(_write(tmp_path / "docs.jsonl.gz", rows), tmp_path / "docs", student)
    dense, through_faiss = (DocsIndex.load(tmp_path / "docs", student) for _ in range(2))
    through_faiss._rows_t = None  # as for a corpus of SMALL_CORPUS documents or more
    return dense, through_faiss


@pytest.mark.parametrize("mode", ["fused", "semantic", "lexical"])
@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("weight", [0.6, 0.0, 1.0])
def test_small_corpus_scored_whole_ranks_as_faiss_does(
    corpus: tuple[DocsIndex, DocsIndex], mode: str, partial: bool, weight: float
) -> None:
    dense, through_faiss = corpus
    assert dense._rows_t is not None
    dense.semantic_weight = through_faiss.semantic_weight = weight
    for query in ["cheap flights", "the cat sat on the m", "norman", "ri", "zebra", "r", "o"]:
        for k in (1, 3, CANDIDATES + 10):
            got = dense.search(query, k, mode=mode, partial=partial)
            want = through_faiss.search(query, k, mode=mode, partial=partial)
            assert [r.id for r in got] == [r.id for r in want], (query, k)
            np.testing.assert_allclose([r.score for r in got], [r.score for r in want], atol=2e-6)
    got_whole = dense.passages("river rhine france", 5)
    want_whole = through_faiss.passages("river rhine france", 5)
    assert [p[0] for p in got_whole] == [p[0] for p in want_whole]


def test_only_small_exact_corpora_are_scored_whole(tmp_path: Path) -> None:
    student = tiny_student(tmp_path / "student", dim=16)
    source = _write(tmp_path / "docs.jsonl.gz", DOCS)
    build_docs_index(source, tmp_path / "hnsw", student, factory="hnsw")
    hnsw = DocsIndex.load(tmp_path / "hnsw", student)
    assert hnsw._rows_t is None
    assert hnsw.search("oxygen chemistry element", k=1)[0].id == "Oxygen#0"
