"""The keystroke decision: offer "generate" for the query the user is about to submit.

The whole-query classifier (``typeahead.intent.classifier``) reads one text. On a keystroke the
text is
a fragment (``goo``, ``britney``, ``pier 5``), so the decision here combines

* the fragment's own intent (the classifier's informational log-odds),
* the intent of the top completions, weighted by their scores: what the user is likely to
  submit. Every served entry's log-odds are computed once, in a batch, when the service loads,
  so a completion costs an array read;
* cues that the query is complete or not: a trailing space, question shape, word count, very
  short input, a completion equal to the input;
* names from ``names.json`` in the model directory: a known site (``ebay``, ``bank of
  america``) or a person's name (``britney spears``) gets no offer; a question of four words
  or more gets one (:meth:`KeystrokeIntent._rule`);

through a small logistic combiner trained on the prefixes of labelled queries
(``typeahead.train.keystroke``). Its weights and thresholds live in ``keystroke.json``.

**Inputs that look whole** (four characters or more, the last word a common English word from
``names.json``, no trailing space, the top completion not continuing that word: ``food
safety``, not ``food saf`` or ``bank of``) are decided by a second logistic model over the same
features, fitted on whole queries, without the latch: at the last keystroke of a query the
button is that model's verdict. Every other keystroke goes through the combiner and the latch.

**Hysteresis.** The service is stateless and caches answers per (query, k), so the previous
keystroke cannot be remembered; it is recomputed from the input. The score is split into a
heavy part (fragment embedding and completions, from this keystroke) and a light part (string
cues and names). Above ``on`` the button is on, below ``off`` (``off < on``) it is off; in
the band between, a latch replays the light part over the last :data:`LOOKBACK` prefixes
with this keystroke's heavy part, switching on above ``on`` and off below ``off``, so a cue
appearing or vanishing for a character or two does not toggle the button. Both request
paths call the same function on the same text, so they give the same answer.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from typeahead.errors import ArtifactError
from typeahead.intent.classifier import (
    AUX_WORDS,
    INFO_CUES,
    INFORMATIONAL,
    QUESTION_WORDS,
    Decision,
    Intent,
    IntentClassifier,
    looks_personal,
)
from typeahead.normalize import normalize

KEYSTROKE_FILE = "keystroke.json"
NAMES_FILE = "names.json"
NAME_KINDS = ("sites", "head", "places", "first_names", "last_names", "words")
TOP_COMPLETIONS = 3
LOGIT_CLIP = 8.0
# The latch replays this many prefixes: a cue flickering for fewer keystrokes than this does
# not toggle the button; each prefix costs about a microsecond of string work.
LOOKBACK = 5

# Heavy features: computed once per keystroke from its embedding and completions.
HEAVY = ("frag_logit", "comp_logit", "has_completions", "exact_completion", "word_incomplete")
# Light features: string work, recomputed for each prefix the latch replays.
LIGHT = (
    "boundary",
    "n_words",
    "short",
    "question",
    "info_cue",
    "site",
    "head",
    "person",
    "place",
    "word_known",
)
FEATURES = HEAVY + LIGHT


@dataclass(frozen=True, slots=True)
class Names:
    """Navigational name lists, normalised (lower-case, single spaces).

    ``sites`` are matched with spaces removed (``bank of america`` -> ``bankofamerica``),
    ``head`` and ``places`` as the whole input; a person is two or three words, the first a
    common first name and the last a common surname (``britney spears``). ``words`` are
    common English words: the last word of an input being one of them says it may be whole
    (``food safety``, not ``food saf``)."""

    sites: frozenset[str] = frozenset()
    head: frozenset[str] = frozenset()
    places: frozenset[str] = frozenset()
    first_names: frozenset[str] = frozenset()
    last_names: frozenset[str] = frozenset()
    words: frozenset[str] = frozenset()

    def flags(self, key: str, words: Sequence[str]) -> tuple[float, float, float, float]:
        person = 2 <= len(words) <= 3 and words[0] in self.first_names \
            and words[-1] in self.last_names
        return (
            float(key.replace(" ", "") in self.sites),
            float(key in self.head),
            float(person),
            float(key in self.places),
        )


@dataclass(frozen=True, slots=True)
class WholeQuery:
    """Logistic weights over :data:`FEATURES` for an input that looks whole, and the
    log-odds at or above which it gets the offer (see :meth:`KeystrokeIntent.decide`)."""

    weights: tuple[float, ...]
    bias: float
    threshold: float

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES):
            raise ArtifactError(f"whole-query weights have {len(self.weights)} values, "
                                f"want {len(FEATURES)}")


@dataclass(frozen=True, slots=True)
class Combiner:
    """Logistic weights over :data:`FEATURES` and the latch's two thresholds (on log-odds);
    ``whole``, when set, decides the inputs that look whole instead of the latch."""

    weights: tuple[float, ...]
    bias: float
    on: float
    off: float
    whole: WholeQuery | None = None

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES):
            raise ArtifactError(f"keystroke weights have {len(self.weights)} values, "
                                f"want {len(FEATURES)}")
        if self.off > self.on:
            raise ArtifactError(f"keystroke off threshold {self.off} is above on {self.on}")

    @property
    def mid(self) -> float:
        return (self.on + self.off) / 2


# Words that open a question or a request for an answer ("tell me about pier 57 in nyc").
_ASKING = QUESTION_WORDS | AUX_WORDS | frozenset({"tell", "explain", "describe", "define"})


# Stripped from the last word before it is looked up: "leaders." and "(nasa)" are words.
_PUNCT = ".,;:!?()\"'"


def light_features(key: str, ends_space: bool, names: Names) -> tuple[float, ...]:
    """String cues of a normalised input (see :data:`LIGHT`)."""
    words = key.split()
    n = len(words)
    first = words[0] if words else ""
    question = first in _ASKING or key.endswith("?")
    info = not INFO_CUES.isdisjoint(words)
    return (
        float(ends_space),
        min(n, 6) / 6.0,
        float(len(key) < 4),
        float(question),
        float(info),
        *names.flags(key, words),
        float(bool(words) and words[-1].strip(_PUNCT) in names.words),
    )


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return max(-LOGIT_CLIP, min(LOGIT_CLIP, math.log(p / (1 - p))))


class KeystrokeIntent:
    """The served decision: ``decide(query, suggestions, embedding)``."""

    def __init__(
        self,
        classifier: IntentClassifier,
        combiner: Combiner,
        names: Names,
        entry_logits: np.ndarray | None = None,
    ) -> None:
        self.classifier = classifier
        self.combiner = combiner
        self.names = names
        # Per served entry: the classifier's informational log-odds, as a Python list (one
        # list read costs less than a numpy scalar read on the hot path).
        self._entry: list[float] = [] if entry_logits is None else entry_logits.tolist()
        w = combiner.weights
        self._w_heavy = w[: len(HEAVY)]
        self._w_light = w[len(HEAVY):]
        whole = combiner.whole.weights if combiner.whole is not None else ()
        self._whole_heavy, self._whole_light = whole[: len(HEAVY)], whole[len(HEAVY):]

    @classmethod
    def load(cls, classifier: IntentClassifier, model_dir: Path | None = None,
             entries: Sequence[str] | None = None) -> KeystrokeIntent:
        """The combiner and names of ``model_dir`` (default: the classifier's), with the
        log-odds of every served entry in ``entries`` (the index's display texts)."""
        path = model_dir or classifier.path
        if path is None:
            raise ArtifactError("the keystroke decision needs the intent model directory")
        combiner = read_combiner(path / KEYSTROKE_FILE)
        names = read_names(path / NAMES_FILE)
        table = entry_logits(classifier, entries) if entries else None
        return cls(classifier, combiner, names, table)

    def decide(self, query: str, suggestions: Sequence[Any] = (),
               embedding: np.ndarray | None = None) -> Decision:
        """Intent of the fragment and whether to offer generation for this keystroke.

        ``suggestions`` are the keystroke's served completions (``Suggestion``: id, text,
        score, ...); ``embedding`` the student vector of ``query`` when already computed."""
        probs = self.classifier.probabilities(query, embedding)
        best = max(range(len(probs)), key=probs.__getitem__)
        intent = Intent(self.classifier.labels[best], probs[best])
        key = normalize(query)
        if not key or looks_personal(query):
            return Decision(intent, False)
        rule = self._rule(key)
        if rule is not None:
            return Decision(intent, rule)
        values = self._heavy_values(key, logit(probs[INFORMATIONAL]), suggestions)
        ends_space = query[-1:].isspace()
        light = light_features(key, ends_space, self.names)
        whole = self.combiner.whole
        # Looks whole: four characters or more, the last word a common word, not followed by a
        # space and not continued by the top completion. The whole-query model decides it
        # alone (no latch): at the last keystroke the button is its verdict.
        if whole is not None and light[-1] and not light[2] and not ends_space \
                and not values[4]:
            score = whole.bias + _dot(self._whole_heavy, values) + _dot(self._whole_light, light)
            return Decision(intent, score >= whole.threshold)
        heavy = self.combiner.bias + _dot(self._w_heavy, values)
        return Decision(intent, self._latch(query, key, heavy, light))

    def _rule(self, key: str) -> bool | None:
        """What the names and the question shape settle before the combiner: a known site, a
        head query, a person (or a lone first name) or a place gets no offer; a question of
        four words or more gets one. The dev keystrokes hold too few names and long questions
        for the combiner to learn either (its person weight was -0.2)."""
        words = key.split()
        names = self.names
        if any(names.flags(key, words)) or (len(words) == 1 and key in names.first_names):
            return False
        if len(words) >= 4 and (words[0] in _ASKING or key.endswith("?")):
            return True
        return None

    def score(self, query: str, suggestions: Sequence[Any] = (),
              embedding: np.ndarray | None = None) -> float:
        """The combiner's log-odds for ``query`` alone (no latch): for tests and tuning."""
        probs = self.classifier.probabilities(query, embedding)
        key = normalize(query)
        heavy = self._heavy(key, logit(probs[INFORMATIONAL]), suggestions)
        light = light_features(key, query[-1:].isspace(), self.names)
        return heavy + _dot(self._w_light, light)

    def features(self, query: str, suggestions: Sequence[Any] = (),
                 embedding: np.ndarray | None = None) -> list[float]:
        """The combiner's input for ``query`` in :data:`FEATURES` order (training)."""
        probs = self.classifier.probabilities(query, embedding)
        key = normalize(query)
        heavy = self._heavy_values(key, logit(probs[INFORMATIONAL]), suggestions)
        return [*heavy, *light_features(key, query[-1:].isspace(), self.names)]

    def _heavy_values(self, key: str, frag: float, suggestions: Sequence[Any]
                      ) -> tuple[float, float, float, float, float]:
        total = weighted = 0.0
        exact = 0.0
        # The word being typed is unfinished when the top completion continues it ("prepar"
        # -> "preparing"): the user is mid-word, not about to submit.
        incomplete = 0.0
        if suggestions and not key.endswith(" "):
            last = key.rsplit(" ", 1)[-1]
            top = suggestions[0][1]
            head = top.lower() if top.isascii() else normalize(top)
            pos = head.find(last, max(0, len(key) - len(last) - 2))
            if pos >= 0 and head[pos + len(last):pos + len(last) + 1].isalnum():
                incomplete = 1.0
        table = self._entry
        for s in suggestions[:TOP_COMPLETIONS]:
            entry, text, score = s[0], s[1], s[2]
            value = table[entry] if 0 <= entry < len(table) else \
                logit(self.classifier.probabilities(text)[INFORMATIONAL])
            w = max(float(score), 1e-6)
            total += w
            weighted += w * value
            if exact == 0.0 and (text.lower() if text.isascii() else normalize(text)) == key:
                exact = 1.0
        comp = weighted / total if total else 0.0
        return frag, comp, float(total > 0), exact, incomplete

    def _heavy(self, key: str, frag: float, suggestions: Sequence[Any]) -> float:
        return self.combiner.bias + _dot(self._w_heavy, self._heavy_values(key, frag,
                                                                           suggestions))

    def _latch(self, query: str, key: str, heavy: float, light: Sequence[float]) -> bool:
        """Replay the light cues over the last :data:`LOOKBACK` prefixes (see the module
        docstring); the heavy part is this keystroke's."""
        c = self.combiner
        w = self._w_light
        names = self.names
        typed = key + " " if query[-1:].isspace() else key
        now = heavy + _dot(w, light)  # this keystroke's light cues, as _light(typed) gives
        # Outside the band the previous state does not matter: the same answer as the replay
        # below, without it.
        if now >= c.on or now < c.off:
            return now >= c.on
        start = max(0, len(typed) - LOOKBACK)
        # Before the replayed prefixes the decision is fresh: the middle of the band.
        state = start > 0 and heavy + _dot(w, _light(typed[:start], names)) >= c.mid
        for end in range(start + 1, len(typed) + 1):
            s = heavy + _dot(w, _light(typed[:end], names))
            state = s >= c.off if state else s >= c.on
        return state


def _light(prefix: str, names: Names) -> tuple[float, ...]:
    """Light features of a typed prefix (a trailing space is a word boundary)."""
    if prefix.endswith(" "):
        return light_features(prefix[:-1], True, names)
    return light_features(prefix, False, names)


def _dot(w: Sequence[float], x: Sequence[float]) -> float:
    # map(mul) costs a third of a generator over zip on these 5- and 9-long vectors; the
    # lengths are fixed by FEATURES (Combiner checks them at load).
    return sum(map(operator.mul, w, x))


def entry_logits(classifier: IntentClassifier, texts: Sequence[str], batch: int = 4096
                 ) -> np.ndarray:
    """The informational log-odds of each text, batched (every served entry at load)."""
    out = np.empty(len(texts), dtype=np.float64)
    for start in range(0, len(texts), batch):
        chunk = list(texts[start:start + batch])
        probs = classifier.probabilities_many(chunk)
        p = np.clip(probs[:, INFORMATIONAL], 1e-6, 1 - 1e-6)
        out[start:start + len(chunk)] = np.clip(np.log(p / (1 - p)), -LOGIT_CLIP, LOGIT_CLIP)
    return out


# --- artefacts -----------------------------------------------------------------------------------


def read_combiner(path: Path) -> Combiner:
    data = _read_json(path)
    try:
        if tuple(data["features"]) != FEATURES:
            raise ArtifactError(f"{path} was trained on other keystroke features; retrain it")
        whole = data.get("whole")
        return Combiner(tuple(float(x) for x in data["weights"]), float(data["bias"]),
                        float(data["on"]), float(data["off"]),
                        None if whole is None else WholeQuery(
                            tuple(float(x) for x in whole["weights"]), float(whole["bias"]),
                            float(whole["threshold"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a keystroke combiner: {exc}") from exc


def read_names(path: Path) -> Names:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is not a JSON object of name lists")
    lists: dict[str, frozenset[str]] = {}
    for kind in NAME_KINDS:
        values = data.get(kind, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ArtifactError(f"{path}: {kind!r} is not a list of strings")
        lists[kind] = frozenset(values)
    return Names(**lists)


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc


def for_service(classifier: Any, index: Any) -> KeystrokeIntent | None:
    """The keystroke decision for a service: None when ``classifier`` is not an
    :class:`IntentClassifier` or its model directory has no ``keystroke.json`` (an older
    model: the service then decides on the fragment alone)."""
    if not isinstance(classifier, IntentClassifier) or classifier.path is None:
        return None
    if not (classifier.path / KEYSTROKE_FILE).is_file():
        return None
    data = index.lexical.data.display
    texts = data.many(list(range(len(data))))
    return KeystrokeIntent.load(classifier, entries=texts)
