"""The serving runtime: lexical cues, the personal-data rule, calibration, model loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.intent_fixtures import INF_QUERIES, NAV_QUERIES, TinyEmbedder, hand_classifier
from typeahead.errors import ArtifactError
from typeahead.intent.classifier import (
    FEATURE_NAMES,
    LABELS,
    IntentClassifier,
    lexical_features,
    looks_personal,
)
from typeahead.train.intent import Fitted, save_model


def feature(text: str, name: str) -> float:
    return lexical_features(text)[FEATURE_NAMES.index(name)]


def test_lexical_features_have_one_value_per_name() -> None:
    for text in ["", "ebay", "How tall is the Eiffel Tower?", "www.cnn.com 2006"]:
        assert len(lexical_features(text)) == len(FEATURE_NAMES)


def test_lexical_cues() -> None:
    assert feature("how tall is it", "starts_question_word") == 1.0
    assert feature("is it raining", "starts_aux_verb") == 1.0
    assert feature("www.cnn.com", "url_or_domain") == 1.0
    assert feature("ebay.com", "url_or_domain") == 1.0
    assert feature("buy cheap shoes", "trans_cue") == 1.0
    assert feature("route 66", "has_digit") == 1.0
    assert feature("Bank Of America", "capitalised_share") == 1.0
    # No capital at all: the capitalisation cue is unknown, not "lower-case", so it stays 0.
    assert feature("bank of america", "cased") == 0.0
    assert feature("bank of america", "capitalised_share") == 0.0
    assert feature("NASA budget", "all_caps_share") == 0.5
    sites = frozenset({"ebay", "bankofamerica"})
    known = FEATURE_NAMES.index("known_site")
    assert lexical_features("Bank of America", sites)[known] == 1.0
    assert lexical_features("ebay", sites)[known] == 1.0
    assert lexical_features("ebay motors", sites)[known] == 0.0
    assert lexical_features("ebay", frozenset())[known] == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "jane.doe@example.com",
        "what is jane@example",
        "call 555-123-4567",
        "(555) 123 4567",
        "+44 20 7946 0958",
        "ssn 123-45-6789",
        "4111 1111 1111 1111",
    ],
)
def test_personal_data_is_recognised(text: str) -> None:
    assert looks_personal(text)


@pytest.mark.parametrize(
    "text",
    ["pier 57 nyc", "@nasa", "world cup 1998 2002", "route 66", "at&t", "top 10 movies of 2006"],
)
def test_ordinary_queries_are_not_personal(text: str) -> None:
    assert not looks_personal(text)


def test_personal_data_never_gets_an_offer() -> None:
    clf = hand_classifier(TinyEmbedder(), threshold=0.0)
    assert clf.offer_generate("how do i reach john")
    for text in ["how do i reach john.smith@gmail.com", "what is 555-867-5309", "who is a@b.co"]:
        assert clf.predict(text).label == "informational"
        assert not clf.offer_generate(text)
        assert not clf.offer_generate(text, threshold=0.0)


def test_confidences_are_probabilities() -> None:
    clf = hand_classifier(TinyEmbedder())
    for text in [*NAV_QUERIES, *INF_QUERIES, "", "   "]:
        probs = clf.probabilities(text)
        assert len(probs) == len(LABELS)
        assert all(0.0 <= p <= 1.0 for p in probs)
        assert sum(probs) == pytest.approx(1.0)
        intent = clf.predict(text)
        assert intent.label in LABELS
        assert 0.0 <= intent.confidence <= 1.0
        assert intent.confidence == pytest.approx(max(probs))


def test_threshold_is_monotone() -> None:
    clf = hand_classifier(TinyEmbedder())
    texts = [*NAV_QUERIES, *INF_QUERIES, "how to buy a car", "buy a car"]
    previous = None
    for threshold in np.linspace(0.0, 1.0, 21):
        offered = {t for t in texts if clf.offer_generate(t, threshold=float(threshold))}
        if previous is not None:
            assert offered <= previous
        previous = offered
    assert previous == set()  # confidence is never above 1
    at_zero = {t for t in texts if clf.offer_generate(t, threshold=0.0)}
    assert at_zero == {t for t in texts if clf.predict(t).label == "informational"}


def test_decide_uses_a_given_embedding() -> None:
    emb = TinyEmbedder()
    clf = hand_classifier(emb)
    text = "how tall is the eiffel tower"
    given = clf.decide(text, embedding=emb.encode([text])[0])
    assert given == clf.decide(text)
    assert given.intent.as_json()["label"] == "informational"
    assert given.offer_generate


def _saved(tmp_path: Path, emb: TinyEmbedder) -> Path:
    clf = hand_classifier(emb)
    weights = np.zeros((len(LABELS), emb.dim + len(FEATURE_NAMES)), dtype=np.float32)
    weights[:, :] = clf._w_emb.mean()  # any weights; loading is what is under test
    params = {
        "bias": [0.0, 0.1, -0.1],
        "lexical_mean": [0.0] * len(FEATURE_NAMES),
        "lexical_scale": [1.0] * len(FEATURE_NAMES),
        "temperature": 1.5,
    }
    manifest = {
        "kind": "intent-model",
        "format_version": 1,
        "labels": list(LABELS),
        "lexical_features": list(FEATURE_NAMES),
        "student": {"fingerprint": emb.fingerprint, "dim": emb.dim},
        "threshold": 0.6,
    }
    out = tmp_path / "model"
    save_model(out, Fitted(weights, params, 0.6, [], 1.0), manifest)
    return out


def test_load_checks_the_manifest(tmp_path: Path) -> None:
    emb = TinyEmbedder()
    path = _saved(tmp_path, emb)
    clf = IntentClassifier.load(path, student=emb)
    assert clf.threshold == 0.6
    assert IntentClassifier.load(path, student=emb, threshold=0.9).threshold == 0.9
    with pytest.raises(ArtifactError, match="student"):
        IntentClassifier.load(path, student=TinyEmbedder(fingerprint="another"))
    with pytest.raises(ArtifactError, match="shape"):
        IntentClassifier.load(path, student=TinyEmbedder(dim=8))
    with pytest.raises(ArtifactError):
        IntentClassifier.load(tmp_path / "nowhere", student=emb)


def test_load_refuses_a_corrupt_model(tmp_path: Path) -> None:
    emb = TinyEmbedder()
    path = _saved(tmp_path, emb)
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    weights = np.load(broken / "weights.npy")
    np.save(broken / "weights.npy", weights + 1.0)
    with pytest.raises(ArtifactError, match="corrupt"):
        IntentClassifier.load(broken, student=emb)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest"):
        IntentClassifier.load(path, student=emb)
