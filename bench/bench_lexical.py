"""In-process latency of the lexical engine (top-10), by index size and query kind.

Workload: prefixes (2..8 characters) of held-out AOL queries (rows 800,001+), plus
multi-word prefixes with the words reordered, and prefixes whose last word carries one typo.
Indexes: AOL count >= 3 (about 20k entries), all 365k AOL queries, and a synthetic 5M-entry
index made by pairing AOL queries with suffix words (cached under indexes/synth-5m).

    python bench/bench_lexical.py [--quick] [--no-5m] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AOL, ROOT, print_table, summary_us
from typeahead.corpus import Row, read_rows
from typeahead.normalize import normalize
from typeahead.suggest.index import BuildOptions, LoadedIndex, build_index, load_index


def held_out(n: int, seed: int = 7) -> list[str]:
    rows = [normalize(r.text) for r in read_rows(AOL, text_col="query",
                                                 weight_col="count_rows_800001_999999")
            if r.weight > 0]
    random.Random(seed).shuffle(rows)
    return [q for q in rows if q][:n]


def workloads(queries: list[str], seed: int = 11) -> dict[str, list[str]]:
    rng = random.Random(seed)
    prefixes = [q[:n] for q in queries for n in range(2, 9) if len(q) > n]
    multi = []
    for q in queries:
        words = q.split()
        if len(words) >= 2:
            words[0], words[1] = words[1], words[0]
            cut = " ".join(words)
            multi.append(cut[: max(len(words[0]) + 2, min(len(cut), rng.randint(6, 14)))])
    typo = []
    for q in queries:
        last = q.split()[-1] if q.split() else ""
        if len(last) >= 5:
            i = rng.randrange(1, len(last) - 1)
            bad = last[:i] + last[i + 1] + last[i] + last[i + 2:]  # transposition
            typo.append(q[: len(q) - len(last)] + bad)
    rng.shuffle(prefixes)
    return {"prefix 2-8 (prefix tier)": prefixes, "prefix 2-8": prefixes,
            "multi-word reordered": multi, "typo last word": typo}


def measure(index: LoadedIndex, queries: list[str], k: int = 10, *, fallback: bool = True
            ) -> dict[str, float]:
    """Wall-clock and thread-CPU percentiles: on a shared machine the wall clock also counts
    time the process spent descheduled, the CPU clock only the engine's own work."""
    engine = index.lexical
    for q in queries:  # warm: map every page the workload touches, as a long-running server has
        engine.suggest(q, k, fallback=fallback)
    # ... but not its memory of these very queries' corrections and pools: measure the tiers.
    engine.clear_caches()
    wall, cpu = [], []
    wclock, cclock = time.perf_counter_ns, time.thread_time_ns
    for q in queries:
        w0, c0 = wclock(), cclock()
        engine.suggest(q, k, fallback=fallback)
        cpu.append(cclock() - c0)
        wall.append(wclock() - w0)
    cpu_s = summary_us(cpu)
    return {**summary_us(wall), **{f"cpu_{k}": v for k, v in cpu_s.items() if k != "n"}}


def ensure_index(name: str, rows: Iterator[Row], min_count: float) -> Path:
    out = ROOT / "indexes" / name
    if not (out / "manifest.json").exists():
        print(f"building {out} ...", file=sys.stderr)
        build_index(rows, out, BuildOptions("query", "count_total", min_count, vectors=False), AOL)
    return out


def synthetic_rows(target: int, seed: int = 3) -> Iterator[Row]:
    """AOL queries, then AOL queries + one or two AOL words, until ``target`` distinct keys."""
    base = [(r.text, r.weight) for r in read_rows(AOL, text_col="query", weight_col="count_total")]
    words = sorted({w for q, _ in base[:50_000] for w in q.split()})
    rng = random.Random(seed)
    seen: set[str] = set()
    line = 0
    while len(seen) < target:
        q, w = base[rng.randrange(len(base))]
        if line >= len(base):
            q = f"{q} {rng.choice(words)}" if rng.random() < 0.7 else \
                f"{q} {rng.choice(words)} {rng.choice(words)}"
            w = max(3.0, w / rng.randint(2, 50))
        line += 1
        if q in seen:
            continue
        seen.add(q)
        yield Row(text=q, weight=float(w), line=line, record={})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer queries")
    ap.add_argument("--no-5m", action="store_true", help="skip the synthetic 5M index")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    queries = held_out(3000 if args.quick else 20_000)
    loads = workloads(queries)
    indexes = {
        "AOL count>=3": ensure_index("aol", read_rows(AOL, text_col="query",
                                                       weight_col="count_total"), 3),
        "AOL all (365k)": ensure_index("aol-all", read_rows(AOL, text_col="query",
                                                             weight_col="count_total"), 1),
    }
    if not args.no_5m:
        indexes["synthetic 5M"] = ensure_index("synth-5m", synthetic_rows(5_000_000), 1)
    rows, report = [], {}
    for name, path in indexes.items():
        index = load_index(path, verify=False, semantic=False)
        gc.collect()
        gc.freeze()  # as the server does after loading: long-lived objects skip GC scans
        for kind, qs in loads.items():
            s = measure(index, qs, fallback="tier" not in kind)
            report[f"{name} / {kind}"] = {**s, "entries": index.entries,
                                          "load_s": index.load_seconds}
            rows.append([name, f"{index.entries:,}", kind, s["n"], s["p50"], s["p99"],
                         s["p99.9"], s["cpu_p50"], s["cpu_p99"], s["cpu_p99.9"],
                         round(index.load_seconds, 3)])
    print_table("in-process top-10 latency (microseconds; wall clock, then thread CPU time)",
                ["index", "entries", "queries", "n", "p50", "p99", "p99.9", "cpu p50",
                 "cpu p99", "cpu p99.9", "load s"], rows)
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
