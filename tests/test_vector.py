from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.student_fixtures import tiny_student
from typeahead.embed.vector import (
    FACTORIES,
    IndexParams,
    VectorIndex,
    build_index,
    build_vector_index,
)
from typeahead.errors import ArtifactError, ConfigError

TEXTS = [
    "the cat sat on the mat",
    "cheap flights paris",
    "cheap flights london",
    "pizza hut",
    "weather forecast london",
    "normandy france",
    "river rhine",
    "oxygen element chemistry",
] * 8  # 64 rows: enough for IVF to train a few lists


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("factory", FACTORIES)
def test_round_trip_each_factory(tmp_path: Path, factory: str) -> None:
    student = tiny_student(tmp_path / "student", dim=16)
    built = build_vector_index(TEXTS, student, tmp_path / "vec", factory)
    loaded = VectorIndex.load(tmp_path / "vec", student)
    assert loaded.count == len(TEXTS) and loaded.dim == 16 and loaded.factory == factory
    query = student.encode(["cheap flights paris"])
    s1, i1 = built.search(query, 5)
    s2, i2 = loaded.search(query, 5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2)
    assert TEXTS[int(i2[0, 0])] == "cheap flights paris"
    assert s2[0, 0] == pytest.approx(1.0, abs=0.02)  # SQ8 rounds the stored vector


def test_manifest_records_student_and_factory(tmp_path: Path) -> None:
    student = tiny_student(tmp_path / "student", dim=16)
    build_vector_index(TEXTS, student, tmp_path / "vec", "hnsw", IndexParams(ef_search=32))
    manifest = json.loads((tmp_path / "vec" / "manifest.json").read_text())
    assert manifest["student_fingerprint"] == student.fingerprint
    assert manifest["faiss_factory"] == "HNSW16,SQ8" and manifest["params"]["ef_search"] == 32
    assert manifest["count"] == len(TEXTS) and manifest["dim"] == 16


def test_other_student_is_refused(tmp_path: Path) -> None:
    student = tiny_student(tmp_path / "a", dim=16, seed=0)
    other = tiny_student(tmp_path / "b", dim=16, seed=1)
    build_vector_index(TEXTS, student, tmp_path / "vec", "flat")
    with pytest.raises(ArtifactError, match="built with student"):
        VectorIndex.load(tmp_path / "vec", other)


def test_corrupt_or_missing_index_is_refused(tmp_path: Path) -> None:
    student = tiny_student(tmp_path / "student", dim=16)
    build_vector_index(TEXTS, student, tmp_path / "vec", "flat")
    with open(tmp_path / "vec" / "index.faiss", "r+b") as fh:
        fh.seek(64)
        fh.write(b"\xff\xff\xff\xff")
    with pytest.raises(ArtifactError, match="corrupt"):
        VectorIndex.load(tmp_path / "vec", student)
    with pytest.raises(ArtifactError, match="missing"):
        VectorIndex.load(tmp_path / "nothing", student)


def test_approximate_factories_find_exact_neighbours() -> None:
    data = _unit(2000, 32)
    queries = data[:50] + 0.05 * _unit(50, 32, seed=1)
    exact = build_index(data, "flat").search(queries, 10)[1]
    for factory in ("hnsw", "ivf"):
        approx = build_index(data, factory, IndexParams(nprobe=32, ef_search=64)).search(
            queries, 10
        )[1]
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
        assert recall > 0.8, factory


def test_bad_factory_and_bad_queries_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="factory"):
        build_index(_unit(10, 4), "lsh")
    index = VectorIndex(build_index(_unit(10, 4), "flat"), {"factory": "flat"})
    with pytest.raises(ConfigError, match="shape"):
        index.search(_unit(1, 5), 3)


@pytest.mark.parametrize("factory", FACTORIES)
def test_reconstruct_returns_stored_rows(tmp_path: Path, factory: str) -> None:
    student = tiny_student(tmp_path / "student", dim=16)
    build_vector_index(TEXTS, student, tmp_path / "vec", factory)
    index = VectorIndex.load(tmp_path / "vec", student)
    rows = index.reconstruct([1, 3])
    np.testing.assert_allclose(rows, student.encode([TEXTS[1], TEXTS[3]]), atol=0.02)
    assert index.reconstruct([]).shape == (0, 16)


@pytest.mark.parametrize("factory", FACTORIES)
def test_exact_rows_only_for_flat_indexes(tmp_path: Path, factory: str) -> None:
    student = tiny_student(tmp_path / "student", dim=16)
    build_vector_index(TEXTS, student, tmp_path / "vec", factory)
    index = VectorIndex.load(tmp_path / "vec", student)
    rows = index.exact_rows()
    if factory != "flat":
        assert rows is None
        return
    assert rows is not None and rows.dtype == np.float32 and rows.flags.c_contiguous
    np.testing.assert_array_equal(rows, index.reconstruct(range(len(TEXTS))))
    scores, ids = index.search(rows[:3], 4)
    np.testing.assert_allclose(scores, np.take_along_axis(rows[:3] @ rows.T, ids, 1), atol=1e-6)


def test_per_call_nprobe_only_changes_ivf_search() -> None:
    data = _unit(2000, 32)
    queries = data[:20]
    ivf = VectorIndex(build_index(data, "ivf", IndexParams(nprobe=1)), {"factory": "ivf"})
    flat = VectorIndex(build_index(data, "flat"), {"factory": "flat"})
    exact = flat.search(queries, 5)[1]
    # Each query is a stored row: one probe always finds it, more probes find the rest too.
    wide = ivf.search(queries, 5, nprobe=64)[1]
    np.testing.assert_array_equal(wide[:, 0], np.arange(20))
    assert np.mean([len(set(w) & set(e)) for w, e in zip(wide, exact, strict=True)]) >= 4.5
    np.testing.assert_array_equal(flat.search(queries, 5, nprobe=1)[1], exact)  # ignored
    # The parameters are built once per nprobe and reused: same answers every time.
    np.testing.assert_array_equal(ivf.search(queries, 5, nprobe=64)[1], wide)
    np.testing.assert_array_equal(ivf.search(queries, 5)[1], ivf.search(queries, 5, nprobe=1)[1])
