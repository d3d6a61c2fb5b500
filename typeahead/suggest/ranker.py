"""The learned completion ranker: one order over every candidate of a keystroke.

The lexical tiers rank by a fixed order (in-order prefix, then any-order words, then typo
corrections, popularity within each) and generated completions are slotted between them.
This module orders them all on one learned score instead: features the tiers already know
(source, popularity, match position, typo distance, lengths, the generator's log-probability)
go through an additive model trained by ``typeahead train-ranker``
(``typeahead.train.completion``) with LightGBM lambdarank on a dev split of the training rows.

The model is additive by construction (boosted stumps: each tree splits once), so it folds
into one step function per feature: a keystroke's score is one ``searchsorted`` over every
feature's thresholds at once and one gather, a few microseconds for twenty candidates, and
equal to LightGBM's own prediction.

The model file (JSON) carries a manifest: its kind and format version, the feature names in
order and the key normalisation of the index it was trained for. A model whose features or
normalisation do not match is refused (``ArtifactError``); the service then keeps the fixed
order and says why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from typeahead.errors import ArtifactError
from typeahead.manifest import check_model
from typeahead.suggest.generated import Generator
from typeahead.suggest.lexical import IN_ORDER, Suggestion

log = logging.getLogger("typeahead.suggest")

KIND = "typeahead-completion-ranker"
FORMAT_VERSION = 1
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "ranker" / "completion.json"
# The order of the columns the model reads. Context columns (typed_*, in_order_count,
# top_popularity) are the same for every candidate of a keystroke: they let one split of a
# candidate column mean different things for short and long inputs.
FEATURES = (
    "in_order",  # the whole input prefixes the completion
    "any_order",  # every typed word prefixes a word of it, not in order
    "fuzzy",  # as any_order after a typo correction of the last word
    "generated",  # composed by the generator (no index entry)
    "popularity",  # log1p(weight) on the index's [0, 1) scale; 0 when generated
    "popularity_gap",  # the best in-order candidate's popularity minus this one's; -1: generated
    "logp",  # the generator's log-probability; 1 for index entries
    "distance",  # typo distance of a fuzzy match
    "match_start",  # characters before the first matched span
    "extra_chars",  # characters beyond the typed input
    "extra_words",  # words beyond the typed input
    "rank",  # position in the lexical tiers' list; NONE: generated
    "generated_rank",  # position in the generator's list; NONE: an index entry
    "typed_chars",
    "typed_words",
    "in_order_count",  # in-order candidates of this keystroke
    "top_popularity",  # the best in-order candidate's popularity (0: none)
)
# Sentinels out of a column's range: an additive model gives them a step of their own, so a
# column shared by index entries and generated completions means one thing per source.
NONE = 99.0
NO_LOGP = 1.0  # log-probabilities are <= 0
_BIG = 1e4  # feature values lie within +-_BIG / 2: column j is shifted by j * _BIG
_CLAMP = 1000  # lengths and -log-probabilities beyond this are all alike
_SHIFT = np.arange(len(FEATURES), dtype=np.float64) * _BIG


class Candidate(NamedTuple):
    """One candidate of a keystroke: the suggestion as shown, and what the score needs."""

    suggestion: Suggestion
    popularity: float = 0.0  # 0 for a generated completion
    logp: float = 0.0  # the generator's, for a generated completion
    rank: int = 0  # position within its tier's list


def features(key: str, candidates: Sequence[Candidate]) -> npt.NDArray[np.float64]:
    """The ``(len(candidates), len(FEATURES))`` matrix for the normalised input ``key``.

    Built as one flat list of Python numbers, one branch per source: this runs on the
    keystroke path, where a helper call or a numpy operation per candidate costs more than
    the arithmetic."""
    typed_chars, typed_words = len(key), key.count(" ") + 1
    count, top = _in_order(candidates)
    flat: list[float] = []
    for (_, text, score, source, spans), popularity, logp, rank in candidates:
        start = min(spans[0][0], _CLAMP) if spans else 0
        extra = (min(len(text) - typed_chars, _CLAMP),
                 min(text.count(" ") + 1 - typed_words, _CLAMP))
        if source == "generated":
            flat.extend((0, 0, 0, 1, 0.0, -1.0, max(logp, -_CLAMP), 0, start, *extra, NONE,
                         rank, typed_chars, typed_words, count, top))
            continue
        whole = score >= IN_ORDER and source == "prefix"
        fuzzy = source == "fuzzy"
        # A fuzzy hit's score is popularity / (1 + distance) / 3 (typeahead.suggest.lexical).
        distance = round(popularity / (3 * score) - 1) if fuzzy and score > 0 else 0
        flat.extend((whole, source == "prefix" and not whole, fuzzy, 0, popularity,
                     top - popularity, NO_LOGP, distance, start, *extra, rank, NONE,
                     typed_chars, typed_words, count, top))
    return np.array(flat, dtype=np.float64).reshape(len(candidates), len(FEATURES))


def _in_order(candidates: Sequence[Candidate]) -> tuple[int, float]:
    """How many candidates are in-order prefix matches, and the best one's popularity."""
    count, top = 0, 0.0
    for (_, _, score, source, _), popularity, _, _ in candidates:
        if score >= IN_ORDER and source == "prefix":
            count += 1
            top = max(top, popularity)
    return count, top


