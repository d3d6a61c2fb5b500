from __future__ import annotations

import gc
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tests.student_fixtures import WORDS, tiny_student, tiny_tokenizer
from typeahead.embed.student import DEFAULT_STUDENT_DIR, Student, WordPiece, save_student
from typeahead.errors import ArtifactError


def test_encode_rows_are_unit_float32(tmp_path: Path) -> None:
    student = tiny_student(tmp_path)
    out = student.encode(["the cat sat", "cheap flights paris", "Weather FORECAST"])
    assert out.shape == (3, student.dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_single_and_batch_agree_and_mean_pool(tmp_path: Path) -> None:
    student = tiny_student(tmp_path)
    texts = ["the cat sat on the mat", "pizza hut", "rhine river"]
    batch = student.encode(texts)
    singles = np.vstack([student.encode([t]) for t in texts])
    np.testing.assert_allclose(batch, singles, rtol=1e-5, atol=1e-6)
    table = np.load(tmp_path / "vectors.npy")
    ids = [WORDS.index(w) for w in ("pizza", "hut")]
    expected = table[ids].mean(axis=0)
    np.testing.assert_allclose(batch[1], expected / np.linalg.norm(expected), rtol=1e-5)


def test_padding_is_off_and_unknown_words_are_dropped(tmp_path: Path) -> None:
    student = tiny_student(tmp_path)
    # The saved tokenizer pads to 128; the student must see only the real tokens.
    assert student.token_ids("the cat") == [WORDS.index("the"), WORDS.index("cat")]
    assert student.token_ids("the zzzz cat") == student.token_ids("the cat")
    assert not student.encode(["zzzz qqqq"]).any()
    assert not student.encode(["", "zzzz"]).any()


def test_manifest_records_shape_and_checksums(tmp_path: Path) -> None:
    student = tiny_student(tmp_path, dim=6, dtype="int8")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["dim"] == 6 and manifest["vocab_size"] == len(WORDS)
    assert manifest["normalize"] == "l2" and manifest["dtype"] == "int8"
    assert manifest["fingerprint"] == student.fingerprint and len(student.fingerprint) == 16
    assert set(manifest["files"]) == {"tokenizer.json", "vectors.npy", "scales.npy"}


def test_int8_stays_close_to_float32(tmp_path: Path) -> None:
    exact = tiny_student(tmp_path / "f32", dim=16, dtype="float32")
    small = tiny_student(tmp_path / "i8", dim=16, dtype="int8")
    texts = ["the cat sat on the mat", "cheap flights london"]
    cos = (exact.encode(texts) * small.encode(texts)).sum(axis=1)
    assert (cos > 0.999).all()
    assert exact.fingerprint != small.fingerprint


def test_tampered_vectors_are_refused(tmp_path: Path) -> None:
    tiny_student(tmp_path)
    table = np.load(tmp_path / "vectors.npy")
    np.save(tmp_path / "vectors.npy", table + 1.0)
    with pytest.raises(ArtifactError, match="corrupt"):
        Student.load(tmp_path)


def test_shape_mismatch_and_missing_dir_are_refused(tmp_path: Path) -> None:
    vectors = np.ones((len(WORDS) + 1, 4), dtype=np.float32)
    with pytest.raises(ArtifactError, match="vocabulary"):
        save_student(tmp_path, vectors, tiny_tokenizer(), {})
        Student.load(tmp_path)
    with pytest.raises(ArtifactError, match="missing"):
        Student.load(tmp_path / "nowhere")


def test_encode_rejects_a_bare_string(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        tiny_student(tmp_path).encode("the cat")


@pytest.mark.skipif(
    not (DEFAULT_STUDENT_DIR / "manifest.json").exists(), reason="no shipped student"
)
def test_shipped_student_loads_and_names_its_teacher() -> None:
    student = Student.load()
    assert student.manifest["teacher"]["name"].endswith("all-MiniLM-L6-v2")
    assert len(student.manifest["teacher"]["weights_sha256"]) == 64
    assert student.manifest["training"]["data_sha256"]
    assert student.manifest["variant"] in ("distilled", "finetuned")
    vecs = student.encode(
        ["cheap flights to paris", "airline tickets paris", "chocolate cake recipe"]
    )
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
    size = sum(p.stat().st_size for p in DEFAULT_STUDENT_DIR.iterdir())
    assert size < 16 * 1024 * 1024


AOL_LOG = Path(__file__).resolve().parents[2] / "shared/data/typeahead/aol2006_q1m_counts.tsv.gz"
TRICKY = {"ABC", "www.E-Bay.com", "a&b", "(x)", "__init__", "...", "~", "don't", "3d",
          "iphone15", "x" * 100, "x" * 101, "zzqxj", "unaffable", "##ing"}


def _log_words(lines: int) -> set[str]:
    words: set[str] = set()
    if AOL_LOG.is_file():  # the shared query log, where this checkout has it
        with gzip.open(AOL_LOG, "rt", encoding="utf-8") as fh:
            next(fh)
            for _, line in zip(range(lines), fh, strict=False):
                words.update(line.split("\t", 1)[0].split())
    return words


def test_python_wordpiece_gives_the_tokenizers_ids_for_printable_ascii_words() -> None:
    student = Student.load()
    wordpiece, tokenizer = student._wordpiece, student._tokenizer
    assert wordpiece is not None
    words = {w for w in TRICKY | _log_words(20_000) if w.isascii() and w.isprintable()}
    fragments = {w[:i] for w in words for i in range(1, len(w))}  # what keystrokes end in
    cased = {w.upper() for w in list(words)[:2000]} | {w.title() for w in list(fragments)[:2000]}
    for word in sorted(words | fragments | cased):
        cache: dict[str, list[int]] = {}
        assert wordpiece.encode_into([word], cache) == []
        library = tokenizer.encode(word, add_special_tokens=False).ids
        assert list(cache[word]) == [i for i in library if i != student._unk], word
    others = ["café", "tab\there", "naïve"]
    assert wordpiece.encode_into(others, {}) == others  # left to the library


def test_only_a_bert_wordpiece_tokenizer_gets_the_python_path(tmp_path: Path) -> None:
    assert WordPiece.of(tiny_tokenizer()) is None
    student = tiny_student(tmp_path)
    assert student._wordpiece is None
    assert student.token_ids("Paris FLIGHTS") == student.token_ids("paris flights")


def test_cached_word_ids_are_not_left_to_the_garbage_collector(tmp_path: Path) -> None:
    # Every path into the word cache (the Python WordPiece, one tokenizer call per text, one
    # per word) must store objects the collector stops tracking: a full collection walks
    # every tracked one, and the cache holds up to 200,000 words.
    student = tiny_student(tmp_path)
    student.encode(["paris flights", "café", "cheap flights to paris café"])
    gc.collect()
    assert student._words
    assert not [w for w, ids in student._words.items() if gc.is_tracked(ids)]
