"""Documents behind instant results and grounded summaries: the documents index
(student + FAISS fused with BM25), answer-bearing sentences and the ranking models.

What other packages use is exported here; the rest is private to the package.
"""

from __future__ import annotations

from typeahead.retrieval.answers import CANDIDATE_PASSAGES, SentenceModel, split_sentences
from typeahead.retrieval.documents import (
    STOPWORDS,
    TERM_RE,
    DocsIndex,
    build_docs_index,
    docs_dir,
    load_documents,
)

__all__ = [
    "CANDIDATE_PASSAGES", "STOPWORDS", "TERM_RE", "DocsIndex", "SentenceModel",
    "build_docs_index", "docs_dir", "load_documents", "split_sentences",
]
