"""Hot reload: token checks, a refused broken index, zero failed requests across the switch,
and every worker of a real multi-process server following (POST and SIGHUP)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests import requests_shim as http
from tests.lexical_fixtures import ROWS, build_small_index
from tests.serve_process import serving, worker_states
from typeahead.http.app import create_app
from typeahead.settings import Settings
from typeahead.suggest.index import LoadedIndex
from typeahead.suggest.service import SuggestService

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROWS_B = [*ROWS, ("zebra crossing", 400), ("zeppelin", 300)]
ROWS_C = [*ROWS, ("zeal", 500)]


def broken_copy(index: LoadedIndex, dest: Path) -> Path:
    shutil.copytree(index.path, dest)
    weights = dest / "weights.npy"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, wrong checksum
    weights.write_bytes(bytes(data))
    return dest


@pytest.fixture
async def indexes(tmp_path: Path) -> tuple[LoadedIndex, LoadedIndex]:
    return build_small_index(tmp_path, name="a"), build_small_index(tmp_path, ROWS_B, name="b")


@pytest.fixture
async def client(indexes: tuple[LoadedIndex, LoadedIndex]) -> AsyncIterator[TestClient]:
    a, _ = indexes
    settings = Settings(generation=False, semantic=False, admin_token=TOKEN, index_dir=a.path)
    app = create_app(settings, SuggestService(index=a, semantic=False))
    async with TestClient(TestServer(app)) as c:
        yield c


async def error_code(resp: Any) -> str:
    return str((await resp.json())["error"]["code"])


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Basic abc"}, 401, "unauthorized"),
        ({"Authorization": "Bearer "}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong"}, 403, "forbidden"),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403, "forbidden"),
    ],
)
async def test_admin_token_is_required(
    client: TestClient, headers: dict[str, str], status: int, code: str
) -> None:
    resp = await client.post("/admin/reload", headers=headers)
    assert resp.status == status and await error_code(resp) == code


async def test_no_configured_token_disables_reload(
    indexes: tuple[LoadedIndex, LoadedIndex],
) -> None:
    app = create_app(Settings(generation=False, semantic=False), SuggestService(index=indexes[0]))
    async with TestClient(TestServer(app)) as c:
        resp = await c.post("/admin/reload", headers=AUTH)
        assert resp.status == 403 and await error_code(resp) == "admin_disabled"
        assert (await c.post("/admin/reload")).status == 401


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{nope", "invalid_body"),
        (b"[1]", "invalid_body"),
        (b'{"index": 5}', "invalid_parameter"),
    ],
)
async def test_bad_reload_bodies(client: TestClient, body: bytes, code: str) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    resp = await client.post("/admin/reload", data=body, headers=headers)
    assert resp.status == 400 and await error_code(resp) == code


async def test_broken_or_missing_index_is_refused_and_the_old_keeps_serving(
    client: TestClient,
    indexes: tuple[LoadedIndex, LoadedIndex],
    tmp_path: Path,
) -> None:
    broken = broken_copy(indexes[1], tmp_path / "broken")
    for target in (broken, tmp_path / "missing"):
        resp = await client.post("/admin/reload", json={"index": str(target)}, headers=AUTH)
        assert resp.status == 422 and await error_code(resp) == "index_rejected"
        message = (await resp.json())["error"]["message"]
        assert str(target) in message and "still serving" in message
        ready = await (await client.get("/readyz")).json()
        assert ready["index"]["path"] == str(indexes[0].path)
    body = await (await client.get("/v1/suggest", params={"q": "new"})).json()
    assert body["suggestions"]


async def test_reload_under_steady_load_fails_no_request(
    client: TestClient,
    indexes: tuple[LoadedIndex, LoadedIndex],
) -> None:
    statuses: Counter[int] = Counter()
    found: list[bool] = []
    stop = asyncio.Event()

    async def steady() -> None:
        while not stop.is_set():
            resp = await client.get("/v1/suggest", params={"q": "ze"})
            statuses[resp.status] += 1
            found.append(bool((await resp.json())["suggestions"]))

    load = [asyncio.create_task(steady()) for _ in range(6)]
    await asyncio.sleep(0.3)
    resp = await client.post("/admin/reload", json={"index": str(indexes[1].path)}, headers=AUTH)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["status"] == "reloaded" and body["index"]["path"] == str(indexes[1].path)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*load)
    assert set(statuses) == {200} and sum(statuses.values()) > 50
    # Before the switch "ze" matched nothing; after it, the new index answers; never a mix.
    switch = found.index(True)
    assert not any(found[:switch]) and all(found[switch + 10 :])


# --- the real multi-process server ------------------------------------------------------------


def post(url: str, body: dict[str, Any] | None, headers: dict[str, str],
         timeout: float = 60) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(
        url, data=data, method="POST", headers={**headers, "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], dict[str, Path]]]:
    paths = {
        "a": build_small_index(tmp_path, name="a").path,
        "b": build_small_index(tmp_path, ROWS_B, name="b").path,
        "c": build_small_index(tmp_path, ROWS_C, name="c").path,
        "link": tmp_path / "current",
    }
    paths["link"].symlink_to(paths["a"])
    with serving(paths["link"], TYPEAHEAD_ADMIN_TOKEN=TOKEN, TYPEAHEAD_GENERATION="false",
                 TYPEAHEAD_SEMANTIC="false") as (base, proc):
        yield base, proc, paths


class Load:
    """Two threads sending suggest requests back to back; counts every outcome."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.outcomes: Counter[str] = Counter()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(2)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                status, _ = http.get(self.base + "/v1/suggest?q=ze", timeout=10)
                self.outcomes[str(status)] += 1
            except OSError as exc:
                self.outcomes[type(exc).__name__] += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def test_every_worker_follows_sighup_and_post_under_load(
    served: tuple[str, subprocess.Popen[bytes], dict[str, Path]],
    tmp_path: Path,
) -> None:
    base, proc, paths = served
    entries = {name: LoadedIndexEntries.of(paths[name]) for name in ("a", "b", "c")}
    with Load(base) as load:
        time.sleep(0.5)
        # An operator points the symlink at a new build and sends SIGHUP to the supervisor.
        tmp_link = tmp_path / "current.new"
        tmp_link.symlink_to(paths["b"])
        os.replace(tmp_link, paths["link"])
        proc.send_signal(signal.SIGHUP)
        wait_for_states(base, {(str(paths["link"]), entries["b"])})
        # The admin endpoint names a directory; the answer comes once every worker switched.
        status, body = post(base + "/admin/reload", {"index": str(paths["c"])}, AUTH)
        assert status == 200, body
        assert body["workers"] == 2 and body["switched"] == 2
        assert set(worker_states(base).values()) == {(str(paths["c"]), entries["c"])}
        # A broken index is refused; everyone keeps serving the last good one.
        broken = broken_copy(build_small_index(tmp_path, ROWS_B, name="d"), tmp_path / "bad")
        status, body = post(base + "/admin/reload", {"index": str(broken)}, AUTH)
        assert status == 422 and body["error"]["code"] == "index_rejected"
        assert post(base + "/admin/reload", None, {})[0] == 401
        assert post(base + "/admin/reload", None, {"Authorization": "Bearer no"})[0] == 403
        time.sleep(0.3)
    assert set(worker_states(base).values()) == {(str(paths["c"]), entries["c"])}
    assert set(load.outcomes) == {"200"}, load.outcomes
    assert load.outcomes["200"] > 20


