"""The packaged models: the static student, the intent classifier, the ranking models, the
suggestion-safety text model.

Each directory holds a model's files and a ``manifest.json`` with their checksums; the code that
reads a model checks them (``typeahead.manifest``) and refuses a directory that fails.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
STUDENT_DIR = ASSETS / "student"
INTENT_DIR = ASSETS / "intent"
RELEVANCE_DIR = ASSETS / "relevance"
SAFETY_DIR = ASSETS / "safety"

__all__ = ["ASSETS", "INTENT_DIR", "RELEVANCE_DIR", "SAFETY_DIR", "STUDENT_DIR"]
