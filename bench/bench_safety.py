"""Suggestion safety: what the box suggests from the evaluation lists, the filter against
profanity libraries, and the serve-time cost of the curation overlay.

    .venv/bin/python bench/bench_safety.py [--index indexes/aol] [--prefixes 3000]
        [--repeats 12] [--tables suggested,filters,overlay]

Lists: ``bench/safety`` (README there): ``must_block.tsv`` / ``must_keep.tsv`` are the
development lists the policy was written against; ``heldout_block.tsv`` /
``heldout_keep.tsv`` were not read while writing it (held-out).

Tables:
(a) suggested, on the built index through ``SuggestService.suggest`` in process (k=10, as
    served: semantic neighbours, the policy, no curation rules). A must-block entry counts as
    suggested when its normalised text is among the suggestions for any of its prefixes
    (lengths 1..len). A must-keep entry counts as still suggested when its normalised text is
    among the 10 suggestions for its own full text. Held-out entries are queries asked twice
    (``count_total == 2``), which the served index (``count_total >= 3``) never holds: their
    rows show that no other path (fuzzy, semantic) brings them back, not the policy's recall.
(b) the filter as a classifier of block (positive) against keep (negative): precision,
    recall and F1 per split, for this project's policy, each profanity library installed (the
    ``bench`` extra: alt-profanity-check, better-profanity and its Rust-backed twins, and
    profanex), and the policy joined with each library (blocked when either blocks); per-call
    cost in µs over all list texts (one text per call, as a keystroke check would call it).
    A library that is not installed is skipped with a note.
(c) curation overlay cost: ``SuggestService.suggest`` (the answer computed afresh, so the LRU
    answer cache is bypassed) under a realistic rule set (20 block_text, 10 block_word,
    5 block_pattern, 10 pin, 10 add), over distinct 2-8 character prefixes of held-out AOL
    queries (rows 800,001+), two services interleaved per prefix, each prefix's time the best
    of ``--repeats``; lexical only and as served (semantic layer and instant results on).
    Twelve passes by default: with four, two identical services differed by 13-17 µs at the
    per-prefix p99 (lexical only), with twelve by 2-4 µs.
    Rows: the overlay's cost proper (its calls timed inside each keystroke: the refilled range
    look-up, counting what was removed, pins and additions), the blocks applied at serve time
    against an index built
    without the entries they block (the same answers, so the difference is what the overlay
    adds); the pins and adds (no build-time equivalent); all rules against none (the rules
    change answers: a blocked popular word sends its prefixes to the slower tiers); and a
    control of two services without rules (the measurement's noise).
(b) also has a row for the policy with its text model (``SuggestionPolicy.screened``, what
    ``build-index`` screens the dictionary with; ``typeahead/safety/model.py``, trained on the
    development lists and the AOL queries asked once or 3+ times, never on those asked twice).
(d) ``SuggestionPolicy.blocked`` per call: on those prefixes (each keystroke's explicit-input
    check) and on the index's entries, on first sight and again; the text model's score alone,
    and ``screened`` (lists and model: the build's screening) on the index's entries.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AOL, ROOT, percentile, print_table
from typeahead.corpus import read_rows
from typeahead.normalize import normalize
from typeahead.safety.policy import SuggestionPolicy
from typeahead.safety.rules import Overlay, Removals, RuleSet, parse_rule
from typeahead.settings import Settings
from typeahead.suggest.index import BuildOptions, LoadedIndex, build_index, load_index
from typeahead.suggest.lexical import Blocked
from typeahead.suggest.service import SuggestService

LISTS = ROOT / "bench" / "safety"
HELD_OUT = "count_rows_800001_999999"
SPLITS = (("dev", "must_block", "must_keep"), ("held-out", "heldout_block", "heldout_keep"))
K = 10
TABLES = ("filters", "suggested", "overlay", "policy")
Classifier = Callable[[str], bool]


def read_list(name: str) -> list[tuple[str, str]]:
    with (LISTS / f"{name}.tsv").open(encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, delimiter="\t")
        next(rows)
        return [(row[0], row[1]) for row in rows if row]


def header(title: str) -> str:
    day = datetime.date.today().isoformat()
    command = "python " + " ".join(sys.argv)
    return f"{title} [{day}, {os.cpu_count()} cores, `{command}`]"


# --- (a) suggested on the built index ----------------------------------------------------------


def shown(service: SuggestService, text: str) -> set[str]:
    return {normalize(s["text"]) for s in service.suggest(text, K)["suggestions"]}


def suggested_on_prefixes(service: SuggestService, text: str) -> bool:
    key = normalize(text)
    return any(key in shown(service, text[:n]) for n in range(1, len(text) + 1))


def in_index(index: LoadedIndex) -> set[str]:
    data = index.lexical.data
    return set(data.keys.many(list(range(len(index.lexical)))))


def table_suggested(service: SuggestService, held: set[str]) -> None:
    rows: list[list[object]] = []
    for split, block, keep in SPLITS:
        entries = [text for text, _ in read_list(block)]
        hits = sum(suggested_on_prefixes(service, text) for text in entries)
        indexed = sum(normalize(text) in held for text in entries)
        rows.append([split, f"{block} (on any prefix)", len(entries), indexed, hits,
                     hits / len(entries)])
        kept = [text for text, _ in read_list(keep)]
        indexed = sum(normalize(text) in held for text in kept)
        hits = sum(normalize(text) in shown(service, text) for text in kept)
        rows.append([split, f"{keep} (for its full text)", len(kept), indexed, hits,
                     hits / len(kept)])
    print_table(header(f"(a) evaluation entries suggested (k={K}, in process, as served)"),
                ["split", "list", "entries", "in index", "suggested", "share"], rows)


# --- (b) the filter against libraries -----------------------------------------------------------


def libraries() -> list[tuple[str, Classifier]]:
    found: list[tuple[str, Classifier]] = []
    for name, load in LIBRARIES:
        try:
            found.append((name, load()))
        except ImportError as exc:
            print(f"note: {name} is not installed ({exc.name}); pip install -e '.[bench]'")
    return found


def _alt_profanity_check() -> Classifier:
    from profanity_check import predict

    return lambda text: bool(predict([text])[0])


def _better_profanity() -> Classifier:
    from better_profanity import profanity

    profanity.load_censor_words()
    return profanity.contains_profanity


def _better_profanity_rs() -> Classifier:
    from better_profanity_rs import profanity

    profanity.load_censor_words()
    return profanity.contains_profanity


def _better_profanity_fast() -> Classifier:
    from better_profanity_fast import Profanity

    return Profanity().contains_profanity


def _profanex() -> Classifier:
    from profanex import Filter

    return Filter.from_defaults().contains


LIBRARIES: list[tuple[str, Callable[[], Classifier]]] = [
    ("alt-profanity-check", _alt_profanity_check),
    ("better-profanity", _better_profanity),
    ("better-profanity-rs (Rust)", _better_profanity_rs),
    ("better-profanity-fast (Rust)", _better_profanity_fast),
    ("profanex (Rust)", _profanex),
]


def scores(blocked: Classifier, block: Sequence[str], keep: Sequence[str]
           ) -> tuple[float, float, float, float]:
    tp = sum(blocked(t) for t in block)
    fp = sum(blocked(t) for t in keep)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / len(block)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1, 1 - fp / len(keep)


def cost_us(blocked: Classifier, texts: Sequence[str]) -> list[float]:
    """p50 and p99 of one call: on the texts' first sight, then on a second pass (the policy
    remembers its words' roles; the libraries keep nothing)."""
    blocked("warm up")  # first-touch work (lazy loads) is not a call's cost
    out: list[float] = []
    for _ in range(2):
        samples = []
        for text in texts:
            started = time.perf_counter_ns()
            blocked(text)
            samples.append((time.perf_counter_ns() - started) / 1000)
        samples.sort()
        out += [percentile(samples, 50), percentile(samples, 99)]
    return out


