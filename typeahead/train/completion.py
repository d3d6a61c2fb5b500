"""``typeahead train-ranker``: the learned completion order (``typeahead.suggest.ranker``).

Trained on the training rows only, on a dev split carved from them as docs/completion.md
describes: each query's count is thinned binomially (p = 0.2, seed 20) into dev targets and
the rest builds an index. For every prefix (2 to 8 characters) of every dev target, the
candidates are those the service would order for it (``SuggestService.candidates``: the
lexical tiers' top k and the generated completions, asked where the in-order matches leave a
slot), and the target is the one relevant candidate. The dev targets' counts are thinned once
more (p = 0.5, seed 21) into a fitting half and a validation half: both halves hold the same
queries in proportion, where a split by query would leave the fitting half without the
popular queries the other half drew.

LightGBM lambdarank fits boosted stumps (depth 1), folded into one step function per feature
for the numpy scorer. Needs the ``train`` extra (lightgbm); the serving process never imports
this module.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from typeahead.corpus import Row, add_column_arguments, read_rows
from typeahead.errors import ConfigError, DataError, MissingExtraError
from typeahead.eval.qac import evaluate_qac, service_suggest
from typeahead.manifest import sha256_file
from typeahead.normalize import normalize
from typeahead.numbers import int_arg
from typeahead.safety.policy import SuggestionPolicy
from typeahead.suggest import load_index
from typeahead.suggest.index import MIN_PIECES, BuildOptions, build_index
from typeahead.suggest.ranker import DEFAULT_MODEL, FEATURES, CompletionRanker, features, manifest
from typeahead.suggest.service import SuggestService, leaves_a_slot

DEV_FRACTION, DEV_SEED = 0.2, 20  # the dev split of docs/completion.md
FIT_SEED = 21  # the dev targets' counts, halved into fitting and validation
LENGTHS = range(2, 9)  # prefix lengths trained on
REPORT_LENGTHS = [2, 4, 6]
K = 10
# Chosen on the validation half (docs/completion.md): 600 stumps at 0.1 matched 300 trees of
# 15 leaves, and stumps fold into an additive scorer.
TREES, LEARNING_RATE, MIN_CHILD = 600, 0.1, 50

Pool = tuple[list[str], npt.NDArray[np.float64]]  # candidates' keys and feature rows


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help="train the completion ranker",
        description="Train the learned completion order on a dev split of a query log's "
                    "training rows and write the model file (JSON with its manifest).")
    p.add_argument("--corpus", type=Path, required=True, help="query log (TSV/CSV/JSONL)")
    add_column_arguments(p, "count column of the training rows")
    p.add_argument("--min-count", type=float, default=3.0, help="the served index's floor")
    p.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="model file to write")
    p.add_argument("--trees", type=int_arg(), default=TREES)
    p.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    p.add_argument("--min-child", type=int_arg(), default=MIN_CHILD,
                   help="least candidates a stump's side holds")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.trees < 1 or not 0 < args.learning_rate <= 1:
        raise ConfigError("--trees must be >= 1 and --learning-rate in (0, 1]")
    rows = list(read_rows(args.corpus, text_col=args.text_col, weight_col=args.weight_col,
                          fmt=args.format))
    index_rows, targets = dev_split(rows)
    if not targets:
        raise DataError(f"{args.corpus}: no dev targets (every count is 0)")
    fit, valid = halves(targets)
    with tempfile.TemporaryDirectory(prefix="train-ranker-") as tmp:
        build_index(index_rows, Path(tmp) / "dev", BuildOptions(
            args.text_col, args.weight_col, args.min_count, fmt=args.format,
            piece_min_queries=MIN_PIECES), args.corpus, progress=None)
        index = load_index(Path(tmp) / "dev")
        service = SuggestService(index=index, semantic=False, results_k=0,
                                 policy=SuggestionPolicy.load(()))
        pools = collect(service, prefixes(fit))
        ranker = train(pools, fit, args.trees, args.learning_rate, args.min_child,
                       manifest(index.manifest["normalization"]))
        report = {name: _mrr(SuggestService(index=index, semantic=False, results_k=0,
                                            policy=service.policy, ranker=model), valid)
                  for name, model in (("fixed", None), ("ranked", ranker))}
    ranker = CompletionRanker(ranker.thresholds, ranker.values, ranker.base, ranker.count, {
        **ranker.manifest,
        "trained_on": {"corpus": args.corpus.name, "sha256": sha256_file(args.corpus),
                       "weight_col": args.weight_col, "min_count": args.min_count,
                       "dev_fraction": DEV_FRACTION, "dev_seed": DEV_SEED,
                       "fit_seed": FIT_SEED},
        "params": {"trees": args.trees, "learning_rate": args.learning_rate,
                   "min_child": args.min_child, "lengths": [LENGTHS.start, LENGTHS.stop - 1]},
        "validation_mrr": report})
    ranker.save(args.out)
    print(f"wrote {args.out}; validation MRR@{K} at {REPORT_LENGTHS}: fixed order "
          f"{report['fixed']}, ranked {report['ranked']}", file=sys.stderr)
    return 0


def dev_split(rows: Sequence[Row], fraction: float = DEV_FRACTION, seed: int = DEV_SEED
              ) -> tuple[list[Row], dict[str, float]]:
    """Each row's count thinned binomially into dev targets; the rest builds the index."""
    counts = np.array([max(round(r.weight), 0) for r in rows], dtype=np.int64)
    dev = np.random.default_rng(seed).binomial(counts, fraction)
    index_rows = [Row(r.text, float(n - d), r.line, r.record)
                  for r, n, d in zip(rows, counts.tolist(), dev.tolist(), strict=True)]
    targets: dict[str, float] = {}
    for r, d in zip(rows, dev.tolist(), strict=True):
        key = normalize(r.text)
        if d > 0 and key:
            targets[key] = targets.get(key, 0.0) + d
    return index_rows, targets


