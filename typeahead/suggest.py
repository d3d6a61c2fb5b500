"""The millisecond tier's answer to one keystroke: suggestions, results, intent.

Pure CPU work measured in microseconds, so handlers call it inline rather than through an
executor (a thread hop would cost more than the work).

Fusion: lexical matches come first (in-order prefix, then any-order words); when they leave
slots free, typo corrections and semantic neighbours compete for them on one score scale. A
semantic neighbour's score is its cosine times ``SEMANTIC_SCALE``, which keeps it inside the
fallback band [0, 1/3) where fuzzy matches live, so no lexical match is ever displaced and
QAC MRR can only rise (bench/bench_hybrid.py measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from typeahead.index import LoadedIndex
from typeahead.lexical import Suggestion

SEMANTIC_SCALE = 0.3  # cosine 1.0 -> 0.3, just under the any-order tier's floor of 1/3


class IntentModel(Protocol):
    def decide(self, text: str, threshold: float | None = None,
               embedding: np.ndarray | None = None) -> Any: ...


@dataclass(frozen=True)
class SuggestService:
    index: LoadedIndex
    intent: IntentModel | None = None
    intent_threshold: float | None = None
    semantic: bool = True
    results_k: int = 3

    def suggest(self, query: str, k: int) -> dict[str, Any]:
        suggestions = self.index.lexical.suggest(query, k)
        layer = self.index.semantic if self.semantic else None
        vector = None
        if layer is not None and (len(suggestions) < k or self.intent is not None):
            vector = layer.encode(query)
        if layer is not None and vector is not None and len(suggestions) < k:
            suggestions = self._fuse(suggestions, layer.neighbours(vector, k + len(suggestions)),
                                     k)
        results = layer.results(query, self.results_k) if layer and self.results_k else []
        return {
            "query": query,
            "suggestions": [_suggestion_json(s) for s in suggestions],
            "results": results,
            **self._intent(query, vector),
        }

    def _fuse(self, lexical: list[Suggestion], neighbours: list[tuple[int, float]], k: int
              ) -> list[Suggestion]:
        taken = {s.id for s in lexical}
        extra = [(entry, sim * SEMANTIC_SCALE) for entry, sim in neighbours if entry not in taken]
        if not extra:
            return lexical
        texts = self.index.lexical.data.display.many([entry for entry, _ in extra])
        semantic = [Suggestion(entry, text, score, "semantic", ())
                    for (entry, score), text in zip(extra, texts, strict=True)]
        merged = sorted(lexical + semantic, key=lambda s: -s.score)
        return merged[:k]

    def _intent(self, query: str, vector: np.ndarray | None) -> dict[str, Any]:
        if self.intent is None:
            return {"intent": None, "offer_generate": False}
        decision = self.intent.decide(query, self.intent_threshold,
                                      None if vector is None else vector[0])
        return {
            "intent": {"label": decision.intent.label,
                       "confidence": round(float(decision.intent.confidence), 4)},
            "offer_generate": bool(decision.offer_generate),
        }


def _suggestion_json(s: Suggestion) -> dict[str, Any]:
    return {"text": s.text, "score": round(s.score, 6), "source": s.source,
            "matches": [list(span) for span in s.spans]}
