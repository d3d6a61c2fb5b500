"""``typeahead train-lm``: the character language model of the second completion generator
(``typeahead.suggest.charlm``).

A one-layer GRU over the characters of a query log's normalised queries, trained with
PyTorch on queries drawn in proportion to their count (so its probabilities follow the log,
as the n-gram generator's do), then exported to plain arrays for numpy inference: the
serving process never imports torch. Needs the ``train`` extra.

The model is trained on every distinct query, below the serving floor included, like the
n-gram generator's piece counts: it never leaves the server, and what it generates is held to
the same piece rule (every word and word pair in at least 3 distinct queries) when it decodes.

``--dev-split`` trains on the dev split's index rows of docs/completion.md (each count thinned
binomially, p = 0.2, seed 20, into dev targets), for choices made on that split.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from typeahead.corpus import add_column_arguments, read_rows
from typeahead.errors import ConfigError, DataError, MissingExtraError
from typeahead.manifest import sha256_file
from typeahead.normalize import normalize
from typeahead.numbers import int_arg
from typeahead.suggest.charlm import MAX_CHARS, CharLM, manifest

HIDDEN, EMBED = 256, 32
BATCH, LEARNING_RATE = 256, 3e-3
MIN_CHAR_QUERIES = 20  # rarer characters read as "unknown"
DEV_FRACTION, DEV_SEED = 0.2, 20  # the dev split of docs/completion.md (train-ranker's)


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help="train the completion generator's character language model",
        description="Train a character-level GRU language model on a query log's normalised "
                    "queries (drawn by count) and write it as a numpy model file (.npz).")
    p.add_argument("--corpus", type=Path, required=True, help="query log (TSV/CSV/JSONL)")
    add_column_arguments(p, "count column of the training rows")
    p.add_argument("--out", type=Path, required=True, help="model file to write (.npz)")
    p.add_argument("--hidden", type=int_arg(), default=HIDDEN, help="GRU units")
    p.add_argument("--minutes", type=float, default=20.0,
                   help="training time (the learning rate decays over it)")
    p.add_argument("--dev-split", action="store_true",
                   help="train on the dev split's index rows only (docs/completion.md)")
    p.add_argument("--seed", type=int_arg(), default=0)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if not 8 <= args.hidden <= 1024:
        raise ConfigError("--hidden must be between 8 and 1024")
    if not 0 < args.minutes <= 24 * 60:
        raise ConfigError("--minutes must be in (0, 1440]")
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError("train-lm needs the training extra (torch is missing): "
                                "pip install 'typeahead[train]'") from exc
    queries = weighted_queries(args.corpus, args.text_col, args.weight_col, args.format,
                               args.dev_split)
    chars = alphabet(queries)
    torch.manual_seed(args.seed)
    model = _Net(torch, len(chars) + 2, args.hidden)
    steps, loss = fit(torch, model, queries, chars, args.minutes * 60.0, args.seed)
    meta = manifest(chars, args.hidden, trained_on={
        "corpus": args.corpus.name, "sha256": sha256_file(args.corpus),
        "weight_col": args.weight_col, "dev_split": args.dev_split,
        "dev_fraction": DEV_FRACTION if args.dev_split else None,
        "dev_seed": DEV_SEED if args.dev_split else None,
        "queries": len(queries), "steps": steps, "batch": BATCH,
        "final_loss_bits_per_char": round(loss / math.log(2), 4)})
    export(model, meta).save(args.out)
    print(f"wrote {args.out}: {len(chars)} characters, {args.hidden} units, {steps:,} steps, "
          f"{loss / math.log(2):.3f} bits/char", file=sys.stderr)
    return 0


def weighted_queries(corpus: Path, text_col: str, weight_col: str | None, fmt: str | None,
                     dev_split: bool) -> dict[str, float]:
    """Distinct normalised queries and their counts (the dev split's index rows when asked)."""
    rows = list(read_rows(corpus, text_col=text_col, weight_col=weight_col, fmt=fmt))
    if dev_split:
        counts = np.array([max(round(r.weight), 0) for r in rows], dtype=np.int64)
        dev = np.random.default_rng(DEV_SEED).binomial(counts, DEV_FRACTION)
        weights = (counts - dev).astype(np.float64).tolist()
    else:
        weights = [r.weight for r in rows]
    out: dict[str, float] = {}
    for row, weight in zip(rows, weights, strict=True):
        key = normalize(row.text)
        if weight > 0 and key and len(key) < MAX_CHARS:
            out[key] = out.get(key, 0.0) + weight
    if not out:
        raise DataError(f"{corpus}: no query with a positive count to train on")
    return out


def alphabet(queries: dict[str, float]) -> str:
    """The characters that occur in at least MIN_CHAR_QUERIES distinct queries, sorted."""
    seen: Counter[str] = Counter()
    for q in queries:
        seen.update(set(q))
    return "".join(sorted(c for c, n in seen.items() if n >= MIN_CHAR_QUERIES))


def encode(queries: list[str], chars: str) -> tuple[np.ndarray, np.ndarray]:
    """Token matrices (inputs, targets) padded with -1: id 0 is the boundary (the input's
    first token, the target's last), 1 an unknown character, 2.. the alphabet."""
    ids = {c: i + 2 for i, c in enumerate(chars)}
    width = max(len(q) for q in queries) + 1
    x = np.full((len(queries), width), -1, dtype=np.int64)
    y = np.full((len(queries), width), -1, dtype=np.int64)
    for row, q in enumerate(queries):
        seq = [ids.get(c, 1) for c in q]
        x[row, 0] = 0
        x[row, 1 : len(seq) + 1] = seq
        y[row, : len(seq)] = seq
        y[row, len(seq)] = 0
    return x, y


def _Net(torch: Any, vocab: int, hidden: int) -> Any:
    nn = torch.nn
    module: Any = nn.Module

    class Net(module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, EMBED)
            self.gru = nn.GRU(EMBED, hidden, batch_first=True)
            self.out = nn.Linear(hidden, vocab)

        def forward(self, x: Any) -> Any:
            h, _ = self.gru(self.embed(x))
            return self.out(h)

    return Net()


def fit(torch: Any, model: Any, queries: dict[str, float], chars: str, seconds: float,
        seed: int) -> tuple[int, float]:
    """Adam over batches drawn by count until ``seconds`` pass, the learning rate decaying by
    a cosine over that time; returns the steps taken and the last loss (nats per char)."""
    texts = list(queries)
    p = np.array([queries[q] for q in texts], dtype=np.float64)
    p /= p.sum()
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-1)
    started, steps, smooth = time.monotonic(), 0, float("nan")
    while (elapsed := time.monotonic() - started) < seconds:
        for group in optimiser.param_groups:
            group["lr"] = LEARNING_RATE * 0.5 * (1 + math.cos(math.pi * elapsed / seconds))
        batch = [texts[i] for i in rng.choice(len(texts), size=BATCH, p=p)]
        x, y = encode(batch, chars)
        x_t = torch.from_numpy(np.maximum(x, 0))
        logits = model(x_t)
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y).reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        steps += 1
        value = float(loss.item())
        smooth = value if math.isnan(smooth) else 0.98 * smooth + 0.02 * value
        if steps % 200 == 0:
            print(f"train-lm: step {steps:,}, {elapsed:.0f}s, "
                  f"{smooth / math.log(2):.3f} bits/char", file=sys.stderr)
    return steps, smooth


def export(model: Any, meta: dict[str, Any]) -> CharLM:
    """The trained network as numpy arrays: each character's input projection precomputed
    (embedding times input weights, plus bias), so a decoding step is one mat-vec."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    inputs = sd["embed.weight"] @ sd["gru.weight_ih_l0"].T + sd["gru.bias_ih_l0"]
    return CharLM(inputs.astype(np.float32), np.ascontiguousarray(sd["gru.weight_hh_l0"].T),
                  sd["gru.bias_hh_l0"], np.ascontiguousarray(sd["out.weight"].T),
                  sd["out.bias"], meta)