def table_filters(policy: SuggestionPolicy) -> None:
    ours = _blocks(policy.blocked)
    filters: list[tuple[str, Classifier]] = [("this policy", ours)]
    if policy.model is not None:
        filters.append(("this policy + text model (build-time screening)",
                        _blocks(policy.screened)))
    for name, lib in libraries():
        filters.append((name, lib))
        filters.append((f"policy + {name}", _either(ours, lib)))
    lists = {split: ([t for t, _ in read_list(b)], [t for t, _ in read_list(k)])
             for split, b, k in SPLITS}
    everything = [t for block, keep in lists.values() for t in block + keep]
    rows: list[list[object]] = []
    for name, blocked in filters:
        cost = cost_us(blocked, everything)
        for split, (block, keep) in lists.items():
            rows.append([name, split, *scores(blocked, block, keep), *cost])
    print_table(header(f"(b) block-vs-keep filtering: positives are must-block entries; µs per "
                       f"call over the {len(everything):,} list texts"),
                ["filter", "split", "precision", "recall", "F1", "keep kept", "first p50",
                 "first p99", "again p50", "again p99"], rows)
    table_categories(policy)


def _blocks(blocked: Callable[[str], str | None]) -> Classifier:
    return lambda text: blocked(text) is not None


def _either(first: Classifier, second: Classifier) -> Classifier:
    return lambda text: first(text) or second(text)


