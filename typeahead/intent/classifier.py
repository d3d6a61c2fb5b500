"""Query intent (navigational / informational / transactional) and the "offer generate" decision.

This is the serving runtime: numpy only, no scikit-learn or torch. The model is a linear
softmax over the student embedding of the query concatenated with a handful of lexical cues
(question words, URL and domain tokens, length, digits, capitalisation). Training lives in
``typeahead.train.intent``; it imports :func:`lexical_features` from here so that training and
serving compute the very same features.

The decision runs on every suggest call, so it must cost a few microseconds: the lexical cues
are plain string work, the standardisation and temperature are folded into the weights at load
time, and nothing is cached per query.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from typeahead.assets import INTENT_DIR
from typeahead.errors import ArtifactError
from typeahead.manifest import read_manifest, verify_files

if TYPE_CHECKING:
    # The protocol only: the packaged student (and FAISS beside it) loads when first needed.
    from typeahead.embed import Embedder

LABELS: tuple[str, ...] = ("navigational", "informational", "transactional")
INFORMATIONAL = LABELS.index("informational")
KIND = "intent-model"
FORMAT_VERSION = 1
DEFAULT_MODEL_DIR = INTENT_DIR
WEIGHTS_FILE = "weights.npy"
PARAMS_FILE = "params.json"
SITES_FILE = "sites.json"

# --- lexical cues ------------------------------------------------------------------------------


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


QUESTION_WORDS = _wordset("how what why when where who whom whose which")
AUX_WORDS = _wordset("is are was were can could does do did should would will shall")
INFO_CUES = _wordset(
    """about information info history meaning definition define symptoms facts causes cause
    effects explain explained difference vs versus guide tips examples biography bio benefits
    recipe recipes tutorial learn list types"""
)
TRANS_CUES = _wordset(
    """buy purchase price prices pricing cheap cheapest discount coupon coupons sale deal deals
    download downloads tickets ticket rent rental rentals booking reservations reservation
    subscribe mp3 ringtone ringtones wallpaper wallpapers free shop shopping"""
)
NAV_CUES = _wordset(
    "homepage home page website site login log sign official www com org net gov edu"
)
_WORD = re.compile(r"[a-z0-9]+")
_DOMAIN = re.compile(r"(?:https?://|www\.|\.(?:com|org|net|gov|edu|info|biz|us|uk|ca|de)\b)")

FEATURE_NAMES: tuple[str, ...] = (
    "n_words",
    "n_chars",
    "single_word",
    "starts_question_word",
    "starts_aux_verb",
    "has_question_word",
    "ends_question_mark",
    "url_or_domain",
    "nav_cue",
    "info_cue",
    "trans_cue",
    "has_digit",
    "digit_share",
    "cased",
    "capitalised_share",
    "all_caps_share",
    "known_site",
)


def lexical_features(text: str, sites: frozenset[str] = frozenset()) -> list[float]:
    """The lexical cues of one query, in :data:`FEATURE_NAMES` order.

    ``sites`` holds brand and site names as typed into a search box as a domain (``ebay`` from
    ``ebay.com``, ``bankofamerica``); a short query that spells one is a known site.

    ``cased`` says whether the original text carries any capital letter; capitalisation shares
    are only informative when it does (typeahead input is often all lower-case), so they are 0
    otherwise and the model learns the two cases apart.
    """
    low = text.lower()
    words = _WORD.findall(low)
    n = len(words)
    first = words[0] if words else ""
    wordset = set(words)
    digits = sum(c.isdigit() for c in text)
    cased = low != text
    cap, caps = _capitalisation(text) if cased else (0.0, 0.0)
    return [
        min(n, 12) / 12.0,
        min(len(text), 80) / 80.0,
        float(n == 1),
        float(first in QUESTION_WORDS),
        float(first in AUX_WORDS),
        float(not QUESTION_WORDS.isdisjoint(wordset)),
        float(text.rstrip().endswith("?")),
        float(_DOMAIN.search(low) is not None),
        float(not NAV_CUES.isdisjoint(wordset)),
        float(not INFO_CUES.isdisjoint(wordset)),
        float(not TRANS_CUES.isdisjoint(wordset)),
        float(digits > 0),
        digits / max(len(text), 1),
        float(cased),
        cap,
        caps,
        float(n <= 4 and "".join(words) in sites),
    ]


def _capitalisation(text: str) -> tuple[float, float]:
    """Share of words starting with a capital, and share written in capitals (acronyms)."""
    tokens = [t for t in text.split() if t[0].isalpha()]
    if not tokens:
        return 0.0, 0.0
    cap = sum(t[0].isupper() for t in tokens)
    caps = sum(len(t) > 1 and t.isupper() for t in tokens)
    return cap / len(tokens), caps / len(tokens)


# --- personal data -------------------------------------------------------------------------------

# A word character right before "@" is an e-mail address being typed ("jane.doe@", "a@b.com");
# a handle like "@nasa" is not matched.
_EMAIL = re.compile(r"[\w.+-]@")
# Seven or more digits once spaces, "-", ".", "()", "/" and "+" are ignored: phone, social
# security and card numbers (the same screen the AOL data was cut with).
_DIGIT_RUN = re.compile(r"\+?\(?\d[\d\s\-.()/+]*\d")
_YEAR = re.compile(r"(?:19|20)\d\d")


def looks_personal(text: str) -> bool:
    """True for queries that look like an e-mail address or a phone-like number."""
    if "@" in text and _EMAIL.search(text):
        return True
    return any(_is_number_like(m.group()) for m in _DIGIT_RUN.finditer(text))


def _is_number_like(run: str) -> bool:
    groups = re.findall(r"\d+", run)
    if sum(len(g) for g in groups) < 7:
        return False
    # "1999 2003" is two years, not a phone number.
    return not all(len(g) == 4 and _YEAR.fullmatch(g) for g in groups)


# --- the classifier ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Intent:
    label: str
    confidence: float

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": round(self.confidence, 4)}


@dataclass(frozen=True, slots=True)
class Decision:
    intent: Intent
    offer_generate: bool


class IntentClassifier:
    """A calibrated linear softmax over ``[student embedding, lexical cues]``."""

    def __init__(
        self,
        student: Embedder,
        weights: np.ndarray,
        params: Mapping[str, Any],
        *,
        threshold: float,
        sites: frozenset[str] = frozenset(),
        path: Path | None = None,
    ) -> None:
        dim = student.dim
        temperature = float(params["temperature"])
        mean = np.asarray(params["lexical_mean"], dtype=np.float64)
        scale = np.asarray(params["lexical_scale"], dtype=np.float64)
        bias = np.asarray(params["bias"], dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64) / temperature
        # Fold the lexical standardisation and the calibration temperature into the weights so
        # that a decision is two small mat-vecs and a 3-way softmax.
        self._w_emb = np.ascontiguousarray(w[:, :dim], dtype=np.float32)
        self._w_lex = w[:, dim:] / scale
        self._bias = bias / temperature - self._w_lex @ mean
        self._student = student
        self._sites = sites
        self.threshold = threshold
        self.path = path
        self.labels = LABELS

    @property
    def student(self) -> Embedder:
        return self._student

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        *,
        student: Embedder | None = None,
        threshold: float | None = None,
    ) -> IntentClassifier:
        """Load a model directory (None: the packaged default), checking its manifest.

        ``student`` defaults to the packaged default student; its fingerprint must be the one
        the model was trained on. ``threshold`` overrides the one stored with the model.
        """
        model_dir = DEFAULT_MODEL_DIR if path is None else Path(path)
        manifest = read_model_manifest(model_dir)
        if student is None:
            student = _default_student()
        _check_student(manifest, student, model_dir)
        weights = _load_weights(model_dir, student.dim)
        params = _read_params(model_dir / PARAMS_FILE)
        chosen = float(manifest["threshold"]) if threshold is None else threshold
        if not 0.0 <= chosen <= 1.0:
            raise ArtifactError(f"intent threshold {chosen} is outside [0, 1]")
        sites = _read_sites(model_dir / SITES_FILE)
        return cls(student, weights, params, threshold=chosen, sites=sites, path=model_dir)

    def probabilities(self, text: str, embedding: np.ndarray | None = None) -> list[float]:
        """Calibrated probabilities over :data:`LABELS`."""
        if embedding is None:
            embedding = self._embed(text)
        lex = np.asarray(lexical_features(text, self._sites))
        z = (self._w_emb @ embedding + self._w_lex @ lex + self._bias).tolist()
        top = max(z)
        exps = [math.exp(v - top) for v in z]
        total = sum(exps)
        return [e / total for e in exps]

    def probabilities_many(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities for many texts, embedded in one batch: (len(texts), 3)."""
        if not texts:
            return np.zeros((0, len(LABELS)))
        emb = np.asarray(self._student.encode(list(texts)), dtype=np.float32)
        lex = np.asarray([lexical_features(t, self._sites) for t in texts], dtype=np.float64)
        z = emb.astype(np.float64) @ self._w_emb.T.astype(np.float64) + lex @ self._w_lex.T \
            + self._bias
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        out: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return out

    def predict(self, text: str, embedding: np.ndarray | None = None) -> Intent:
        """The most likely label and its calibrated probability.

        ``embedding`` is the student vector of ``text`` when the caller already has it (the
        suggest handler computes it once for semantic neighbours).
        """
        probs = self.probabilities(text, embedding)
        best = max(range(len(probs)), key=probs.__getitem__)
        return Intent(LABELS[best], probs[best])

    def offer_generate(
        self, text: str, threshold: float | None = None, embedding: np.ndarray | None = None
    ) -> bool:
        """Whether to offer a generated answer for ``text``."""
        return self.decide(text, threshold=threshold, embedding=embedding).offer_generate

    def decide(
        self, text: str, threshold: float | None = None, embedding: np.ndarray | None = None
    ) -> Decision:
        """Intent plus offer in one pass: what ``/v1/suggest`` needs."""
        intent = self.predict(text, embedding)
        limit = self.threshold if threshold is None else threshold
        offer = (
            intent.label == "informational"
            and intent.confidence > limit
            and not looks_personal(text)
        )
        return Decision(intent, offer)

    def _embed(self, text: str) -> np.ndarray:
        if not text.strip():
            return np.zeros(self._w_emb.shape[1], dtype=np.float32)
        vec: np.ndarray = self._student.encode([text])[0]
        return vec


