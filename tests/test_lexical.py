from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.lexical_fixtures import build_small_index
from typeahead.suggest.index import LoadedIndex
from typeahead.suggest.lexical import match_words


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> LoadedIndex:
    return build_small_index(tmp_path_factory.mktemp("lex"))


def texts(index: LoadedIndex, q: str, k: int = 10) -> list[str]:
    return [s.text for s in index.lexical.suggest(q, k)]


def test_prefix_ranked_by_popularity(index: LoadedIndex) -> None:
    assert texts(index, "new")[:4] == ["new york times", "new york city", "new jersey",
                                       "newark airport"]


def test_duplicates_merge_and_keep_the_most_common_display(index: LoadedIndex) -> None:
    got = texts(index, "new york t")
    assert got.count("new york times") == 1
    assert "NEW YORK TIMES" not in got


def test_top_k_is_respected(index: LoadedIndex) -> None:
    assert len(texts(index, "n", 2)) == 2


def test_any_order_words_rank_below_in_order(index: LoadedIndex) -> None:
    got = index.lexical.suggest("york new", 10)
    # "york new" is itself a (rare) completion: in-order first, then any-order matches.
    assert got[0].text == "york new"
    assert [s.text for s in got[1:3]] == ["new york times", "new york city"]
    assert all(s.score < got[0].score for s in got[1:])


def test_single_word_matches_inside_the_completion(index: LoadedIndex) -> None:
    assert "new york times" in texts(index, "tim")
    assert texts(index, "tim")[0] == "the times of india" or "new york times" in texts(index, "tim")


def test_typo_tolerance_on_last_word(index: LoadedIndex) -> None:
    got = index.lexical.suggest("mapqeust", 5)
    assert got and got[0].text == "mapquest" and got[0].source == "fuzzy"
    assert index.lexical.suggest("wikipedai", 3)[0].text == "wikipedia"


def test_typo_allowance_grows_with_length(index: LoadedIndex) -> None:
    assert texts(index, "amzn") == []  # 4 letters: one typo allowed, "amzn"->"amaz" needs 2
    assert texts(index, "amazn")[0] == "amazon"  # one deletion
    assert texts(index, "goo") == ["google", "google maps"]
    assert texts(index, "gxo") == []  # 3 letters: no typo tolerance


def test_fuzzy_ranks_below_exact(index: LoadedIndex) -> None:
    got = index.lexical.suggest("new yorc", 10)
    sources = [s.source for s in got]
    assert "fuzzy" in sources
    assert sources == sorted(sources, key=lambda s: s == "fuzzy")


def test_trailing_space_prefers_the_complete_word(index: LoadedIndex) -> None:
    got = index.lexical.suggest("new ", 10)
    in_order = [s.text for s in got if s.text.startswith("new ")]
    assert [s.text for s in got[: len(in_order)]] == in_order
    # "newark" still matches word-by-word ("new" prefixes "newark"), but only below them.
    assert [s.text for s in got].index("newark airport") >= len(in_order)


def test_privacy_floor_never_served(index: LoadedIndex) -> None:
    assert texts(index, "private") == []
    assert texts(index, "privat perso") == []
    assert texts(index, "person") == []


def test_normalised_matching_keeps_display(index: LoadedIndex) -> None:
    got = index.lexical.suggest("CAFE cre", 3)
    assert got[0].text == "Café Crème Paris"
    assert got[0].spans == ((0, 8),)


def test_non_latin_and_emoji(index: LoadedIndex) -> None:
    assert texts(index, "東京") == ["東京 タワー"]
    assert texts(index, "タワ") == ["東京 タワー"]
    assert texts(index, "😀") == ["😀 emoji search"]


def test_spans_mark_matched_words(index: LoadedIndex) -> None:
    got = {s.text: s.spans for s in index.lexical.suggest("york ne", 10)}
    assert got["new york times"] == ((0, 2), (4, 8))


def test_empty_and_very_long_input(index: LoadedIndex) -> None:
    assert texts(index, "") == []
    assert texts(index, "   ") == []
    assert texts(index, "new york times " * 20) == []
    assert texts(index, "x" * 10_000) == []


def test_no_duplicate_suggestions_across_tiers(index: LoadedIndex) -> None:
    for q in ["new", "york n", "new yorc", "tim", "goog"]:
        got = texts(index, q)
        assert len(got) == len(set(got)), q


def test_scores_never_increase_down_the_list(index: LoadedIndex) -> None:
    for q in ["new", "york new", "new yorc", "amazn"]:
        scores = [s.score for s in index.lexical.suggest(q, 10)]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)


def test_large_ranges_use_precomputed_top(tmp_path: Path) -> None:
    rows = [(f"query {i:04d}", 10_000 - i) for i in range(500)]
    idx = build_small_index(tmp_path, rows)
    got = [s.text for s in idx.lexical.suggest("query", 5)]
    assert got == [f"query {i:04d}" for i in range(5)]
    got = [s.text for s in idx.lexical.suggest("query 01", 3)]
    assert got == ["query 0100", "query 0101", "query 0102"]


def test_prefixes_longer_than_the_key_width(tmp_path: Path) -> None:
    long_a = "a" * 40 + " first"
    long_b = "a" * 40 + " second"
    idx = build_small_index(tmp_path, [(long_a, 10), (long_b, 5)])
    assert [s.text for s in idx.lexical.suggest("a" * 40 + " s", 5)] == [long_b]