def halves(targets: dict[str, float], seed: int = FIT_SEED
           ) -> tuple[dict[str, float], dict[str, float]]:
    """The targets' counts thinned binomially (p = 0.5) into fitting and validation halves."""
    keys = list(targets)
    drawn = np.random.default_rng(seed).binomial(
        np.array([round(targets[q]) for q in keys], dtype=np.int64), 0.5).tolist()
    fit = {q: float(d) for q, d in zip(keys, drawn, strict=True) if d > 0}
    valid = {q: targets[q] - d for q, d in zip(keys, drawn, strict=True) if targets[q] > d}
    return fit, valid


def prefixes(targets: Iterable[str]) -> Iterator[str]:
    seen: set[str] = set()
    for q in targets:
        for n in LENGTHS:
            if len(q) > n and q[:n] not in seen:
                seen.add(q[:n])
                yield q[:n]


def collect(service: SuggestService, typed: Iterable[str]) -> dict[str, Pool]:
    """Per typed prefix, the candidates the ranker orders when serving it (none where the
    in-order matches fill every slot: there the ranker is not asked)."""
    lexical, data = service.index.lexical, service.index.lexical.data
    pools: dict[str, Pool] = {}
    for prefix in typed:
        found = lexical.suggest(prefix, K)
        key = lexical.key(prefix)
        if not key or not leaves_a_slot(found, K):
            continue
        candidates = service.candidates(key, prefix, found)
        keys = data.keys.many([c.suggestion.id for c in candidates if c.suggestion.id >= 0])
        keys += [c.suggestion.text for c in candidates if c.suggestion.id < 0]
        pools[prefix] = keys, features(key, candidates)
    return pools


@dataclass
class Groups:
    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    weight: npt.NDArray[np.float64]
    sizes: list[int]


def groups(pools: dict[str, Pool], targets: dict[str, float]) -> Groups:
    """One group per (prefix, target) whose target is a candidate, weighted by its count."""
    xs, ys, ws, sizes = [], [], [], []
    for q, w in targets.items():
        for n in LENGTHS:
            pool = pools.get(q[:n]) if len(q) > n else None
            if pool is None or q not in pool[0] or len(pool[0]) < 2:
                continue
            y = np.zeros(len(pool[0]))
            y[pool[0].index(q)] = 1.0
            xs.append(pool[1])
            ys.append(y)
            ws.append(np.full(len(y), w))
            sizes.append(len(y))
    if not sizes:
        raise DataError("no dev target is among its prefixes' candidates: too little data")
    return Groups(np.vstack(xs), np.concatenate(ys), np.concatenate(ws), sizes)


def train(pools: dict[str, Pool], targets: dict[str, float], trees: int, learning_rate: float,
          min_child: int, meta: dict[str, Any]) -> CompletionRanker:
    try:
        import lightgbm
    except ImportError as exc:
        raise MissingExtraError("train-ranker needs the training extra (lightgbm is missing): "
                                "pip install 'typeahead[train]'") from exc
    data = groups(pools, targets)
    model = lightgbm.LGBMRanker(
        objective="lambdarank", n_estimators=trees, learning_rate=learning_rate, num_leaves=2,
        max_depth=1, min_child_samples=min_child, lambdarank_truncation_level=K, verbose=-1,
        n_jobs=2)
    model.fit(data.x, data.y, group=data.sizes, sample_weight=data.weight)
    return CompletionRanker.from_steps(fold(model.booster_.dump_model()), meta)


def fold(dump: dict[str, Any]) -> list[tuple[list[float], list[float]]]:
    """LightGBM stumps as one step function per feature: thresholds ascending, and the value
    summed over every stump for x in each interval between them."""
    splits: list[list[tuple[float, float, float]]] = [[] for _ in FEATURES]
    constant = 0.0
    for tree in dump["tree_info"]:
        node = tree["tree_structure"]
        if "leaf_value" in node:  # a tree that found no split
            constant += float(node["leaf_value"])
            continue
        left, right = node["left_child"], node["right_child"]
        if node["decision_type"] != "<=" or "leaf_value" not in left or \
                "leaf_value" not in right:
            raise DataError("train-ranker folds stumps only (one numerical split a tree)")
        splits[node["split_feature"]].append(
            (float(node["threshold"]), float(left["leaf_value"]), float(right["leaf_value"])))
    out = []
    for j, found in enumerate(splits):
        thresholds = sorted({t for t, _, _ in found})
        # x <= t takes a stump's left value, x > t its right: step i lies above i thresholds.
        values = np.full(len(thresholds) + 1, sum(left for _, left, _ in found)
                         + (constant if j == 0 else 0.0))
        for t, left, right in found:
            values[thresholds.index(t) + 1:] += right - left
        out.append((thresholds, values.tolist()))
    return out


def _mrr(service: SuggestService, targets: dict[str, float]) -> dict[str, float]:
    result = evaluate_qac(targets.items(), service_suggest(service), REPORT_LENGTHS, K)
    mrr: dict[str, float] = result.as_json()["mrr"]
    return mrr
