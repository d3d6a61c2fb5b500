"""The second completion generator: a character language model decoding over safe pieces.

The n-gram generator (``typeahead.suggest.generated``) scores a completion by word bigrams,
so it forgets everything typed before the last word. This one reads the whole input with a
small character GRU (``typeahead train-lm``) and extends it by a bounded beam search, one
character at a time. Decoding is constrained to the n-gram generator's privacy-safe pieces:
a character is tried only where it keeps the current word a prefix of a safe word, a word
ends only where it is a safe word whose pair with the word before is a safe pair, and the
typed words themselves must be safe pieces. So the rule of ``generated`` (every word and word
pair in at least 3 distinct queries) holds for every text it returns, whatever the network
learned.

Inference is numpy only: each character's input projection is precomputed, so a step is one
(beam x hidden) by (hidden x 3 hidden) product and the output layer. The state after each
typed input is remembered, so the next keystroke runs one step before its search.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from typeahead.errors import ArtifactError
from typeahead.manifest import check_model
from typeahead.suggest.generated import MAX_APPENDED, Generator
from typeahead.suggest.index import NORMALIZATION, LoadedIndex

log = logging.getLogger("typeahead.suggest")

KIND = "typeahead-char-lm"
FORMAT_VERSION = 1
MAX_CHARS = 100  # queries this long or longer are neither trained on nor completed
BEAM = 8  # hypotheses kept at each character
MAX_STEPS = 40  # characters appended at most
STATES = 4096  # typed inputs whose state is remembered
BOUNDARY, UNKNOWN = 0, 1  # token ids; the alphabet's characters follow
ARRAYS = ("inputs", "recurrent", "recurrent_bias", "output", "output_bias")

Hyp = tuple[float, str, int, str, int, int]  # logp, text, state row, word so far, prev id, words


@dataclass(frozen=True)
class CharLM:
    """A one-layer GRU, as exported by ``typeahead train-lm``."""

    inputs: npt.NDArray[np.float32]  # (tokens, 3H): embedding @ W_ih.T + b_ih, gates r|z|n
    recurrent: npt.NDArray[np.float32]  # (H, 3H): W_hh.T
    recurrent_bias: npt.NDArray[np.float32]  # (3H,)
    output: npt.NDArray[np.float32]  # (H, tokens)
    output_bias: npt.NDArray[np.float32]  # (tokens,)
    manifest: dict[str, Any]
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chars = self.manifest.get("chars", "")
        object.__setattr__(self, "_ids", {c: i + 2 for i, c in enumerate(chars)})

    @property
    def hidden(self) -> int:
        return int(self.recurrent.shape[0])  # ``check`` holds it to the manifest's

    def token(self, char: str) -> int:
        return self._ids.get(char, UNKNOWN)

    def step(self, h: npt.NDArray[np.float32], tokens: npt.NDArray[np.int64]
             ) -> npt.NDArray[np.float32]:
        """The next states of ``h`` (rows) after reading ``tokens`` (one per row)."""
        n = self.hidden
        gi = self.inputs[tokens]
        gh = h @ self.recurrent + self.recurrent_bias
        rz = 1.0 / (1.0 + np.exp(-(gi[:, : 2 * n] + gh[:, : 2 * n])))
        cand = np.tanh(gi[:, 2 * n :] + rz[:, :n] * gh[:, 2 * n :])
        z = rz[:, n:]
        return ((1.0 - z) * cand + z * h).astype(np.float32, copy=False)

    def log_probs(self, h: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """log P(next token | state), one row per state."""
        logits = h @ self.output + self.output_bias
        logits -= logits.max(axis=1, keepdims=True)
        out: npt.NDArray[np.float32] = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return out

    def read(self, text: str) -> npt.NDArray[np.float32]:
        """The state after the boundary token and ``text`` (1 x H)."""
        h = np.zeros((1, self.hidden), dtype=np.float32)
        for token in [BOUNDARY, *(self.token(c) for c in text)]:
            h = self.step(h, np.array([token]))
        return h

    # --- persistence ------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        with path.open("wb") as f:
            np.savez(f, manifest=np.frombuffer(orjson.dumps(self.manifest), dtype=np.uint8),
                     **{name: getattr(self, name) for name in ARRAYS})

    @classmethod
    def load(cls, path: Path, normalization: str) -> CharLM:
        """The model at ``path`` for an index of keys normalised as ``normalization``
        (``ArtifactError`` says what is wrong)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in (*ARRAYS, "manifest")}
            meta = orjson.loads(arrays.pop("manifest").tobytes())
        except (OSError, ValueError, KeyError, orjson.JSONDecodeError) as exc:
            raise ArtifactError(f"character language model {path}: cannot read it ({exc})"
                                ) from exc
        if not isinstance(meta, dict):
            raise ArtifactError(f"character language model {path}: its manifest is not an "
                                "object")
        check_model(meta, what="character language model", kind=KIND, version=FORMAT_VERSION,
                    normalization=normalization, path=path, command="train-lm")
        model = cls(**{k: v.astype(np.float32) for k, v in arrays.items()}, manifest=meta)
        model.check(path)
        return model

    def check(self, path: Path) -> None:
        chars = self.manifest.get("chars")
        if not isinstance(chars, str):
            raise ArtifactError(f"character language model {path}: its manifest has no chars")
        n = self.manifest.get("hidden")
        if type(n) is not int or n < 1:
            raise ArtifactError(f"character language model {path}: its manifest's hidden "
                                f"must be a positive whole number, not {n!r}")
        tokens = len(chars) + 2
        shapes = {"inputs": (tokens, 3 * n), "recurrent": (n, 3 * n),
                  "recurrent_bias": (3 * n,), "output": (n, tokens), "output_bias": (tokens,)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ArtifactError(f"character language model {path}: {name} is "
                                    f"{getattr(self, name).shape}, expected {shape}")
            if not np.isfinite(getattr(self, name)).all():
                raise ArtifactError(f"character language model {path}: {name} is not finite")


def manifest(chars: str, hidden: int, normalization: str | None = None,
             **extra: Any) -> dict[str, Any]:
    """What a model file records about itself (``CharLM.load`` reads it back)."""
    return {"kind": KIND, "format_version": FORMAT_VERSION, "chars": chars, "hidden": hidden,
            "normalization": normalization or NORMALIZATION, **extra}


class CharLMGenerator:
    """Completions of a typed key by the character model, over ``pieces``' safe words and word
    pairs; the same ``complete`` as the n-gram generator, so the service takes either."""

    def __init__(self, model: CharLM, pieces: Generator) -> None:
        self.model, self.pieces = model, pieces
        words: list[str] = pieces._text
        # For each prefix of a safe word, the characters that can follow it inside one.
        follow: dict[str, set[str]] = {}
        for word in words:
            for i in range(len(word)):
                follow.setdefault(word[:i], set()).add(word[i])
        self._follow = {p: tuple((c, model.token(c)) for c in sorted(cs))
                        for p, cs in follow.items()}
        self._ids: dict[str, int] = pieces._ids  # type: ignore[attr-defined]
        self._pairs: frozenset[int] = pieces._pairs  # type: ignore[attr-defined]
        self._n = len(words)
        self._state = functools.lru_cache(STATES)(self._state_uncached)

    def __len__(self) -> int:
        return self._n

    def clear_caches(self) -> None:
        """Forget the typed inputs' states (benchmarks time cache-missing keystrokes)."""
        self._state.cache_clear()

    def complete(self, key: str, complete: bool, k: int) -> Iterator[tuple[str, float]]:
        """Up to ``k`` completions of the normalised ``key`` with their log probabilities
        (of the appended characters and the end), best first; none when a typed word or
        word pair is not a safe piece or the input is too long."""
        words = key.split(" ")
        head, fragment = (words, "") if complete else (words[:-1], words[-1])
        ids = [self._ids.get(w, -1) for w in head]
        typed = key + " " if complete else key
        known = fragment in self._follow or fragment in self._ids
        if len(typed) >= MAX_CHARS or any(i < 0 for i in ids) or not known or \
                not self.pieces._chained(ids):
            return iter(())
        return iter(self._search(typed, fragment, ids[-1] if ids else -1, k))

    def _ends(self, word: str, prev: int) -> bool:
        """``word`` may end here: a safe word, and a safe pair with the word before it."""
        i = self._ids.get(word, -1)
        return i >= 0 and (prev < 0 or prev * self._n + i in self._pairs)

    def _state_uncached(self, typed: str) -> npt.NDArray[np.float32]:
        if not typed:
            return self.model.read("")
        h = self._state(typed[:-1])
        return self.model.step(h, np.array([self.model.token(typed[-1])]))

    def _search(self, typed: str, fragment: str, prev: int, k: int) -> list[tuple[str, float]]:
        """Beam search over appended characters; a hypothesis is (logp, appended text, state
        row, word so far, id of the word before it, words appended)."""
        model = self.model
        space = model.token(" ")
        states = self._state(typed)
        beam: list[Hyp] = [(0.0, "", 0, fragment, prev, 0)]
        done: list[tuple[float, str]] = []
        for _ in range(MAX_STEPS):
            lps = model.log_probs(states).tolist()
            grown: list[tuple[float, int, int, str, int, int, str]] = []
            for row, (logp, text, _, word, before, appended) in enumerate(beam):
                lp = lps[row]
                if word and self._ends(word, before):
                    done.append((logp + lp[BOUNDARY], text))
                    if appended < MAX_APPENDED:
                        grown.append((logp + lp[space], row, space, "", self._ids[word],
                                      appended + 1, " "))
                for char, token in self._follow.get(word, ()):
                    grown.append((logp + lp[token], row, token, word + char, before, appended,
                                  char))
            if len(done) >= k:
                bar = heapq.nlargest(k, done)[-1][0]
                grown = [g for g in grown if g[0] > bar]  # log probabilities only fall
            if not grown:
                break
            grown = heapq.nlargest(BEAM, grown)
            states = model.step(states[[g[1] for g in grown]], np.array([g[2] for g in grown]))
            beam = [(g[0], beam[g[1]][1] + g[6], i, g[3], g[4], g[5])
                    for i, g in enumerate(grown)]
        head = typed[: len(typed) - len(fragment)]
        best = heapq.nlargest(k, done)
        return [(head + fragment + text, logp) for logp, text in best]


def with_char_lm(index: LoadedIndex, path: Path | None) -> LoadedIndex:
    """``index`` completing with the character model at ``path`` instead of its n-gram
    generator (None: unchanged). The model must load; an index without safe pieces has
    nothing the model may decode, and keeps no generator."""
    if path is None:
        return index
    model = CharLM.load(path, index.manifest["normalization"])
    if not isinstance(index.generator, Generator):
        log.warning("%s: the index has no generator pieces; no generated completions",
                    index.path)
        return index
    return dataclasses.replace(index, generator=CharLMGenerator(model, index.generator))
