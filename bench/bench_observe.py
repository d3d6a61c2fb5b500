"""What observability costs per request on the hot path: metrics and the access log line.

Prints a table of microseconds per call for: recording one request in the metrics (plain and
multiprocess mode), and writing one JSON access-log line (to /dev/null). Runs in seconds.

    .venv/bin/python bench/bench_observe.py
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

N = 200_000


def per_call_us(call: Callable[[], object], n: int = N) -> float:
    for _ in range(1000):
        call()
    started = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - started) / n * 1e6


def observe_us() -> float:
    from typeahead import metrics

    m = metrics.get()
    return per_call_us(lambda: m.observe_request("/v1/suggest", "GET", 200, 0.00042))


def access_log_us() -> float:
    from typeahead import logs
    from typeahead.settings import Settings

    with open(os.devnull, "w") as sink:
        handler = logs.configure(Settings(), stream=sink)
        token = logs.REQUEST_ID.set("0123456789abcdef0123456789abcdef")
        try:
            return per_call_us(lambda: logs.access("GET", "/v1/suggest", "/v1/suggest", 200,
                                                   0.00042), n=N // 4)
        finally:
            logs.REQUEST_ID.reset(token)
            logging.getLogger().removeHandler(handler)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--observe":
        print(f"{observe_us():.2f}")
        return
    rows = [("metrics.observe_request (one process)", observe_us())]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": tmp}
        out = subprocess.run([sys.executable, __file__, "--observe"], env=env, check=True,
                             capture_output=True, text=True).stdout
        rows.append(("metrics.observe_request (multiprocess mode)", float(out)))
    rows.append(("JSON access-log line at INFO (to /dev/null)", access_log_us()))
    buf = io.StringIO()
    print(f"{'what':<46} {'µs/call':>8}", file=buf)
    for name, us in rows:
        print(f"{name:<46} {us:>8.2f}", file=buf)
    print(buf.getvalue(), end="")


if __name__ == "__main__":
    main()
