"""The documents a summary is grounded on: the same index and code as instant results.

A job's grounding is the documents index's fused search (``typeahead.retrieval.DocsIndex``:
student + FAISS fused with BM25, the search behind instant results), whole passages rather
than snippets, its best ``CANDIDATE_PASSAGES`` re-ranked by their answer-bearing sentences
(``typeahead.retrieval.answers``). Where the index comes from:

- an API process grounds inline jobs on the index it serves instant results from
  (``ServedDocs``, which follows reloads), so that it holds one copy;
- a worker loads ``DIR/docs`` of its index directory, or builds an index in memory from an
  explicit ``--docs FILE`` (any format ``typeahead.corpus`` reads);
- without documents, summaries say there is nothing to summarise.

A documents index that does not load (corrupt, or built by another student) is refused with
its ``ArtifactError``; nothing falls back to another retrieval in silence.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from typeahead.embed import Embedder
from typeahead.generation.extractive import load_embedder
from typeahead.generation.prompt import Doc
from typeahead.retrieval import (
    CANDIDATE_PASSAGES,
    DocsIndex,
    SentenceModel,
    answers,
    docs_dir,
    load_documents,
)

__all__ = ["Grounding", "Retriever", "ServedDocs", "ground", "load_retriever"]

log = logging.getLogger("typeahead.worker")


class Retriever(Protocol):
    """Grounding documents for a query, best first."""

    def search(self, query: str, k: int) -> Sequence[Doc]: ...


class Grounding:
    """The k passages of a documents index that best answer a query (none without an index)."""

    def __init__(self, index: DocsIndex | None) -> None:
        self.index = index

    def search(self, query: str, k: int) -> list[Doc]:
        if self.index is None:
            return []
        found = [Doc(doc_id, title, text, float(score)) for doc_id, title, text, score
                 in self.index.passages(query, max(k, CANDIDATE_PASSAGES))]
        return ground(query, found, self.index.student, k)


class ServedDocs:
    """Grounding from the documents index an API process already serves instant results from
    (whichever is current, across reloads); ``fallback`` (built on first need) when the
    served index has none."""

    def __init__(self, served: Callable[[], DocsIndex | None],
                 fallback: Callable[[], Retriever]) -> None:
        self.served = served
        self._make_fallback = fallback
        self._fallback: Retriever | None = None

    def search(self, query: str, k: int) -> Sequence[Doc]:
        index = self.served()
        if index is not None:
            return Grounding(index).search(query, k)
        if self._fallback is None:
            self._fallback = self._make_fallback()
        return self._fallback.search(query, k)


@functools.cache
def _sentence_model() -> SentenceModel:
    from typeahead.retrieval import relevance

    return relevance.load().sentences


def ground(query: str, candidates: Sequence[Doc], embedder: Embedder | None, k: int
           ) -> list[Doc]:
    """The k candidates that best answer ``query``, best first: a few milliseconds of CPU,
    inside the ~100 ms a job may spend before its first token."""
    return answers.rerank(query, candidates, embedder, _sentence_model(), k)


def load_retriever(
    index_dir: Path | None, docs_file: Path | None, embedder: Embedder | None = None,
) -> Grounding:
    """Grounding on ``docs_file`` (indexed in memory), else on the index directory's
    documents index. ``embedder``: None loads the student, only when there are documents."""
    if docs_file is not None:
        return Grounding(DocsIndex.in_memory(load_documents(docs_file),
                                             embedder or load_embedder()))
    if index_dir is not None and (index_dir / "docs").is_dir():
        return Grounding(DocsIndex.load(docs_dir(index_dir), embedder or load_embedder()))
    log.warning("no grounding documents found; summaries will say so")
    return Grounding(None)
