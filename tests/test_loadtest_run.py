"""The scheduler, exit codes and reports, against local test servers on free ports."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.cli import main
from tests.loadtest_servers import running_server


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server() as base:
        yield base


@pytest.fixture(scope="module")
def stalling_server() -> Iterator[str]:
    with running_server("--stall-every", "1", "--stall-ms", "200") as base:
        yield base


def _run(tmp_path: Path, target: str, *flags: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "report.json"
    code = main(["run", "--target", target, "--report", str(report), "--quiet", *flags])
    return code, json.loads(report.read_text())


def test_latency_counts_injected_server_delay(tmp_path: Path, server: str) -> None:
    code, report = _run(tmp_path, server, "--url", "/sleep?ms=30", "--rate", "80",
                        "--duration", "1.5", "--arrival", "constant", "--max-lag", "1s")
    assert code == 0
    row = report["classes"]["plain"]
    assert row["count"] == 120 and report["rates"]["scheduled"] == 120
    assert 30_000 <= row["p50_us"] < 300_000


def test_open_model_sends_on_schedule_despite_slow_answers(tmp_path: Path, server: str) -> None:
    # Each answer takes 400 ms; a closed loop on a few connections would send a handful.
    code, report = _run(tmp_path, server, "--url", "/sleep?ms=400", "--rate", "60",
                        "--duration", "1", "--arrival", "constant", "--max-lag", "1s")
    assert code == 0
    assert report["rates"]["sent"] == 60 == report["classes"]["plain"]["count"]
    assert report["classes"]["plain"]["p50_us"] >= 400_000


def test_stall_shows_in_p99(tmp_path: Path, stalling_server: str) -> None:
    # The server blocks its loop for 200 ms every second: ~20% of requests wait in the stall.
    code, report = _run(tmp_path, stalling_server, "--url", "/fast", "--rate", "200",
                        "--duration", "2.5", "--slo", "p99<50ms", "--max-lag", "1s")
    assert code == 1
    assert report["classes"]["plain"]["p99_us"] >= 100_000
    assert report["broken"] == ["p99<50ms"]


def test_exit_codes_pass_fail_invalid_usage(
    tmp_path: Path, server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--url", "/fast", "--rate", "50", "--duration", "1", "--max-lag", "1s"]
    code, report = _run(tmp_path, server, *common, "--slo", "p99<5s", "errors<1%", "rate>=0.9")
    assert code == 0 and report["verdict"] == "pass"
    code, report = _run(tmp_path, server, *common, "--slo", "p99<1us", "errors<1%")
    assert code == 1 and report["broken"] == ["p99<1us"]
    assert "SLO broken: p99<1us" in capsys.readouterr().err
    code, report = _run(tmp_path, server, "--url", "/fast", "--rate", "50", "--duration", "1",
                        "--max-lag", "1us", "--slo", "p99<5s")
    assert code == 3 and report["verdict"] == "invalid" and not report["valid"]
    assert "invalid run" in capsys.readouterr().err
    assert main(["run", "--target", server, "--slo", "p99<5"]) == 2
    assert "needs a unit" in capsys.readouterr().err
    assert main(["run", "--target", "localhost:1"]) == 2


def test_errors_are_counted_by_kind(tmp_path: Path, server: str) -> None:
    code, report = _run(tmp_path, server, "--url", "/status/503", "--rate", "40",
                        "--duration", "0.5", "--arrival", "constant", "--max-lag", "1s",
                        "--slo", "errors<0.1%")
    assert code == 1
    assert report["errors"] == {"http_503": 20}
    dead = "http://127.0.0.1:9/"  # discard port: nothing listens
    _, report = _run(tmp_path, dead, "--url", "/x", "--rate", "20", "--duration", "0.5",
                        "--arrival", "constant", "--max-lag", "1s")
    assert report["errors"] == {"connect": 10}


def test_in_flight_cap_drops_and_counts(tmp_path: Path, server: str) -> None:
    _, report = _run(tmp_path, server, "--url", "/sleep?ms=500", "--rate", "40",
                        "--duration", "0.5", "--arrival", "constant", "--max-in-flight", "5",
                        "--max-lag", "1s")
    assert report["errors"] == {"dropped": 15}
    assert report["rates"]["scheduled"] == 20 and report["rates"]["sent"] == 5


def test_sessions_with_generate_streams_and_reports(tmp_path: Path, server: str) -> None:
    html = tmp_path / "report.html"
    code, report = _run(tmp_path, server, "--rate", "150", "--duration", "2",
                        "--generate-share", "0.6", "--generate-new-share", "0.5",
                        "--think-ms", "100", "--seed", "3", "--html", str(html),
                        "--max-lag", "1s", "--slo", "suggest.p99<2s", "errors<1%")
    assert code == 0, report["slos"]
    classes = report["classes"]
    for cls in ("suggest", "generate_cached", "generate_new", "stream_first_token",
                "stream_done"):
        assert classes[cls]["count"] > 0, cls
    assert classes["stream_done"]["p50_us"] > classes["stream_first_token"]["p50_us"]
    for key in ("settings", "generator_lag", "slos", "rates", "timeline", "errors"):
        assert key in report
    assert report["settings"]["workload"]["mode"] == "sessions"
    assert report["generator_lag"]["count"] == report["rates"]["sent"]
    page = html.read_text()
    images = page.split('src="data:image/png;base64,')[1:]
    assert len(images) == 2
    assert all(base64.b64decode(img.split('"')[0])[:8] == b"\x89PNG\r\n\x1a\n" for img in images)


def test_procs_merge_histograms(tmp_path: Path, server: str) -> None:
    code, report = _run(tmp_path, server, "--url", "/fast", "--rate", "100", "--duration", "1",
                        "--arrival", "constant", "--procs", "2", "--max-lag", "1s")
    assert code == 0
    assert report["rates"]["scheduled"] == 100 == report["classes"]["plain"]["count"]
    assert report["generator_lag"]["count"] == 100


def test_find_capacity_reports_the_best_run(
    tmp_path: Path, server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each answer takes ~20 ms and at most 4 requests may be out: about 200 req/s fit.
    code, report = _run(tmp_path, server, "--url", "/sleep?ms=20", "--rate", "50",
                        "--duration", "0.6", "--arrival", "constant", "--max-in-flight", "4",
                        "--max-lag", "1s", "--find-capacity", "--capacity-steps", "4",
                        "--slo", "errors<1%")
    assert code == 0
    capacity = report["capacity"]
    assert capacity["rate_per_s"] >= 50 and capacity["lowest_failing_rate_per_s"] is not None
    assert capacity["rate_per_s"] < capacity["lowest_failing_rate_per_s"]
    assert [s["rate"] for s in capacity["steps"]][:2] == [50, 100]
    assert "capacity:" in capsys.readouterr().out


def test_suite_against_a_stand_in(tmp_path: Path) -> None:
    from tests.loadtest_servers import free_port

    report = tmp_path / "suite.json"
    code = main(["suite", "--serve-command", "{python} -m loadtest.testserver --port {port}",
                 "--worker-command", "", "--port", str(free_port()), "--rate", "100",
                 "--duration", "1.5", "--generate-share", "0.5", "--think-ms", "50",
                 "--report", str(report), "--quiet"])
    data = json.loads(report.read_text())
    assert code == data["exit_code"]
    assert [s["slo"] for s in data["slos"]] == ["suggest.p99<5ms", "generate_cached.p99<10ms",
                                                "errors<0.1%"]
    assert data["classes"]["generate_cached"]["count"] > 0
    assert "generate_new" not in data["classes"]  # every click hits the prewarmed query


def test_aiohttp_client_and_sleep_timer_fallbacks(tmp_path: Path, server: str) -> None:
    code, report = _run(tmp_path, server, "--url", "/fast", "--rate", "50", "--duration", "1",
                        "--arrival", "constant", "--client", "aiohttp", "--timer", "sleep",
                        "--spin-us", "100", "--max-lag", "1s", "--slo", "errors<1%")
    assert code == 0
    assert report["classes"]["plain"]["count"] == 50
    settings = report["settings"]
    assert (settings["client"], settings["timer"], settings["spin_us"]) == ("aiohttp", "sleep",
                                                                            100.0)
