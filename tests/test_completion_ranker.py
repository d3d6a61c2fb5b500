"""The learned completion order: its manifest check, the folded scorer against LightGBM's own
prediction, answers through both request paths, and ``train-ranker`` on a tiny log."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.lexical_fixtures import build_small_index, write_tsv
from tests.test_generated import ROWS, texts
from typeahead.cli import main
from typeahead.errors import ArtifactError
from typeahead.safety.policy import SuggestionPolicy
from typeahead.suggest.ranker import (
    FEATURES,
    CompletionRanker,
    features,
    load_ranker,
    manifest,
    ranker_for,
)
from typeahead.suggest.service import SuggestService

NORM = "nfkc+casefold+strip-accents+collapse-whitespace"


def tiny_ranker() -> CompletionRanker:
    steps = [([0.5], [0.0, 1.0]) if name == "in_order" else ([], [0.0]) for name in FEATURES]
    return CompletionRanker.from_steps(steps, manifest(NORM))


def test_a_mismatched_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ranker.json"
    tiny_ranker().save(path)
    assert CompletionRanker.load(path, NORM).score(np.ones((1, len(FEATURES))))[0] == 1.0
    with pytest.raises(ArtifactError, match="normalised"):
        CompletionRanker.load(path, NORM + "+fold-punctuation")
    raw = orjson.loads(path.read_bytes())
    for field, value, says in (("features", list(FEATURES[:-1]), "features"),
                               ("format_version", 99, "format version"),
                               ("kind", "something-else", "not a completion ranker")):
        path.write_bytes(orjson.dumps({**raw, field: value}))
        with pytest.raises(ArtifactError, match=says):
            CompletionRanker.load(path, NORM)
        with pytest.raises(ArtifactError):  # named explicitly: an error
            load_ranker(path, NORM)


def test_the_packaged_model_is_skipped_with_a_warning_where_it_does_not_fit(
        caplog: pytest.LogCaptureFixture) -> None:
    assert load_ranker(None, NORM) is not None
    with caplog.at_level(logging.WARNING, logger="typeahead.suggest"):
        assert load_ranker(None, NORM + "+fold-punctuation") is None
    assert "fixed tier order" in caplog.text


def test_folded_stumps_order_as_lightgbm_predicts() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    from typeahead.train.completion import fold

    rng = np.random.default_rng(3)
    n, size = 3000, 10
    x = np.column_stack([rng.integers(0, 20, n).astype(float) if j % 3 == 0
                         else rng.random(n) * 4 - 2 for j in range(len(FEATURES))])
    y = ((x[:, 0] < 5) & (x[:, 4] > 0) | (rng.random(n) < 0.05)).astype(float)
    model = lightgbm.LGBMRanker(objective="lambdarank", n_estimators=80, num_leaves=2,
                                max_depth=1, min_child_samples=5, verbose=-1, n_jobs=1)
    model.fit(x, y, group=[size] * (n // size))
    ranker = CompletionRanker.from_steps(fold(model.booster_.dump_model()), manifest(NORM))
    ours, theirs = ranker.score(x), model.predict(x)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    for start in range(0, n, size):
        assert (np.argsort(-ours[start:start + size], kind="stable").tolist()
                == np.argsort(-theirs[start:start + size], kind="stable").tolist())


def test_ranked_answers_keep_falling_scores_and_generated_completions(tmp_path: Path) -> None:
    index = build_small_index(tmp_path, ROWS)
    ranker = ranker_for(index, True, None)
    assert ranker is not None and ranker_for(index, False, None) is None
    service = SuggestService(index=index, policy=SuggestionPolicy.load(()), ranker=ranker)
    answer = service.suggest("harry potter and the g", 10)
    assert "harry potter and the goblet of fire" in texts(answer, "generated")
    scores = [s["score"] for s in answer["suggestions"]]
    assert scores == sorted(scores, reverse=True)
    key = "harry potter and the g"
    candidates = service.candidates(key, key, index.lexical.suggest(key, 10))
    assert features(key, candidates).shape == (len(candidates), len(FEATURES))


def test_train_ranker_on_a_tiny_log(tmp_path: Path) -> None:
    pytest.importorskip("lightgbm")
    words = ["books", "movie", "cast", "games", "quiz", "wiki", "fan", "art", "shop", "news"]
    rows = [(f"harry potter {a}", 40 - 3 * i) for i, a in enumerate(words)]
    rows += [(f"harry potter {a} {b}", 12) for a in words[:5] for b in words[5:]]
    rows += [(f"{a} {b}", 9) for a in words for b in words if a != b]
    corpus = write_tsv(tmp_path / "log.tsv", rows)
    out = tmp_path / "ranker.json"
    assert main(["train-ranker", "--corpus", str(corpus), "--text-col", "query",
                 "--weight-col", "count", "--out", str(out), "--trees", "20",
                 "--min-child", "1"]) == 0
    model = CompletionRanker.load(out, NORM)
    assert model.manifest["trained_on"]["weight_col"] == "count"
    assert set(model.manifest["validation_mrr"]) == {"fixed", "ranked"}
