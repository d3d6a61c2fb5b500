"""Corrupt and crafted indexes: every loader refuses them with one ArtifactError line; a reload
answers a JSON error and keeps the old index; ``serve`` and ``eval`` print one line, exit 1.

The crafted cases keep the manifest's checksums consistent with the files, so only the
loaders' own checks of types and ranges stand between them and a keystroke."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.lexical_fixtures import build_small_index
from tests.student_fixtures import tiny_student
from typeahead.errors import ArtifactError
from typeahead.http.app import create_app
from typeahead.manifest import sha256_file
from typeahead.settings import Settings
from typeahead.suggest.index import LoadedIndex, load_index
from typeahead.suggest.service import SuggestService

TOKEN = "t0ken"
DOCS = [
    {"id": "ny", "title": "New York", "text": "new york is a large city by the sea"},
    {"id": "g", "title": "Google", "text": "google makes maps and a search engine"},
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedIndex, Path]:
    """A small index with entry vectors and documents, and the student that built it."""
    root = tmp_path_factory.mktemp("corrupt")
    tiny_student(root / "student")
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    index = build_small_index(root, vectors=True, vector_factory="flat",
                              student_dir=root / "student", docs=docs)
    return index, root / "student"


def _manifest(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "manifest.json").read_text()))


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    (path / "manifest.json").write_text(json.dumps(manifest))


def _resave(path: Path, name: str, array: np.ndarray) -> None:
    """Replace one data file and record its new size and checksum, as a crafted build would."""
    np.save(path / name, array)
    manifest = _manifest(path)
    manifest["files"][name] = {"bytes": (path / name).stat().st_size,
                               "sha256": sha256_file(path / name)}
    _write_manifest(path, manifest)


def missing_faiss(path: Path) -> None:
    (path / "vectors" / "index.faiss").unlink()


def counts_not_a_dict(path: Path) -> None:
    manifest = _manifest(path)
    manifest["counts"] = [1, 2, 3]
    _write_manifest(path, manifest)


def entries_not_a_number(path: Path) -> None:
    manifest = _manifest(path)
    manifest["counts"]["entries"] = "14"
    _write_manifest(path, manifest)


def files_entry_not_a_dict(path: Path) -> None:
    manifest = _manifest(path)
    manifest["files"]["weights.npy"] = "deadbeef"
    _write_manifest(path, manifest)


def file_outside_the_index(path: Path) -> None:
    manifest = _manifest(path)
    manifest["files"]["../../etc/passwd"] = {"bytes": 1, "sha256": "00"}
    _write_manifest(path, manifest)


def prefix_ids_out_of_range(path: Path) -> None:
    ids = np.load(path / "prefix.ids.npy")
    ids[0] = 10_000
    _resave(path, "prefix.ids.npy", ids)


def negative_word_owner(path: Path) -> None:
    ids = np.load(path / "words.ids.npy")
    ids[-1] = -3
    _resave(path, "words.ids.npy", ids)


def weights_wrong_dtype(path: Path) -> None:
    _resave(path, "weights.npy", np.load(path / "weights.npy").astype(np.float32))


def offsets_wrong_dtype(path: Path) -> None:
    _resave(path, "display.off.npy", np.load(path / "display.off.npy").astype(np.float64))


def offsets_past_the_blob(path: Path) -> None:
    off = np.load(path / "keys.off.npy")
    off[-1] += 1000
    _resave(path, "keys.off.npy", off)


def fuzzy_pids_out_of_range(path: Path) -> None:
    pids = np.load(path / "fuzzy.pids.npy")
    pids[3] = 1 << 30
    _resave(path, "fuzzy.pids.npy", pids)


def bm25_postings_out_of_range(path: Path) -> None:
    docs_dir = path / "docs"
    with np.load(docs_dir / "bm25.npz") as stored:
        arrays = dict(stored)
    arrays["docs"][0] = 99
    np.savez(docs_dir / "bm25.npz", **arrays)
    manifest = _manifest(docs_dir)
    manifest["files"]["bm25.npz"] = sha256_file(docs_dir / "bm25.npz")
    _write_manifest(docs_dir, manifest)


def vector_params_crafted(path: Path) -> None:
    manifest = _manifest(path / "vectors")
    manifest["params"] = {"nprobe": "all", "bogus": 1}
    _write_manifest(path / "vectors", manifest)


def vector_files_not_a_dict(path: Path) -> None:
    manifest = _manifest(path / "vectors")
    manifest["files"] = ["index.faiss"]
    _write_manifest(path / "vectors", manifest)


CORRUPTIONS: list[Callable[[Path], None]] = [
    missing_faiss, counts_not_a_dict, entries_not_a_number, files_entry_not_a_dict,
    file_outside_the_index, prefix_ids_out_of_range, negative_word_owner, weights_wrong_dtype,
    offsets_wrong_dtype, offsets_past_the_blob, fuzzy_pids_out_of_range,
    bm25_postings_out_of_range, vector_params_crafted, vector_files_not_a_dict,
]


def corrupted(built: tuple[LoadedIndex, Path], tmp_path: Path,
              corrupt: Callable[[Path], None]) -> Path:
    dest = tmp_path / corrupt.__name__
    shutil.copytree(built[0].path, dest)
    corrupt(dest)
    return dest


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_every_loader_refuses_with_one_artifact_error(
    built: tuple[LoadedIndex, Path], tmp_path: Path, corrupt: Callable[[Path], None],
) -> None:
    path = corrupted(built, tmp_path, corrupt)
    with pytest.raises(ArtifactError) as info:
        load_index(path, student_dir=built[1])
    assert "\n" not in info.value.message and str(path) in info.value.message


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
async def test_reload_answers_a_json_error_and_keeps_the_old_index(
    built: tuple[LoadedIndex, Path], tmp_path: Path, corrupt: Callable[[Path], None],
) -> None:
    index, student = built
    bad = corrupted(built, tmp_path, corrupt)
    settings = Settings(generation=False, admin_token=TOKEN, index_dir=index.path,
                        student_dir=student)
    app = create_app(settings, SuggestService(index=index, results_k=0))
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/admin/reload", json={"index": str(bad)},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 422, await resp.text()
        assert (await resp.json())["error"]["code"] == "index_rejected"
        ok = await client.get("/v1/suggest", params={"q": "new"})
        assert ok.status == 200
        assert (await client.get("/readyz")).status == 200


@pytest.mark.parametrize("corrupt", [missing_faiss, counts_not_a_dict, prefix_ids_out_of_range],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("command", ["serve", "eval"])
def test_serve_and_eval_print_one_line_and_exit_1(
    built: tuple[LoadedIndex, Path], tmp_path: Path, corrupt: Callable[[Path], None],
    command: str,
) -> None:
    path = corrupted(built, tmp_path, corrupt)
    log = tmp_path / "log.tsv"
    log.write_text("query\tcount\nnew york\t3\n")
    args = {"serve": ["serve", "--index", str(path), "--port", "0"],
            "eval": ["eval", "qac", "--index", str(path), "--log", str(log),
                     "--text-col", "query"]}[command]
    env = {"TYPEAHEAD_STUDENT_DIR": str(built[1]), "TYPEAHEAD_GENERATION": "false",
           "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "typeahead", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    # (serve's structured INFO log lines, e.g. FAISS announcing itself, may come first)
    lines = [line for line in done.stderr.strip().splitlines()
             if not line.startswith('{"ts"') or '"level":"info"' not in line]
    assert len(lines) == 1 and lines[0].startswith("typeahead: "), done.stderr
    assert "Traceback" not in done.stderr
