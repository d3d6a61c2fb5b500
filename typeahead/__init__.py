"""typeahead: a latency-tiered hybrid search backend.

The millisecond tier answers every keystroke from memory-mapped structures; the generation
tier runs LLM summaries as asynchronous jobs on Redis. See README.md.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