def table_categories(policy: SuggestionPolicy) -> None:
    rows: list[list[object]] = []
    for split, block, _ in SPLITS:
        by_category: dict[str, list[int]] = {}
        for text, category in read_list(block):
            counts = by_category.setdefault(category, [0, 0, 0])
            got = policy.blocked(text)
            counts[0] += 1
            counts[1] += got is not None
            counts[2] += got is not None and policy.categories(text)[0] == category
        for category, (n, hit, same) in sorted(by_category.items()):
            rows.append([split, category, n, hit, hit / n, same])
    print_table(header("(b2) this policy's recall by labelled category (same: reported under "
                       "the labelled category)"),
                ["split", "category", "entries", "blocked", "recall", "same"], rows)


# --- (c) the curation overlay's cost ------------------------------------------------------------


def realistic_rules(index: LoadedIndex, policy: SuggestionPolicy) -> RuleSet:
    """20 block_text, 10 block_word, 5 block_pattern, 10 pin and 10 add rules, drawn from the
    index's entries (seeded) as an operator would: popular texts, their words, and new texts."""
    rng = random.Random(16)
    texts = index.lexical.data.display.many(list(range(min(3000, len(index.lexical)))))
    words = sorted({w for t in texts for w in normalize(t).split() if len(w) >= 5 and w.isalpha()})
    bodies: list[dict[str, object]] = [{"type": "block_text", "text": t}
                                       for t in rng.sample(texts[:500], 20)]
    bodies += [{"type": "block_word", "text": w} for w in rng.sample(words, 10)]
    bodies += [{"type": "block_pattern", "text": p} for p in PATTERNS]
    bodies += [{"type": "pin", "prefix": t[:3], "text": t}
               for t in rng.sample(texts[500:], 10) if len(normalize(t)) >= 3]
    bodies += [{"type": "add", "text": t, "weight": 500} for t in ADDED]
    return RuleSet.compile(parse_rule(body, f"r{i}", policy, now=0.0)
                           for i, body in enumerate(bodies))


PATTERNS = ("*casino*", "free * download*", "www.*.ru", "cheap * pills*", "*torrent*")
ADDED = ("iphone 16 pro", "taylor swift eras tour", "world cup 2026 schedule", "air fryer recipes",
         "pickleball paddles", "electric car tax credit", "remote jobs near me",
         "streaming services compared", "solar panel rebates", "new york marathon 2026")


def held_out_prefixes(n: int, seed: int = 5) -> list[str]:
    """Distinct 2-8 character prefixes of held-out AOL queries (bench_http's prefix traffic)."""
    queries = [normalize(r.text) for r in read_rows(AOL, text_col="query", weight_col=HELD_OUT)
               if r.weight > 0]
    rng = random.Random(seed)
    rng.shuffle(queries)
    prefixes = dict.fromkeys(q[: rng.randint(2, 8)] for q in queries if len(q) > 2)
    return list(prefixes)[:n]


def timed(service: SuggestService, text: str) -> float:
    started = time.perf_counter_ns()
    service.suggest(text, K)
    return (time.perf_counter_ns() - started) / 1000


