"""The fault-injection suite in its shortened form (``python -m chaos --quick``), about a minute.

Real processes: redis-server, ``typeahead serve --workers 2``, two workers, the vLLM stand-in
and an open-loop suggest load. Latency targets are for the full run on a quiet machine
(``make chaos``); here the p99 tolerance is opened wide and every functional check must pass:
503s during the outage, recovery, no lost or doubled job, deadlines, the supervisor's restart,
the idle streams, bounded memory, and no suggest errors.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


def test_quick_chaos_suite(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        # 300 idle streams: more than redis-py's default pool of 100 per API process, which
        # each stream used to hold (the quick default of 150 predates the shared reader).
        [sys.executable, "-m", "chaos", "--quick", "--streams", "300", "--rate", "50",
         "--tolerance", "1000", "--slack-ms", "10000", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = orjson.loads(out.read_bytes())["rows"]
    failed = [r for r in rows if not r["ok"]]
    assert not failed, "\n".join(f"{r['scenario']}: {r['checked']}: {r['figures']}"
                                 for r in failed)
    scenarios = {r["scenario"] for r in rows}
    assert {"redis outage", "worker SIGKILL", "LLM stall / drop", "API process SIGKILL",
            "slow clients + idle SSE", "baseline"} <= scenarios
    assert proc.returncode == 0
