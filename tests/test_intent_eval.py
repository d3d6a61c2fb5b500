"""``eval intent``: label maps, metrics against hand-computed values, one-line errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tests.intent_fixtures import TinyEmbedder, hand_classifier
from typeahead.errors import ConfigError, DataError
from typeahead.eval import intent as intent_eval

ORCAS_MAP = (
    "Navigational=navigational,Factual=informational,Instrumental=informational,"
    "Abstain=informational,Transactional=transactional"
)
# query, raw label; the hand classifier's prediction is in the comment.
FIXTURE = [
    ("how tall is the eiffel tower", "Factual"),  # informational
    ("what is pier 57", "Factual"),  # informational
    ("ebay", "Navigational"),  # navigational
    ("facebook login", "Navigational"),  # navigational
    ("buy cheap shoes", "Transactional"),  # transactional
    ("pier 57 history", "Instrumental"),  # navigational (no cue the hand model knows)
    ("download free music", "Abstain"),  # transactional
    ("how to buy a car", "Transactional"),  # informational (question beats buy)
    ("what is jane@example.com", "Factual"),  # informational, but personal: no offer
]


def write_fixture(tmp_path: Path) -> Path:
    path = tmp_path / "labels.tsv"
    lines = ["query\tintent", *(f"{q}\t{label}" for q, label in FIXTURE)]
    path.write_text("\n".join(lines) + "\n")
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    intent_eval.add_intent_parser(parser.add_subparsers(dest="what"))
    return parser.parse_args(["intent", *argv])


def test_eval_with_a_label_map_matches_hand_computed_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        intent_eval, "load_classifier", lambda model, student: hand_classifier(TinyEmbedder())
    )
    args = parse(
        [
            "--labels",
            str(write_fixture(tmp_path)),
            "--text-col",
            "query",
            "--label-col",
            "intent",
            "--map",
            ORCAS_MAP,
            "--threshold",
            "0.5",
            "--json",
        ]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    # gold informational {1,2,6,7,9}, predicted {1,2,8,9}: P 3/4, R 3/5, F1 2/3
    # gold navigational {3,4}, predicted {3,4,6}: P 2/3, R 1, F1 4/5
    # gold transactional {5,8}, predicted {5,7}: P 1/2, R 1/2, F1 1/2
    assert out["n"] == 9
    assert out["accuracy"] == pytest.approx(6 / 9)
    assert out["per_label"]["informational"]["precision"] == pytest.approx(3 / 4)
    assert out["per_label"]["informational"]["recall"] == pytest.approx(3 / 5)
    assert out["per_label"]["navigational"]["precision"] == pytest.approx(2 / 3)
    assert out["per_label"]["navigational"]["recall"] == pytest.approx(1.0)
    assert out["per_label"]["transactional"]["recall"] == pytest.approx(1 / 2)
    assert out["macro_f1"] == pytest.approx((2 / 3 + 4 / 5 + 1 / 2) / 3)
    # offer: gold {1,2,6,7,9}, offered {1,2,8} (9 is personal): P 2/3, R 2/5, F1 1/2
    # no offer: gold {3,4,5,8}, not offered {3,4,5,6,7,9}: P 1/2, R 3/4, F1 3/5
    binary = out["binary"]
    assert binary["n"] == 9
    assert binary["accuracy"] == pytest.approx(5 / 9)
    assert binary["per_label"]["offer"]["precision"] == pytest.approx(2 / 3)
    assert binary["per_label"]["offer"]["recall"] == pytest.approx(2 / 5)
    assert binary["per_label"]["no_offer"]["recall"] == pytest.approx(3 / 4)
    assert binary["macro_f1"] == pytest.approx((1 / 2 + 3 / 5) / 2)


def test_macro_f1_counts_only_labels_present_in_gold() -> None:
    result = intent_eval.scores(
        ["navigational", "informational"],
        ["navigational", "transactional"],
        ("navigational", "informational", "transactional"),
    )
    assert result["macro_f1"] == pytest.approx((1.0 + 0.0) / 2)
    assert result["per_label"]["transactional"]["precision"] == 0.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Navigational", "not RAW=label"),
        ("Navigational=", "not RAW=label"),
        ("=navigational", "not RAW=label"),
        ("Navigational=nav", "not one of"),
        (",", "empty"),
    ],
)
def test_bad_map_is_a_one_line_config_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        intent_eval.parse_map(spec)
    assert "\n" not in info.value.message


def test_unknown_label_names_the_row(tmp_path: Path) -> None:
    path = write_fixture(tmp_path)
    with pytest.raises(DataError, match=r"labels.tsv:2: unknown label 'Factual'"):
        intent_eval.read_labelled(path, "query", "intent", {})
    with pytest.raises(DataError, match="add it to --map"):
        intent_eval.read_labelled(path, "query", "intent", {"Factual": "informational"})
    with pytest.raises(DataError, match="no column 'gold'"):
        intent_eval.read_labelled(path, "query", "gold", {})


def test_labels_already_in_our_set_need_no_map(tmp_path: Path) -> None:
    path = tmp_path / "ours.jsonl"
    path.write_text('{"q": "ebay", "y": "navigational"}\n{"q": "why", "y": "informational"}\n')
    items = intent_eval.read_labelled(path, "q", "y", {})
    assert [it.label for it in items] == ["navigational", "informational"]