def test_batched_spans_equal_single_spans(index: LoadedIndex) -> None:
    arrays = (index.lexical.data.prefixes, index.lexical.data.words)
    probes = [b"", b"n", b"new", b"new y", b"zzz", b"\xe6\x9d\xb1", b"a" * 40, b"pa", b"new york"]
    for arr in arrays:
        assert arr.spans(probes) == [arr.span(p) for p in probes]  # one vectorised search
        assert arr.spans(probes[:2]) == [arr.span(p) for p in probes[:2]]  # per item


def test_batched_spans_of_prefixes_longer_than_the_key_width(tmp_path: Path) -> None:
    """Keys are indexed on 32 bytes: a longer prefix matches the keys equal to its first 32,
    in the vectorised search (run off the event loop) as in the single one."""
    rows = [("a" * 40 + " first", 10), ("a" * 40 + " second", 5), ("a" * 31, 3), ("b", 2)]
    prefixes = build_small_index(tmp_path, rows).lexical.data.prefixes
    probes = [b"a" * 40, b"a" * 32, b"a" * 31, b"a" * 33 + b"x", b"a", b"b", b"c"]
    assert prefixes.spans_batch(probes) == [prefixes.span(p) for p in probes]


def test_remembered_tiers_answer_the_same_and_can_be_forgotten(index: LoadedIndex) -> None:
    engine = index.lexical
    engine.clear_caches()
    queries = ["york new", "new yrok", "new yrok", "times yo", "nwe york"]
    first = [engine.suggest(q, 5) for q in queries]
    again = [engine.suggest(q, 5) for q in queries]  # pools and corrections now remembered
    engine.clear_caches()
    assert first == again == [engine.suggest(q, 5) for q in queries]


def _match_words_reference(typed: list[str], key: str) -> tuple[tuple[int, int], ...] | None:
    """The word-by-word definition ``match_words`` must agree with."""
    starts, pos = [], 0
    for w in key.split(" "):
        starts.append((pos, w))
        pos += len(w) + 1
    used: set[int] = set()
    spans = []
    for t in sorted(typed, key=len, reverse=True):
        hit = next((i for i, (_, w) in enumerate(starts) if i not in used and w.startswith(t)),
                   None)
        if hit is None:
            return None
        used.add(hit)
        spans.append((starts[hit][0], starts[hit][0] + len(t)))
    return tuple(sorted(spans))


def test_match_words_agrees_with_the_word_by_word_definition() -> None:
    keys = ["my music my mom", "my space", "mymy m", "new york new", "a b c", "ab abc abcd"]
    typed = [["my"], ["m"], ["my", "m"], ["m", "my"], ["my", "my", "m"], ["new", "new"],
             ["york", "new", "ne"], ["ab", "abc"], ["abc", "ab", "a"], ["b", "a"], ["zz"]]
    for key in keys:
        for words in typed:
            assert match_words(words, key) == _match_words_reference(words, key), (words, key)
    assert match_words(["my", "m"], "my music") == ((0, 2), (3, 4))
    assert match_words(["my", "m"], "my space") is None


def test_a_typed_word_that_starts_another_needs_its_own_word(tmp_path: Path) -> None:
    rows = [(f"my space {i:03d}", 1000 - i) for i in range(200)]  # each has one "m..." word
    rows += [("my music", 5), ("my mom", 4), ("music my", 3)]
    idx = build_small_index(tmp_path, rows)
    got = [s.text for s in idx.lexical.suggest("my m", 10)]
    assert got == ["my music", "my mom", "music my"]


def test_pooled_typo_matches_equal_a_plain_scan(index: LoadedIndex) -> None:
    engine = index.lexical
    for head, last in [(["new"], "york"), (["new"], "yo"), (["york"], "new"), (["the"], "tim"),
                       (["zzz"], "new")]:
        words = [*head, last]
        pool = engine._pool(head)
        got: dict[int, Any] = {}
        engine._any_order_pooled(words, 10, got, dist=1, skip=(), pool=pool)
        entries, starts, blob = pool
        keys = [blob[starts[i] + 1 : starts[i + 1]] for i in range(len(entries))]
        assert keys == [key for _, key in engine._scan(head)]
        want = [e for e, key in zip(entries, keys, strict=True)
                if match_words(words, key) is not None][:10]
        assert list(got) == want, words
        assert all(hit[1] == "fuzzy" for hit in got.values())


def test_typo_variants_and_verification_agree_with_their_definitions(index: LoadedIndex) -> None:
    from rapidfuzz.distance import OSA

    from typeahead.suggest import fuzzy

    def deletes(text: str) -> set[str]:
        return {text[:i] + text[i + 1 :] for i in range(len(text))}

    for word in ["abcdefgh", "aabbccdd", "mapqeust", "café", "abcd"]:
        d = fuzzy.max_typos(len(word))
        want = {word} | deletes(word)
        if d == 2:
            want |= {x for v in deletes(word) for x in deletes(v)}
        assert set(fuzzy._variants(word, d)) == want
    vocab = index.lexical.data.vocab
    for word in ["mapqeust", "wikipedai", "amazn", "gogle", "yorc"]:
        d = fuzzy.max_typos(len(word))
        pids = range(len(vocab.prefixes))
        by_hand = sorted((OSA.distance(word, c), abs(len(c) - len(word)), c)
                         for c in (vocab.prefixes[p] for p in pids) if c != word)
        want = tuple((c, dist) for dist, _, c in by_hand if dist <= d)[: fuzzy.MAX_CORRECTIONS]
        assert vocab._verify(word, d, pids) == want
