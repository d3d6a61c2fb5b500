"""The semantic half of the millisecond tier: student embeddings over FAISS.

An index directory may carry ``vectors/`` (one student vector per served entry, row i = entry
id i) and ``docs/`` (documents for instant results). Both record the fingerprint of the student
that built them; loading them with another student is refused. Only served entries are
embedded, so a semantic neighbour is never below the privacy floor.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from typeahead.errors import ArtifactError

VECTORS_DIR = "vectors"
DOCS_DIR = "docs"
# Tuned on the AOL split (bench/bench_hybrid.py): coverage of typo'd and reordered inputs is
# the same from 0.5 to 0.9, while lower floors show more unrelated neighbours.
MIN_SIMILARITY = 0.85
# Words that carry no topic: entries made only of these ("the", "how to", "www.r") sit close
# to every question in a static embedding and are never offered as semantic neighbours.
_NOISE = frozenset({"www", "com", "org", "net", "http", "https", "html"})
NEIGHBOURS = 20
# IVF lists probed for neighbours. Only neighbours above MIN_SIMILARITY are served, and those
# sit in the lists nearest the query: on held-out AOL prefixes 32 probes find 99.8% of the
# above-floor top-10 that an exact search finds, at a third of the index's general nprobe
# (128, which general top-10 recall needs). See docs/semantic.md.
NEIGHBOUR_NPROBE = 32
# The former floor on the fused score, kept for comparison in bench/bench_answers.py: it let
# "goo" show Amazon rainforest (0.70) and "how to make" the 1973 oil crisis (0.83). Results are
# now shown by the calibrated relevance model (typeahead.retrieval.relevance) instead.
RESULTS_MIN_SCORE = 0.4


@dataclass(frozen=True)
class SemanticLayer:
    student: Any  # typeahead.embed.student.Student
    entries: Any | None  # typeahead.embed.vector.VectorIndex over served entries
    docs: Any | None  # typeahead.retrieval.documents.DocsIndex
    min_similarity: float = MIN_SIMILARITY
    relevance: Any | None = None  # typeahead.retrieval.relevance.ResultModel; None: no floor

    def encode(self, text: str) -> npt.NDArray[np.float32]:
        return np.asarray(self.student.encode([text]), dtype=np.float32)

    def neighbours(self, vector: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        """Served entries closest to ``vector``: (entry id, cosine), best first."""
        if self.entries is None or not vector.any():
            return []
        scores, ids = self.entries.search(vector, k, nprobe=NEIGHBOUR_NPROBE)
        # Filtered as Python numbers: comparing numpy scalars one by one cost twice as much.
        # The floor is rounded to float32 first, as numpy compared the float32 scores to it.
        floor = float(np.float32(self.min_similarity))
        return [(i, s) for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True)
                if i >= 0 and s >= floor]


    def results(self, query: str, k: int, vector: npt.NDArray[np.float32] | None = None,
                per_article: int = 1, fill: bool = False) -> list[dict[str, Any]]:
        """Documents for ``query`` that are likely relevant, scored by that probability, at
        most ``per_article`` per article (0: any number); ``vector`` is the query's embedding
        when already computed."""
        if self.docs is None:
            return []
        return [{"id": r.id, "title": r.title, "snippet": r.snippet, "score": r.score}
                for r in self.docs.instant(query, k, vector=vector, per_article=per_article,
                                           model=self.relevance, fill=fill)
                if self.relevance is not None or r.score >= RESULTS_MIN_SCORE]


def load_semantic(index_dir: Path, entries: int, student_dir: Path | None = None, *,
                  verify: bool = True) -> SemanticLayer | None:
    """The semantic layer of an index, or None when it has neither vectors nor documents."""
    has_vectors = (index_dir / VECTORS_DIR).is_dir()
    has_docs = (index_dir / DOCS_DIR).is_dir()
    if not (has_vectors or has_docs):
        return None
    import faiss

    from typeahead.embed import Student, VectorIndex
    from typeahead.retrieval import DocsIndex

    # The API answers one query at a time per process: OpenMP threads would only spin and
    # fight the other workers for the cores.
    faiss.omp_set_num_threads(1)
    student = Student.load(student_dir)
    try:
        vectors = VectorIndex.load(index_dir / VECTORS_DIR, student, verify=verify) \
            if has_vectors else None
        if vectors is not None and vectors.count != entries:
            raise ArtifactError(f"{index_dir}: {vectors.count} entry vectors for {entries} "
                                "entries; rebuild the index")
        docs = DocsIndex.load(index_dir / DOCS_DIR, student, verify=verify) if has_docs else None
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        # The loaders check what they know; anything else a crafted file trips is still a
        # refused index, never a traceback.
        raise ArtifactError(f"{index_dir}: cannot load the semantic layer: "
                            f"{type(exc).__name__}: {exc}") from exc
    return SemanticLayer(student, vectors, docs,
                         relevance=_result_model(student) if docs is not None else None)


def _result_model(student: Any) -> Any:
    """The packaged relevance model of instant results, or None with another student than
    the one it was trained with (its cosine feature would mean something else): the results
    then fall back to the fused-score floor, with a warning."""
    from typeahead.retrieval import relevance

    model = relevance.load()
    trained = model.manifest.get("student", {}).get("fingerprint")
    if trained != student.fingerprint:
        logging.getLogger("typeahead.semantic").warning(
            "relevance model trained with student %s, not %s: instant results use the fused "
            "floor %.2f (retrain: python -m typeahead.train.ranker)",
            trained, student.fingerprint, RESULTS_MIN_SCORE)
        return None
    return model.results


def build_semantic(out: Path, texts: list[str], *, docs: Path | None, docs_id_field: str | None,
                   student_dir: Path | None, factory: str | None, vectors: bool
                   ) -> dict[str, Any]:
    """Write ``vectors/`` and ``docs/`` into a index being built; returns manifest fields."""
    from typeahead.embed import DEFAULT_FACTORY, Student, build_vector_index
    from typeahead.retrieval import build_docs_index

    student = Student.load(student_dir)
    info: dict[str, Any] = {"student": {"fingerprint": student.fingerprint, "dim": student.dim}}
    if vectors:
        chosen = factory or DEFAULT_FACTORY
        index = build_vector_index(texts, student, out / VECTORS_DIR, chosen)
        info["vectors"] = {"factory": chosen, "count": index.count}
    if docs is not None:
        manifest = build_docs_index(docs, out / DOCS_DIR, student, id_field=docs_id_field)
        info["docs"] = {"source": str(docs), "count": manifest["count"],
                        "source_sha256": manifest["source_sha256"]}
    return info


def has_topic(text: str) -> bool:
    """Whether ``text`` has a word of 3+ characters that is neither a stop word nor URL noise."""
    stopwords, term_re = _topic_words()
    return any(len(w) >= 3 and w not in stopwords and w not in _NOISE
               for w in term_re.findall(text.lower()))


@functools.cache
def _topic_words() -> tuple[frozenset[str], re.Pattern[str]]:
    """The documents index's stop words and word pattern, imported on first use (that module
    loads FAISS) and then kept: an import statement costs a microsecond on every call."""
    from typeahead.retrieval import STOPWORDS, TERM_RE

    return STOPWORDS, TERM_RE
