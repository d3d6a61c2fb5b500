"""FAISS index types over student embeddings: size, recall@10 against Flat, latency, build time.

    .venv/bin/python bench/bench_vector.py [--student DIR] [--million] [--queries N]

``corpus``: the AOL queries with count_total >= --min-count, embedded by the student; queries are
other AOL queries (below the count floor). ``--million``: the corpus's vectors plus perturbed
copies (Gaussian noise, renormalised) up to 1,000,000 rows, with fewer queries. Search latency
is one query at a time on one thread, as the service calls it. Target: the default factory at
<= 0.5x Flat's bytes per vector with recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typeahead.corpus import read_records
from typeahead.embed.student import Student
from typeahead.embed.vector import IndexParams, build_index

AOL = Path("../shared/data/typeahead/aol2006_q1m_counts.tsv.gz")
CONFIGS: tuple[tuple[str, str, IndexParams], ...] = (
    ("flat", "flat", IndexParams()),
    ("hnsw12,SQ8 ef=256", "hnsw", IndexParams(hnsw_m=12, ef_search=256)),
    ("hnsw12,SQ8 ef=512", "hnsw", IndexParams(hnsw_m=12, ef_search=512)),
    ("hnsw16,SQ8 ef=128", "hnsw", IndexParams(hnsw_m=16, ef_search=128)),
    ("hnsw16,SQ8 ef=256", "hnsw", IndexParams(hnsw_m=16, ef_search=256)),
    ("ivf,SQ8 nprobe=32", "ivf", IndexParams(nprobe=32)),
    ("ivf,SQ8 nprobe=64", "ivf", IndexParams(nprobe=64)),
    ("ivf,SQ8 nprobe=128", "ivf", IndexParams(nprobe=128)),
    ("ivf,SQ8 nprobe=256", "ivf", IndexParams(nprobe=256)),
)
# At 1M rows one HNSW build (efConstruction 80) takes minutes on two cores: build one graph.
MILLION = tuple(c for c in CONFIGS if not c[0].startswith("hnsw12"))


def load_texts(path: Path, min_count: int) -> tuple[list[str], list[str]]:
    corpus: list[str] = []
    rest: list[str] = []
    for _, rec in read_records(path):
        (corpus if int(rec["count_total"]) >= min_count else rest).append(str(rec["query"]))
    return corpus, rest


def perturbed(base: np.ndarray, total: int, noise: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = np.empty((total, base.shape[1]), dtype=np.float32)
    out[: len(base)] = base
    for start in range(len(base), total, 100_000):
        n = min(100_000, total - start)
        rows = base[rng.integers(0, len(base), n)]
        rows = rows + noise * rng.standard_normal(rows.shape).astype(np.float32) / np.sqrt(
            base.shape[1]
        )
        out[start : start + n] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def measure(
    name: str,
    factory: str,
    params: IndexParams,
    data: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    built: dict[tuple[str, int], tuple[Any, float]],
) -> list[Any]:
    key = (factory, params.hnsw_m)
    if key not in built:
        faiss.omp_set_num_threads(2)
        start = time.perf_counter()
        built[key] = (build_index(data, factory, params), time.perf_counter() - start)
    index, build_s = built[key]
    inner = faiss.downcast_index(index)
    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = params.ef_search
    if hasattr(inner, "nprobe"):
        inner.nprobe = params.nprobe
    faiss.omp_set_num_threads(1)
    lat = np.empty(len(queries))
    found = np.empty((len(queries), 10), dtype=np.int64)
    for i in range(len(queries)):
        start = time.perf_counter_ns()
        found[i] = index.search(queries[i : i + 1], 10)[1][0]
        lat[i] = (time.perf_counter_ns() - start) / 1000.0
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    size = len(faiss.serialize_index(index)) / len(data)
    return [name, size, recall, np.percentile(lat, 50), np.percentile(lat, 99), build_s]


def run(
    label: str,
    data: np.ndarray,
    queries: np.ndarray,
    configs: tuple[tuple[str, str, IndexParams], ...] = CONFIGS,
) -> None:
    faiss.omp_set_num_threads(2)
    flat = build_index(data, "flat")
    truth = flat.search(queries, 10)[1]
    built: dict[tuple[str, int], tuple[Any, float]] = {}
    rows = [measure(n, f, p, data, queries, truth, built) for n, f, p in configs]
    flat_bytes = float(rows[0][1])
    print(f"\n{label}: {len(data):,} vectors x {data.shape[1]} dims, {len(queries)} queries")
    head = ("index", "B/vector", "x Flat", "recall@10", "p50 us", "p99 us", "build s")
    print(f"{head[0]:22} " + " ".join(f"{h:>9}" for h in head[1:]))
    for name, size, recall, p50, p99, build_s in rows:
        cells = (size, size / flat_bytes, recall, p50, p99, build_s)
        digits = (0, 2, 4, 0, 0, 1)
        print(f"{name:22} " + " ".join(f"{c:9.{d}f}" for c, d in zip(cells, digits, strict=True)))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--student", type=Path, default=None)
    ap.add_argument("--aol", type=Path, default=AOL)
    ap.add_argument("--min-count", type=int, default=3)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--million", action="store_true", help="also run at 1M perturbed vectors")
    ap.add_argument("--million-queries", type=int, default=200)
    args = ap.parse_args()
    student = Student.load(args.student)
    corpus, rest = load_texts(args.aol, args.min_count)
    rng = np.random.default_rng(2)
    query_texts = [rest[i] for i in rng.choice(len(rest), size=args.queries, replace=False)]
    data = student.encode(corpus)
    data = data[np.linalg.norm(data, axis=1) > 0]
    queries = student.encode(query_texts)
    queries = queries[np.linalg.norm(queries, axis=1) > 0]
    run(f"corpus (AOL queries, count >= {args.min_count})", data, queries)
    if args.million:
        every = student.encode(corpus + rest)
        every = every[np.linalg.norm(every, axis=1) > 0]
        run(
            "1M (AOL queries + perturbed copies)",
            perturbed(every, 1_000_000),
            queries[: args.million_queries],
            MILLION,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
