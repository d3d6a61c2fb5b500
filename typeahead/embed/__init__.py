"""The embedder protocol, the static student embedder and the FAISS vector index over its vectors.

What other packages use is exported here; the rest is private to the package.
"""

from __future__ import annotations

from typeahead.embed.embedder import Embedder
from typeahead.embed.student import Student, save_student
from typeahead.embed.vector import (
    DEFAULT_FACTORY,
    ENCODE_BATCH,
    IndexParams,
    VectorIndex,
    build_index,
    build_vector_index,
    check_student,
)

__all__ = [
    "DEFAULT_FACTORY", "ENCODE_BATCH", "Embedder", "IndexParams", "Student", "VectorIndex",
    "build_index", "build_vector_index", "check_student", "save_student",
]
