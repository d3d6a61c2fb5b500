"""Single-query encode latency: the static student vs the teacher sentence-transformer.

    .venv/bin/python bench/bench_student.py [--student DIR] [--queries N] [--teacher-queries N]

Queries are distinct AOL queries, encoded one at a time as the service does per keystroke. The
student's per-word token cache warms as it would in serving; ``cold`` clears it before every
query (the worst case: every word is new). Target: student p50 >= 300x faster than the
teacher's, student p99 <= 50 us. Needs the 'train' extra for the teacher column.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typeahead.corpus import read_records
from typeahead.embed.student import Student

AOL = Path("../shared/data/typeahead/aol2006_q1m_counts.tsv.gz")


def timings_us(
    fn: Callable[[str], object], texts: Sequence[str], before: Callable[[], None] | None = None
) -> np.ndarray:
    out = np.empty(len(texts))
    gc.disable()
    try:
        for i, text in enumerate(texts):
            if before is not None:
                before()
            start = time.perf_counter_ns()
            fn(text)
            out[i] = (time.perf_counter_ns() - start) / 1000.0
    finally:
        gc.enable()
    return out


def row(name: str, us: np.ndarray) -> tuple[str, float, float, float]:
    return name, float(np.percentile(us, 50)), float(np.percentile(us, 99)), float(us.mean())


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--student", type=Path, default=None)
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--teacher-queries", type=int, default=300)
    ap.add_argument("--aol", type=Path, default=AOL)
    args = ap.parse_args()
    queries = [
        str(r["query"]) for _, (_, r) in zip(range(200_000), read_records(args.aol), strict=False)
    ]
    rng = np.random.default_rng(1)
    texts = [queries[i] for i in rng.choice(len(queries), size=args.queries, replace=False)]
    student = Student.load(args.student)
    student.encode(texts[:1000])  # warm numpy and the tokenizer (not the measured queries' words)
    rows = [row("student (warm word cache)", timings_us(lambda t: student.encode([t]), texts))]
    rows.append(
        row(
            "student (cold: cache cleared)",
            timings_us(lambda t: student.encode([t]), texts[:5000], before=student._words.clear),
        )
    )
    teacher_p50 = None
    try:
        from typeahead.train.distill import load_teacher

        teacher = load_teacher()
        teacher.encode(texts[:16])
        subset = texts[: args.teacher_queries]
        t_us = timings_us(lambda t: teacher.encode([t], show_progress_bar=False), subset)
        rows.append(
            row(f"teacher (torch, {os.environ.get('OMP_NUM_THREADS', 'default')} threads)", t_us)
        )
        teacher_p50 = rows[-1][1]
    except Exception as exc:  # the teacher column is optional: no 'train' extra, no column
        print(f"teacher skipped: {exc}", file=sys.stderr)
    print(f"{'model':34} {'p50 us':>10} {'p99 us':>10} {'mean us':>10} {'p50 speed-up':>13}")
    for name, p50, p99, mean in rows:
        ratio = f"{teacher_p50 / p50:.0f}x" if teacher_p50 else "-"
        print(f"{name:34} {p50:10.1f} {p99:10.1f} {mean:10.1f} {ratio:>13}")
    print(
        f"student: dim {student.dim}, vocab {student.vocab_size}, {len(texts)} distinct AOL queries"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
