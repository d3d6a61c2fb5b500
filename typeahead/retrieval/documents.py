"""The documents index behind instant results: student + FAISS fused with BM25.

``build_docs_index(FILE, OUT/docs, student)`` reads JSON lines (or TSV/CSV) with an id
(``id``, else ``paragraph_id``), an optional ``title`` and a ``text``, and writes:

- ``docs.jsonl``: the documents (id, title, text), in row order;
- ``bm25.npz`` + ``terms.json``: a BM25 inverted index (weights precomputed per posting);
- ``vectors/``: a FAISS index of the student's document embeddings (``typeahead.embed.vector``);
- ``sentences.npy`` + ``sentences.off.npy``: the student's embedding of each document's
  sentences (title-prefixed, as documents are), one row each, and per document its first row
  (``sentence_vectors``), which the paragraph chooser reads;
- ``manifest.json``: counts, checksums, the student's fingerprint and the fusion weight.

``DocsIndex.search(query, k)`` takes the union of the semantic and lexical top candidates and
ranks them by ``w * cosine + (1 - w) * bm25 / max_bm25``. With ``partial=True`` (the user is
still typing) the last query word also matches the indexed terms it is a prefix of. A small
corpus (flat index, under SMALL_CORPUS documents) gets every cosine from one mat-vec instead of
a FAISS search, with the same ranking.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from typeahead.corpus import read_records
from typeahead.embed import (
    ENCODE_BATCH,
    Embedder,
    IndexParams,
    Student,
    VectorIndex,
    build_index,
    build_vector_index,
    check_student,
)
from typeahead.errors import ArtifactError, ConfigError, DataError
from typeahead.manifest import read_format_manifest, sha256_file

__all__ = [
    "FORMAT",
    "DocResult",
    "DocsIndex",
    "build_docs_index",
    "docs_dir",
]

FORMAT = "typeahead-docs/1"
MANIFEST = "manifest.json"
SENTENCES = "sentences.npy"
SENTENCE_OFFSETS = "sentences.off.npy"
ID_FIELDS = ("id", "paragraph_id", "doc_id")
TERM_RE = re.compile(r"\w+")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "their",
        "there",
        "these",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
    ]
)
BM25_K1 = 1.2
BM25_B = 0.75
# Tuned on SQuAD questions -> paragraphs (bench/bench_retrieval.py).
SEMANTIC_WEIGHT = 0.6
CANDIDATES = 50
PREFIX_EXPANSION = 8
SNIPPET_CHARS = 200
SMALL_CORPUS = 50_000  # below this, exact (flat) search is both fastest and exact


@dataclass(frozen=True, slots=True)
class DocResult:
    id: str
    title: str
    snippet: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "snippet": self.snippet, "score": self.score}


# --- reading input files --------------------------------------------------------------------


def load_documents(path: Path, id_field: str | None = None) -> list[tuple[str, str, str]]:
    """(id, title, text) triples from any format ``typeahead.corpus`` reads; ids must be
    unique and texts non-empty."""
    docs: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for line, rec in read_records(path):
        field = id_field or next((f for f in ID_FIELDS if rec.get(f) not in (None, "")), None)
        if field is None or rec.get(field) in (None, ""):
            raise DataError(f"{path}:{line}: no id (looked for {id_field or ID_FIELDS})")
        doc_id, text = str(rec[field]), str(rec.get("text") or "").strip()
        if not text:
            raise DataError(f"{path}:{line}: document {doc_id!r} has no text")
        if doc_id in seen:
            raise DataError(f"{path}:{line}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        docs.append((doc_id, str(rec.get("title") or ""), text))
    if not docs:
        raise DataError(f"{path}: no documents")
    return docs


# --- lexical side ---------------------------------------------------------------------------


def terms_of(text: str) -> list[str]:
    return [t for t in TERM_RE.findall(text.lower()) if t not in STOPWORDS]


class Bm25:
    """Inverted index with BM25 weights precomputed per (term, document) posting."""

    def __init__(
        self,
        terms: list[str],
        indptr: np.ndarray,
        docs: np.ndarray,
        weights: np.ndarray,
        n_docs: int,
    ) -> None:
        self.terms = terms  # sorted, so a prefix is a contiguous range
        self._term_ids = {t: i for i, t in enumerate(terms)}
        self._indptr, self._docs, self._weights = indptr, docs, weights
        self._ptr = indptr.tolist()  # element reads on the hot path: Python ints are faster
        self.n_docs = n_docs
        self._df = np.diff(indptr)
        # Expansions of the prefixes with more than PREFIX_EXPANSION completions, sorted out
        # once each: "a" or "th" come back on every other keystroke, and sorting their
        # thousand completions cost more than the rest of the scoring. Bounded by the
        # vocabulary, as only prefixes of that many terms are kept.
        self._expansions: dict[str, tuple[str, ...]] = {}

    @classmethod
    def build(cls, texts: Sequence[str]) -> Bm25:
        counts = [Counter(terms_of(t)) for t in texts]
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)
        avg = float(lengths.mean()) or 1.0
        postings: dict[str, list[tuple[int, int]]] = {}
        for doc, c in enumerate(counts):
            for term, tf in c.items():
                postings.setdefault(term, []).append((doc, tf))
        terms = sorted(postings)
        indptr = np.zeros(len(terms) + 1, dtype=np.int64)
        docs: list[int] = []
        weights: list[float] = []
        for i, term in enumerate(terms):
            plist = postings[term]
            idf = math.log(1.0 + (len(texts) - len(plist) + 0.5) / (len(plist) + 0.5))
            for doc, tf in plist:
                norm = tf + BM25_K1 * (1.0 - BM25_B + BM25_B * lengths[doc] / avg)
                docs.append(doc)
                weights.append(idf * tf * (BM25_K1 + 1.0) / norm)
            indptr[i + 1] = len(docs)
        return cls(
            terms, indptr, np.array(docs, np.int32), np.array(weights, np.float32), len(texts)
        )

    def save(self, out_dir: Path) -> None:
        np.savez(out_dir / "bm25.npz", indptr=self._indptr, docs=self._docs, weights=self._weights)
        (out_dir / "terms.json").write_text(json.dumps(self.terms))

    @classmethod
    def load(cls, root: Path, n_docs: int) -> Bm25:
        with np.load(root / "bm25.npz", allow_pickle=False) as arrays:
            indptr, docs, weights = arrays["indptr"], arrays["docs"], arrays["weights"]
        terms = json.loads((root / "terms.json").read_text())
        _check_postings(terms, indptr, docs, weights, n_docs)
        return cls(terms, indptr, docs, weights, n_docs)

    def scores(self, query: str, partial: bool = False) -> np.ndarray:
        """BM25 score of every document; with ``partial`` the last word is also a prefix."""
        words = terms_of(query)
        if not (partial and words and query[-1:].isalnum()):
            return self._summed(words)
        *words, last = words
        scores = self._summed(words)
        # The last word is one word still being typed: a document scores its best completion
        # of it, not the sum of all of them. Summed, "super b" found the documents with the
        # most b-words ("by", "be", "british": the French and Indian War) ahead of the one
        # meant ("bowl"). On SQuAD questions cut mid-word, the gold paragraph's recall@3
        # went from 0.50 to 0.55 and MRR@3 from 0.43 to 0.49 (bench/bench_retrieval.py).
        ids = self._ids(self._expand(last))
        if len(ids) == 1:  # one completion (most words past their second letter)
            docs, weights = self._postings(ids)
            scores[docs] += weights
        elif ids:
            best = np.zeros(self.n_docs, dtype=np.float32)
            np.maximum.at(best, *self._postings(ids))
            scores += best
        return scores

    def _summed(self, words: Sequence[str]) -> np.ndarray:
        """The plain BM25 sum over ``words`` (unknown words count nothing)."""
        ids = self._ids(words)
        if not ids:
            return np.zeros(self.n_docs, dtype=np.float32)
        # One bincount over every posting list beats one scatter-add per term.
        return np.bincount(*self._postings(ids), minlength=self.n_docs).astype(np.float32)

    def _ids(self, words: Sequence[str]) -> list[int]:
        """The term ids of the indexed ones among ``words``."""
        return [tid for tid in map(self._term_ids.get, words) if tid is not None]

    def _postings(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The posting lists of term ``ids``, joined: (document rows, BM25 weights)."""
        ptr = self._ptr
        if len(ids) == 1:  # a view: no copy for the commonest case
            t = ids[0]
            return self._docs[ptr[t] : ptr[t + 1]], self._weights[ptr[t] : ptr[t + 1]]
        return (np.concatenate([self._docs[ptr[t] : ptr[t + 1]] for t in ids]),
                np.concatenate([self._weights[ptr[t] : ptr[t + 1]] for t in ids]))

    def completed(self, query: str) -> str | None:
        """``query`` with its last, unfinished word replaced by the most widespread indexed
        term it begins, for the student to embed; None when there is none, or when the word
        is an indexed term itself.

        The student reads a fragment as the pieces of an unknown word ("rhin": a cosine near
        0 with every paragraph on the Rhine, so the fused score fell under the results floor
        and nothing showed). Embedded completed, the prefixes of the documents' titles
        ("rhi", "rhin") showed results 95% -> 98% of the time, with a paragraph of that title
        first 64% -> 77%; questions cut mid-word, or whole, ranked as before
        (bench/bench_retrieval.py). Replacing indexed terms too gave 100% and 82% on titles,
        but would embed "cat" as "catholic" wherever that is the more widespread word."""
        if not query[-1:].isalnum():
            return None
        low = query.lower()  # (the student lower-cases anyway)
        last = next(reversed([*TERM_RE.finditer(low)]), None)
        if last is None or last.group() in STOPWORDS or last.group() in self._term_ids:
            return None  # (a word the documents hold is left as typed: "cat", not "catholic")
        lo, hi = self._completions(last.group())
        if hi <= lo:
            return None
        term = self.terms[lo + int(np.argmax(self._df[lo:hi]))]
        return low[: last.start()] + term

    def _completions(self, prefix: str) -> tuple[int, int]:
        """The rows ``lo:hi`` of the sorted terms that ``prefix`` begins."""
        return (bisect.bisect_left(self.terms, prefix),
                bisect.bisect_left(self.terms, prefix + "\U0010ffff"))

    def _expand(self, prefix: str) -> Sequence[str]:
        known = self._expansions.get(prefix)
        if known is not None:
            return known
        lo, hi = self._completions(prefix)
        if hi - lo <= PREFIX_EXPANSION:
            return self.terms[lo:hi]
        # Too many completions: keep the most widespread ones, as a typist most likely means them.
        best = np.argsort(-self._df[lo:hi], kind="stable")[:PREFIX_EXPANSION]
        known = self._expansions[prefix] = tuple(self.terms[lo + int(i)] for i in best)
        return known


