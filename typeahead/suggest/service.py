"""The millisecond tier's answer to one keystroke: suggestions, results, intent.

Pure CPU work measured in microseconds, so handlers call it inline rather than through an
executor (a thread hop would cost more than the work).

Fusion: lexical matches come first (in-order prefix, then any-order words, then typo
corrections); semantic neighbours fill the slots they leave free, ranked by cosine, with a
score of cosine times the lowest lexical score so the list stays monotone. Tuning on the AOL
split (bench/bench_hybrid.py) showed that letting neighbours compete with typo corrections on
one scale displaced correct corrections (typo coverage fell from 0.127 to 0.080), while
filling free slots never lowers MRR or coverage and raises coverage for reordered words.

Generated completions (``typeahead.suggest.generated``, at most 4) fill the slots in-order
prefix matches leave free, ahead of any-order matches, typo corrections and semantic
neighbours, scored between the in-order matches and the rest: on a dev split of the training
rows this order raised MRR@10 at 4 / 6 characters by 5% / 2% over filling only the slots every
lexical tier leaves free. Each is screened by the suggestion
policy and the curation rules first, as index entries were at build time.

With a completion ranker (``typeahead.suggest.ranker``, on by default), those keystrokes are
ordered by its learned score instead: the lexical tiers' top k and up to 6 generated
completions, k kept. Keystrokes the in-order matches fill keep the popularity order.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from typeahead import metrics
from typeahead.normalize import normalize
from typeahead.safety import rules as curation  # the module: safety.rules imports this package
from typeahead.safety.policy import SuggestionPolicy
from typeahead.safety.screen import blocked_ids, needs_screen
from typeahead.suggest.index import LoadedIndex
from typeahead.suggest.lexical import (
    IN_ORDER,
    Blocked,
    Suggestion,
    blocked_ranges,
)
from typeahead.suggest.ranker import Candidate, CompletionRanker
from typeahead.suggest.semantic import has_topic

log = logging.getLogger("typeahead.suggest")

# Inputs that reach each tier (prefix, any-order words, typo correction, non-ASCII) whatever
# the corpus: used to warm a freshly loaded index, never cached.
WARM_PROBES = ("a", "th", "new yo", "york new", "amazn", "wikipediaa", "café", "東京")
FALLBACK_TOP = 1 / 3  # the highest score a fallback (fuzzy) suggestion can have
GENERATED = -2  # the entry id of a generated completion (no index entry holds it)
GENERATED_EXTRA = 2  # generated candidates asked for beyond the free slots (some are screened)
VERDICTS = 16384  # the suggestion policy's verdicts on generated texts remembered
GENERATED_MAX = 4  # generated completions per answer at most (4 kept 99.9% of the dev MRR of 10)
RANKED_GENERATED = 6  # generated candidates the ranker orders with the lexical ones


class IntentModel(Protocol):
    def decide(self, text: str, threshold: float | None = None,
               embedding: np.ndarray | None = None) -> Any: ...


class KeystrokeModel(Protocol):
    """The served decision (``typeahead.intent.keystroke.KeystrokeIntent``)."""

    def decide(self, query: str, suggestions: Sequence[Suggestion] = (),
               embedding: np.ndarray | None = None) -> Any: ...


@dataclass(frozen=True)
class SuggestService:
    index: LoadedIndex
    intent: IntentModel | None = None
    intent_threshold: float | None = None
    semantic: bool = True
    results_k: int = 3
    results_per_article: int = 1  # instant results from one article (title); 0: any number
    results_fill: bool = False  # slots no other article takes show the shown ones' next paragraphs
    cache_size: int = 0  # answers kept per process (LRU); keystroke traffic repeats heavily
    # The suggestion policy: an explicit input gets no instant results and no Generate offer;
    # an index built under another policy is filtered at load (the overlay's policy ids).
    policy: SuggestionPolicy | None = None
    rules: curation.RuleSet | None = None  # operators' curation rules at start (see set_rules)
    generated: bool = True  # generated completions fill free slots when the index has them
    # The learned order over lexical and generated candidates (typeahead.suggest.ranker),
    # applied where generated completions are asked for; None: the fixed tier order.
    ranker: CompletionRanker | None = None

    def __post_init__(self) -> None:
        encode = self._encode
        if self.cache_size > 0:
            encode = functools.lru_cache(maxsize=self.cache_size)(encode)
        object.__setattr__(self, "_encoded", encode)
        object.__setattr__(self, "_policy_blocked", self._late_blocked())
        # Keystrokes within one word share their generated completions: verdicts remembered
        # (the policy's and the curation rules').
        object.__setattr__(self, "_text_blocked", functools.lru_cache(maxsize=VERDICTS)(
            self._text_blocked_uncached))
        self.set_rules(self.rules or curation.RuleSet())
        object.__setattr__(self, "_keystroke", self._keystroke_model())

    def encoded(self, query: str, k: int) -> bytes:
        """The answer for one keystroke as a JSON object, from the LRU when it was asked before.

        The cache holds bytes rather than dicts on purpose: tens of thousands of cached dicts
        and lists are objects the cyclic GC must walk, and a full collection over them stalled
        a worker for 60 ms; bytes are not tracked, and a hit skips serialisation too."""
        return self._encoded(query, k)  # type: ignore[attr-defined]

    @property
    def overlay(self) -> curation.Overlay:
        return self._overlay  # type: ignore[attr-defined]

    def set_rules(self, rules: curation.RuleSet) -> None:
        """Apply new curation rules from the next keystroke on."""
        self.use_overlay(self.overlay_for(rules))

    def overlay_for(self, rules: curation.RuleSet) -> curation.Overlay:
        """The overlay of ``rules`` on this index. It judges every entry (linear in the index:
        the API builds it on a worker thread and then calls ``use_overlay``)."""
        lexical = self.index.lexical
        top = float(lexical.data.weights[0]) if len(lexical.data.weights) else 1.0
        return curation.Overlay(rules, lexical.data.keys, self._policy_blocked,  # type: ignore[attr-defined]
                                self.policy, popularity=_popularity_of(top),
                                counts=metrics.get().removed_pending,
                                key_of_text=lexical.key,
                                ranges=functools.partial(blocked_ranges, lexical.data.prefixes))

    def use_overlay(self, overlay: curation.Overlay) -> None:
        """Serve under ``overlay`` from the next keystroke on: cached answers are dropped,
        since they were computed under the old rules."""
        object.__setattr__(self, "_overlay", overlay)
        self._text_blocked.cache_clear()  # type: ignore[attr-defined]
        clear = getattr(self._encoded, "cache_clear", None)  # type: ignore[attr-defined]
        if clear is not None:
            clear()

    def _late_blocked(self) -> frozenset[int]:
        """Entries an index built under another policy (or none) serves that this one blocks."""
        if self.policy is None or not needs_screen(self.index.manifest, self.policy):
            return frozenset()
        blocked = blocked_ids(self.index.lexical.data.display.many(
            list(range(len(self.index.lexical)))), self.policy)
        log.warning("index %s was not built under this suggestion policy: %d entries are "
                    "filtered at load; rebuild it to drop them", self.index.path, len(blocked))
        return blocked

    def warm(self) -> None:
        """Run every tier once so the first users do not pay for first-touch costs (page faults
        on the mapped index, lazily built numpy and tokenizer state: several milliseconds)."""
        for probe in WARM_PROBES:
            self.suggest(probe, 10)

    def _encode(self, query: str, k: int) -> bytes:
        return orjson.dumps(self.suggest(query, k))

    def suggest(self, query: str, k: int) -> dict[str, Any]:
        """The answer for one keystroke, computed afresh."""
        overlay = self.overlay
        blocked = overlay.blocked
        suggestions = self.index.lexical.suggest(query, k, blocked=blocked)
        # The intent decision reads the index's own suggestions (a generated text has no
        # precomputed log-odds, and the offer should not hinge on one).
        known = suggestions
        if self.generated and self.index.generator is not None and leaves_a_slot(suggestions, k):
            suggestions = self._generated(query, suggestions, k)
        layer = self.index.semantic if self.semantic else None
        vector = None
        # One embedding per keystroke serves neighbours, documents and intent alike.
        if layer is not None and (len(suggestions) < k or self.intent is not None
                                  or self.results_k):
            vector = layer.encode(query)
        if layer is not None and vector is not None and len(suggestions) < k:
            suggestions = self._fuse(suggestions, layer.neighbours(vector, k + len(suggestions)),
                                     k, blocked)
        if blocked.met:
            blocked.report()
        if overlay.curates:
            suggestions = overlay.promote(query, suggestions, k)
        elif len(suggestions) > k:
            suggestions = suggestions[:k]
        explicit = self.policy is not None and self.policy.blocked(query) is not None
        results = layer.results(query, self.results_k, vector, self.results_per_article,
                                self.results_fill) \
            if layer and self.results_k and not explicit else []
        answer = {
            "query": query,
            "suggestions": [_suggestion_json(s) for s in suggestions],
            "results": results,
            **self._intent(query, vector, suggestions if known is suggestions else
                           [s for s in suggestions if s.id != GENERATED]),
        }
        if explicit:
            answer["offer_generate"] = False  # no summary is offered for explicit input
        return answer

    def _generated(self, query: str, found: list[Suggestion], k: int) -> list[Suggestion]:
        generator = self.index.generator
        assert generator is not None
        key = self.index.lexical.key(query)
        if not key:
            return found
        if self.ranker is not None:
            return self._rank(key, query, found, k)
        # In-order prefix matches first; any-order matches and typo corrections after
        # generated completions (they ranked lower on the dev split).
        head = [s for s in found if s.score >= IN_ORDER]
        rest = found[len(head):]
        room = min(k - len(head), GENERATED_MAX)
        floor = min((s.score for s in head), default=IN_ORDER)
        out = head
        for text, logp in self._generated_texts(key, query, found, room + GENERATED_EXTRA):
            out.append(_generated_suggestion(text, logp, floor, key))
            if len(out) - len(head) >= room:
                break
        return (out + rest)[:k] if rest else out

    def _generated_texts(self, key: str, query: str, found: list[Suggestion], n: int
                         ) -> Iterator[tuple[str, float]]:
        """The generator's completions of ``key`` (text, log-probability), best first, less
        those ``found`` holds and those the policy or the curation rules block."""
        generator = self.index.generator
        assert generator is not None
        taken = set(self.index.lexical.data.keys.many([s.id for s in found if s.id >= 0]))
        taken.update(normalize(s.text) for s in found if s.id < 0)
        for text, logp in generator.complete(key, query[-1].isspace(), n):
            if text in taken or self._text_blocked(text):  # type: ignore[attr-defined]
                continue
            yield text, logp

    def candidates(self, key: str, query: str, found: list[Suggestion]) -> list[Candidate]:
        """What the completion ranker orders for one keystroke: the lexical tiers' ``found``
        and up to ``RANKED_GENERATED`` generated completions (``typeahead train-ranker``
        collects its training candidates here too)."""
        pop = self.index.lexical.data.popularity
        out = [Candidate(s, float(pop[s.id]) if s.id >= 0 else 0.0, 0.0, rank)
               for rank, s in enumerate(found)]
        floor = min((s.score for s in found if s.score >= IN_ORDER), default=IN_ORDER)
        texts = self._generated_texts(key, query, found, RANKED_GENERATED + GENERATED_EXTRA)
        for rank, (text, logp) in enumerate(itertools.islice(texts, RANKED_GENERATED)):
            out.append(Candidate(_generated_suggestion(text, logp, floor, key), 0.0, logp, rank))
        return out

    def _rank(self, key: str, query: str, found: list[Suggestion], k: int
              ) -> list[Suggestion]:
        """The top ``k`` of every candidate in the ranker's order. Each keeps a score of the
        candidates' own, taken in descending order, so scores still fall down the list."""
        assert self.ranker is not None
        candidates = self.candidates(key, query, found)
        order = self.ranker.order(key, candidates)[:k]
        scores = sorted((c.suggestion.score for c in candidates), reverse=True)
        return [candidates[i].suggestion._replace(score=score)
                for i, score in zip(order, scores, strict=False)]

    def _text_blocked_uncached(self, text: str) -> bool:
        # A generated text is screened as the build screens index entries (the lists and the
        # text model): it is a new combination of words that no build-time screen has seen.
        # The curation rules' block apply to it by its key (the text is one); the verdicts
        # are forgotten when the rules change.
        if self.policy is not None and self.policy.screened(text) is not None:
            return True
        rules = self.overlay.rules
        return rules.blocks and rules.blocks_key(text)

    def _fuse(self, lexical: list[Suggestion], neighbours: list[tuple[int, float]], k: int,
              blocked: Blocked) -> list[Suggestion]:
        taken = {s.id for s in lexical}
        floor = min((s.score for s in lexical), default=FALLBACK_TOP)
        removed = blocked.ids
        extra = [(entry, sim * floor) for entry, sim in neighbours
                 if entry not in taken and entry not in removed]
        if not extra:
            return lexical
        texts = self.index.lexical.data.display.many([entry for entry, _ in extra])
        semantic = [Suggestion(entry, text, score, "semantic", ())
                    for (entry, score), text in zip(extra, texts, strict=True) if has_topic(text)]
        return lexical + semantic[: k - len(lexical)]

    def _keystroke_model(self) -> KeystrokeModel | None:
        """The keystroke decision over the classifier, when its model directory ships one
        (``keystroke.json``) and no threshold override asks for the classifier alone."""
        if self.intent is None or self.intent_threshold is not None:
            return None
        from typeahead.intent import for_service

        return for_service(self.intent, self.index)

    def _intent(self, query: str, vector: np.ndarray | None,
                suggestions: Sequence[Suggestion] = ()) -> dict[str, Any]:
        """Intent of the fragment, and the offer for the query the user is about to submit:
        the fragment's intent with its completions' (see typeahead/intent/keystroke.py)."""
        if self.intent is None:
            return {"intent": None, "offer_generate": False}
        embedding = None if vector is None else vector[0]
        keystroke: KeystrokeModel | None = self._keystroke  # type: ignore[attr-defined]
        if keystroke is not None:
            decision = keystroke.decide(query, suggestions, embedding)
        else:
            decision = self.intent.decide(query, self.intent_threshold, embedding)
        return {
            "intent": {"label": decision.intent.label,
                       "confidence": round(float(decision.intent.confidence), 4)},
            "offer_generate": bool(decision.offer_generate),
        }


