"""The millisecond tier: prefix, any-order and typo-tolerant completion, semantic
neighbours and instant results fused into one answer per keystroke, and the index directory
that holds them (``build-index``).

What other packages use is exported here; the rest is private to the package.
"""

from __future__ import annotations

from typeahead.suggest.index import LoadedIndex, load_index
from typeahead.suggest.lexical import LexicalEngine
from typeahead.suggest.service import SuggestService

__all__ = ["LexicalEngine", "LoadedIndex", "SuggestService", "load_index"]
