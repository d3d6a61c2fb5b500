"""Tiny synthetic students for the semantic tests: built in the test, no torch, no files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from typeahead.embed.student import Student, save_student

WORDS = [
    "[PAD]",
    "[UNK]",
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "pizza",
    "hut",
    "cheap",
    "flights",
    "paris",
    "london",
    "weather",
    "forecast",
    "norman",
    "normandy",
    "france",
    "river",
    "rhine",
    "oxygen",
    "element",
    "chemistry",
]


def tiny_tokenizer(
    words: tuple[str, ...] | list[str] = WORDS, pad_to: int | None = 128
) -> Tokenizer:
    """A word-level tokenizer; padding to 128 mimics the teacher's bundled tokenizer.json."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if pad_to:
        tok.enable_padding(pad_id=0, pad_token="[PAD]", length=pad_to)
        tok.enable_truncation(max_length=pad_to)
    return tok


def tiny_student(root: Path, dim: int = 8, seed: int = 0, dtype: str = "float32") -> Student:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(WORDS), dim)).astype(np.float32)
    save_student(root, vectors, tiny_tokenizer(), {"teacher": {"name": "test"}}, dtype=dtype)
    return Student.load(root)