def leaves_a_slot(found: Sequence[Suggestion], k: int) -> bool:
    """Whether the in-order prefix matches leave one of ``k`` slots free: there generated
    completions are asked for (and the completion ranker, when on, orders them all)."""
    return len(found) < k or found[-1].score < IN_ORDER


def _generated_suggestion(text: str, logp: float, floor: float, key: str) -> Suggestion:
    """A generated completion scored between the in-order matches (``floor``: the lowest of
    them) and the other tiers, in the generator's order; the typed key is its match."""
    score = IN_ORDER + (floor - IN_ORDER) * math.exp(logp / 4)
    return Suggestion(GENERATED, text, score, "generated", ((0, len(key)),))


def _suggestion_json(s: Suggestion) -> dict[str, Any]:
    # Unpacked once: a NamedTuple's named fields are each a Python-level property read.
    entry, text, score, source, spans = s
    out = {"text": text, "score": round(score, 6), "source": source,
           "matches": [[start, end] for start, end in spans]}
    if entry == curation.CURATED:
        out["curated"] = True  # pinned or added by an operator's rule
    return out


def _popularity_of(top: float) -> Callable[[float], float]:
    """An added text's popularity from its weight, on the index's own scale (see
    ``typeahead.suggest.index.popularity``)."""
    scale = math.log1p(max(top, 1e-9)) * 1.0001

    def popularity(weight: float) -> float:
        return min(math.log1p(max(weight, 0.0)) / scale, 0.9999)

    return popularity
