"""The character language model generator: numpy inference equal to the trained network, the
privacy rule under an untrained (random) model, the model file's checks, and the service and
``train-lm`` using it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from tests.lexical_fixtures import build_small_index, write_tsv
from tests.test_generated import ROWS, pieces, texts
from typeahead.cli import main
from typeahead.errors import ArtifactError
from typeahead.http.app import load_service
from typeahead.safety.policy import SuggestionPolicy
from typeahead.settings import Settings
from typeahead.suggest.charlm import KIND, CharLM, CharLMGenerator, manifest, with_char_lm
from typeahead.suggest.generated import Generator
from typeahead.suggest.index import NORMALIZATION
from typeahead.suggest.service import SuggestService

CHARS = " abcdefghijklmnopqrstuvwxyz"


def random_model(hidden: int = 16, seed: int = 0, chars: str = CHARS) -> CharLM:
    """An untrained model: its choices are arbitrary, so only the decoder's constraints keep
    what it returns to the safe pieces."""
    rng = np.random.default_rng(seed)
    tokens = len(chars) + 2

    def draw(*shape: int) -> np.ndarray:
        return rng.normal(0, 1.0, shape).astype(np.float32)

    return CharLM(draw(tokens, 3 * hidden), draw(hidden, 3 * hidden), draw(3 * hidden),
                  draw(hidden, tokens), draw(tokens), manifest(chars, hidden))


def lm_index(tmp_path: Path, model: CharLM) -> SuggestService:
    index = build_small_index(tmp_path, ROWS)
    path = tmp_path / "lm.npz"
    model.save(path)
    return SuggestService(index=with_char_lm(index, path), policy=SuggestionPolicy.load(()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_decoded_piece_occurs_in_three_distinct_queries(tmp_path: Path, seed: int) -> None:
    svc = lm_index(tmp_path, random_model(seed=seed))
    assert not isinstance(svc.index.generator, Generator)
    words, pairs = pieces(ROWS)
    probes = {q[:n] for q, _ in ROWS for n in range(1, len(q) + 1)}
    probes |= {"zorblax ", "zorblax and the g", "the g", "harry potter ", "harry potter and "}
    produced = set()
    for probe in sorted(probes):
        for text in texts(svc.suggest(probe, 20), "generated"):
            produced.add(text)
            split = text.split(" ")
            assert text.startswith(svc.index.lexical.key(probe).rstrip()), (probe, text)
            assert all(words[w] >= 3 for w in split), text
            assert all(pairs[p] >= 3 for p in itertools.pairwise(split)), text
    assert produced  # the constraint was exercised, not vacuous
    assert not any("zorblax" in text or "porn" in text for text in produced)


def test_completions_are_best_first_and_extend_the_typed_words(tmp_path: Path) -> None:
    svc = lm_index(tmp_path, random_model())
    gen = svc.index.generator
    assert gen is not None
    got = list(gen.complete("harry potter and the g", False, 5))
    assert got, "a safe fragment after safe words is completed"
    logps = [lp for _, lp in got]
    assert logps == sorted(logps, reverse=True) and all(lp <= 0 for lp in logps)
    assert all(t.startswith("harry potter and the g") for t, _ in got)
    assert list(gen.complete("zorblax and the g", False, 5)) == []  # an unsafe typed word
    assert list(gen.complete("harry x", False, 5)) == []  # no safe word starts with "x"


def test_numpy_inference_equals_the_trained_network() -> None:
    torch = pytest.importorskip("torch")
    from typeahead.train.charlm import _Net, encode, export

    torch.manual_seed(3)
    net = _Net(torch, len(CHARS) + 2, 24)
    model = export(net, manifest(CHARS, 24))
    x, _ = encode(["harry potter", "new york"], CHARS)
    with torch.no_grad():
        want = torch.log_softmax(net(torch.from_numpy(np.maximum(x, 0))), dim=-1).numpy()
    for row, text in enumerate(["harry potter", "new york"]):
        h = np.zeros((1, 24), dtype=np.float32)
        for t, token in enumerate(x[row, : len(text) + 1].tolist()):
            h = model.step(h, np.array([token]))
            np.testing.assert_allclose(model.log_probs(h)[0], want[row, t], atol=1e-4)


def test_the_model_file_is_checked(tmp_path: Path) -> None:
    model = random_model()
    path = tmp_path / "lm.npz"
    model.save(path)
    loaded = CharLM.load(path, NORMALIZATION)
    np.testing.assert_array_equal(loaded.recurrent, model.recurrent)
    with pytest.raises(ArtifactError, match="normalised as"):
        CharLM.load(path, NORMALIZATION + "+fold-punctuation")
    bad = CharLM(model.inputs, model.recurrent[:4], model.recurrent_bias, model.output,
                 model.output_bias, model.manifest)
    bad.save(path)
    with pytest.raises(ArtifactError, match="recurrent"):
        CharLM.load(path, NORMALIZATION)
    CharLM(model.inputs, model.recurrent, model.recurrent_bias, model.output, model.output_bias,
           {**model.manifest, "kind": "other"}).save(path)
    with pytest.raises(ArtifactError, match="not a character language model"):
        CharLM.load(path, NORMALIZATION)
    path.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="cannot read"):
        CharLM.load(path, NORMALIZATION)
    assert model.manifest["kind"] == KIND


def test_the_service_setting_swaps_the_generator_and_drops_the_ranker(tmp_path: Path) -> None:
    index = build_small_index(tmp_path, ROWS)
    random_model().save(tmp_path / "lm.npz")
    settings = Settings(index_dir=index.path, semantic=False, completion_ranker=True,
                        completion_lm_file=tmp_path / "lm.npz")
    svc = load_service(settings)
    assert isinstance(svc.index.generator, CharLMGenerator) and svc.ranker is None
    assert texts(svc.suggest("harry potter and the g", 10), "generated")
    with pytest.raises(ArtifactError):
        load_service(Settings(index_dir=index.path, semantic=False,
                              completion_lm_file=tmp_path / "missing.npz"))


def test_train_lm_writes_a_model_the_generator_loads(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    log = write_tsv(tmp_path / "log.tsv", ROWS * 3)
    out = tmp_path / "lm.npz"
    assert main(["train-lm", "--corpus", str(log), "--text-col", "query", "--weight-col",
                 "count", "--out", str(out), "--hidden", "8", "--minutes", "0.02"]) == 0
    model = CharLM.load(out, NORMALIZATION)
    assert model.hidden == 8 and model.manifest["trained_on"]["corpus"] == "log.tsv"
    assert main(["train-lm", "--corpus", str(log), "--text-col", "query", "--out", str(out),
                 "--hidden", "2"]) == 2
    assert "--hidden" in capsys.readouterr().err
