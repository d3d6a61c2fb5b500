"""``typeahead eval intent``: intent quality on a labelled file.

Foreign label sets are translated with ``--map RAW=label,...`` (for example ORCAS-I's
``Navigational=navigational,Factual=informational,...``). The JSON carries accuracy, macro-F1
and per-label precision/recall over our three labels, and the same under ``binary`` for the
decision that matters to the product: offer a generated answer or not (gold: the label is
informational; predicted: ``offer_generate``).

Macro-F1 averages over the labels that occur in the gold file, so a file without transactional
queries is not scored on a class it cannot show; a wrong transactional prediction still costs
the recall of the true class.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from typeahead.corpus import read_rows
from typeahead.errors import ConfigError, DataError
from typeahead.intent import LABELS, IntentClassifier
from typeahead.numbers import float_arg, int_arg

BINARY_LABELS = ("offer", "no_offer")


@dataclass(frozen=True, slots=True)
class Labelled:
    text: str
    label: str


def parse_map(spec: str | None) -> dict[str, str]:
    """``RAW=label,...`` -> {raw: label}; every target must be one of our labels."""
    if spec is None:
        return {}
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        raw, sep, target = item.partition("=")
        raw, target = raw.strip(), target.strip()
        if not sep or not raw or not target:
            raise ConfigError(f"--map entry {item.strip()!r} is not RAW=label")
        if target not in LABELS:
            raise ConfigError(f"--map target {target!r} is not one of {', '.join(LABELS)}")
        mapping[raw] = target
    if not mapping:
        raise ConfigError("--map is empty; expected RAW=label,...")
    return mapping


def map_label(raw: str, mapping: dict[str, str], where: str) -> str:
    label = mapping.get(raw, raw if raw in LABELS else None)
    if label is None:
        hint = "add it to --map" if mapping else "pass --map RAW=label,..."
        raise DataError(f"{where}: unknown label {raw!r} ({hint})")
    return label


def read_labelled(
    path: Path, text_col: str, label_col: str, mapping: dict[str, str]
) -> list[Labelled]:
    out = []
    for row in read_rows(path, text_col=text_col):
        if label_col not in row.record:
            raise DataError(f"{path}:{row.line}: no column {label_col!r}")
        raw = str(row.record[label_col]).strip()
        out.append(Labelled(row.text, map_label(raw, mapping, f"{path}:{row.line}")))
    if not out:
        raise DataError(f"{path}: no labelled rows")
    return out


# --- metrics ----------------------------------------------------------------------------------


def scores(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (over labels present in gold) and per-label precision/recall/F1."""
    n = len(gold)
    per_label = {label: _label_scores(gold, pred, label) for label in labels}
    present = [per_label[label]["f1"] for label in labels if per_label[label]["support"]]
    return {
        "n": n,
        "accuracy": sum(g == p for g, p in zip(gold, pred, strict=True)) / n if n else 0.0,
        "macro_f1": sum(present) / len(present) if present else 0.0,
        "per_label": per_label,
    }


def _label_scores(gold: Sequence[str], pred: Sequence[str], label: str) -> dict[str, Any]:
    tp = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
    predicted = sum(p == label for p in pred)
    support = sum(g == label for g in gold)
    precision = tp / predicted if predicted else 0.0
    recall = tp / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def evaluate(
    classifier: IntentClassifier, items: Sequence[Labelled], threshold: float | None = None
) -> dict[str, Any]:
    """The contract's JSON for ``items``, plus the threshold used."""
    gold = [it.label for it in items]
    decisions = [classifier.decide(it.text, threshold=threshold) for it in items]
    result = scores(gold, [d.intent.label for d in decisions], LABELS)
    gold_b = ["offer" if g == "informational" else "no_offer" for g in gold]
    pred_b = ["offer" if d.offer_generate else "no_offer" for d in decisions]
    result["binary"] = scores(gold_b, pred_b, BINARY_LABELS)
    result["threshold"] = classifier.threshold if threshold is None else threshold
    return result


# --- the command ---------------------------------------------------------------------------------


def add_intent_parser(eval_subparsers: Any, name: str = "intent") -> argparse.ArgumentParser:
    """Hang ``intent`` under ``typeahead eval``."""
    p: argparse.ArgumentParser = eval_subparsers.add_parser(
        name, help="intent quality on a labelled file", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--labels", type=Path, required=True, help="TSV/CSV/JSONL file (.gz ok)")
    p.add_argument("--text-col", required=True, help="column holding the query text")
    p.add_argument("--label-col", required=True, help="column holding the gold label")
    p.add_argument("--map", default=None, help="RAW=label,... translating the file's labels")
    p.add_argument("--model", type=Path, default=None, help="intent model directory")
    p.add_argument("--student", type=Path, default=None, help="student directory")
    p.add_argument("--threshold", type=float_arg(), default=None, help="offer threshold override")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--keystrokes", action="store_true",
                   help="replay every prefix through the served decision (suggestions "
                   "included) instead of scoring the classifier alone")
    p.add_argument("--index", type=Path, default=None,
                   help="index for --keystrokes (default: TYPEAHEAD_INDEX_DIR)")
    p.add_argument("--k", type=int_arg(1, 50), default=10,
                   help="suggestions per keystroke (--keystrokes)")
    p.set_defaults(func=run_intent)
    return p


def run_intent(args: argparse.Namespace) -> int:
    from typeahead.settings import Settings

    settings = Settings.from_env()
    mapping = parse_map(args.map)
    threshold = args.threshold if args.threshold is not None else settings.intent_threshold
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold} is outside [0, 1]")
    items = read_labelled(args.labels, args.text_col, args.label_col, mapping)
    if args.keystrokes:
        return _run_keystrokes(args, settings, items)
    classifier = load_classifier(args.model or settings.intent_model_dir, args.student)
    result = evaluate(classifier, items, threshold)
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        _print_table(result)
    return 0


def _run_keystrokes(args: argparse.Namespace, settings: Any, items: list[Labelled]) -> int:
    from typeahead.eval import intent_keystroke as K

    if args.threshold is not None:
        raise ConfigError("--threshold applies to the classifier alone, not to --keystrokes")
    if not 1 <= args.k <= settings.max_k:
        raise ConfigError(f"--k must be between 1 and {settings.max_k}, got {args.k}")
    service = K.load_service(args.index or settings.index_dir,
                             args.model or settings.intent_model_dir,
                             args.student or settings.student_dir)
    result = K.keystroke_metrics(items, K.replay(K.service_offer(service, args.k), items))
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        K.print_table(result)
    return 0


def load_classifier(model: Path | None, student_dir: Path | None) -> IntentClassifier:
    student = None
    if student_dir is not None:
        from typeahead.embed import Student

        student = Student.load(student_dir)
    return IntentClassifier.load(model, student=student)


def _print_table(result: dict[str, Any]) -> None:
    for title, part in (("intent", result), ("binary", result["binary"])):
        print(
            f"{title}: n={part['n']} accuracy={part['accuracy']:.3f} "
            f"macro_f1={part['macro_f1']:.3f}"
        )
        for label, s in part["per_label"].items():
            print(
                f"  {label:14s} P={s['precision']:.3f} R={s['recall']:.3f} "
                f"F1={s['f1']:.3f} n={s['support']}"
            )
