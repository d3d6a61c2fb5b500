"""The suggestion-safety text model: its manifest check, what it flags, and how screening uses
it beside the word lists (the adult setting, the build report)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.lexical_fixtures import build_small_index
from typeahead.assets import SAFETY_DIR
from typeahead.errors import ArtifactError
from typeahead.safety.model import BUCKETS, WEIGHTS_FILE, SexualTextModel, ngram_ids
from typeahead.safety.policy import SuggestionPolicy

MODEL = SexualTextModel.load()
POLICY = SuggestionPolicy.load()
# Explicit glued texts none of the word lists names, and ordinary texts.
MODEL_ONLY = ("hornyhousewivesclub", "hornywivesclub")
PLAIN = ("bass pro shops", "weather in boston", "cocktail dress", "emily dickinson",
         "naked mole rats", "dicks sporting goods")


def copy_model(tmp_path: Path) -> Path:
    target = tmp_path / "safety"
    shutil.copytree(SAFETY_DIR, target)
    return target


def edit_manifest(directory: Path, **fields: object) -> None:
    path = directory / "manifest.json"
    manifest = orjson.loads(path.read_bytes())
    path.write_bytes(orjson.dumps({**manifest, **fields}))


def test_the_packaged_model_loads_with_its_fingerprint() -> None:
    assert len(MODEL.fingerprint) == 16 and MODEL.threshold > 0
    assert POLICY.describe()["model"] == MODEL.describe()
    assert SuggestionPolicy.load(model=False).fingerprint != POLICY.fingerprint


def test_a_model_whose_weights_do_not_match_the_manifest_is_refused(tmp_path: Path) -> None:
    model_dir = copy_model(tmp_path)
    weights = np.load(model_dir / WEIGHTS_FILE)
    weights[0] += 1
    np.save(model_dir / WEIGHTS_FILE, weights)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        SexualTextModel.load(model_dir)


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "intent-model"}, "not a safety-text-model manifest"),
    ({"format_version": 9}, "format version 9 is not supported"),
    ({"buckets": BUCKETS // 2}, "built for other features"),
    ({"ngrams": [1, 4]}, "built for other features"),
    ({"threshold": "high"}, "'threshold' must be a finite number"),
])
def test_a_mismatched_manifest_is_refused(tmp_path: Path, fields: dict[str, object],
                                          message: str) -> None:
    model_dir = copy_model(tmp_path)
    edit_manifest(model_dir, **fields)
    with pytest.raises(ArtifactError, match=message):
        SexualTextModel.load(model_dir)


def test_features_are_hashed_slices_of_the_normalised_text() -> None:
    assert ngram_ids("Naked  Mole") == ngram_ids("naked mole")
    assert all(0 <= i < BUCKETS for i in ngram_ids("ab"))
    assert ngram_ids("") == ngram_ids("   ")


@pytest.mark.parametrize("text", MODEL_ONLY)
def test_the_model_flags_explicit_texts_the_lists_miss(text: str) -> None:
    assert POLICY.blocked(text) is None
    assert MODEL.flags(text)
    assert POLICY.screened(text) == "sexual"


@pytest.mark.parametrize("text", PLAIN)
def test_the_model_leaves_ordinary_texts_and_look_alikes(text: str) -> None:
    assert POLICY.screened(text) is None


def test_the_lists_category_wins_and_the_adult_setting_only_loosens_sexual() -> None:
    assert POLICY.screened("naked teens") == "minors"
    adult = SuggestionPolicy.load(["sexual", "profanity"])
    assert adult.screened(MODEL_ONLY[0]) is None
    assert adult.screened("naked teens") == "minors" and adult.screened("sexzool") == "bestiality"
    profane = SuggestionPolicy.load(["profanity"])
    assert profane.screened(MODEL_ONLY[0]) == "sexual"


def test_the_build_counts_what_the_model_removed(tmp_path: Path) -> None:
    rows = [(MODEL_ONLY[0], 90), ("sex toys", 70), ("new york", 100), ("sussex", 60)]
    index = build_small_index(tmp_path, rows)
    served = {index.lexical.data.display[i] for i in range(len(index.lexical))}
    assert served == {"new york", "sussex"}
    safety = index.manifest["safety"]
    assert safety["by_category"]["sexual"] == 2 and safety["by_model"] == 1
    assert safety["model"] == MODEL.describe()