@dataclass(frozen=True)
class CompletionRanker:
    """An additive model: per feature, sorted thresholds and the value each step adds."""

    thresholds: npt.NDArray[np.float64]  # every feature's, shifted by j * _BIG, ascending
    values: npt.NDArray[np.float64]  # per step (len(thresholds) + len(FEATURES) steps)
    base: npt.NDArray[np.int64]  # per feature: its first step's position in ``values``
    count: npt.NDArray[np.int64]  # per feature: thresholds before its own
    manifest: dict[str, Any]

    def score(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """One score per row of ``x`` (higher ranks first), as LightGBM's ``predict``; values
        lie within +-``_BIG`` / 2 (``features`` clamps them)."""
        # Thresholds below x (LightGBM sends x <= threshold left): the step x falls on.
        steps = np.searchsorted(self.thresholds, x + _SHIFT) + (self.base - self.count)
        total: npt.NDArray[np.float64] = self.values[steps].sum(axis=1)
        return total

    def order(self, key: str, candidates: Sequence[Candidate]) -> list[int]:
        """Indices of ``candidates``, best first (ties keep the given order)."""
        if len(candidates) < 2:
            return list(range(len(candidates)))
        scores = self.score(features(key, candidates))
        order: list[int] = np.argsort(-scores, kind="stable").tolist()
        return order

    # --- persistence ------------------------------------------------------------------------

    @classmethod
    def from_steps(cls, steps: Sequence[tuple[Sequence[float], Sequence[float]]],
                   manifest: dict[str, Any]) -> CompletionRanker:
        """Per feature (thresholds ascending, values: one more than thresholds)."""
        if len(steps) != len(FEATURES):
            raise ArtifactError(f"a completion ranker needs {len(FEATURES)} step functions, "
                                f"got {len(steps)}")
        shifted: list[float] = []
        values: list[float] = []
        base: list[int] = []
        count: list[int] = []
        for j, (thr, val) in enumerate(steps):
            if len(val) != len(thr) + 1 or list(thr) != sorted(thr) or any(
                    not math.isfinite(t) or abs(t) >= _BIG / 2 for t in thr):
                raise ArtifactError(f"completion ranker: feature {FEATURES[j]!r} has a bad "
                                    "step function")
            count.append(len(shifted))
            base.append(len(values))
            shifted += [t + j * _BIG for t in thr]
            values += list(val)
        return cls(np.array(shifted, dtype=np.float64), np.array(values, dtype=np.float64),
                   np.array(base, dtype=np.int64), np.array(count, dtype=np.int64), manifest)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps({**self.manifest, "steps": self.steps()},
                                      option=orjson.OPT_INDENT_2))

    def steps(self) -> list[dict[str, Any]]:
        out = []
        for j, name in enumerate(FEATURES):
            lo = int(self.count[j])
            hi = int(self.count[j + 1]) if j + 1 < len(FEATURES) else len(self.thresholds)
            first = int(self.base[j])
            out.append({"feature": name,
                        "thresholds": (self.thresholds[lo:hi] - j * _BIG).tolist(),
                        "values": self.values[first : first + hi - lo + 1].tolist()})
        return out

    @classmethod
    def load(cls, path: Path, normalization: str) -> CompletionRanker:
        """The model at ``path``, checked against this module's features and the index's
        key ``normalization`` (``ArtifactError`` says what does not match)."""
        try:
            raw = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ArtifactError(f"completion ranker {path}: cannot read it ({exc})") from exc
        if not isinstance(raw, dict):
            raise ArtifactError(f"completion ranker {path}: not a JSON object")
        check_manifest(raw, normalization, path)
        steps = raw.get("steps")
        if not isinstance(steps, list) or [s.get("feature") for s in steps
                                           if isinstance(s, dict)] != list(FEATURES):
            raise ArtifactError(f"completion ranker {path}: steps do not follow its features")
        manifest = {k: v for k, v in raw.items() if k != "steps"}
        return cls.from_steps([(s["thresholds"], s["values"]) for s in steps], manifest)


def load_ranker(path: Path | None, normalization: str) -> CompletionRanker | None:
    """The model at ``path`` for an index of keys normalised as ``normalization``; None: the
    packaged model, which is skipped with a warning (the fixed order) where it does not fit
    the index. A model named explicitly must load."""
    try:
        return CompletionRanker.load(path or DEFAULT_MODEL, normalization)
    except ArtifactError as exc:
        if path is not None:
            raise
        log.warning("%s: suggestions keep the fixed tier order", exc.message)
        return None


def ranker_for(index: Any, enabled: bool, path: Path | None) -> CompletionRanker | None:
    """The learned order for ``index`` (a ``LoadedIndex``): None when turned off or when the
    index has no generator (the lexical tiers' own order is the one it was trained against)."""
    if not enabled or index.generator is None:
        return None
    if not isinstance(index.generator, Generator):
        log.warning("the completion ranker was trained on the n-gram generator's candidates; "
                    "with the character model suggestions keep the fixed tier order")
        return None
    return load_ranker(path, index.manifest["normalization"])


def manifest(normalization: str, **extra: Any) -> dict[str, Any]:
    """What a model file records about itself (``check_manifest`` reads it back)."""
    return {"kind": KIND, "format_version": FORMAT_VERSION, "features": list(FEATURES),
            "normalization": normalization, **extra}


def check_manifest(raw: dict[str, Any], normalization: str, path: Path) -> None:
    check_model(raw, what="completion ranker", kind=KIND, version=FORMAT_VERSION,
                normalization=normalization, path=path, command="train-ranker")
    if raw.get("features") != list(FEATURES):
        raise ArtifactError(f"completion ranker {path}: trained on features "
                            f"{raw.get('features')!r}, this release computes {list(FEATURES)}; "
                            "train it again with typeahead train-ranker")