# --- model directory -----------------------------------------------------------------------------


def read_model_manifest(model_dir: Path) -> dict[str, Any]:
    """The manifest of an intent model directory, checked for kind, labels, features, files."""
    manifest = read_manifest(model_dir, kind=KIND, version=FORMAT_VERSION)
    if tuple(manifest.get("labels", ())) != LABELS:
        raise ArtifactError(f"intent model labels {manifest.get('labels')} are not {list(LABELS)}")
    if tuple(manifest.get("lexical_features", ())) != FEATURE_NAMES:
        raise ArtifactError(
            f"intent model {model_dir} was trained on other lexical features; retrain it"
        )
    verify_files(model_dir, manifest, checksums=True)
    return manifest


def _check_student(manifest: Mapping[str, Any], student: Embedder, model_dir: Path) -> None:
    expected = manifest.get("student", {}).get("fingerprint")
    if expected != student.fingerprint:
        raise ArtifactError(
            f"intent model {model_dir} was trained on student {expected}, "
            f"but the loaded student is {student.fingerprint}; retrain with train-intent"
        )


def _load_weights(model_dir: Path, dim: int) -> np.ndarray:
    try:
        weights = np.load(model_dir / WEIGHTS_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {model_dir / WEIGHTS_FILE}: {exc}") from exc
    want = (len(LABELS), dim + len(FEATURE_NAMES))
    if weights.shape != want:
        raise ArtifactError(f"{model_dir / WEIGHTS_FILE} has shape {weights.shape}, want {want}")
    return weights


def _read_sites(path: Path) -> frozenset[str]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise ArtifactError(f"{path} is not a JSON list of site names")
    return frozenset(data)


def _read_params(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    keys = {"bias", "lexical_mean", "lexical_scale", "temperature"}
    if not isinstance(data, dict) or not keys <= data.keys():
        raise ArtifactError(f"{path} lacks one of {sorted(keys)}")
    return data


def _default_student() -> Embedder:
    # Imported here so that importing this module never pulls the student's model files.
    from typeahead.embed import Student

    student: Embedder = Student.load(None)
    return student
