"""The serving path must never import the training stack (torch and friends)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "sentence_transformers", "model2vec")
SERVING = ("typeahead.embed.student", "typeahead.embed.vector", "typeahead.retrieval.documents",
           "typeahead.eval.retrieval")
OPTIONAL = ("typeahead.http.app", "typeahead.http.server")

PROBE = f"""
import importlib, json, sys
for name in {SERVING!r}:
    importlib.import_module(name)
for name in {OPTIONAL!r}:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
from typeahead.embed.student import DEFAULT_STUDENT_DIR, Student
if (DEFAULT_STUDENT_DIR / "manifest.json").exists():
    Student.load().encode(["warm up the serving path"])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
"""


def test_serving_modules_do_not_import_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