class LoadedIndexEntries:
    @staticmethod
    def of(path: Path) -> int:
        manifest = json.loads((path / "manifest.json").read_text())
        return int(manifest["counts"]["entries"])


def wait_for_states(base: str, want: set[tuple[str, int]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = worker_states(base)
        if len(states) == 2 and set(states.values()) == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"workers did not all switch: {worker_states(base)}")


def test_concurrent_reloads_are_serialized_and_leave_one_index(
    served: tuple[str, subprocess.Popen[bytes], dict[str, Path]],
) -> None:
    """Overlapping reloads of different directories used to hang for about a minute each and
    leave the workers on different indexes while both answered 200."""
    base, _, paths = served
    outcomes: list[tuple[float, int, str]] = []
    lock = threading.Lock()

    def reload(name: str) -> None:
        status, body = post(base + "/admin/reload", {"index": str(paths[name])}, AUTH,
                            timeout=30)
        with lock:
            outcomes.append((time.monotonic(), status, name if status == 200 else
                             body["error"]["code"]))

    threads = [threading.Thread(target=reload, args=(name,)) for name in "abcbca"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == len(threads), outcomes
    assert {status for _, status, _ in outcomes} <= {200, 409}, outcomes
    done = [name for _, status, name in sorted(outcomes) if status == 200]
    assert done, outcomes
    last = paths[done[-1]]
    want = {(str(last), LoadedIndexEntries.of(last))}
    assert set(worker_states(base).values()) == want
