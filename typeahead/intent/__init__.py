"""Query intent and the "offer generate" decision: the whole-query classifier and the
keystroke decision served with every suggestion.

What other packages use is exported here; the rest is private to the package.
"""

from __future__ import annotations

from typeahead.intent.classifier import (
    AUX_WORDS,
    FEATURE_NAMES,
    FORMAT_VERSION,
    INFO_CUES,
    INFORMATIONAL,
    KIND,
    LABELS,
    PARAMS_FILE,
    QUESTION_WORDS,
    SITES_FILE,
    TRANS_CUES,
    WEIGHTS_FILE,
    Decision,
    Intent,
    IntentClassifier,
    lexical_features,
    looks_personal,
    read_model_manifest,
)
from typeahead.intent.keystroke import (
    FEATURES,
    KEYSTROKE_FILE,
    NAMES_FILE,
    Combiner,
    KeystrokeIntent,
    Names,
    WholeQuery,
    entry_logits,
    for_service,
)

__all__ = [
    "AUX_WORDS", "FEATURES", "FEATURE_NAMES", "FORMAT_VERSION", "INFORMATIONAL", "INFO_CUES",
    "KEYSTROKE_FILE", "KIND", "LABELS", "NAMES_FILE", "PARAMS_FILE", "QUESTION_WORDS",
    "SITES_FILE", "TRANS_CUES", "WEIGHTS_FILE", "Combiner", "Decision", "Intent",
    "IntentClassifier", "KeystrokeIntent", "Names", "WholeQuery", "entry_logits", "for_service",
    "lexical_features", "looks_personal", "read_model_manifest",
]
