"""The keystroke decision: hysteresis, names typed character by character, the replay metrics,
the label model, and the same answer on both request paths."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from tests.fastpath_server import FastPathTestServer, PlainTestServer
from tests.intent_fixtures import TinyEmbedder, hand_classifier
from tests.lexical_fixtures import build_small_index
from typeahead.errors import ArtifactError
from typeahead.eval.intent import Labelled
from typeahead.eval.intent_keystroke import keystroke_metrics, prefixes, replay
from typeahead.http.app import create_app
from typeahead.intent.classifier import IntentClassifier
from typeahead.intent.keystroke import FEATURES, Combiner, KeystrokeIntent, Names, WholeQuery
from typeahead.settings import Settings
from typeahead.suggest.service import SuggestService
from typeahead.train.intent_weak import INF, NAV, TRANS, LabelModel, majority_vote


def light_only(weights: dict[str, float], bias: float, on: float, off: float) -> Combiner:
    return Combiner(tuple(weights.get(f, 0.0) for f in FEATURES), bias, on, off)


def typed(decider: KeystrokeIntent, text: str) -> list[bool]:
    return [decider.decide(p).offer_generate for p in prefixes(text)]


def test_hysteresis_holds_the_button_through_a_dip() -> None:
    # Score: -1 + 2 * (a topical word such as "list" is among the words). Typing "lists list"
    # the cue holds at "list", drops for five keystrokes ("lists" .. "lists lis") and returns.
    clf = hand_classifier(TinyEmbedder())
    band = KeystrokeIntent(clf, light_only({"info_cue": 2.0}, -1.0, on=0.5, off=-1.5), Names())
    no_band = KeystrokeIntent(clf, light_only({"info_cue": 2.0}, -1.0, on=0.5, off=0.5),
                              Names())
    # Without a band the button follows every keystroke.
    assert typed(no_band, "lists list") == [False] * 3 + [True] + [False] * 5 + [True]
    # With it, once on it stays on while the score stays above "off".
    assert typed(band, "lists list") == [False] * 3 + [True] * 7
    # Falling below "off" turns it off: score = 2 * cue - number of words.
    down = KeystrokeIntent(clf, light_only({"info_cue": 2.0, "n_words": -6.0}, 0.0, 0.5, -1.5),
                           Names())
    assert typed(down, "lists list") == [False] * 3 + [True] * 3 + [False] * 4
    # The same text always gives the same answer, whatever was asked before.
    assert band.decide("lists l").offer_generate is True


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> SuggestService:
    rows = [("britney spears", 400), ("britney spears pictures", 90), ("ebay", 900),
            ("ebay motors", 300), ("bank of america", 500), ("google", 1000),
            ("what is the history of the steam engine", 3), ("pier 57 nyc", 5)]
    index = build_small_index(tmp_path_factory.mktemp("ks"), rows)
    service = SuggestService(index=index, intent=IntentClassifier.load(), results_k=0)
    assert service._keystroke is not None  # the packaged model ships the keystroke decision
    return service


def offers(service: SuggestService, text: str) -> list[bool]:
    return [service.suggest(p, 10)["offer_generate"] for p in prefixes(text)]


@pytest.mark.parametrize("text", ["britney spears", "ebay", "bank of america", "google"])
def test_names_typed_character_by_character_get_no_offer(served: SuggestService,
                                                         text: str) -> None:
    assert not any(offers(served, text))


def test_a_question_typed_character_by_character_ends_with_an_offer(
        served: SuggestService) -> None:
    seq = offers(served, "what is the history of the steam engine")
    assert seq[-1] is True
    assert not any(seq[:3])  # "w", "wh", "wha": too early to tell


def test_keystroke_metrics_by_hand() -> None:
    items = [Labelled("ab", "navigational"), Labelled("abcd", "informational"),
             Labelled("xyz", "transactional")]

    def offer(prefix: str) -> bool:  # offers from the third character on
        return len(prefix) >= 3

    seqs = replay(offer, items)
    assert seqs == [[False, False], [False, False, True, True], [False, False, True]]
    m = keystroke_metrics(items, seqs)
    assert m["n_keystrokes"] == 9
    assert m["nav_trans_keystroke_offer_rate"] == pytest.approx(1 / 5)  # "xyz" only
    assert m["inf_keystroke_offer_rate"] == pytest.approx(2 / 4)
    assert m["inf_whole_offer_rate"] == 1.0
    assert m["flips_per_query"] == pytest.approx(2 / 3)
    # Whole queries: offer on abcd (right) and xyz (wrong), none on ab (right).
    assert m["binary"]["per_label"]["offer"]["precision"] == 0.5
    assert m["binary"]["per_label"]["no_offer"]["recall"] == 0.5
    assert m["binary"]["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_eval_intent_keystrokes_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    from typeahead.cli import main

    build_small_index(tmp_path, [("ebay", 900), ("ebay motors", 300)])
    labels = tmp_path / "labels.tsv"
    labels.write_text("query\tlabel\nebay\tnavigational\nhow do tides work\tinformational\n")
    rc = main(["eval", "intent", "--keystrokes", "--index", str(tmp_path / "idx"),
               "--labels", str(labels), "--text-col", "query", "--label-col", "label",
               "--json"])
    assert rc == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["n_queries"] == 2 and out["n_keystrokes"] == 4 + 17
    assert out["nav_trans_keystroke_offer_rate"] == 0.0  # no keystroke of "ebay" offers
    assert 0.0 <= out["inf_keystroke_offer_rate"] <= 1.0


def test_majority_vote_with_abstains() -> None:
    assert majority_vote([NAV, None, NAV, INF]) == NAV
    assert majority_vote([NAV, INF, None]) is None  # a tie
    assert majority_vote([None, None]) is None


def test_label_model_on_hand_computed_votes() -> None:
    # Three functions over four queries.
    matrix = [
        [NAV, NAV, None],  # f0 vs others' majority NAV: agree; f1 vs NAV: agree
        [NAV, INF, INF],  # f0 vs INF: disagree; f1 vs tie(NAV, INF): none; f2 likewise
        [INF, INF, INF],  # everyone agrees with the others
        [None, TRANS, INF],  # f1 vs INF: disagree; f2 vs TRANS: disagree
    ]
    model = LabelModel.fit(matrix, prior=1.0)
    # f0: 2 of 3 comparisons agree -> (2+1)/(3+2); f1: 2 of 3 -> 3/5; f2: 1 of 2 -> 2/4.
    assert model.accuracies == pytest.approx((3 / 5, 3 / 5, 2 / 4))
    assert model.weights[2] == pytest.approx(0.0)
    # f2 carries no weight, so the last row is f1's TRANS; the second is f0 against f1: a tie.
    assert [model.predict(row) for row in matrix] == [NAV, None, INF, TRANS]


async def exchange(server: FastPathTestServer, q: str) -> dict[str, object]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"GET /v1/suggest?q={quote(q)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    body = orjson.loads(await reader.readexactly(length))
    writer.close()
    assert isinstance(body, dict)
    return body


async def test_both_request_paths_give_the_same_decision(served: SuggestService) -> None:
    settings = Settings(generation=False)
    fast = FastPathTestServer(create_app(settings, served))
    slow = PlainTestServer(create_app(settings, served))
    await fast.start_server()
    await slow.start_server()
    try:
        for p in prefixes("tell me about pier 57 in nyc") + prefixes("britney spears"):
            a, b = await exchange(fast, p), await exchange(slow, p)
            assert a["offer_generate"] == b["offer_generate"]
            assert a["intent"] == b["intent"]
    finally:
        await fast.close()
        await slow.close()


def test_an_input_that_looks_whole_is_decided_by_the_whole_query_model() -> None:
    # The latch alone never offers (bias -5); the whole-query model offers on any input it
    # sees (bias +5). It sees only inputs whose last word is a common word, with no trailing
    # space and no completion continuing the word.
    clf = hand_classifier(TinyEmbedder())
    whole = WholeQuery((0.0,) * len(FEATURES), 5.0, threshold=0.0)
    base = light_only({}, -5.0, on=0.0, off=-1.0)
    names = Names(words=frozenset({"food", "safety"}))
    decider = KeystrokeIntent(clf, Combiner(base.weights, base.bias, base.on, base.off, whole),
                              names)
    seq = typed(decider, "food safety")
    assert seq == [False] * 3 + [True] + [False] * 6 + [True]  # "food", "food safety"
    # Without the whole-query model the latch decides every keystroke.
    assert not any(typed(KeystrokeIntent(clf, base, names), "food safety"))
    # A word that is not a common one never looks whole.
    assert not any(typed(decider, "fooz saf"))


def test_keystroke_json_round_trips_the_whole_query_model(tmp_path: Path) -> None:
    from typeahead.intent.keystroke import read_combiner, read_names
    from typeahead.train.keystroke import write_keystroke

    whole = WholeQuery(tuple(float(i) for i in range(len(FEATURES))), -0.5, threshold=0.25)
    combiner = Combiner((0.5,) * len(FEATURES), 1.0, 0.5, -1.0, whole)
    names = Names(sites=frozenset({"ebay"}), words=frozenset({"food"}))
    write_keystroke(tmp_path, combiner, names)
    assert read_combiner(tmp_path / "keystroke.json") == combiner
    assert read_names(tmp_path / "names.json") == names
    data = orjson.loads((tmp_path / "keystroke.json").read_bytes())
    data["whole"] = {"weights": [1.0], "bias": 0.0, "threshold": 0.0}
    (tmp_path / "keystroke.json").write_bytes(orjson.dumps(data))
    with pytest.raises(ArtifactError, match="whole-query weights have 1 values"):
        read_combiner(tmp_path / "keystroke.json")


def test_common_words_keep_frequent_words_of_three_letters_or_more(tmp_path: Path) -> None:
    import gzip

    from typeahead.train.keystroke import common_words

    path = tmp_path / "words.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write("word\tcount\nthe\t9000000\nfood\t5000000\nof\t8000000\nsafety\t1000000\n"
                "saf\t999999\nab\t4000000\nc++\t3000000\n")
    assert common_words(path) == frozenset({"food", "safety"})