# --- the index ------------------------------------------------------------------------------


class DocsIndex:
    """Documents searchable by student + FAISS fused with BM25."""

    def __init__(
        self,
        docs: list[tuple[str, str, str]],
        bm25: Bm25,
        vectors: VectorIndex,
        student: Embedder,
        manifest: dict[str, Any],
        sentences: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self._docs, self._bm25, self._vectors, self._student = docs, bm25, vectors, student
        self.manifest = manifest
        # An index built before sentence vectors were stored gets them here: the same rows.
        self._sentence_rows, offsets = sentence_vectors(docs, student) if sentences is None \
            else sentences
        self._sentence_off = offsets.tolist()
        self.semantic_weight = float(manifest.get("semantic_weight", SEMANTIC_WEIGHT))
        # A small corpus in an exact index is scored whole: one mat-vec against its rows
        # beats a FAISS search plus reconstructing the lexical candidates several times over.
        # Kept transposed, as numpy's vector-times-matrix kernel is a third faster here.
        rows = vectors.exact_rows() if len(docs) < SMALL_CORPUS else None
        self._rows_t = None if rows is None else np.ascontiguousarray(rows.T)
        # Per document row, its article (title) as a number, and per article its rows: instant
        # results show a few paragraphs per article at most, masked out as a group at once.
        numbers: dict[str, int] = {}
        self._article = np.array([numbers.setdefault(t, len(numbers)) for _, t, _ in docs],
                                 dtype=np.int64)
        self._article_rows = [np.flatnonzero(self._article == a) for a in range(len(numbers))]
        self.titles = tuple(numbers)
        self._article_list = self._article.tolist()  # element reads per result: Python ints
        self._index_of = {doc_id: row for row, (doc_id, _, _) in enumerate(docs)}
        n = len(docs)
        self._term_idf = [math.log(1.0 + (n - df + 0.5) / (df + 0.5))
                          for df in bm25._df.tolist()]
        self._title_terms = [frozenset(terms_of(t)) for t in self.titles]

    @property
    def student(self) -> Embedder:
        """The embedder of the documents' and the queries' vectors (the student, when built
        by build-index)."""
        return self._student

    def __len__(self) -> int:
        return len(self._docs)

    @classmethod
    def load(cls, root: Path, student: Embedder, *, verify: bool = True) -> DocsIndex:
        manifest = _read_manifest(root)
        check_student(manifest, student, root)
        if verify:
            _verify_files(root, manifest)
        docs = [
            (str(d["id"]), str(d["title"]), str(d["text"]))
            for _, d in read_records(root / "docs.jsonl")
        ]
        vectors = VectorIndex.load(root / "vectors", student, verify=verify)
        if len(docs) != manifest.get("count") or vectors.count != len(docs):
            raise ArtifactError(f"documents index {root} is inconsistent: document counts differ")
        sentences = _load_sentences(root, docs, student.dim) \
            if SENTENCES in manifest.get("files", {}) else None
        return cls(docs, Bm25.load(root, len(docs)), vectors, student, manifest, sentences)

    @classmethod
    def in_memory(cls, docs: Sequence[tuple[str, str, str]], embedder: Embedder, *,
                  semantic_weight: float = SEMANTIC_WEIGHT) -> DocsIndex:
        """The index ``build_docs_index`` would write for ``docs``, built in memory with an
        exact vector index: a worker's ``--docs FILE``, and tests with a small embedder."""
        texts = _texts(docs)
        vectors = np.empty((len(texts), embedder.dim), dtype=np.float32)
        for start in range(0, len(texts), ENCODE_BATCH):
            chunk = texts[start : start + ENCODE_BATCH]
            vectors[start : start + len(chunk)] = embedder.encode(chunk)
        manifest = {"format": FORMAT, "count": len(docs), "dim": embedder.dim,
                    "student_fingerprint": embedder.fingerprint,
                    "semantic_weight": semantic_weight}
        flat = VectorIndex(build_index(vectors, "flat"), {**manifest, "factory": "flat"})
        return cls(list(docs), Bm25.build(texts), flat, embedder, manifest)

    def search(
        self, query: str, k: int = 3, *, mode: str = "fused", partial: bool = False,
        vector: np.ndarray | None = None, min_score: float = -math.inf,
    ) -> list[DocResult]:
        """The k best documents for ``query``; mode is fused, semantic or lexical.

        ``vector`` is the student embedding of ``query`` when the caller already has it;
        documents scoring below ``min_score`` are dropped before their snippets are cut."""
        ranked = [(doc, rounded) for doc, score in self._ranked(query, k, mode, partial, vector)
                  if (rounded := round(score, 6)) >= min_score]
        wanted = frozenset(terms_of(query)) if ranked else frozenset()
        return [self._result(doc, score, wanted) for doc, score in ranked]

    def instant(self, query: str, k: int, *, vector: np.ndarray | None = None,
                per_article: int = 1, model: Any | None = None, fill: bool = False
                ) -> list[DocResult]:
        """Instant results for a keystroke: at most ``per_article`` paragraphs per article
        (0: any number), and, given a ``typeahead.retrieval.relevance.ResultModel``, only those it
        finds likely relevant, scored by that probability. With one per article and a model
        that has a paragraph chooser, each article shows its paragraph that best fits the
        input; with ``fill``, slots no other article takes go to its next paragraphs
        (``_focused``)."""
        return [result for result, _ in self.scored(query, k, vector=vector,
                                                    per_article=per_article, model=model,
                                                    fill=fill)]

    def scored(self, query: str, k: int, *, vector: np.ndarray | None = None,
               per_article: int = 1, model: Any | None = None, features: bool = False,
               fill: bool = False) -> list[tuple[DocResult, list[float]]]:
        """``instant``'s results with each one's relevance features (``relevance.FEATURES``);
        without a model, every one of the k best with its fused score."""
        if model is not None and not terms_of(query):
            return []  # only stop words ("how to", "what is the"): nothing a document is about
        if model is not None and per_article != 1:
            return self._scored_by_article(query, k, vector, per_article, model)
        seen = _Seen()
        ranked = self._ranked(query, k + 1, "fused", True, vector, per_article, seen)
        if not ranked:
            return []
        rows = features_of(self, query, ranked, k, seen) if model is not None or features \
            else [[] for _ in ranked]
        kept = []
        for (doc, fused), row in zip(ranked[:k], rows, strict=False):
            score = round(fused, 6)
            if model is not None:
                score = model.probability(row)
                if score < model.threshold:
                    continue
                score = round(score, 4)
            kept.append((doc, score, row))
        chooser = getattr(model, "paragraphs", None)
        if kept and chooser is not None and per_article == 1:
            kept = self._focused(query, k, kept, seen, chooser, fill)
        wanted = frozenset(terms_of(query))
        return [(self._result(doc, score, wanted), row) for doc, score, row in kept]

    def _focused(self, query: str, k: int, kept: list[tuple[int, float, list[float]]],
                 seen: _Seen, chooser: Any, fill: bool) -> list[tuple[int, float, list[float]]]:
        """One-per-article results with, for each article shown, the paragraph the
        ``chooser`` (``typeahead.retrieval.relevance.ParagraphModel``) ranks first among its
        best few by fused score; then, with ``fill`` (``TYPEAHEAD_RESULTS_FILL``), while slots
        are left and the input holds at least ``chooser.fill_min_words`` words that are not
        stop words (a question or a phrase asks for a passage; one word names a topic), those
        articles' next paragraphs, in article order. Every result keeps its article's
        probability: no result is added that the relevance floor did not pass, so an input
        showing nothing still shows nothing.

        Why: with one paragraph per article, a question whose gold paragraph is the article's
        second best lost it (SQuAD paragraph recall@3 0.928 -> 0.865), while the floor left
        the other two slots empty on most questions (1.09 results per question). Filling is
        off by default: it repeats the article's title in the list."""
        firsts: list[tuple[int, float, list[float]]] = []
        extras: list[tuple[int, float, list[float]]] = []
        for doc, score, row in kept:
            cands, cosines = self._article_paragraphs(self._article_list[doc], seen,
                                                      chooser.candidates)
            if len(cands) > 1:
                cands = chooser.order(cands, paragraph_features(self, query, cands, cosines,
                                                                seen))
            best, *rest = [d for d, _ in cands] or [doc]
            firsts.append((best, score, row))
            extras += [(d, score, row) for d in rest]
        words = seen.words.count if seen.words is not None else len(terms_of(query))
        if fill and len(firsts) < k and words >= chooser.fill_min_words:
            firsts += extras[: k - len(firsts)]
        return firsts

    def _article_paragraphs(self, article: int, seen: _Seen, m: int
                            ) -> tuple[list[tuple[int, float]], list[float]]:
        """The m best paragraphs of ``article`` by the fused score the search computed, best
        first (ties: smaller row first), and their cosines; none when the search has no fused
        scores."""
        if seen.fused is None:
            return [], []
        if seen.pool is None:  # every document was scored
            at = rows = self._article_rows[article]
        else:
            at = np.flatnonzero(self._article[seen.pool] == article)
            rows = seen.pool[at]
        scores = seen.fused[at]
        order = np.lexsort((rows, -scores))[:m]
        order = order[scores[order] > -math.inf]
        cosines = [0.0] * len(order) if seen.cosine is None else seen.cosine[at[order]].tolist()
        return list(zip(rows[order].tolist(), scores[order].tolist(), strict=True)), cosines

    def article_paragraphs(self, query: str, title: str, m: int
                           ) -> list[tuple[str, list[float]]]:
        """The m best paragraphs of article ``title`` for ``query`` as a keystroke ranks them,
        each with its paragraph features (``typeahead.retrieval.relevance.PARAGRAPH_FEATURES``):
        what the paragraph chooser is trained on."""
        if title not in self.titles or not terms_of(query):
            return []
        seen = _Seen()
        self._ranked(query, 1, "fused", True, None, 1, seen)
        cands, cosines = self._article_paragraphs(self.titles.index(title), seen, m)
        rows = paragraph_features(self, query, cands, cosines, seen) if cands else []
        return [(self._docs[d][0], row) for (d, _), row in zip(cands, rows, strict=True)]

    def _scored_by_article(self, query: str, k: int, vector: np.ndarray | None,
                           per_article: int, model: Any) -> list[tuple[DocResult, list[float]]]:
        """``scored`` with several results per article: the model was trained on one result
        per article (two paragraphs of one article are not competing answers, so their
        near-tie must not read as doubt), so each paragraph gets its article's probability
        from the one-per-article ranking. A second search: this setting costs twice as much."""
        by_article = {self._article_list[self._index_of[r.id]]: (r.score, row)
                      for r, row in self.scored(query, k, vector=vector, model=model)}
        wanted = frozenset(terms_of(query))
        out = []
        for doc, _ in self._ranked(query, k, "fused", True, vector, per_article):
            found = by_article.get(self._article_list[doc])
            if found is not None:
                out.append((self._result(doc, found[0], wanted), found[1]))
        return out

    def passages(self, query: str, k: int = 3) -> list[tuple[str, str, str, float]]:
        """The k best documents whole, as (id, title, text, fused score): the grounding of a
        summary, which needs full texts rather than snippets."""
        return [(*self._docs[doc], score)
                for doc, score in self._ranked(query, k, "fused", False, None)]

    def _ranked(self, query: str, k: int, mode: str, partial: bool,
                vector: np.ndarray | None, per_article: int = 0, seen: _Seen | None = None
                ) -> list[tuple[int, float]]:
        """The k best document rows and their scores, at most ``per_article`` per article
        (0: any number); ``seen`` keeps the embedding and BM25 scores used."""
        if mode not in ("fused", "semantic", "lexical") or k < 1:
            raise ConfigError(f"bad documents search: mode={mode!r}, k={k}")
        n = max(k, CANDIDATES)
        lexical = self._bm25.scores(query, partial) if mode != "semantic" else None
        top_lex = float(lexical.max()) if lexical is not None and len(lexical) else 0.0
        if top_lex <= 0:  # no document matches a word: no lexical side (a third of keystrokes)
            lexical = None
        if seen is not None:
            seen.lexical, seen.top_lex, seen.per_article = lexical, top_lex, per_article
        if mode == "lexical":
            return self._rank(_top(lexical, n), None, lexical, top_lex, mode, k, per_article)
        completed = self._bm25.completed(query) if partial else None
        if completed is not None:
            vec = self._student.encode([completed])
        else:
            vec = self._student.encode([query]) if vector is None else vector
        if seen is not None:
            seen.vector = vec
        if not vec.any():  # no known word: no semantic side
            return self._rank(_top(lexical, n), None, lexical, top_lex, mode, k, per_article,
                              seen)
        if self._rows_t is not None:
            sims = np.asarray(vec[0], dtype=np.float32) @ self._rows_t
            return self._ranked_dense(sims, n, lexical, top_lex, mode, k, per_article, seen)
        cand, sem = self._semantic(vec, _top(lexical, n), n)
        return self._rank(cand, sem, lexical, top_lex, mode, k, per_article, seen)

    def _semantic(self, vec: np.ndarray, lex_top: np.ndarray, n: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates and their cosines: the top-n neighbours plus the lexical top-n (whose
        cosines are computed from the stored vectors), so fusion sees both sides."""
        scores, ids = self._vectors.search(vec, n)
        found = ids[0] >= 0
        ids, scores = ids[0][found], scores[0][found]
        seen = set(ids.tolist())  # a set beats np.isin by 20x at these sizes (50 and 50)
        missing = [doc for doc in lex_top.tolist() if doc not in seen]
        if missing:
            sims = self._vectors.reconstruct(missing) @ vec[0]
            return np.concatenate((ids, missing)), np.concatenate((scores, sims))
        return ids, scores

    def _ranked_dense(self, sims: np.ndarray, n: int, lexical: np.ndarray | None,
                      top_lex: float, mode: str, k: int, per_article: int = 0,
                      seen: _Seen | None = None) -> list[tuple[int, float]]:
        """``_ranked`` for a small exact corpus, given the cosine of every document.

        When the lexical top n is every lexical hit (most keystrokes), fusing all documents
        picks the very k best that fusing the candidates does: a document in neither top n
        has n documents with a higher cosine, and so with a higher fused score. That is one
        vectorised expression and no candidate bookkeeping. With more lexical hits (short
        prefixes: "st" matches 426 paragraphs), the documents outside both top n are masked
        out of the same expression, rather than gathered and ranked apart (180 µs to 60).
        Documents tied with the n-th cosine are all counted in, where FAISS keeps some."""
        w = self._weight(mode)
        if w > 0:
            fused = w * sims.astype(np.float64)
            if lexical is not None:
                fused += (1.0 - w) * (lexical.astype(np.float64) / top_lex)
                if np.count_nonzero(lexical) > n:
                    inside = sims >= _nth_largest(sims, n)
                    inside[_top(lexical, n)] = True  # the very lexical top n the union takes
                    fused[~inside] = -math.inf
            if per_article:
                if seen is not None:  # (the ranking below overwrites fused)
                    seen.fused, seen.cosine, seen.pool = fused.copy(), sims, None
                return _best_per_group(fused, k, self._article, self._article_rows,
                                       per_article)
            return _best(fused, k)
        pool = sims >= _nth_largest(sims, n)
        if lexical is not None:
            hits = lexical > 0
            if np.count_nonzero(hits) <= n:
                pool |= hits
            else:
                pool[_top(lexical, n)] = True
        cand = pool.nonzero()[0]
        return self._rank(cand, sims[cand], lexical, top_lex, mode, k, per_article, seen)

    def _weight(self, mode: str) -> float:
        """The weight of the cosine in the fused score."""
        return self.semantic_weight if mode == "fused" else 1.0 if mode == "semantic" else 0.0

    def _rank(self, cand: np.ndarray, sem: np.ndarray | None, lexical: np.ndarray | None,
              top_lex: float, mode: str, k: int, per_article: int = 0,
              seen: _Seen | None = None) -> list[tuple[int, float]]:
        """The k best candidates by ``w * cosine + (1 - w) * bm25 / top_lex`` (ties: smaller
        document row first); ``sem`` or ``lexical`` is None when that side is absent."""
        if not len(cand):
            return []
        w = self._weight(mode)
        fused = np.zeros(len(cand)) if sem is None else w * sem.astype(np.float64)
        if lexical is not None:
            fused += (1.0 - w) * (lexical[cand].astype(np.float64) / top_lex)
        if seen is not None:
            seen.fused, seen.cosine, seen.pool = fused, sem, cand
        order = np.lexsort((cand, -fused))
        if not per_article:
            order = order[:k]
            return list(zip(cand[order].tolist(), fused[order].tolist(), strict=True))
        return _keep_per_group(cand[order].tolist(), fused[order].tolist(), self._article,
                               per_article, k)

    def _result(self, doc: int, score: float, wanted: frozenset[str]) -> DocResult:
        doc_id, title, text = self._docs[doc]
        return DocResult(doc_id, title, _snippet(text, wanted), score)


_NONE = np.zeros(0, dtype=np.int64)


@dataclass(slots=True)
class _Seen:
    """What a keystroke's search computed, kept for its results' relevance features."""

    vector: np.ndarray | None = None
    lexical: np.ndarray | None = None
    top_lex: float = 0.0
    per_article: int = 0
    fused: np.ndarray | None = None  # fused scores of the documents in pool (None: of all)
    cosine: np.ndarray | None = None  # their cosines (None: no semantic side)
    pool: np.ndarray | None = None
    words: _Words | None = None  # the query's words as the features read them


def _best_per_group(scores: np.ndarray, k: int, group: np.ndarray, members: list[np.ndarray],
                    per_group: int) -> list[tuple[int, float]]:
    """``_best`` taking at most ``per_group`` rows of one group (article): when a group is
    full its rows are masked out at once, so "normans" costs a few argmax passes, not one per
    Normans paragraph. ``scores`` is scratch."""
    best: list[tuple[int, float]] = []
    taken: dict[int, int] = {}
    while len(best) < min(k, len(scores)):
        row = int(scores.argmax())
        score = float(scores[row])
        if score == -math.inf:
            break
        best.append((row, score))
        g = int(group[row])
        taken[g] = taken.get(g, 0) + 1
        if taken[g] >= per_group:
            scores[members[g]] = -math.inf
        else:
            scores[row] = -math.inf
    return best


def _keep_per_group(rows: list[int], scores: list[float], group: np.ndarray, per_group: int,
                    k: int) -> list[tuple[int, float]]:
    """The first k of ranked ``rows`` with at most ``per_group`` rows of one group."""
    out: list[tuple[int, float]] = []
    taken: dict[int, int] = {}
    for row, score in zip(rows, scores, strict=True):
        g = int(group[row])
        if taken.get(g, 0) < per_group:
            taken[g] = taken.get(g, 0) + 1
            out.append((row, score))
            if len(out) >= k:
                break
    return out


def features_of(index: DocsIndex, query: str, ranked: list[tuple[int, float]], k: int,
                seen: _Seen) -> list[list[float]]:
    """The relevance features (``typeahead.retrieval.relevance.FEATURES``) of the first k ranked
    results (a (k+1)-th only gives the k-th its margin). All read what the search computed."""
    words = seen.words = _words_of(index, query)
    top_idf = _idf_unknown(index._bm25.n_docs)
    rows = ranked[:k]
    cosines = _cosines(index, [doc for doc, _ in rows], seen.vector)
    wanted = words.wanted
    per_word = 1.0 / max(1, words.count)
    shared = [float(words.count), float(min(words.partial_chars, 8)), words.unknown,
              math.log1p(len(query))]
    out = []
    for i, (doc, fused) in enumerate(rows):
        held = _sentence_masks(index._docs[doc][2])
        title_terms = index._title_terms[index._article_list[doc]]
        hits = titled = 0
        hit_idf = rarest = 0.0
        for f, x in wanted:
            if any(t in title_terms for t in f):
                titled += 1
            elif not any(t in held for t in f):
                continue
            hits += 1
            hit_idf += x
            rarest = max(rarest, x)
        bm = float(seen.lexical[doc]) if seen.lexical is not None else 0.0
        margin = fused - ranked[i + 1][1] if i + 1 < len(ranked) else fused
        out.append([
            fused, cosines[i], math.log1p(bm), bm / seen.top_lex if seen.top_lex > 0 else 0.0,
            hits * per_word, hit_idf / words.total_idf, titled * per_word, margin, float(i),
            *shared, rarest / top_idf,
        ])
    return out


@dataclass(slots=True)
class _Words:
    """A query's words as the relevance and paragraph features read them."""

    count: int
    partial_chars: int  # characters of the word being typed (0: the last word is whole)
    unknown: float  # share of the words no document holds
    wanted: list[tuple[tuple[str, ...], float]]  # per held word: its indexed forms, its IDF
    total_idf: float  # of every word, an unknown one counting as an unseen term's
    terms: list[str]  # the words as typed, stop words left out


def _words_of(index: DocsIndex, query: str) -> _Words:
    bm25 = index._bm25
    words = terms_of(query)
    partial = bool(words) and query[-1:].isalnum()
    # Per query word, the indexed terms that count as it (the typed word's completions).
    forms: list[tuple[str, ...]] = [(w,) for w in words]
    if partial:
        forms[-1] = (words[-1], *bm25._expand(words[-1]))
    term_idf, ids = index._term_idf, bm25._term_ids
    top_idf = _idf_unknown(bm25.n_docs)
    known = [[term_idf[i] for t in f if (i := ids.get(t)) is not None] for f in forms]
    idf = [max(x) if x else top_idf for x in known]
    # Only indexed terms can be in a document: the others are dropped once, not per result.
    wanted = [(terms, x) for f, x in zip(forms, idf, strict=True)
              if (terms := tuple(t for t in f if t in ids))]
    return _Words(len(forms), len(words[-1]) if partial else 0,
                  sum(not x for x in known) / max(1, len(forms)), wanted, sum(idf) or 1.0,
                  words)


def paragraph_features(index: DocsIndex, query: str, cands: list[tuple[int, float]],
                       cosines: list[float], seen: _Seen) -> list[list[float]]:
    """The paragraph features (``typeahead.retrieval.relevance.PARAGRAPH_FEATURES``) of an
    article's candidate paragraphs ``cands`` (row, fused score; best first; ``cosines``
    theirs): each one's fused
    score, cosine and BM25 share less the best among the candidates, the IDF-weighted share of
    the query's words it holds and that its best sentence holds (and its best two), all but
    the best sentence's as gaps to the best candidate, and whether it is the fused first; then,
    as gaps too, its best sentence's cosine with the query and the share of the query's word
    pairs (stop words left out) it holds in a row.

    A question is usually written from one sentence, so the paragraph holding most of its
    rarer words in one sentence is the likelier source than the one holding them spread out;
    the sentence cosine finds that sentence when the question rewords it, and a word pair
    ("battle hastings") when the words are spread over the article."""
    words = seen.words or _words_of(index, query)
    docs = index._docs
    rows = [doc for doc, _ in cands]
    raw = [_sentence_cover(docs[doc][2], words) for doc in rows]
    lexical = seen.lexical
    bm = [0.0] * len(cands) if lexical is None else (lexical[rows] / seen.top_lex).tolist()
    sent = _sentence_cosines(index, rows, seen.vector)
    pairs = frozenset(itertools.pairwise(words.terms))
    pair = [len(pairs & _pairs(docs[doc][2])) / len(pairs) if pairs else 0.0 for doc in rows]
    top_fused, top_cos, top_bm = cands[0][1], max(cosines), max(bm)
    top_cov, top_one, top_two = map(max, zip(*raw, strict=True))
    top_sent, top_pair = max(sent), max(pair)
    return [[fused - top_fused, cos - top_cos, b - top_bm, cov - top_cov, one - top_one, one,
             two - top_two, float(i == 0), s - top_sent, p - top_pair]
            for i, ((_, fused), cos, b, (cov, one, two), s, p)
            in enumerate(zip(cands, cosines, bm, raw, sent, pair, strict=True))]


def _sentence_cosines(index: DocsIndex, docs: list[int], vec: np.ndarray | None
                      ) -> list[float]:
    """Per document of ``docs``, the highest cosine of one of its sentences with ``vec`` (a
    zero vector, no known word, gives 0 everywhere)."""
    if vec is None:
        return [0.0] * len(docs)
    off = index._sentence_off
    # One product over the candidates' sentences, gathered: a third of the time of one each.
    sims = np.dot(np.concatenate([index._sentence_rows[off[d]:off[d + 1]] for d in docs]),
                  vec[0]).tolist()
    out, at = [], 0
    for d in docs:
        end = at + off[d + 1] - off[d]
        out.append(max(sims[at:end]))
        at = end
    return out


def _sentence_cover(text: str, words: _Words) -> tuple[float, float, float]:
    """IDF-weighted shares of the query's words held by ``text``, by its best sentence, and
    by its best two sentences together (each word counted in each sentence holding it)."""
    where = _sentence_masks(text)
    per: dict[int, float] = {}
    held = 0.0
    for terms, x in words.wanted:
        mask = 0
        for t in terms:
            mask |= where.get(t, 0)
        if mask:
            held += x
        while mask:
            low = mask & -mask
            bit = low.bit_length() - 1
            per[bit] = per.get(bit, 0.0) + x
            mask ^= low
    best = sorted(per.values(), reverse=True)[:2]
    total = words.total_idf
    return held / total, (best[0] if best else 0.0) / total, sum(best) / total


def _idf_unknown(n: int) -> float:
    return math.log(1.0 + (n + 0.5) / 0.5)


def _cosines(index: DocsIndex, docs: list[int], vec: np.ndarray | None) -> list[float]:
    if vec is None or not vec.any():
        return [0.0] * len(docs)
    if index._rows_t is not None:
        return (np.asarray(vec[0], dtype=np.float32) @ index._rows_t[:, docs]).tolist()
    return (index._vectors.reconstruct(docs) @ vec[0]).tolist()


def _top(scores: np.ndarray | None, n: int) -> np.ndarray:
    """Indices of the n highest positive scores (unordered); none without scores."""
    if scores is None:
        return _NONE
    n = min(n, len(scores))
    if n == 0:
        return _NONE
    best = np.argpartition(-scores, n - 1)[:n]
    return best[scores[best] > 0]


_ARGMAX_K = 8  # up to this k, k passes of argmax beat a partition and a sort


def _best(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k highest ``scores`` as (row, score), best first (ties: smaller row first).
    ``scores`` is scratch: it may be overwritten."""
    k = min(k, len(scores))
    if k <= _ARGMAX_K:
        best: list[tuple[int, float]] = []
        for _ in range(k):
            row = int(scores.argmax())  # the first of equal maxima: the smaller row
            best.append((row, float(scores[row])))
            scores[row] = -math.inf
        return best
    cand = (scores >= _nth_largest(scores, k)).nonzero()[0]
    top = scores[cand]
    order = np.lexsort((cand, -top))[:k]
    return list(zip(cand[order].tolist(), top[order].tolist(), strict=True))


def _nth_largest(values: np.ndarray, n: int) -> float:
    """The n-th highest of ``values`` (-inf when there are n or fewer): the floor of a top n."""
    if n >= len(values):
        return -math.inf
    cut = len(values) - n
    return float(np.partition(values, cut)[cut])


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """The sentence sharing most words with the query (the first one on a tie), shortened."""
    return _snippet(text, frozenset(terms_of(query)), width)


def _snippet(text: str, wanted: frozenset[str], width: int = SNIPPET_CHARS) -> str:
    """``snippet`` for the query terms ``wanted``, counted through the sentences' term index
    (a few dict reads) rather than by intersecting every sentence with the query."""
    sentences, where = _sentences(text), _sentence_masks(text)
    shared = [0] * len(sentences)
    for term in wanted:
        mask = where.get(term, 0)
        while mask:
            low = mask & -mask
            shared[low.bit_length() - 1] += 1
            mask ^= low
    best = sentences[shared.index(max(shared))]
    if len(best) <= width:
        return best
    return best[: width - 1].rsplit(" ", 1)[0] + "…"


@functools.lru_cache(maxsize=4096)
def _sentences(text: str) -> tuple[str, ...]:
    """A document's sentences: split once, not on every keystroke."""
    return tuple(re.split(r"(?<=[.!?])\s+", text) or [text])


@functools.lru_cache(maxsize=4096)
def _pairs(text: str) -> frozenset[tuple[str, str]]:
    """A document's pairs of consecutive words, stop words left out."""
    return frozenset(itertools.pairwise(terms_of(text)))


@functools.lru_cache(maxsize=4096)
def _sentence_masks(text: str) -> dict[str, int]:
    """Per term of a document, a bit mask of the sentences holding it. Ints and strings only,
    and kept apart from the sentences: a dict of atoms, alone, is invisible to the cyclic GC
    (a tuple holding a dict, or a dict holding sets, would be tracked for good)."""
    where: dict[str, int] = {}
    for i, sentence in enumerate(_sentences(text)):
        for term in terms_of(sentence):
            where[term] = where.get(term, 0) | 1 << i
    return where


# --- building -------------------------------------------------------------------------------


def build_docs_index(
    source: Path,
    out_dir: Path,
    student: Student,
    *,
    id_field: str | None = None,
    factory: str = "auto",
    params: IndexParams | None = None,
    semantic_weight: float = SEMANTIC_WEIGHT,
) -> dict[str, Any]:
    """Build the documents index for ``source`` into ``out_dir``; returns its manifest."""
    docs = load_documents(source, id_field)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "docs.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, title, text in docs:
            fh.write(json.dumps({"id": doc_id, "title": title, "text": text}) + "\n")
    texts = _texts(docs)
    Bm25.build(texts).save(out_dir)
    chosen = ("flat" if len(docs) < SMALL_CORPUS else "hnsw") if factory == "auto" else factory
    build_vector_index(texts, student, out_dir / "vectors", chosen, params)
    rows, offsets = sentence_vectors(docs, student)
    np.save(out_dir / SENTENCES, rows)
    np.save(out_dir / SENTENCE_OFFSETS, offsets)
    manifest = {
        "format": FORMAT,
        "count": len(docs),
        "source": str(source),
        "source_sha256": sha256_file(source),
        "id_field": id_field,
        "student_fingerprint": student.fingerprint,
        "dim": student.dim,
        "semantic_weight": semantic_weight,
        "bm25": {"k1": BM25_K1, "b": BM25_B},
        "files": {n: sha256_file(out_dir / n)
                  for n in ("docs.jsonl", "bm25.npz", "terms.json", SENTENCES, SENTENCE_OFFSETS)},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def sentence_vectors(docs: Sequence[tuple[str, str, str]], embedder: Embedder
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The embedding of every document's sentences (as ``_sentences`` splits them, each
    prefixed with its title like the document's own text), in document order, and per
    document the row of its first sentence (one more offset at the end: the row count)."""
    split = [_sentences(text) for _, _, text in docs]
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in split])
    texts = _texts([("", title, s) for (_, title, _), sents in zip(docs, split, strict=True)
                    for s in sents])
    rows = np.empty((len(texts), embedder.dim), dtype=np.float32)
    for start in range(0, len(texts), ENCODE_BATCH):
        chunk = texts[start : start + ENCODE_BATCH]
        rows[start : start + len(chunk)] = embedder.encode(chunk)
    return rows, offsets


def _load_sentences(root: Path, docs: Sequence[tuple[str, str, str]], dim: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The stored sentence vectors, checked against the documents they embed."""
    rows = np.load(root / SENTENCES, allow_pickle=False)
    offsets = np.load(root / SENTENCE_OFFSETS, allow_pickle=False)
    counts = [len(_sentences(text)) for _, _, text in docs]
    if (rows.dtype != np.float32 or rows.ndim != 2 or rows.shape[1] != dim
            or offsets.dtype != np.int64 or offsets.shape != (len(docs) + 1,)
            or offsets[0] != 0 or np.diff(offsets).tolist() != counts
            or offsets[-1] != len(rows)):
        raise ArtifactError(f"documents index {root}: sentence vectors do not fit its "
                            "documents; rebuild it")
    return rows, offsets


def _texts(docs: Sequence[tuple[str, str, str]]) -> list[str]:
    """What is indexed of each document, lexically and semantically: its title and text."""
    return [f"{title}. {text}" if title else text for _, title, text in docs]


def docs_dir(index_dir: Path) -> Path:
    """The documents index inside an index directory (``DIR/docs``), or DIR if it is one."""
    for candidate in (index_dir / "docs", index_dir):
        if (candidate / MANIFEST).exists() and _is_docs(candidate / MANIFEST):
            return candidate
    raise ArtifactError(f"no documents index under {index_dir} (build it with --docs FILE)")


def _is_docs(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _read_manifest(root: Path) -> dict[str, Any]:
    return read_format_manifest(root, FORMAT, "documents index")


def _check_postings(terms: Any, indptr: np.ndarray, docs: np.ndarray, weights: np.ndarray,
                    n_docs: int) -> None:
    """Raise ValueError unless the postings are well formed (a query indexes them freely)."""
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        raise ValueError("terms.json must be a list of strings")
    if indptr.dtype != np.int64 or docs.dtype != np.int32 or weights.dtype != np.float32:
        raise ValueError("bm25.npz arrays have the wrong types")
    if len(indptr) != len(terms) + 1 or len(docs) != len(weights) or (
            len(indptr) and (indptr[0] != 0 or indptr[-1] != len(docs))):
        raise ValueError("bm25.npz arrays disagree in length")
    if bool((np.diff(indptr) < 0).any()) or (
            len(docs) and (int(docs.min()) < 0 or int(docs.max()) >= n_docs)):
        raise ValueError("bm25.npz postings point outside the documents")


def _verify_files(root: Path, manifest: dict[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"documents index {root}: its manifest lists no files")
    for name, digest in files.items():
        path = root / name
        if not path.exists() or sha256_file(path) != digest:
            raise ArtifactError(f"documents index file {path} is missing or corrupt")