def _texts(service: SuggestService, text: str) -> list[str]:
    return [s["text"] for s in service.suggest(text, K)["suggestions"]]


def without_blocks(index: LoadedIndex, rules: RuleSet, settings: Settings, out: Path
                   ) -> LoadedIndex:
    """The index the block rules would give if they had been there at build time: the same
    AOL rows less the ones they block, built with the served index's options."""
    options = index.manifest["options"]
    docs = (index.manifest.get("semantic") or {}).get("docs")
    build_index((r for r in read_rows(AOL, text_col=options["text_col"],
                                      weight_col=options["weight_col"])
                 if not rules.blocks_key(normalize(r.text))),
                out, BuildOptions(options["text_col"], options["weight_col"],
                                  options["min_count"], vectors=index.semantic is not None,
                                  student_dir=settings.student_dir,
                                  docs=ROOT / docs["source"] if docs else None),
                AOL, progress=None)
    return load_index(out, student_dir=settings.student_dir)


def overlay_row(name: str, base: SuggestService, ruled: SuggestService, prefixes: list[str],
                repeats: int) -> list[object]:
    """Per prefix, the best of ``repeats`` for each service; the extra is the ruled service's
    best less the base's. The two take turns going first: the second call on a prefix finds
    caches the first warmed (the index's typo pools, the CPU's), worth 10-50 µs."""
    best_base = [float("inf")] * len(prefixes)
    best_ruled = [float("inf")] * len(prefixes)
    for turn in range(max(repeats, 2)):
        for i, text in enumerate(prefixes):
            if turn % 2:
                best_ruled[i] = min(best_ruled[i], timed(ruled, text))
                best_base[i] = min(best_base[i], timed(base, text))
            else:
                best_base[i] = min(best_base[i], timed(base, text))
                best_ruled[i] = min(best_ruled[i], timed(ruled, text))
    extra = sorted(r - b for b, r in zip(best_base, best_ruled, strict=True))
    changed = sum(_texts(base, text) != _texts(ruled, text) for text in prefixes)
    return [name, len(prefixes), changed, percentile(sorted(best_base), 50),
            percentile(sorted(best_ruled), 50), percentile(sorted(best_base), 99),
            percentile(sorted(best_ruled), 99), percentile(extra, 50), percentile(extra, 99)]


OVERLAY_CALLS = ((Overlay, ("promote",)),
                 (Blocked, ("refill",)), (Removals, ("report",)))


