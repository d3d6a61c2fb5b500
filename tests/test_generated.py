"""Generated completions: the privacy rule on their pieces, screening, the index files, the
``generated`` source through both request paths, and ``eval qac --mode service``."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import pytest

from tests.fastpath_server import FastPathTestServer, PlainTestServer
from tests.lexical_fixtures import build_small_index, write_tsv
from typeahead.errors import ArtifactError
from typeahead.eval.qac import evaluate_qac, served_keys, service_suggest
from typeahead.http.app import create_app
from typeahead.normalize import normalize
from typeahead.safety.policy import SuggestionPolicy
from typeahead.safety.rules import Rule, RuleSet
from typeahead.settings import Settings
from typeahead.suggest.index import load_index
from typeahead.suggest.ranker import ranker_for
from typeahead.suggest.service import SuggestService

ROWS: list[tuple[str, int]] = [
    ("harry potter books", 10),
    ("harry potter movie", 8),
    ("harry potter and the goblet of fire", 1),
    ("harry potter and the half blood prince", 1),
    ("harry potter and the goblet", 1),
    ("goblet of fire cast", 1),
    ("the goblet of fire", 2),
    ("harry potter and the prisoner", 1),
    ("zorblax and the goblet", 1),  # "zorblax" is in two distinct queries only
    ("zorblax potter", 1),
    ("free porn videos", 4),
    ("porn videos free", 4),
    ("free porn clips", 4),
    ("videos free porn", 4),
]


def pieces(rows: list[tuple[str, int]]) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """Distinct queries holding each word and each adjacent word pair."""
    words: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    for text in {normalize(q) for q, c in rows if c > 0}:
        split = text.split(" ")
        words.update(set(split))
        pairs.update(set(itertools.pairwise(split)))
    return words, pairs


def service(tmp_path: Path, rules: RuleSet | None = None) -> SuggestService:
    index = build_small_index(tmp_path, ROWS)
    return SuggestService(index=index, policy=SuggestionPolicy.load(()), rules=rules)


def texts(answer: dict[str, object], source: str) -> list[str]:
    return [s["text"] for s in answer["suggestions"] if s["source"] == source]  # type: ignore[attr-defined,index]


def test_unseen_prefix_is_completed_after_the_index_entries(tmp_path: Path) -> None:
    answer = service(tmp_path).suggest("harry potter and the g", 10)
    generated = texts(answer, "generated")
    assert "harry potter and the goblet of fire" in generated
    scores = [s["score"] for s in answer["suggestions"]]  # type: ignore[attr-defined,index]
    assert scores == sorted(scores, reverse=True)
    assert all(s["matches"] == [[0, 22]] for s in answer["suggestions"]  # type: ignore[attr-defined,index]
               if s["source"] == "generated")


def test_every_generated_piece_occurs_in_three_distinct_queries(tmp_path: Path) -> None:
    svc = service(tmp_path)
    words, pairs = pieces(ROWS)
    probes = {q[:n] for q, _ in ROWS for n in range(1, len(q) + 1)}
    probes |= {"zorblax ", "zorblax and the g", "the g", "harry potter "}
    produced = set()
    for probe in sorted(probes):
        answer = svc.suggest(probe, 20)
        scores = [s["score"] for s in answer["suggestions"]]  # type: ignore[attr-defined,index]
        assert scores == sorted(scores, reverse=True), probe
        sources = [s["source"] for s in answer["suggestions"]]  # type: ignore[attr-defined,index]
        if "generated" in sources:  # in-order matches before, all other matches after
            last = max(i for i, x in enumerate(sources) if x == "generated")
            assert all(score >= 2 / 3 for score in scores[:sources.index("generated")])
            assert all(score < 2 / 3 for x, score in zip(sources[last + 1:],
                                                         scores[last + 1:], strict=True))
        for text in texts(answer, "generated"):
            produced.add(text)
            split = text.split(" ")
            assert all(words[w] >= 3 for w in split), text
            assert all(pairs[p] >= 3 for p in itertools.pairwise(split)), text
    assert produced  # the rule was exercised, not vacuous
    assert not any("zorblax" in text for text in produced)
    # A query below the floor whose pieces are not all safe is never reproduced.
    assert "harry potter and the half blood prince" not in produced


def test_blocked_words_and_curation_rules_keep_generated_texts_out(tmp_path: Path) -> None:
    svc = service(tmp_path)
    generator = svc.index.generator
    assert generator is not None and generator._id("porn") == -1
    assert not texts(svc.suggest("free p", 10), "generated")
    rules = RuleSet.compile([Rule(id="r1", type="block_word", text="goblet")])
    curated = SuggestService(index=svc.index, policy=svc.policy, rules=rules)
    assert not any("goblet" in t for t in texts(curated.suggest("harry potter and the g", 10),
                                                 "generated"))


def test_no_generator_without_pieces(tmp_path: Path) -> None:
    index = build_small_index(tmp_path, ROWS, piece_min_queries=0)
    assert index.generator is None and index.manifest["generated"] is None
    answer = SuggestService(index=index).suggest("harry potter and the g", 10)
    assert not texts(answer, "generated")


def test_a_damaged_generator_array_is_refused(tmp_path: Path) -> None:
    index = build_small_index(tmp_path, ROWS)
    path = index.path / "gen.succ.npy"
    np.save(path, np.full(3, 10**6, dtype=np.int32))
    with pytest.raises(ArtifactError):
        load_index(index.path, verify=False)


def test_eval_qac_service_mode_scores_unseen_targets(tmp_path: Path) -> None:
    svc = service(tmp_path)
    log = [("harry potter books", 2.0), ("harry potter and the goblet of fire", 1.0)]
    report = evaluate_qac(log, service_suggest(svc), [4, 22], 10,
                          served_keys(svc.index)).as_json()
    # "harr": books is the top served completion (weight 2); the unseen title is not in the
    # ten. "harry potter and the g" (only the title is longer than 22 characters): generation
    # ranks it first.
    assert report["seen"]["mrr"]["4"] == pytest.approx(1.0)
    assert report["unseen"]["mrr"]["4"] == pytest.approx(0.0)
    assert report["mrr"]["4"] == pytest.approx(2 / 3)
    assert report["unseen"]["mrr"]["22"] == pytest.approx(1.0)
    assert report["mrr"]["22"] == pytest.approx(1.0)
    lexical = evaluate_qac(log, lambda p, k: [normalize(s.text) for s in
                                              svc.index.lexical.suggest(p, k)], [22], 10)
    assert lexical.as_json()["mrr"]["22"] == pytest.approx(0.0)


@pytest.mark.parametrize("ranked", [False, True], ids=["fixed order", "completion ranker"])
async def test_generated_source_through_both_request_paths(tmp_path: Path, ranked: bool
                                                           ) -> None:
    index = build_small_index(tmp_path, ROWS)
    settings = Settings(generation=False)
    ranker = ranker_for(index, True, None) if ranked else None
    assert ranker is not None or not ranked
    bodies = []
    for server_type in (FastPathTestServer, PlainTestServer):
        server = server_type(create_app(settings, SuggestService(index=index, ranker=ranker)))
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as client:
                url = server.make_url("/v1/suggest").with_query(q="harry potter and the g")
                async with client.get(url) as resp:
                    assert resp.status == 200
                    body = orjson.loads(await resp.read())
        finally:
            await server.close()
        body["took_us"] = 0
        bodies.append(body)
        assert "harry potter and the goblet of fire" in texts(body, "generated")
    assert bodies[0] == bodies[1]


def test_build_index_flag_refuses_a_bad_piece_floor(tmp_path: Path) -> None:
    from tests.test_cli import run_cli

    corpus = write_tsv(tmp_path / "c.tsv", ROWS)
    res = run_cli("build-index", "--corpus", str(corpus), "--out", str(tmp_path / "o"),
                  "--text-col", "query", "--weight-col", "count", "--piece-min-queries", "x",
                  "--no-vectors")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_eval_qac_cli_reports_seen_and_unseen_in_both_modes(tmp_path: Path) -> None:
    from tests.test_cli import run_cli

    index = build_small_index(tmp_path, ROWS)
    log = write_tsv(tmp_path / "log.tsv", [("harry potter books", 2),
                                           ("harry potter and the goblet of fire", 1)])
    reports = {}
    for mode in ("lexical", "service"):
        res = run_cli("eval", "qac", "--index", str(index.path), "--log", str(log),
                      "--text-col", "query", "--weight-col", "count", "--prefix-lengths", "22",
                      "--mode", mode, "--json")
        assert res.returncode == 0, res.stderr
        reports[mode] = orjson.loads(res.stdout)
    assert reports["lexical"]["unseen"]["mrr"]["22"] == 0.0
    assert reports["service"]["unseen"]["mrr"]["22"] == 1.0
    assert "seen" not in reports["service"] or reports["service"]["seen"]["weight"]["22"] == 0.0
