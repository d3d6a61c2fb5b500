"""A learned second opinion on sexually explicit texts, applied when an index is built.

The word lists (``policy.py``) decide by words they know; a text spelled in a way no list
foresaw (a new site's glued name, a misspelling) slips through them. This model scores a text
by its character n-grams instead: every 2- to 5-character slice of the normalised text,
padded with a space at each end (so word starts and ends are slices of their own), hashed
with CRC-32 into ``BUCKETS`` weights of a logistic regression. The score is the weights'
sum over the text's distinct slices divided by the square root of their number (the
training rows were L2-normalised binary vectors), plus the bias; a text scoring above the
threshold stored with the model is flagged.

The runtime is numpy only; training (``typeahead.train.safety``) imports :func:`ngram_ids`
from here so that both compute the very same features. The model is consulted only while a
dictionary is screened (``SuggestionPolicy.screened``): a call costs tens of microseconds,
too much for the keystroke path's explicit-input check, which keeps to the word lists.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from typeahead.assets import SAFETY_DIR
from typeahead.errors import ArtifactError
from typeahead.manifest import read_manifest, verify_files
from typeahead.normalize import normalize

KIND = "safety-text-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.npy"
BUCKETS = 1 << 18
MIN_GRAM, MAX_GRAM = 2, 5
_MASK = BUCKETS - 1


def ngram_ids(text: str) -> list[int]:
    """The distinct hashed 2-5 character slices of `` text `` (normalised, spaces collapsed)."""
    padded = " " + " ".join(normalize(text).split()) + " "
    seen: set[int] = set()
    n = len(padded)
    for size in range(MIN_GRAM, MAX_GRAM + 1):
        for start in range(n - size + 1):
            seen.add(zlib.crc32(padded[start:start + size].encode()) & _MASK)
    return sorted(seen)


class SexualTextModel:
    """Scores texts; ``flags`` says whether one is sexually explicit by the stored threshold."""

    def __init__(self, weights: np.ndarray, bias: float, threshold: float,
                 fingerprint: str = "") -> None:
        if weights.shape != (BUCKETS,):
            raise ArtifactError(f"safety model: {BUCKETS} weights expected, got {weights.shape}")
        self._weights = weights.astype(np.float64).tolist()  # list indexing beats numpy's here
        self.bias = bias
        self.threshold = threshold
        self.fingerprint = fingerprint

    @classmethod
    def load(cls, path: Path | None = None) -> SexualTextModel:
        """Load a model directory (None: the packaged one), checking its manifest and files."""
        model_dir = SAFETY_DIR if path is None else Path(path)
        manifest = read_manifest(model_dir, kind=KIND, version=FORMAT_VERSION)
        verify_files(model_dir, manifest, checksums=True)
        if manifest.get("buckets") != BUCKETS or manifest.get("ngrams") != [MIN_GRAM, MAX_GRAM]:
            raise ArtifactError(f"{model_dir}: safety model built for other features "
                                f"(buckets {manifest.get('buckets')!r}, n-grams "
                                f"{manifest.get('ngrams')!r}); this build hashes 2-5-grams "
                                f"into {BUCKETS} buckets")
        bias, threshold = _number(manifest, "bias", model_dir), _number(
            manifest, "threshold", model_dir)
        try:
            weights = np.load(model_dir / WEIGHTS_FILE, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{model_dir}: unreadable {WEIGHTS_FILE} ({exc})") from exc
        fingerprint = str(manifest["files"][WEIGHTS_FILE]["sha256"])[:16]
        return cls(np.asarray(weights), bias, threshold, fingerprint)

    def score(self, text: str) -> float:
        """The model's log-odds that ``text`` is sexually explicit."""
        ids = ngram_ids(text)
        if not ids:
            return self.bias
        w = self._weights
        return sum(w[i] for i in ids) / math.sqrt(len(ids)) + self.bias

    def flags(self, text: str) -> bool:
        return self.score(text) > self.threshold

    def describe(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "threshold": self.threshold}


def _number(manifest: dict[str, Any], key: str, model_dir: Path) -> float:
    value = manifest.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArtifactError(f"{model_dir}: manifest field {key!r} must be a finite number")
    return float(value)
