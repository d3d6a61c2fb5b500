"""``typeahead build-index``: build every structure the millisecond tier needs."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from typeahead.corpus import FORMATS, read_rows
from typeahead.errors import ConfigError
from typeahead.manifest import check_replaceable
from typeahead.numbers import float_arg, int_arg
from typeahead.safety import ADULT_CATEGORIES
from typeahead.suggest.generated import MIN_PIECES
from typeahead.suggest.index import KIND, BuildOptions, build_index, stderr_progress


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="build an index directory from a corpus file",
                       description="Build an index directory from a TSV, CSV or JSONL corpus "
                                   "(gzipped or not) or a Parquet file.")
    p.add_argument("--corpus", type=Path, required=True,
                   help="TSV, CSV or JSONL file (.gz ok), or Parquet (the parquet extra)")
    p.add_argument("--out", type=Path, required=True, help="index directory to write")
    p.add_argument("--text-col", default="query", help="column holding the text (default: query)")
    p.add_argument("--weight-col", default=None,
                   help="column holding a popularity count (default: count rows)")
    p.add_argument("--min-count", type=float_arg(), default=3.0,
                   help="privacy floor: entries whose merged count is below it are never served "
                        "(default: 3)")
    p.add_argument("--format", choices=FORMATS, default=None, help="override format detection")
    p.add_argument("--docs", type=Path, default=None,
                   help="documents for instant results: JSONL with id, title, text (.gz ok)")
    p.add_argument("--docs-id-field", default=None,
                   help="document id field (default: id, or paragraph_id for SQuAD files)")
    p.add_argument("--student", type=Path, default=None,
                   help="student model directory (default: the packaged student)")
    p.add_argument("--vectors", action=argparse.BooleanOptionalAction, default=None,
                   help="embed entries for semantic suggestions (default: when a student is "
                        "available)")
    p.add_argument("--vector-factory", choices=("flat", "hnsw", "ivf"), default=None,
                   help="FAISS index for entry vectors (default: hnsw, see bench/bench_vector.py)")
    p.add_argument("--allow-category", action="append", default=[], metavar="CATEGORY",
                   choices=sorted(ADULT_CATEGORIES),
                   help="let entries of an adult category into the index (repeatable: "
                        "sexual, profanity); minors, bestiality, sexual violence, slurs and "
                        "personal data are always removed")
    p.add_argument("--piece-min-queries", type=int_arg(), default=MIN_PIECES,
                   help="generated completions use only words and word pairs found in at least "
                        f"this many distinct queries (default: {MIN_PIECES}; 0: no generated "
                        "completions)")
    p.add_argument("--fold-punctuation", action="store_true",
                   help="titles and names: drop apostrophes and dots and make hyphens spaces in "
                        "keys and input ('sorcerers' finds \"Sorcerer's\"; off for query logs)")
    p.add_argument("--leading-articles", action="store_true",
                   help="titles: a text starting with the, a or an also completes without it "
                        "('hunger' -> 'The Hunger Games' in the prefix tier)")
    p.add_argument("--show-blocked", action="store_true",
                   help="print each entry the suggestion policy removes, with its category, "
                        "on stdout (never logged otherwise)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not math.isfinite(args.min_count) or args.min_count < 0:
        raise ConfigError(f"--min-count must be a number >= 0, got {args.min_count}")
    if args.piece_min_queries < 0:
        raise ConfigError(f"--piece-min-queries must be >= 0, got {args.piece_min_queries}")
    if args.docs is not None and not args.docs.is_file():
        raise ConfigError(f"--docs {args.docs}: no such file")
    if args.student is not None:
        _check_student(args.student)
    # Before the corpus is read: a wrong --out must cost nothing, and must never delete it.
    check_replaceable(args.out, kind=KIND, protected=(args.corpus, args.docs, args.student))
    options = BuildOptions(text_col=args.text_col, weight_col=args.weight_col,
                           min_count=args.min_count, fmt=args.format, vectors=args.vectors,
                           vector_factory=args.vector_factory, student_dir=args.student,
                           docs=args.docs, docs_id_field=args.docs_id_field,
                           safety_allow=tuple(args.allow_category),
                           piece_min_queries=args.piece_min_queries,
                           fold_punctuation=args.fold_punctuation,
                           leading_articles=args.leading_articles,
                           on_blocked=_print_blocked if args.show_blocked else None)
    rows = read_rows(args.corpus, text_col=args.text_col, weight_col=args.weight_col,
                     fmt=args.format)
    build_index(rows, args.out, options, args.corpus,
                progress=None if args.quiet else stderr_progress)
    return 0


def _check_student(path: Path) -> None:
    """A student named on the command line must load: a mistyped path must not quietly build
    an index without vectors."""
    if not path.is_dir():
        raise ConfigError(f"--student {path}: no such directory")
    from typeahead.embed import Student

    Student.load(path)  # ArtifactError (exit 1) names what is wrong with it


def _print_blocked(category: str, text: str) -> None:
    print(f"blocked\t{category}\t{text}", flush=False)
