"""Live curation: /admin/rules on a real Redis. Auth, validation, each rule type, the audit
trail, export and import, persistence across an API restart, Redis stopped, two API processes
following one change within a second, and the fast path answering as aiohttp does."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.fastpath_server import FastPathTestServer, PlainTestServer
from tests.lexical_fixtures import build_small_index
from tests.redis_server import RedisServer
from tests.serve_process import serving
from tests.test_fastpath import comparable, exchange, get
from typeahead import metrics
from typeahead.http.app import ServiceHolder, create_app
from typeahead.safety.rules import Overlay, Rule, RuleSet
from typeahead.settings import Settings
from typeahead.suggest.index import LoadedIndex
from typeahead.suggest.lexical import blocked_ranges
from typeahead.suggest.service import SuggestService

TOKEN = "curation-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROWS = [("iphone 15", 900), ("iphone case", 800), ("ipad", 700), ("new york times", 600),
        ("new york city", 500), ("new jersey", 400), ("newark airport", 300),
        ("nike shoes", 200), ("apple store", 100)]


@pytest.fixture
def index(tmp_path: Path) -> LoadedIndex:
    return build_small_index(tmp_path, ROWS)


def settings_for(redis: RedisServer | None, index: LoadedIndex, **extra: Any) -> Settings:
    return Settings(generation=False, semantic=False, admin_token=TOKEN, index_dir=index.path,
                    redis_url=redis.url if redis else None, curation_poll_s=0.05, **extra)


@asynccontextmanager
async def api(settings: Settings, index: LoadedIndex) -> AsyncIterator[TestClient]:
    app = create_app(settings, SuggestService(index=index, semantic=False))
    async with TestClient(TestServer(app)) as client:
        yield client


async def texts(client: TestClient, q: str, k: int = 10) -> list[str]:
    body = await (await client.get("/v1/suggest", params={"q": q, "k": str(k)})).json()
    return [s["text"] for s in body["suggestions"]]


async def add(client: TestClient, rule: dict[str, Any], **headers: str) -> dict[str, Any]:
    resp = await client.post("/admin/rules", json=rule, headers={**AUTH, **headers})
    assert resp.status == 201, await resp.text()
    return dict((await resp.json())["rule"])


async def error(resp: Any) -> tuple[int, str]:
    return resp.status, (await resp.json())["error"]["code"]


# --- auth and validation ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/admin/rules"), ("post", "/admin/rules"), ("delete", "/admin/rules/x"),
    ("get", "/admin/rules/audit"), ("get", "/admin/rules/export"),
    ("post", "/admin/rules/import"),
])
async def test_every_route_needs_the_admin_token(
        redis_server: RedisServer, index: LoadedIndex, method: str, path: str) -> None:
    async with api(settings_for(redis_server, index), index) as client:
        call = getattr(client, method)
        assert await error(await call(path)) == (401, "unauthorized")
        assert await error(await call(path, headers={"Authorization": "Bearer nope"})) == \
            (403, "forbidden")
        assert await error(await call(path, headers={"Authorization": "Bearer é"})) == \
            (401, "unauthorized")


@pytest.mark.parametrize(("body", "code", "words"), [
    (b"{nope", "invalid_body", "not valid JSON"),
    (b"[]", "invalid_rule", "JSON object"),
    (b'{"type": "ban", "text": "x"}', "invalid_rule", "type must be one of"),
    (b'{"type": "block_text"}', "invalid_rule", '"text"'),
    (b'{"type": "block_text", "text": "   "}', "invalid_rule", "non-empty"),
    (b'{"type": "block_text", "text": "a\\u0000b"}', "invalid_rule", "control"),
    (b'{"type": "block_word", "text": "two words"}', "invalid_rule", "one word"),
    (b'{"type": "block_pattern", "text": "*a*b*c*d*e*"}', "invalid_rule", "wildcards"),
    (b'{"type": "pin", "text": "iphone 16"}', "invalid_rule", '"prefix"'),
    (b'{"type": "pin", "text": "iphone 16", "prefix": "ipa"}', "invalid_rule", "start with"),
    (b'{"type": "add", "text": "x", "weight": -1}', "invalid_rule", "weight"),
    (b'{"type": "add", "text": "x", "weight": true}', "invalid_rule", "weight"),
    (b'{"type": "block_text", "text": "x", "weight": 3}', "invalid_rule", "add rules only"),
    (b'{"type": "block_text", "text": "x", "colour": 3}', "invalid_rule", "colour"),
    (b'{"type": "block_text", "text": "x", "id": "mine"}', "invalid_body", "server"),
    (b'{"type": "pin", "text": "iphone sex", "prefix": "iph"}', "blocked_by_policy",
     "sexual"),
    (b'{"type": "add", "text": "naked teens"}', "blocked_by_policy", "minors"),
])
async def test_bad_rules_get_400_with_a_code(
        redis_server: RedisServer, index: LoadedIndex, body: bytes, code: str, words: str,
) -> None:
    async with api(settings_for(redis_server, index), index) as client:
        resp = await client.post("/admin/rules", data=body,
                                 headers={**AUTH, "Content-Type": "application/json"})
        assert resp.status == 400
        err = (await resp.json())["error"]
        assert err["code"] == code and words in err["message"], err
        listed = await (await client.get("/admin/rules", headers=AUTH)).json()
        assert listed["rules"] == []


async def test_bad_audit_limits_and_unknown_rules(
        redis_server: RedisServer, index: LoadedIndex) -> None:
    async with api(settings_for(redis_server, index), index) as client:
        for limit in ("0", "1001", "x", "1e3", "-1"):
            resp = await client.get("/admin/rules/audit", params={"limit": limit}, headers=AUTH)
            assert await error(resp) == (400, "invalid_parameter"), limit
        assert (await client.delete("/admin/rules/nope", headers=AUTH)).status == 404


# --- each rule type ---------------------------------------------------------------------------


async def test_block_unblock_pin_and_add(redis_server: RedisServer, index: LoadedIndex) -> None:
    async with api(settings_for(redis_server, index), index) as client:
        assert (await texts(client, "new"))[:2] == ["new york times", "new york city"]
        rule = await add(client, {"type": "block_text", "text": "New York Times"})
        # The next entry fills the blocked one's place.
        assert await texts(client, "new", 3) == ["new york city", "new jersey", "newark airport"]
        resp = await client.delete(f"/admin/rules/{rule['id']}", headers=AUTH)
        assert resp.status == 200
        assert (await texts(client, "new"))[0] == "new york times"

        await add(client, {"type": "block_word", "text": "york"})
        assert await texts(client, "new") == ["new jersey", "newark airport"]
        await add(client, {"type": "block_pattern", "text": "new j*"})
        assert await texts(client, "new") == ["newark airport"]

        await add(client, {"type": "pin", "prefix": "iph", "text": "iPhone 16"})
        body = await (await client.get("/v1/suggest", params={"q": "ipho"})).json()
        first = body["suggestions"][0]
        assert first["text"] == "iPhone 16" and first["curated"] is True
        assert first["matches"] == [[0, 4]]
        assert (await texts(client, "ip"))[0] == "iphone 15"  # shorter than the pin's prefix
        assert (await texts(client, "iphone c"))[0] == "iphone case"  # the pin no longer fits

        await add(client, {"type": "add", "text": "nike air max", "weight": 250})
        assert await texts(client, "nike") == ["nike air max", "nike shoes"]
        assert "nike air max" in await texts(client, "air")  # its words match, too
        await add(client, {"type": "block_word", "text": "max"})
        assert await texts(client, "nike") == ["nike shoes"]  # blocks win over additions


async def test_the_audit_trail_names_who_and_when(
        redis_server: RedisServer, index: LoadedIndex) -> None:
    async with api(settings_for(redis_server, index), index) as client:
        before = time.time()
        rule = await add(client, {"type": "block_text", "text": "ipad", "note": "recall"},
                         **{"X-Admin-User": "alice"})
        await client.delete(f"/admin/rules/{rule['id']}",
                            headers={**AUTH, "X-Admin-User": "bob"})
        entries = (await (await client.get("/admin/rules/audit", headers=AUTH)).json())["entries"]
        assert [(e["action"], e["author"]) for e in entries] == [("delete", "bob"),
                                                                 ("add", "alice")]
        assert all(before - 1 <= e["at"] <= time.time() + 1 for e in entries)
        assert entries[1]["rules"][0]["text"] == "ipad" and rule["author"] == "alice"
        one = await (await client.get("/admin/rules/audit", params={"limit": "1"},
                                      headers=AUTH)).json()
        assert len(one["entries"]) == 1


async def test_export_and_import_are_all_or_nothing(
        redis_server: RedisServer, index: LoadedIndex) -> None:
    async with api(settings_for(redis_server, index), index) as client:
        await add(client, {"type": "block_text", "text": "ipad"})
        await add(client, {"type": "pin", "prefix": "n", "text": "nike shoes"})
        doc = await (await client.get("/admin/rules/export", headers=AUTH)).json()
        assert [r["type"] for r in doc["rules"]] == ["block_text", "pin"]
        bad = {**doc, "rules": [*doc["rules"], {"type": "block_word", "text": "a b"}]}
        resp = await client.post("/admin/rules/import", json=bad, headers=AUTH)
        assert await error(resp) == (400, "invalid_rule")
        assert "rule 2" in (await resp.json())["error"]["message"]
        wrong_kind = await client.post("/admin/rules/import", json={"rules": []}, headers=AUTH)
        assert await error(wrong_kind) == (400, "invalid_body")
        assert len((await (await client.get("/admin/rules", headers=AUTH)).json())["rules"]) == 2
        empty = {**doc, "rules": []}
        assert (await client.post("/admin/rules/import", json=empty, headers=AUTH)).status == 200
        assert (await texts(client, "ipa")) == ["ipad"]
        assert (await client.post("/admin/rules/import", json=doc, headers=AUTH)).status == 200
        assert (await texts(client, "ipa")) == []


# --- durability -------------------------------------------------------------------------------


async def test_rules_survive_an_api_restart_and_seed_an_empty_redis_from_the_file(
        redis_server: RedisServer, index: LoadedIndex) -> None:
    settings = settings_for(redis_server, index)
    async with api(settings, index) as client:
        await add(client, {"type": "block_text", "text": "ipad"})
    async with api(settings, index) as client:
        assert await texts(client, "ipa") == []
    saved = index.path.parent / "curation.json"
    assert orjson.loads(saved.read_bytes())["rules"][0]["text"] == "ipad"
    flush(redis_server)
    async with api(settings, index) as client:  # Redis lost its data: the file seeds it
        assert await texts(client, "ipa") == []
        listed = await (await client.get("/admin/rules", headers=AUTH)).json()
        assert listed["source"] == "redis" and len(listed["rules"]) == 1


async def test_with_redis_stopped_the_last_rules_stay_and_changes_get_503(
        redis_server: RedisServer, index: LoadedIndex) -> None:
    if not redis_server.can_restart:
        pytest.skip("needs a Redis the tests started")
    async with api(settings_for(redis_server, index), index) as client:
        await add(client, {"type": "block_text", "text": "ipad"})
        redis_server.stop()
        try:
            await asyncio.sleep(0.3)  # several polls fail
            assert await texts(client, "ipa") == []
            resp = await client.post("/admin/rules", json={"type": "block_text", "text": "x"},
                                     headers=AUTH)
            assert resp.status == 503 and "Retry-After" in resp.headers
            listed = await (await client.get("/admin/rules", headers=AUTH)).json()
            assert len(listed["rules"]) == 1
        finally:
            redis_server.start()
        # Redis came back empty (no persistence here): the rules in force are written back.
        await asyncio.sleep(0.3)
        await add(client, {"type": "block_text", "text": "nike shoes"})
        assert await texts(client, "nik") == [] and await texts(client, "ipa") == []
        listed = await (await client.get("/admin/rules", headers=AUTH)).json()
        assert sorted(r["text"] for r in listed["rules"]) == ["ipad", "nike shoes"]


async def test_an_api_started_while_redis_is_down_uses_the_file(
        redis_server: RedisServer, index: LoadedIndex) -> None:
    if not redis_server.can_restart:
        pytest.skip("needs a Redis the tests started")
    settings = settings_for(redis_server, index)
    async with api(settings, index) as client:
        await add(client, {"type": "block_text", "text": "ipad"})
    redis_server.stop()
    try:
        async with api(settings, index) as client:
            assert await texts(client, "ipa") == []
            listed = await (await client.get("/admin/rules", headers=AUTH)).json()
            assert listed["source"] == "file"
    finally:
        redis_server.start()


async def test_without_redis_rules_cannot_be_changed(index: LoadedIndex) -> None:
    async with api(settings_for(None, index), index) as client:
        resp = await client.post("/admin/rules", json={"type": "block_text", "text": "x"},
                                 headers=AUTH)
        assert await error(resp) == (503, "curation_unavailable")


# --- several processes ------------------------------------------------------------------------


async def test_fast_path_and_aiohttp_apply_pins_and_blocks_alike(
        redis_server: RedisServer, index: LoadedIndex) -> None:
    settings = settings_for(redis_server, index)
    fast = FastPathTestServer(create_app(settings, SuggestService(index=index, semantic=False)))
    slow = PlainTestServer(create_app(settings, SuggestService(index=index, semantic=False)))
    await fast.start_server()
    await slow.start_server()
    try:
        async with aiohttp.ClientSession() as session:  # the change goes through one of them
            for rule in ({"type": "pin", "prefix": "n", "text": "nike shoes"},
                         {"type": "block_text", "text": "new york times"}):
                resp = await session.post(slow.make_url("/admin/rules"), json=rule, headers=AUTH)
                assert resp.status == 201
        await asyncio.sleep(0.3)  # the other follows within a few polls
        for target in ("/v1/suggest?q=n", "/v1/suggest?q=new", "/v1/suggest?q=ne&k=2"):
            [a] = await exchange(fast, get(target, ""), 1)
            [b] = await exchange(slow, get(target, ""), 1)
            assert comparable(a) == comparable(b)
            texts_a = [s["text"] for s in orjson.loads(a[2])["suggestions"]]
            assert "new york times" not in texts_a
        [a] = await exchange(fast, get("/v1/suggest?q=n", ""), 1)
        assert orjson.loads(a[2])["suggestions"][0]["text"] == "nike shoes"
    finally:
        await fast.close()
        await slow.close()


def flush(redis_server: RedisServer) -> None:
    import redis as redis_sync

    client = redis_sync.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                     headers={**headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return resp.status, orjson.loads(resp.read())


def fresh_texts(base: str, q: str) -> list[str]:
    # A new connection each time, so the kernel spreads them over the workers.
    with urllib.request.urlopen(f"{base}/v1/suggest?q={q}", timeout=5) as resp:
        return [s["text"] for s in orjson.loads(resp.read())["suggestions"]]


def test_a_rule_reaches_every_worker_of_a_real_server_within_a_second(
        redis_server: RedisServer, index: LoadedIndex) -> None:
    with serving(index.path, TYPEAHEAD_ADMIN_TOKEN=TOKEN, TYPEAHEAD_GENERATION="false",
                 TYPEAHEAD_SEMANTIC="false", REDIS_URL=redis_server.url) as (base, _):
        assert fresh_texts(base, "ipa") == ["ipad"]
        status, body = post(base + "/admin/rules", {"type": "block_text", "text": "ipad"},
                            AUTH)
        assert status == 201, body
        changed = time.monotonic()
        # Both workers must answer without it; 40 fresh connections in a row reach both.
        streak = 0
        while streak < 40:
            assert time.monotonic() - changed < 1.0, "a worker still suggests the blocked text"
            streak = streak + 1 if fresh_texts(base, "ipa") == [] else 0


# --- the overlay inside the lexical search --------------------------------------------------------


def test_blocks_are_passed_over_inside_each_tier_and_counted_once(tmp_path: Path) -> None:
    """More blocked entries than a request's k: the next ones by popularity take their places
    (from the range's precomputed top, not a second search), in every tier, and each removed
    entry is counted once per request."""
    rows = [(f"word {i}", 1000 - 5 * i) for i in range(100)]  # a heavy range: 100 > SMALL_RANGE
    index = build_small_index(tmp_path, rows)
    removed: dict[str, int] = {}
    rules = RuleSet.compile([Rule(id="r1", type="block_pattern", text="word 1*"),
                             Rule(id="r2", type="block_text", text="word 3")])
    overlay = Overlay(rules, index.lexical.data.keys,
                      counts=removed)
    allowed = [t for t, _ in rows if not (t.startswith("word 1") or t == "word 3")]
    for query in ("word", "wor", "word "):  # the fast path, then the tiers after it
        removed.clear()
        removals = overlay.blocked
        got = [s.text for s in index.lexical.suggest(query, 10, blocked=removals)]
        assert got == allowed[:10]
        removals.report()
        # Each entry passed over on the way to the 10th shown one, once: "word 1", "word 3"
        # and "word 10" to "word 19" (they would have been shown in place of "word 20"...).
        assert removed == {"curated": 12}
    got = [s.text for s in index.lexical.suggest("1 word", 10, blocked=overlay.blocked)]
    assert got == []  # every any-order match ("word 1", "word 10", ...) is blocked
    fuzzy = [s.text for s in index.lexical.suggest("wordd", 10, blocked=overlay.blocked)]
    assert fuzzy == allowed[:10]  # the typo tier ("wordd" -> "word") passes them over too
    svc = SuggestService(index=index, semantic=False, rules=rules)
    assert [s["text"] for s in svc.suggest("word", 10)["suggestions"]] == allowed[:10]


def test_top_lists_refilled_at_rule_change_answer_as_reading_on(tmp_path: Path) -> None:
    """The overlay works out, when the rules change, the top list of every key range holding
    a blocked entry; what a keystroke then looks up is what reading further down the range
    gives, and counts the same removals."""
    rows = [(f"word {i}", 1000 - 5 * i) for i in range(100)] + [("wordy", 1), ("wax", 1)]
    index = build_small_index(tmp_path, rows)
    rules = RuleSet.compile([Rule(id="r1", type="block_pattern", text="word 1*"),
                             Rule(id="r2", type="block_text", text="word 3")])
    data = index.lexical.data
    ahead = Overlay(rules, data.keys, ranges=partial(blocked_ranges, data.prefixes))
    lazily = Overlay(rules, data.keys)
    assert ahead.ranges and not lazily.ranges
    for kept, removed, _ in ahead.ranges.values():
        assert ahead.removed.isdisjoint(kept) and set(removed) <= ahead.removed
    for query in ("w", "wo", "word", "word ", "word 1", "word 2", "wordd", "1 word"):
        for k in (1, 5, 10, 50):
            one, two = ahead.blocked, lazily.blocked
            assert index.lexical.suggest(query, k, blocked=one) == \
                index.lexical.suggest(query, k, blocked=two)
            assert one.met == two.met
            one.report()  # and start afresh
            two.report()
    assert len(lazily.ranges) > 0  # the ranges met were kept for the next keystrokes


def test_removals_reach_the_counter_when_metrics_are_read(tmp_path: Path) -> None:
    """Removals are counted aside on the keystroke path and moved into the Prometheus
    counter by the next scrape (or the once-a-second flush)."""
    index = build_small_index(tmp_path, ROWS)
    rules = RuleSet.compile([Rule(id="r1", type="block_word", text="iphone")])
    svc = SuggestService(index=index, semantic=False, rules=rules)

    def curated() -> float:
        for line in metrics.get().exposition().decode().splitlines():
            if line.startswith('typeahead_suggestions_removed_total{category="curated"}'):
                return float(line.split()[-1])
        return 0.0

    before = curated()
    assert [s["text"] for s in svc.suggest("i", 10)["suggestions"]] == ["ipad"]
    assert curated() == before + 2  # "iphone 15" and "iphone case"


async def test_overlapping_rule_changes_leave_the_newest_in_force(index: LoadedIndex) -> None:
    """Each change's overlay is built on a worker thread; when changes overlap, the newest
    rules are the ones served, whichever build finishes first, and an index reloaded
    meanwhile is served under them too."""
    holder = ServiceHolder()
    holder.current = SuggestService(index=index, semantic=False)
    older = RuleSet.compile([Rule(id="r1", type="block_text", text="ipad")], version=1)
    newer = RuleSet.compile([Rule(id="r2", type="block_text", text="nike shoes")], version=2)
    await asyncio.gather(holder.apply_rules(older), holder.apply_rules(newer))
    assert holder.current.overlay.rules is newer
    texts = [s["text"] for s in holder.current.suggest("n", 10)["suggestions"]]
    assert "nike shoes" not in texts
    assert "ipad" in [s["text"] for s in holder.current.suggest("ip", 10)["suggestions"]]
    # An index reloaded under the older rules (they changed while it loaded) gets the newer.
    reloaded = SuggestService(index=index, semantic=False, rules=older)
    await holder.install(reloaded)
    assert holder.current is reloaded and reloaded.overlay.rules is newer
