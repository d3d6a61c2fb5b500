from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lexical_fixtures import ROWS, write_tsv
from typeahead.cli import main
from typeahead.eval.qac import evaluate_qac


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "typeahead", *args], capture_output=True,
                          text=True, timeout=60)


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip()
    for cmd in ["build-index", "serve", "eval"]:
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0


def test_build_index_and_eval_end_to_end(tmp_path: Path) -> None:
    corpus = write_tsv(tmp_path / "c.tsv", ROWS)
    out = tmp_path / "idx"
    res = run_cli("build-index", "--corpus", str(corpus), "--out", str(out),
                  "--weight-col", "count")
    assert res.returncode == 0, res.stderr
    assert "build-index:" in res.stderr  # progress on stderr
    assert (out / "manifest.json").is_file()
    res = run_cli("eval", "qac", "--index", str(out), "--log", str(corpus), "--text-col", "query",
                  "--weight-col", "count", "--prefix-lengths", "2,4", "--k", "10", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert set(report) >= {"n", "mrr", "success"} and set(report["mrr"]) == {"2", "4"}


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["build-index", "--out", "x"], 2, "required: --corpus"),
        (["build-index", "--corpus", "missing.tsv", "--out", "x"], 1, "missing.tsv: no such file"),
        (["build-index", "--corpus", "{corpus}", "--out", "{tmp}/o", "--text-col", "nope"], 1,
         "no column 'nope'"),
        (["build-index", "--corpus", "{corpus}", "--out", "{tmp}/o", "--min-count", "-1"], 2,
         "--min-count"),
        (["build-index", "--corpus", "{corpus}", "--out", "{tmp}/o", "--min-count", "abc"], 2,
         "finite decimal number"),
        (["serve", "--index", "{tmp}/none"], 1, "no such typeahead-index directory"),
        (["serve", "--index", "{tmp}", "--port", "99999"], 2, "port must be"),
        (["eval", "qac", "--index", "{tmp}/none", "--log", "{corpus}", "--text-col", "query"], 1,
         "no such typeahead-index"),
        (["eval", "qac", "--index", "x", "--log", "y", "--text-col", "q",
          "--prefix-lengths", "a,b"], 2, "comma-separated integers"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_errors_are_one_line_with_exit_codes(tmp_path: Path, args: list[str], code: int,
                                             needle: str) -> None:
    corpus = write_tsv(tmp_path / "c.tsv", ROWS)
    argv = [a.format(tmp=tmp_path, corpus=corpus) for a in args]
    res = run_cli(*argv)
    assert res.returncode == code, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_eval_qac_hand_computed_mrr() -> None:
    # Suggestions per prefix are fixed; the log's weights make the expected MRR easy to check.
    table = {"ne": ["new york", "news", "net"], "ap": ["apple", "app store"],
             "new ": ["new york"], "appl": ["apple"]}

    def suggest(prefix: str, k: int) -> list[str]:
        return table.get(prefix, [])[:k]

    log = [("new york", 2.0), ("news", 1.0), ("app store", 1.0), ("zz", 5.0), ("net", 0.0)]
    result = evaluate_qac(log, suggest, [2, 4], 10).as_json()
    # length 2: new york rank 1 (w2), news rank 2 (w1), app store rank 2 (w1); "zz" is not
    # longer than 2 so it does not count; "net" has weight 0.
    assert result["mrr"]["2"] == pytest.approx((2 * 1 + 1 * 0.5 + 1 * 0.5) / 4)
    assert result["success"]["2"] == pytest.approx(1.0)
    # length 4: "new " -> new york rank 1 (w2); "news" is not longer than 4; "app " -> miss (w1)
    assert result["mrr"]["4"] == pytest.approx(2 / 3)
    assert result["success"]["4"] == pytest.approx(2 / 3)
    assert result["n"] == 4
