"""Suggestion safety: the policy that keeps explicit and abusive completions out of the box."""

from typeahead.safety.policy import ADULT_CATEGORIES, CATEGORIES, SuggestionPolicy

__all__ = ["ADULT_CATEGORIES", "CATEGORIES", "SuggestionPolicy"]
