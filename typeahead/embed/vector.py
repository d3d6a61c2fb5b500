"""FAISS vector index over student embeddings (inner product on unit vectors = cosine).

A vector index directory holds ``index.faiss`` and ``manifest.json``. The manifest records
the factory, its parameters, the dimension, the row count and the fingerprint of the student
that embedded the rows: ``VectorIndex.load`` refuses another student, because its vectors live
in a different space and every neighbour would be silently wrong.

Factories (``FACTORIES``): ``flat`` (exact), ``hnsw`` (HNSW graph over 8-bit scalar-quantised
vectors) and ``ivf`` (inverted lists over 8-bit scalar-quantised vectors).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from typeahead.embed.embedder import Embedder
from typeahead.embed.student import Student
from typeahead.errors import ArtifactError, ConfigError
from typeahead.manifest import read_format_manifest, sha256_file

__all__ = [
    "DEFAULT_FACTORY",
    "FACTORIES",
    "FORMAT",
    "IndexParams",
    "VectorIndex",
    "build_index",
    "build_vector_index",
]

FORMAT = "typeahead-vectors/1"
FACTORIES = ("flat", "hnsw", "ivf")
# Chosen from bench/bench_vector.py: IVF over 8-bit vectors keeps recall@10 >= 0.95 against
# Flat at 0.29x its bytes; HNSW's graph links alone cost more than half of Flat at 128 dims.
DEFAULT_FACTORY = "ivf"
INDEX_FILE = "index.faiss"
MANIFEST = "manifest.json"
ENCODE_BATCH = 65_536


@dataclass(frozen=True)
class IndexParams:
    """Build and search parameters; the search ones are stored and re-applied on load."""

    hnsw_m: int = 16
    ef_construction: int = 80
    ef_search: int = 64
    nlist: int = 0  # 0: about 4 * sqrt(n), capped so each list trains on >= 39 points
    nprobe: int = 128


class VectorIndex:
    """A loaded FAISS index and its manifest."""

    def __init__(self, index: Any, manifest: Mapping[str, Any]) -> None:
        self._index = index
        self.manifest = dict(manifest)
        self.dim = int(index.d)
        self.count = int(index.ntotal)
        self.factory = str(manifest.get("factory", ""))
        self._ivf = hasattr(faiss.downcast_index(index), "nprobe")
        self._nprobe_params: dict[int, Any] = {}

    @classmethod
    def load(
        cls, path: Path, student: Embedder | None = None, *, verify: bool = True
    ) -> VectorIndex:
        """Load ``path``; with a student, refuse an index built by a different one."""
        manifest = _read_manifest(path)
        if student is not None:
            check_student(manifest, student, path)
        file = path / INDEX_FILE
        if not file.is_file():
            raise ArtifactError(f"vector index {path}: {INDEX_FILE} is missing")
        files = manifest.get("files")
        recorded = files.get(INDEX_FILE) if isinstance(files, dict) else None
        if verify and sha256_file(file) != recorded:
            raise ArtifactError(f"vector index {file} is corrupt: checksum differs from manifest")
        try:
            index = faiss.read_index(str(file))
        except RuntimeError as exc:
            raise ArtifactError(f"vector index {file} is unreadable: {_first_line(exc)}") from exc
        if index.d != manifest.get("dim") or index.ntotal != manifest.get("count"):
            raise ArtifactError(f"vector index {path} does not match its manifest (dim/count)")
        _apply_search_params(index, _params(manifest, path))
        inner = faiss.downcast_index(index)
        if hasattr(inner, "make_direct_map"):
            inner.make_direct_map()  # lets IVF reconstruct rows (fusion scores lexical hits)
        return cls(index, manifest)

    def search(self, vectors: np.ndarray, k: int, *, nprobe: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids) per query row; missing neighbours have id -1.

        ``nprobe`` overrides the stored one for this call (IVF only): a caller that keeps only
        close neighbours finds them in the few nearest lists."""
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ConfigError(f"query vectors must have shape (n, {self.dim}), got {queries.shape}")
        k = max(1, min(k, self.count)) if self.count else 1
        params = self._search_params(nprobe) if nprobe is not None and self._ivf else None
        scores, ids = self._index.search(queries, k, params=params)
        return scores, ids

    def _search_params(self, nprobe: int) -> Any:
        """The IVF search parameters for ``nprobe``, built once: creating and filling the SWIG
        object on every call cost several microseconds of a keystroke. FAISS only reads it, so
        concurrent searches may share it."""
        params = self._nprobe_params.get(nprobe)
        if params is None:
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe
            self._nprobe_params[nprobe] = params
        return params

    def exact_rows(self) -> np.ndarray | None:
        """Every stored vector as one contiguous (count, dim) float32 matrix when the index is
        exact (flat, inner product), else None: its product with a query gives the cosines a
        search would (to float32 rounding), so a small corpus can be scored whole with one
        mat-vec. Quantised or graph indexes return None: their search scores differ from it."""
        inner = faiss.downcast_index(self._index)
        exact = isinstance(inner, faiss.IndexFlat)
        if not exact or inner.metric_type != faiss.METRIC_INNER_PRODUCT:
            return None
        if not self.count:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(inner.reconstruct_n(0, self.count), dtype=np.float32)

    def reconstruct(self, ids: Sequence[int]) -> np.ndarray:
        """The stored (possibly quantised) vectors of rows ``ids``, shape (len(ids), dim)."""
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = np.asarray(ids, dtype=np.int64)
        return np.asarray(self._index.reconstruct_batch(keys), dtype=np.float32)

    def save(self, path: Path) -> None:
        write_index(self._index, path, self.manifest)


