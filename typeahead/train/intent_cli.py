"""``typeahead train-intent --out DIR``: train the intent classifier on the student's embeddings.

Needs the ``train`` extra (scikit-learn); the serving process never imports this module.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from typeahead.errors import ConfigError
from typeahead.numbers import int_arg


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help="train the intent classifier",
        description="Train the navigational/informational/transactional classifier on the "
        "labelled sets in --data (plus weak labels from the AOL log) with the student's "
        "embeddings, and write a model directory with its manifest.",
    )
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--data", type=Path, default=None, help="shared data directory")
    p.add_argument("--student", type=Path, default=None, help="student directory")
    p.add_argument("--no-weak", action="store_true", help="skip weak labels from the AOL log")
    p.add_argument("--index", type=Path, default=Path("indexes/aol"),
                   help="served index whose completions the keystroke decision is tuned on")
    p.add_argument("--no-keystroke", action="store_true",
                   help="skip the keystroke decision (keystroke.json, names.json)")
    p.add_argument("--keystroke-only", action="store_true",
                   help="keep the classifier in --out; (re)train only its keystroke decision")
    p.add_argument("--seed", type=int_arg(), default=0)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        import sklearn  # noqa: F401  (the one training-only dependency)
    except ImportError as exc:
        raise ConfigError(
            f"train-intent needs the training extra ({exc.name} is missing): "
            "pip install 'typeahead[train]'"
        ) from exc
    from typeahead.embed import Student
    from typeahead.train import intent as intent_train
    from typeahead.train.keystroke import add_keystroke

    data_dir = args.data or intent_train.DEFAULT_DATA_DIR
    if args.keystroke_only:
        section = add_keystroke(args.out, data_dir, args.index, seed=args.seed)
        print(f"wrote the keystroke decision into {args.out}: on {section['on']:.2f}, "
              f"off {section['off']:.2f}", file=sys.stderr)
        return 0
    student = Student.load(args.student)
    manifest = intent_train.train(
        data_dir, args.out, student, weak=not args.no_weak, seed=args.seed
    )
    if not args.no_keystroke:
        add_keystroke(args.out, data_dir, args.index, seed=args.seed)
    web = manifest["test_metrics"].get("web_queries", {})
    print(
        f"wrote {args.out}: threshold {manifest['threshold']:.2f}, held-out web queries "
        f"n={web.get('n', 0)} accuracy={web.get('accuracy', 0.0):.3f} "
        f"offer-vs-not macro-F1={web.get('binary', {}).get('macro_f1', 0.0):.3f}",
        file=sys.stderr,
    )
    return 0
