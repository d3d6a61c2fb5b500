"""The millisecond tier's answer to one keystroke: suggestions, results, intent.

Pure CPU work measured in microseconds, so handlers call it inline rather than through an
executor (a thread hop would cost more than the work). Optional parts (semantic neighbours,
documents, the intent classifier) plug in when the index or settings provide them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from typeahead.index import LoadedIndex
from typeahead.lexical import Suggestion


class IntentModel(Protocol):
    def predict(self, text: str) -> Any: ...

    def offer_generate(self, text: str, threshold: float | None = None) -> bool: ...


@dataclass(frozen=True)
class SuggestService:
    index: LoadedIndex
    intent: IntentModel | None = None
    intent_threshold: float | None = None

    def suggest(self, query: str, k: int) -> dict[str, Any]:
        suggestions = self.index.lexical.suggest(query, k)
        return {
            "query": query,
            "suggestions": [_suggestion_json(s) for s in suggestions],
            "results": [],
            **self._intent(query),
        }

    def _intent(self, query: str) -> dict[str, Any]:
        if self.intent is None:
            return {"intent": None, "offer_generate": False}
        pred = self.intent.predict(query)
        return {
            "intent": {"label": pred.label, "confidence": round(float(pred.confidence), 4)},
            "offer_generate": self.intent.offer_generate(query, self.intent_threshold),
        }


def _suggestion_json(s: Suggestion) -> dict[str, Any]:
    return {"text": s.text, "score": round(s.score, 6), "source": s.source,
            "matches": [list(span) for span in s.spans]}
