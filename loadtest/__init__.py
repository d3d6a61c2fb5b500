"""Open-model load tester for typeahead with latency SLO verdicts.

``python -m loadtest run`` sends requests on a fixed arrival schedule (constant or Poisson),
never waiting for earlier answers, and counts each latency from the request's *scheduled* send
time, so a stalled server shows up in the percentiles instead of silently slowing the generator
(coordinated omission). See docs/loadtest.md.
"""

from __future__ import annotations

__all__ = ["CLASSES", "__version__"]

__version__ = "0.1.0"

# Request classes with their own latency histogram. ``plain`` is the plain (URL template) mode.
CLASSES: tuple[str, ...] = (
    "suggest",
    "generate_cached",
    "generate_new",
    "stream_first_token",
    "stream_done",
    "plain",
)