# --- building -------------------------------------------------------------------------------


def build_index(
    vectors: np.ndarray, factory: str = DEFAULT_FACTORY, params: IndexParams | None = None
) -> Any:
    """A trained, filled FAISS index over unit ``vectors`` (n, dim) float32."""
    params = params or IndexParams()
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    if data.ndim != 2 or len(data) == 0:
        raise ConfigError(f"need a non-empty (n, dim) array of vectors, got shape {data.shape}")
    spec = faiss_factory(factory, len(data), params)
    index = faiss.index_factory(data.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
    if factory == "hnsw":
        hnsw: Any = faiss.downcast_index(index)
        hnsw.hnsw.efConstruction = params.ef_construction
    if not index.is_trained:
        index.train(_training_sample(data))
    index.add(data)
    _apply_search_params(index, params)
    return index


def faiss_factory(factory: str, n: int, params: IndexParams) -> str:
    """The FAISS factory string for one of ``FACTORIES``."""
    if factory == "flat":
        return "Flat"
    if factory == "hnsw":
        return f"HNSW{params.hnsw_m},SQ8"
    if factory == "ivf":
        return f"IVF{ivf_lists(n, params.nlist)},SQ8"
    raise ConfigError(f"unknown vector index factory {factory!r}; expected one of {FACTORIES}")


def ivf_lists(n: int, requested: int = 0) -> int:
    wanted = requested or int(4 * math.sqrt(n))
    return max(1, min(wanted, n // 39))


def build_vector_index(
    texts: Sequence[str],
    student: Student,
    out_dir: Path,
    factory: str = DEFAULT_FACTORY,
    params: IndexParams | None = None,
    extra: Mapping[str, Any] | None = None,
) -> VectorIndex:
    """Embed ``texts`` with the student, index them (row i = texts[i]) and write ``out_dir``."""
    params = params or IndexParams()
    vectors = np.empty((len(texts), student.dim), dtype=np.float32)
    for start in range(0, len(texts), ENCODE_BATCH):
        chunk = texts[start : start + ENCODE_BATCH]
        vectors[start : start + len(chunk)] = student.encode(chunk)
    index = build_index(vectors, factory, params)
    manifest = {
        "format": FORMAT,
        "factory": factory,
        "faiss_factory": faiss_factory(factory, len(vectors), params),
        "params": asdict(params),
        "metric": "inner_product",
        "dim": student.dim,
        "count": len(vectors),
        "student_fingerprint": student.fingerprint,
        "student_teacher": student.manifest.get("teacher", {}).get("name"),
        **dict(extra or {}),
    }
    write_index(index, out_dir, manifest)
    return VectorIndex(index, _read_manifest(out_dir))


def write_index(index: Any, out_dir: Path, manifest: Mapping[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    file = out_dir / INDEX_FILE
    faiss.write_index(index, str(file))
    full = {**manifest, "files": {INDEX_FILE: sha256_file(file)}, "bytes": file.stat().st_size}
    (out_dir / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")


def check_student(manifest: Mapping[str, Any], student: Embedder, where: Path) -> None:
    """Refuse an artefact embedded by another student (different vector space)."""
    built = manifest.get("student_fingerprint")
    if built != student.fingerprint or manifest.get("dim") not in (None, student.dim):
        raise ArtifactError(
            f"{where} was built with student {built}, but the loaded student is "
            f"{student.fingerprint}; rebuild the index or load the student it was built with"
        )


def _training_sample(data: np.ndarray, limit: int = 100_000) -> np.ndarray:
    if len(data) <= limit:
        return data
    rng = np.random.default_rng(0)
    return data[np.sort(rng.choice(len(data), size=limit, replace=False))]


def _apply_search_params(index: Any, params: IndexParams) -> None:
    inner = faiss.downcast_index(index)
    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = params.ef_search
    if hasattr(inner, "nprobe"):
        inner.nprobe = params.nprobe


def _params(manifest: Mapping[str, Any], path: Path) -> IndexParams:
    raw = manifest.get("params", {})
    try:
        params = IndexParams(**raw)
    except TypeError as exc:
        raise ArtifactError(f"vector index {path}: bad search parameters in its manifest") \
            from exc
    if not all(type(v) is int and v >= 0 for v in asdict(params).values()):
        raise ArtifactError(f"vector index {path}: search parameters must be whole numbers")
    return params


def _read_manifest(path: Path) -> dict[str, Any]:
    return read_format_manifest(path, FORMAT, "vector index")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__

