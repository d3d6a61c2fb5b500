"""``typeahead eval``: offline quality of each tier (query auto-completion, instant
results, intent).

What other packages use is exported here; the rest is private to the package.
"""

from __future__ import annotations

from typeahead.eval.intent import Labelled, evaluate
from typeahead.eval.intent_keystroke import keystroke_metrics, prefixes
from typeahead.eval.retrieval import score_rankings

__all__ = ["Labelled", "evaluate", "keystroke_metrics", "prefixes", "score_rankings"]
