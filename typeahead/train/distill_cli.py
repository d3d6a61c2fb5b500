"""``typeahead distill --out DIR``: build the static student from the teacher.

The defaults rebuild the shipped student (``typeahead/assets/student``); run from the project
root so that the default data paths (``../shared/data/...``) resolve. Needs the ``train`` extra.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from typeahead.errors import ConfigError, DataError
from typeahead.numbers import float_arg, int_arg

DATA = Path("../shared/data")
DEFAULT_AOL = DATA / "typeahead" / "aol2006_q1m_counts.tsv.gz"
DEFAULT_DOCS = DATA / "docs" / "squad2_dev_wikipedia_paragraphs.jsonl.gz"
DEFAULT_QUESTIONS = DATA / "docs" / "squad2_dev_questions.jsonl.gz"


def add_parser(sub: Any, name: str) -> argparse.ArgumentParser:
    from typeahead.train.distill import DistillConfig

    d = DistillConfig()
    p: argparse.ArgumentParser = sub.add_parser(
        name, help="distil the teacher sentence-transformer into the static student"
    )
    p.add_argument("--out", type=Path, required=True, help="output student directory")
    p.add_argument("--aol", type=Path, default=DEFAULT_AOL, help="AOL query counts (column query)")
    p.add_argument(
        "--docs", type=Path, default=DEFAULT_DOCS, help="paragraphs JSONL (fine-tune texts)"
    )
    p.add_argument(
        "--questions", type=Path, default=DEFAULT_QUESTIONS, help="questions JSONL (selection)"
    )
    # Signed: run() checks the ranges and names every bad one.
    p.add_argument(
        "--queries", type=int_arg(negative=True), default=20_000,
        help="AOL queries sampled for fine-tuning",
    )
    p.add_argument(
        "--new-words", type=int_arg(), default=d.new_words,
        help="corpus words added to the vocabulary",
    )
    p.add_argument("--min-word-count", type=int_arg(), default=d.min_word_count)
    p.add_argument("--pca-dims", type=int_arg(negative=True), default=d.pca_dims,
                   help="output dimensions")
    p.add_argument("--sif", type=float_arg(), default=d.sif_coefficient,
                   help="SIF weighting coefficient")
    p.add_argument("--epochs", type=int_arg(negative=True), default=d.epochs,
                   help="fine-tune epochs (0: none)")
    p.add_argument("--lr", type=float_arg(), default=d.lr)
    p.add_argument("--batch-size", type=int_arg(negative=True), default=d.batch_size)
    p.add_argument("--dtype", choices=("int8", "float16", "float32"), default=d.dtype)
    p.add_argument("--keep", choices=("best", "distilled", "finetuned"), default=d.keep)
    p.add_argument("--candidates", type=Path, default=None, help="also save every candidate here")
    p.add_argument("--seed", type=int_arg(), default=d.seed)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from typeahead.train.distill import (
        DistillConfig,
        load_corpus,
        require_train_extra,
        run_distillation,
    )

    _validate(args)
    require_train_extra()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config = DistillConfig(
        pca_dims=args.pca_dims,
        sif_coefficient=args.sif,
        new_words=args.new_words,
        min_word_count=args.min_word_count,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        dtype=args.dtype,
        seed=args.seed,
        keep=args.keep,
    )
    started = time.monotonic()
    corpus = load_corpus(
        _opt(args.aol), _opt(args.docs), _opt(args.questions), args.queries, config
    )
    recipe = "typeahead distill " + shlex.join(
        sys.argv[2:] if len(sys.argv) > 2 else ["--out", str(args.out)]
    )
    manifest = run_distillation(
        args.out, corpus, config, recipe=recipe, candidates_dir=args.candidates
    )
    took = time.monotonic() - started
    print(
        f"student {manifest['fingerprint']} ({manifest['variant']}, {manifest['dim']} dims, "
        f"{manifest['vocab_size']} tokens) written to {args.out} in {took:.0f} s",
        file=sys.stderr,
    )
    return 0


def _opt(path: Path | None) -> Path | None:
    if path is None or str(path) in ("", "-", "none"):
        return None
    if not path.exists():
        raise DataError(f"input file {path} does not exist (pass 'none' to skip it)")
    return path


def _validate(args: argparse.Namespace) -> None:
    if args.pca_dims < 2 or args.pca_dims > 384:
        raise ConfigError("--pca-dims must be 2..384 (the teacher has 384)")
    if args.epochs < 0 or args.batch_size < 1 or args.queries < 0 or args.lr <= 0:
        raise ConfigError("--epochs, --queries must be >= 0, --batch-size >= 1, --lr > 0")
    if not 0 < args.sif < 1:
        raise ConfigError("--sif must be in (0, 1)")
