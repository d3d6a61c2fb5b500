"""The distilled static student: one vector per token, mean-pooled, L2-normalised.

Serving runs on numpy and ``tokenizers`` alone (no torch). A student directory holds
``tokenizer.json``, ``vectors.npy`` (float32, float16, or int8 with per-row ``scales.npy``) and
``manifest.json`` (teacher, dimensions, vocabulary size, normalisation, training-data checksum,
file checksums and the fingerprint that vector indexes record). ``typeahead.train.distill`` writes
them; ``Student.load`` checks them and refuses a corrupt or inconsistent directory.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from typeahead.assets import STUDENT_DIR
from typeahead.errors import ArtifactError
from typeahead.manifest import read_format_manifest, sha256_file

__all__ = ["DEFAULT_STUDENT_DIR", "FORMAT", "Student", "save_student"]

FORMAT = "typeahead-student/1"
DEFAULT_STUDENT_DIR = STUDENT_DIR
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
VECTORS = "vectors.npy"
SCALES = "scales.npy"
DTYPES = ("float32", "float16", "int8")
# Per-word token ids are cached: words repeat across keystrokes and queries far more than whole
# texts do, and the tokenizer call dominates single-query latency.
WORD_CACHE_MAX = 200_000
BATCH_ROWS = 8192


class Student:
    """A static embedding model: ``encode`` maps texts to L2-normalised float32 rows."""

    def __init__(
        self, vectors: np.ndarray, tokenizer: Tokenizer, manifest: Mapping[str, Any]
    ) -> None:
        if vectors.ndim != 2 or vectors.shape[0] != tokenizer.get_vocab_size():
            raise ArtifactError(
                f"student vectors {vectors.shape} do not match the tokenizer's vocabulary "
                f"of {tokenizer.get_vocab_size()}"
            )
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._tokenizer = _plain_tokenizer(tokenizer)
        config = json.loads(self._tokenizer.to_str())  # (30 ms for the shipped vocabulary)
        self._unk = _unk_id(self._tokenizer, config)
        self._wordpiece = WordPiece.of(self._tokenizer, config)
        # Tuples, not lists: the garbage collector stops tracking a tuple of ints, while every
        # cached list stayed tracked, and a full collection walked all 200,000 of them in the
        # middle of a keystroke (30 ms with the cache full; docs/semantic.md).
        self._words: dict[str, tuple[int, ...]] = {}
        self.manifest: dict[str, Any] = dict(manifest)
        self.dim: int = int(vectors.shape[1])
        self.vocab_size: int = int(vectors.shape[0])
        self.fingerprint: str = str(manifest.get("fingerprint", ""))

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None = None) -> Student:
        """Load a student directory (None: the packaged default), verifying its manifest."""
        root = DEFAULT_STUDENT_DIR if path is None else Path(path)
        manifest = _read_manifest(root)
        tokenizer = _read_tokenizer(root / TOKENIZER)
        vectors = _read_vectors(root, str(manifest.get("dtype", "")))
        fingerprint = compute_fingerprint(root)
        if fingerprint != manifest.get("fingerprint"):
            raise ArtifactError(
                f"student at {root} is corrupt: its files hash to {fingerprint}, "
                f"the manifest says {manifest.get('fingerprint')}"
            )
        _check_shape(root, manifest, vectors)
        return cls(vectors, tokenizer, manifest)

    # --- encoding --------------------------------------------------------------------------

    def token_ids(self, text: str) -> list[int]:
        """The student's token ids for ``text`` (no special tokens, unknown pieces dropped)."""
        words = text.split()
        cache = self._words
        unseen = [w for w in words if w not in cache]
        if unseen and self._wordpiece is not None:
            self._make_room(len(unseen))
            unseen = self._wordpiece.encode_into(unseen, cache)
        if len(unseen) > 1:
            # One tokenizer call for the whole text costs about as much as one per word, so
            # a query with several new words is tokenized once and split back into words.
            self._encode_words(unseen)
        ids: list[int] = []
        for word in words:
            cached = cache.get(word)
            if cached is None:
                cached = self._encode_word(word)
            ids.extend(cached)
        return ids

    def _encode_words(self, words: list[str]) -> None:
        clean = [w if w.isascii() else "".join(c for c in w if not _SURROGATE(c)) for w in words]
        if not all(clean):
            return  # leave the odd ones to _encode_word
        joined = " ".join(clean)
        enc = self._tokenizer.encode(joined, add_special_tokens=False)
        starts, pos = [], 0
        for w in clean:
            starts.append(pos)
            pos += len(w) + 1
        per_word: list[list[int]] = [[] for _ in words]
        index = 0
        for tok, (start, _) in zip(enc.ids, enc.offsets, strict=True):
            while index + 1 < len(starts) and start >= starts[index + 1]:
                index += 1
            if tok != self._unk:
                per_word[index].append(tok)
        self._make_room(len(words))
        self._words.update(zip(words, map(tuple, per_word), strict=True))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` as an (n, dim) float32 array of unit rows (zero rows for texts
        without a single known token)."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one string")
        if len(texts) == 1:
            return self._encode_one(texts[0])[None, :]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), BATCH_ROWS):
            chunk = texts[start : start + BATCH_ROWS]
            out[start : start + len(chunk)] = self._encode_batch(chunk)
        return out

    def _encode_one(self, text: str) -> np.ndarray:
        ids = self.token_ids(text)
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        row: np.ndarray = self._vectors[ids].sum(axis=0)
        norm = float(np.sqrt(row.dot(row)))
        return row / norm if norm > 0.0 else row

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        lists = [self.token_ids(t) for t in texts]
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        present = lengths > 0
        if present.any():
            flat = np.fromiter((i for x in lists for i in x), dtype=np.int64)
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[present]
            out[present] = np.add.reduceat(self._vectors[flat], starts, axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0.0)
        return out

    def _encode_word(self, word: str) -> tuple[int, ...]:
        # Lone surrogates (possible in a Python str, never in UTF-8 input) make the tokenizer
        # raise; they carry no meaning, so they are dropped.
        clean = word if word.isascii() else "".join(c for c in word if not _SURROGATE(c))
        raw = self._tokenizer.encode(clean, add_special_tokens=False).ids if clean else []
        ids = tuple(i for i in raw if i != self._unk)
        self._make_room(1)
        self._words[word] = ids
        return ids

    def _make_room(self, adding: int) -> None:
        """Bound the word cache, crudely: emptied when ``adding`` more words would fill it;
        the hot words come back within a few calls."""
        if len(self._words) + adding >= WORD_CACHE_MAX:
            self._words.clear()


class WordPiece:
    """BERT's WordPiece for plain words, in Python: the student's tokenizer for the common
    case without a call into the ``tokenizers`` library.

    Nearly every keystroke ends in a word never seen before (a fragment: "new yo"), and a
    tokenizer call took half of such a keystroke's encoding (p50 61 → 33 µs without it, in
    the server's order of work). For a printable ASCII word, BERT's normaliser only
    lower-cases it and its pre-tokenizer splits it at punctuation, so WordPiece's greedy
    longest match over the vocabulary gives the very ids the library gives
    (``tests/test_student.py`` compares them on words and fragments of the query log);
    anything else still goes to the library."""

    def __init__(self, vocab: dict[str, int], prefix: str, max_chars: int) -> None:
        self.vocab = vocab
        self.prefix = prefix
        self.max_chars = max_chars

    @classmethod
    def of(cls, tokenizer: Tokenizer, config: Mapping[str, Any] | None = None
           ) -> WordPiece | None:
        """The pure-Python equivalent of ``tokenizer``, when it is a plain BERT WordPiece
        (lower-casing BERT normaliser, BERT pre-tokenizer, no added tokens but specials).
        ``config``: its parsed JSON, when the caller has it."""
        if config is None:
            config = json.loads(tokenizer.to_str())
        model, norm = config.get("model") or {}, config.get("normalizer") or {}
        plain = (
            model.get("type") == "WordPiece"
            and norm.get("type") == "BertNormalizer" and norm.get("lowercase") is True
            and (config.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and all(t.get("special") for t in config.get("added_tokens") or [])
            and isinstance(model.get("unk_token"), str)
        )
        if not plain:
            return None
        return cls(tokenizer.get_vocab(with_added_tokens=False),
                   str(model.get("continuing_subword_prefix", "##")),
                   int(model.get("max_input_chars_per_word", 100)))

    def encode_into(self, words: list[str], cache: dict[str, tuple[int, ...]]) -> list[str]:
        """Store the ids of the printable ASCII words among ``words`` (unknown pieces
        dropped) in ``cache``; return the others."""
        others = []
        for word in words:
            if not (word.isascii() and word.isprintable()):
                others.append(word)
            elif word.isalnum():
                cache[word] = tuple(self.ids(word.lower()))
            else:
                # BERT's pre-tokenizer makes every ASCII punctuation mark (all of printable
                # ASCII but letters and digits) a word of its own: "www.ebay" is 3 words.
                parts = _BERT_WORDS(word.lower())
                cache[word] = tuple([i for part in parts for i in self.ids(part)])
        return others

    def ids(self, word: str) -> list[int]:
        """One pre-tokenized word: greedy longest-match-first; a word with a piece outside
        the vocabulary is one unknown token, which the student drops: no ids."""
        if len(word) > self.max_chars:
            return []
        vocab, out, start = self.vocab, [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                found = vocab.get(piece)
                if found is not None:
                    out.append(found)
                    break
                end -= 1
            else:
                return []
            start = end
        return out


_BERT_WORDS = re.compile(r"[a-z0-9]+|[^a-z0-9]").findall


def _SURROGATE(ch: str) -> bool:
    return "\ud800" <= ch <= "\udfff"


# --- saving ---------------------------------------------------------------------------------


def save_student(
    out_dir: Path,
    vectors: np.ndarray,
    tokenizer: Tokenizer,
    info: Mapping[str, Any],
    *,
    dtype: str = "int8",
) -> dict[str, Any]:
    """Write a student directory; ``info`` adds fields (teacher, training) to the manifest."""
    if dtype not in DTYPES:
        raise ArtifactError(f"unknown student dtype {dtype!r}; expected one of {DTYPES}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = _plain_tokenizer(tokenizer)
    tok.save(str(out_dir / TOKENIZER))
    (out_dir / SCALES).unlink(missing_ok=True)
    _write_vectors(out_dir, np.asarray(vectors, dtype=np.float32), dtype)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        **dict(info),
        "dim": int(vectors.shape[1]),
        "vocab_size": int(vectors.shape[0]),
        "dtype": dtype,
        "normalize": "l2",
        "pooling": "mean",
        "files": {p.name: sha256_file(p) for p in sorted(out_dir.iterdir()) if p.name != MANIFEST},
        "fingerprint": compute_fingerprint(out_dir),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def compute_fingerprint(root: Path) -> str:
    """A short hash of what decides the embeddings: the tokenizer and the vectors."""
    digest = hashlib.sha256()
    for name in (TOKENIZER, VECTORS, SCALES):
        path = root / name
        if path.exists():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _write_vectors(out_dir: Path, vectors: np.ndarray, dtype: str) -> None:
    if dtype == "int8":
        # Per-row symmetric scales keep each token's direction; int8 quarters the file size.
        peak = np.abs(vectors).max(axis=1)
        scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        quantised = np.round(vectors / scales[:, None]).clip(-127, 127).astype(np.int8)
        np.save(out_dir / VECTORS, quantised)
        np.save(out_dir / SCALES, scales)
    else:
        np.save(out_dir / VECTORS, vectors.astype(dtype))


def _read_manifest(root: Path) -> dict[str, Any]:
    return read_format_manifest(root, FORMAT, "student")


def _read_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise ArtifactError(f"student tokenizer {path} is unreadable: {exc}") from exc


def _read_vectors(root: Path, dtype: str) -> np.ndarray:
    if dtype not in DTYPES:
        raise ArtifactError(f"student manifest in {root} names unknown dtype {dtype!r}")
    try:
        raw = np.load(root / VECTORS, allow_pickle=False)
        if dtype == "int8":
            scales = np.load(root / SCALES, allow_pickle=False)
            return raw.astype(np.float32) * scales[:, None]
        return np.asarray(raw, dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"student vectors in {root} are unreadable: {exc}") from exc


def _check_shape(root: Path, manifest: Mapping[str, Any], vectors: np.ndarray) -> None:
    expected = (manifest.get("vocab_size"), manifest.get("dim"))
    if vectors.shape != expected or manifest.get("normalize") != "l2":
        raise ArtifactError(
            f"student at {root} does not match its manifest: vectors {vectors.shape}, "
            f"manifest (vocab_size, dim) = {expected}, normalize={manifest.get('normalize')}"
        )


def _plain_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """A copy with padding and truncation off: the teacher's file pads every text to 128."""
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_padding()
    tok.no_truncation()
    return tok


def _unk_id(tokenizer: Tokenizer, config: Mapping[str, Any]) -> int | None:
    model = config.get("model") or {}
    token = model.get("unk_token")
    if isinstance(token, str):
        return tokenizer.token_to_id(token)
    unk = model.get("unk_id")
    return unk if isinstance(unk, int) else None

