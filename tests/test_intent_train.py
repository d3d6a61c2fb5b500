"""Training on a tiny fixture set: label mapping, weak labels, the model directory it writes."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.intent_fixtures import TinyEmbedder, write_data_dir
from typeahead.errors import DataError
from typeahead.intent.classifier import LABELS, IntentClassifier
from typeahead.train import intent as intent_train


def test_source_labels_are_mapped(tmp_path: Path) -> None:
    data = write_data_dir(tmp_path)
    web = intent_train.load_web_track(
        data / "intent/trec_web_2009_2014_topics.tsv",
        data / "intent/trec_web_2009_2014_subtopics.tsv",
    )
    labels = {(e.source, e.text): e.label for e in web}
    assert labels[("web_topics", "obama family tree")] == "informational"  # 2 inf : 1 nav
    assert labels[("web_topics", "rules of golf")] == "informational"  # single, no subtopics
    assert labels[("web_subtopics", "Find the TIME photo essay.")] == "navigational"
    assert ("web_subtopics", "An ambiguous typo.") not in labels  # "inav" is dropped
    dbp = {
        e.text: e.label
        for e in intent_train.load_dbpedia(data / "intent/dbpedia_entity_v2_queries.tsv")
    }
    assert dbp == {
        "B. F. Skinner": "navigational",
        "Who is the mayor of Berlin?": "informational",
        "vietnam war facts": "informational",
        "Neil Gaiman novels": "informational",
    }


def test_weak_labels_fire_only_when_one_rule_does() -> None:
    sites = intent_train.site_names([("ebay.com", 3), ("www.bankofamerica.com", 5)])
    assert sites == {"ebay", "bankofamerica"}
    assert intent_train.weak_label("bank of america", sites) == "navigational"
    assert intent_train.weak_label("www.cnn.com", sites) == "navigational"
    assert intent_train.weak_label("buy cheap shoes", sites) == "transactional"
    assert intent_train.weak_label("how do tides work", sites) == "informational"
    assert intent_train.weak_label("how to download music", sites) is None  # two rules
    assert intent_train.weak_label("pier 57", sites) is None  # no rule
    assert intent_train.rule_baseline("how to download music", sites) == "informational"
    assert intent_train.rule_baseline("pier 57", sites) == "navigational"


def test_splits_are_stable_and_weak_labels_only_train(tmp_path: Path) -> None:
    data = intent_train.load_sources(write_data_dir(tmp_path))
    parts = intent_train.split(data.examples)
    assert sum(map(len, parts.values())) <= len(data.examples)
    for part, examples in parts.items():
        assert all(intent_train.split_of(e.group) == part for e in examples)
    assert all(e.source != "aol_weak" for e in parts["dev"] + parts["test"])
    groups = {part: {e.group for e in ex} for part, ex in parts.items()}
    assert not groups["train"] & groups["test"]


def test_train_writes_a_loadable_model(tmp_path: Path) -> None:
    emb = TinyEmbedder()
    out = tmp_path / "model"
    manifest = intent_train.train(write_data_dir(tmp_path / "data"), out, emb)
    on_disk = orjson.loads((out / "manifest.json").read_bytes())
    assert on_disk["labels"] == list(LABELS)
    assert on_disk["student"] == {"fingerprint": emb.fingerprint, "dim": emb.dim}
    assert 0.0 <= on_disk["threshold"] <= 1.0
    assert on_disk["threshold"] == manifest["threshold"]
    assert set(on_disk["training_data"]) >= {
        "intent/trec_web_query_types.tsv",
        "typeahead/aol2006_q1m_counts.tsv.gz",
    }
    assert all(len(v["sha256"]) == 64 for v in on_disk["training_data"].values())
    assert on_disk["dev_pr_curve"] and {"precision", "recall"} <= on_disk["dev_pr_curve"][0].keys()
    clf = IntentClassifier.load(out, student=emb)
    for text in ["how do vaccines work", "ebay", "buy cheap shoes"]:
        intent = clf.predict(text)
        assert intent.label in LABELS
        assert 0.0 <= intent.confidence <= 1.0
    assert clf.predict("what is the capital of peru").label == "informational"


def test_train_without_weak_labels_never_predicts_transactional(tmp_path: Path) -> None:
    emb = TinyEmbedder()
    out = tmp_path / "model"
    intent_train.train(write_data_dir(tmp_path / "data"), out, emb, weak=False)
    clf = IntentClassifier.load(out, student=emb)
    assert clf.probabilities("buy cheap shoes")[LABELS.index("transactional")] < 1e-6


def test_missing_data_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"trec_web_query_types\.tsv"):
        intent_train.load_sources(tmp_path)
