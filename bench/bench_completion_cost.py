"""In-process cost of the completion ranker on a cache-missing keystroke (rough: a shared
machine's scheduler noise is cut by keeping the least of 3 passes per keystroke).

Keystrokes are prefixes of held-out AOL queries (rows 800,001+) where the in-order matches leave
a slot, the keystrokes where generated completions are asked for and the ranker orders them.
Before each pass the generator's, the policy verdicts' and the lexical tiers' caches are
cleared. Reported: the whole ``suggest`` without generation, with the fixed order and with
the ranker, their per-keystroke differences, and the ranker's own step (features and score).
With ``--lm FILE``, also the fixed order with the character language model generator in place
of the n-gram one (``typeahead train-lm``).

    python bench/bench_completion_cost.py --index DIR [--keystrokes 20000] [--lm FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AOL, summary_us
from typeahead.corpus import read_rows
from typeahead.normalize import normalize
from typeahead.safety.policy import SuggestionPolicy
from typeahead.suggest import load_index
from typeahead.suggest.charlm import with_char_lm
from typeahead.suggest.ranker import load_ranker
from typeahead.suggest.service import SuggestService, leaves_a_slot

K = 10


def keystrokes(index_lexical: object, n: int) -> list[str]:
    rows = [r for r in read_rows(AOL, text_col="query", weight_col="count_rows_800001_999999")
            if r.weight > 0]
    out: list[str] = []
    for row in rows[::7]:
        query = normalize(row.text)
        for end in range(2, len(query) + 1):
            found = index_lexical.suggest(query[:end], K)  # type: ignore[attr-defined]
            if leaves_a_slot(found, K):
                out.append(query[:end])
        if len(out) >= n:
            break
    return out[:n]


def timed(service: SuggestService, query: str) -> int:
    best = None
    for _ in range(3):
        service.index.lexical.clear_caches()
        if service.index.generator is not None:
            service.index.generator.clear_caches()
        service._text_blocked.cache_clear()  # type: ignore[attr-defined]
        start = time.perf_counter_ns()
        service.suggest(query, K)
        took = time.perf_counter_ns() - start
        best = took if best is None else min(best, took)
    assert best is not None
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--keystrokes", type=int, default=20_000)
    ap.add_argument("--lm", type=Path, default=None, help="a character language model too")
    args = ap.parse_args()
    index = load_index(args.index)
    ranker = load_ranker(None, index.manifest["normalization"])
    policy = SuggestionPolicy.load(())
    plain = SuggestService(index=index, results_k=0, policy=policy, generated=False)
    fixed = SuggestService(index=index, results_k=0, policy=policy)
    ranked = SuggestService(index=index, results_k=0, policy=policy, ranker=ranker)
    lm = SuggestService(index=with_char_lm(index, args.lm), results_k=0, policy=policy) \
        if args.lm else None
    typed = keystrokes(index.lexical, args.keystrokes)
    for service in (plain, fixed, ranked, *([lm] if lm else [])):
        service.warm()
    none, a, b, own, c = [], [], [], [], []
    for query in typed:
        none.append(timed(plain, query))
        a.append(timed(fixed, query))
        b.append(timed(ranked, query))
        if lm is not None:
            c.append(timed(lm, query))
        key = index.lexical.key(query)
        candidates = ranked.candidates(key, query, index.lexical.suggest(query, K))
        start = time.perf_counter_ns()
        assert ranker is not None
        ranker.order(key, candidates)
        own.append(time.perf_counter_ns() - start)
    print(f"{len(typed)} keystrokes where the in-order matches leave a slot")
    rows = [("suggest, no generation", none), ("suggest, fixed order", a),
            ("suggest, ranked", b), ("ranker step (features + score)", own)]
    for name, values in rows + ([("suggest, character LM, fixed", c)] if c else []):
        s = summary_us(values)
        print(f"{name:>32}: p50 {s['p50']:.1f} us, p99 {s['p99']:.1f} us, mean {s['mean']:.1f} us")
    for name, high, low in (("ranked - fixed", b, a), ("fixed - no generation", a, none),
                            ("ranked - no generation", b, none),
                            *([("character LM - no generation", c, none)] if c else [])):
        diff = np.array(high) - np.array(low)
        print(f"{name + ', per keystroke':>32}: p50 {np.percentile(diff, 50) / 1000:.1f} us, "
              f"p99 {np.percentile(diff, 99) / 1000:.1f} us, mean {diff.mean() / 1000:.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