def overlay_own_work(service: SuggestService, prefixes: list[str], repeats: int
                     ) -> list[float]:
    """Per prefix, the least over ``repeats`` of the time spent inside the overlay's own calls
    during one keystroke (outermost calls only), less the timer's own cost per call (measured
    on a call that does nothing)."""
    spent = [0]
    depth = [0]

    def timed_call(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if depth[0]:
                return fn(*args)
            depth[0] += 1
            started = time.perf_counter_ns()
            try:
                return fn(*args)
            finally:
                spent[0] += time.perf_counter_ns() - started - overhead
                depth[0] -= 1
        return call

    # What a call that does nothing measures: the timer's share inside each timed span.
    overhead = 0
    nothing = timed_call(lambda *args: None)
    least = []
    for _ in range(5):
        spent[0] = 0
        for _ in range(10_000):
            nothing(1)
        least.append(spent[0] // 10_000)
    overhead = min(least)

    saved = [(cls, name, cls.__dict__[name]) for cls, names in OVERLAY_CALLS for name in names]
    for cls, name, fn in saved:
        setattr(cls, name, timed_call(fn))
    try:
        best = [float("inf")] * len(prefixes)
        for _ in range(repeats):
            for i, text in enumerate(prefixes):
                spent[0] = 0
                service.suggest(text, K)
                best[i] = min(best[i], spent[0] / 1000)
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)
    return sorted(best)


def table_overlay(index: LoadedIndex, policy: SuggestionPolicy, settings: Settings,
                  prefixes: list[str], repeats: int) -> None:
    rules = realistic_rules(index, policy)
    curating = RuleSet.compile(r for r in rules.rules if r.type in ("pin", "add"))
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt = without_blocks(index, rules, settings, Path(tmp) / "index")
        rows = []
        for name, semantic, results_k in (("lexical only", False, 0),
                                          ("as served", True, settings.results_k)):
            def service(on: LoadedIndex, with_rules: RuleSet | None = None,
                        semantic: bool = semantic, results_k: int = results_k
                        ) -> SuggestService:
                made = SuggestService(index=on, semantic=semantic, results_k=results_k,
                                      policy=policy, rules=with_rules)
                made.warm()
                return made

            bare, ruled = service(index), service(index, rules)
            own = overlay_own_work(ruled, prefixes, repeats)
            rows += [
                [f"{name}: the overlay's own calls, timed inside each keystroke", len(prefixes),
                 "", "", percentile(own, 50), "", percentile(own, 99), percentile(own, 50),
                 percentile(own, 99)],
                overlay_row(f"{name}: blocks applied at serve time, not at build", service(
                    rebuilt, curating), ruled, prefixes, repeats),
                overlay_row(f"{name}: pins and adds", service(rebuilt), service(
                    rebuilt, curating), prefixes, repeats),
                overlay_row(f"{name}: all {len(rules.rules)} rules against none", bare, ruled,
                            prefixes, repeats),
                # Two services alike: the measurement's own noise.
                overlay_row(f"{name}: control, no rules against no rules", bare,
                            service(index), prefixes, repeats),
            ]
    print_table(header(f"(c) curation overlay per keystroke, in process, µs (best of {repeats} "
                       "per prefix; answer cache bypassed)"),
                ["comparison (base -> with the overlay)", "prefixes", "answers differ",
                 "p50 base", "p50 overlay", "p99 base", "p99 overlay", "per-prefix extra p50",
                 "per-prefix extra p99"], rows)


def table_policy_cost(index: LoadedIndex, prefixes: list[str]) -> None:
    entries = index.lexical.data.display.many(list(range(len(index.lexical))))
    rows: list[list[object]] = []
    for name, texts in (("held-out AOL prefixes", prefixes), ("index entries", entries)):
        fresh = SuggestionPolicy.load().blocked  # no word seen before
        rows.append(["blocked (lists)", name, len(texts), *cost_us(_blocks(fresh), texts)])
    model = SuggestionPolicy.load().model
    if model is not None:
        for name, texts in (("held-out AOL prefixes", prefixes), ("index entries", entries)):
            rows.append(["text model score", name, len(texts), *cost_us(model.flags, texts)])
        screened = SuggestionPolicy.load().screened
        rows.append(["screened (lists + model)", "index entries", len(entries),
                     *cost_us(_blocks(screened), entries)])
    print_table(header("(d) SuggestionPolicy per call, in process, µs: blocked (each "
                       "keystroke's explicit-input check) and screened (the build's)"),
                ["call", "texts", "n", "first p50", "first p99", "again p50", "again p99"], rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=ROOT / "indexes" / "aol")
    ap.add_argument("--prefixes", type=int, default=3000, help="held-out AOL prefixes for (c)")
    ap.add_argument("--repeats", type=int, default=12,
                    help="passes over the prefixes in (c) (at least 2)")
    ap.add_argument("--tables", default=",".join(TABLES),
                    help=f"comma-separated: {', '.join(TABLES)}")
    args = ap.parse_args()
    tables = set(args.tables.split(","))
    if not tables <= set(TABLES) or args.prefixes < 1 or args.repeats < 1:
        ap.error(f"--tables takes {', '.join(TABLES)}; --prefixes and --repeats must be >= 1")
    settings = Settings.from_env(os.environ)
    policy = SuggestionPolicy.load(settings.safety_allow)
    if "filters" in tables:
        table_filters(policy)
    if tables == {"filters"}:
        return 0
    index = load_index(args.index, student_dir=settings.student_dir)
    if "suggested" in tables:
        service = SuggestService(index=index, policy=policy, results_k=settings.results_k)
        service.warm()
        table_suggested(service, in_index(index))
    prefixes = held_out_prefixes(args.prefixes) if tables & {"overlay", "policy"} else []
    if "overlay" in tables:
        table_overlay(index, policy, settings, prefixes, args.repeats)
    if "policy" in tables:
        table_policy_cost(index, prefixes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
