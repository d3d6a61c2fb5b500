"""Curation rules, stored in Redis and followed by every API process.

Redis holds the rules (a hash of rule id -> JSON), a version counter that every change raises
in the same transaction, and an audit stream of who changed what and when. Each API process
polls the counter (``curation_poll_s``, 0.25 s: one GET) and, when it moved, reads the rules,
compiles them and swaps them into its suggest service, whose cached answers it drops; so a
change reaches every process and replica within the poll interval plus one read.

While Redis is unreachable a process keeps the last rules it knew. A copy of the rules is kept
in a file beside the index (``curation_file``, default ``<index dir>/../curation.json``): every
change through the API rewrites it, a process that starts while Redis is down serves it, and
an empty Redis (a new one, or the embedded one ``serve`` starts) is seeded from it, so rules
outlive Redis restarts that lose data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from typeahead import keys, metrics
from typeahead.errors import InvalidBody, NotFound, ServiceUnavailable
from typeahead.generation import REDIS_DOWN, open_redis
from typeahead.safety.policy import SuggestionPolicy
from typeahead.safety.rules import InvalidRule, Rule, RuleSet, parse_rule
from typeahead.settings import Settings

log = logging.getLogger("typeahead.curation")

EXPORT_KIND = "typeahead-curation"
EXPORT_VERSION = 1
MAX_RULES = 10_000
Apply = Callable[[RuleSet], Awaitable[None]]


class RuleNotFound(NotFound):
    code = "rule_not_found"


def unavailable(what: str) -> ServiceUnavailable:
    return ServiceUnavailable(f"curation rules cannot be {what}: Redis is unreachable; the "
                              "last known rules stay in force", code="curation_unavailable")


def new_rule_id() -> str:
    return "r_" + uuid.uuid4().hex[:16]


def export_document(rules: Iterable[Rule]) -> dict[str, Any]:
    return {"kind": EXPORT_KIND, "format_version": EXPORT_VERSION,
            "exported_at": round(time.time(), 3), "rules": [r.to_json() for r in rules]}


def rules_from_document(doc: Any, policy: SuggestionPolicy | None) -> list[Rule]:
    """The rules of an exported document, all checked; InvalidRule names the first bad one."""
    if not isinstance(doc, dict) or doc.get("kind") != EXPORT_KIND:
        raise InvalidBody(f'a rules document is a JSON object with "kind": "{EXPORT_KIND}"')
    if doc.get("format_version") != EXPORT_VERSION:
        raise InvalidBody(f"unsupported rules document format_version "
                          f"{doc.get('format_version')!r} (expected {EXPORT_VERSION})")
    raw = doc.get("rules")
    if not isinstance(raw, list) or len(raw) > MAX_RULES:
        raise InvalidBody(f'"rules" must be a list of at most {MAX_RULES} rules')
    rules: list[Rule] = []
    seen: set[str] = set()
    for n, item in enumerate(raw):
        rule_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(rule_id, str) or not rule_id or len(rule_id) > 64 or rule_id in seen:
            rule_id = new_rule_id()
        seen.add(rule_id)
        try:
            rules.append(parse_rule(item, rule_id, policy))
        except InvalidRule as exc:
            raise InvalidRule(f"rule {n}: {exc.message}") from exc
    return rules


def read_file(path: Path, policy: SuggestionPolicy | None) -> list[Rule] | None:
    """The rules kept in ``path``; None when there is no file. A damaged file is an error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidBody(f"{path}: cannot read the rules file: {exc}") from exc
    try:
        return rules_from_document(orjson.loads(raw), policy)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"{path}: the rules file is not valid JSON") from exc


def write_file(path: Path, rules: Iterable[Rule]) -> None:
    """Atomically: a reader (or a crash) sees the old file or the new one, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(orjson.dumps(export_document(rules), option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


class CurationStore:
    """The rules in Redis. Every change is one MULTI/EXEC: rule, version and audit entry."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def version(self) -> int:
        raw = await self.redis.get(keys.CURATION_VERSION)
        return int(raw) if raw is not None else 0

    async def load(self) -> tuple[list[Rule], int]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.CURATION_RULES)
            pipe.get(keys.CURATION_VERSION)
            stored, version = await pipe.execute()
        rules = []
        for rule_id, raw in stored.items():
            rule = _stored_rule(rule_id, raw)
            if rule is not None:
                rules.append(rule)
        return rules, int(version) if version is not None else 0

    async def add(self, rule: Rule) -> int:
        return await self._change("add", rule.author, [rule.to_json()],
                                  lambda p: p.hset(keys.CURATION_RULES, rule.id,
                                                   orjson.dumps(rule.to_json())))

    async def delete(self, rule_id: str, author: str) -> int:
        raw = await self.redis.hget(keys.CURATION_RULES, rule_id)
        if raw is None:
            raise RuleNotFound(f"no rule {rule_id}")
        return await self._change("delete", author, [orjson.loads(raw)],
                                  lambda p: p.hdel(keys.CURATION_RULES, rule_id))

    async def replace(self, rules: list[Rule], author: str) -> int:
        mapping = {r.id: orjson.dumps(r.to_json()) for r in rules}

        def write(pipe: Any) -> None:
            pipe.delete(keys.CURATION_RULES)
            if mapping:
                pipe.hset(keys.CURATION_RULES, mapping=mapping)

        return await self._change("import", author, [r.to_json() for r in rules], write)

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        entries: list[Any] = await self.redis.xrevrange(keys.CURATION_AUDIT, count=limit) or []
        return [_audit_entry(entry_id, fields) for entry_id, fields in entries]

    async def _change(self, action: str, author: str, rules: list[dict[str, Any]],
                      write: Callable[[Any], Any]) -> int:
        entry: dict[Any, Any] = {"at": str(round(time.time(), 3)), "author": author,
                                 "action": action, "rules": orjson.dumps(rules)}
        async with self.redis.pipeline(transaction=True) as pipe:
            write(pipe)
            pipe.incr(keys.CURATION_VERSION)
            pipe.xadd(keys.CURATION_AUDIT, entry, maxlen=keys.CURATION_AUDIT_MAX,
                      approximate=True)
            results = await pipe.execute()
        return int(results[-2])


def _stored_rule(rule_id: Any, raw: Any) -> Rule | None:
    """A stored rule, or None (logged) for one this version cannot read."""
    rid = rule_id.decode() if isinstance(rule_id, bytes) else str(rule_id)
    try:
        return parse_rule(orjson.loads(raw), rid, policy=None)
    except (orjson.JSONDecodeError, InvalidRule) as exc:
        log.warning("curation rule %s in Redis is unreadable and ignored: %s", rid, exc)
        return None


def _audit_entry(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                                                           else v) for k, v in fields.items()}
    return {"id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
            "at": float(text.get("at", 0)), "author": text.get("author", ""),
            "action": text.get("action", ""), "rules": orjson.loads(text.get("rules", "[]"))}


class Curation:
    """One API process's view of the rules: it follows Redis and applies what it reads."""

    def __init__(self, settings: Settings, apply: Apply,
                 policy: SuggestionPolicy | None = None) -> None:
        self.settings = settings
        self.apply = apply
        self.policy = policy
        self.file = settings.curation_file or settings.index_dir.resolve().parent / \
            "curation.json"
        self.redis = open_redis(settings, read_timeout_s=0.5) if settings.uses_redis else None
        self.store = CurationStore(self.redis) if self.redis is not None else None
        self.rules = RuleSet()
        self.source = "none"
        self._redis_down = False

    # --- following Redis ----------------------------------------------------------------------

    async def start(self) -> None:
        """Rules before the first keystroke: Redis's, seeded from the file when Redis is empty,
        or the file's alone when Redis cannot be reached."""
        if self.store is not None:
            with contextlib.suppress(*REDIS_DOWN):
                await self._seed_from_file()
                await self.refresh()
                return
        kept = self._read_file_quietly()
        if kept is not None:
            await self._use(RuleSet.compile(kept), "file")

    async def _seed_from_file(self) -> None:
        assert self.store is not None
        if await self.store.redis.exists(keys.CURATION_VERSION):
            return
        kept = self._read_file_quietly()
        if kept:
            await self.store.replace(kept, "seed:" + str(self.file))
            log.info("curation rules seeded from %s (%d rules)", self.file, len(kept))

    def _read_file_quietly(self) -> list[Rule] | None:
        try:
            return read_file(self.file, self.policy)
        except (InvalidBody, InvalidRule) as exc:
            log.error("curation rules file ignored: %s", exc.message)
            return None

    async def refresh(self) -> bool:
        """Read the rules if the version moved; True when new rules were applied."""
        assert self.store is not None
        version = await self.store.version()
        if version == 0 and self.rules.rules:
            # Redis came back empty (restarted without persistence, or flushed): the rules
            # this process still enforces are written back rather than silently dropped.
            await self.store.replace(list(self.rules.rules), "seed:last-known")
            log.warning("curation: Redis held no rules; restored the last known %d",
                        len(self.rules.rules))
            version = await self.store.version()
        if version == self.rules.version and self.source == "redis":
            return False
        rules, version = await self.store.load()
        await self._use(RuleSet.compile(rules, version), "redis")
        return True

    async def follow(self) -> None:
        """Poll forever (a background task); Redis failures keep the last known rules."""
        if self.store is None:
            return
        while True:
            await asyncio.sleep(self.settings.curation_poll_s)
            try:
                await self.refresh()
                if self._redis_down:
                    log.info("curation: Redis reachable again")
                self._redis_down = False
            except REDIS_DOWN:
                if not self._redis_down:
                    log.warning("curation: Redis unreachable; keeping the last known %d rules",
                                len(self.rules.rules))
                self._redis_down = True

    async def _use(self, rules: RuleSet, source: str) -> None:
        self.rules, self.source = rules, source
        await self.apply(rules)
        metrics.get().curation_rules.set(len(rules.rules))

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    # --- changes (the admin routes) -------------------------------------------------------------

    def writable(self) -> CurationStore:
        if self.store is None:
            raise ServiceUnavailable("curation rules need Redis: set REDIS_URL (or run with "
                                     "generation on, which starts an embedded Redis)",
                                     code="curation_unavailable")
        return self.store

    async def change(self, write: Callable[[CurationStore], Awaitable[int]]) -> int:
        """Make one change in Redis (``write`` returns the new version), apply it here at once,
        and keep the file beside the index current; 503 while Redis cannot take it."""
        try:
            version = await write(self.writable())
            await self.refresh()
        except REDIS_DOWN as exc:
            raise unavailable("changed") from exc
        try:
            await asyncio.to_thread(write_file, self.file, self.rules.rules)
        except OSError as exc:
            log.warning("curation rules file %s not written: %s", self.file, exc)
        return version
