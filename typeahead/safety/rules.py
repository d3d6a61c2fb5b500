"""Operators' curation rules and the overlay that applies them to every keystroke's answer.

Rules (``POST /admin/rules``; stored in Redis by ``typeahead.http.curation``):

- ``block_text``: never suggest this text (matched on its normalised key);
- ``block_word``: never suggest a text holding this word;
- ``block_pattern``: never suggest a text matching this glob (``*`` any run, ``?`` one
  character) over its whole normalised key;
- ``pin``: for inputs that start with ``prefix`` and still prefix ``text``, show ``text`` first
  (``iph`` -> ``iphone 16``);
- ``add``: suggest ``text``, which the log does not hold, where its words match the input, at
  the score an entry of count ``weight`` would get.

Blocks win over pins and additions, and the suggestion policy applies to pinned and added
texts as to the index. The overlay works out which entries the rules remove when the rules
change, so a keystroke pays set look-ups only; with no rules it is skipped entirely.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from typeahead.errors import ClientError
from typeahead.normalize import display_form, normalize
from typeahead.safety.policy import SuggestionPolicy
from typeahead.suggest.lexical import (
    NOTHING_BLOCKED,
    Blocked,
    Refilled,
    Suggestion,
    map_spans,
    match_words,
)

RULE_TYPES = ("block_text", "block_word", "block_pattern", "pin", "add")
MAX_RULE_CHARS = 200
MAX_PATTERN_WILDCARDS = 4
MAX_NOTE_CHARS = 500
MAX_AUTHOR_CHARS = 100
_FIELDS = {"type", "text", "prefix", "weight", "author", "note"}
CURATION_MEMO = 100_000  # inputs whose curation an overlay remembers
CURATED = -1  # the entry id of a pinned or added text the index does not hold
SCAN_CHUNK = 65_536  # keys read at once while an overlay judges every entry


class InvalidRule(ClientError):
    code = "invalid_rule"


class RuleBlocked(ClientError):
    """A pin or addition the suggestion policy forbids."""

    code = "blocked_by_policy"


@dataclass(frozen=True)
class Rule:
    id: str
    type: str
    text: str
    prefix: str | None = None
    weight: float | None = None
    author: str = "admin"
    created_at: float = 0.0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type, "text": self.text,
                               "author": self.author, "created_at": self.created_at}
        if self.prefix is not None:
            out["prefix"] = self.prefix
        if self.weight is not None:
            out["weight"] = self.weight
        if self.note:
            out["note"] = self.note
        return out


def parse_rule(body: Any, rule_id: str, policy: SuggestionPolicy | None,
               now: float | None = None) -> Rule:
    """A rule from a request body (or an imported file); InvalidRule names what is wrong."""
    if not isinstance(body, Mapping):
        raise InvalidRule('a rule is a JSON object like {"type": "block_text", "text": "..."}')
    unknown = set(body) - _FIELDS - {"id", "created_at"}
    if unknown:
        raise InvalidRule(f"unknown rule field(s): {', '.join(sorted(map(str, unknown)))}")
    kind = body.get("type")
    if kind not in RULE_TYPES:
        raise InvalidRule(f"type must be one of {', '.join(RULE_TYPES)}, got {kind!r}")
    text = _text(body.get("text"), "text")
    rule = Rule(rule_id, kind, text, prefix=_prefix(kind, body.get("prefix"), text),
                weight=_weight(kind, body.get("weight")),
                author=_short(body.get("author", "admin"), "author", MAX_AUTHOR_CHARS) or "admin",
                created_at=_created(body.get("created_at"), now),
                note=_short(body.get("note", ""), "note", MAX_NOTE_CHARS))
    _check_kind(rule, policy)
    return rule


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not normalize(value):
        raise InvalidRule(f'"{name}" must be a non-empty string')
    if len(value) > MAX_RULE_CHARS:
        raise InvalidRule(f'"{name}" is {len(value)} characters; the limit is {MAX_RULE_CHARS}')
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidRule(f'"{name}" must not contain control characters')
    return display_form(value)


def _short(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidRule(f'"{name}" must be a string of at most {limit} characters')
    return " ".join(value.split())


def _prefix(kind: str, value: Any, text: str) -> str | None:
    if kind != "pin":
        if value is not None:
            raise InvalidRule('"prefix" belongs to pin rules only')
        return None
    prefix = _text(value, "prefix")
    if not normalize(text).startswith(normalize(prefix)):
        raise InvalidRule(f'a pinned text must start with its prefix: "{text}" does not start '
                          f'with "{prefix}"')
    return prefix


def _weight(kind: str, value: Any) -> float | None:
    if kind != "add":
        if value is not None:
            raise InvalidRule('"weight" belongs to add rules only')
        return None
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 <= value <= 1e12:
        raise InvalidRule('"weight" must be a number from 0 to 1e12 (a count of searches)')
    return float(value)


def _created(value: Any, now: float | None) -> float:
    if value is None:
        return round(time.time() if now is None else now, 3)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRule('"created_at" must be a unix time in seconds')
    return float(value)


def _check_kind(rule: Rule, policy: SuggestionPolicy | None) -> None:
    if rule.type == "block_word" and len(normalize(rule.text).split(" ")) != 1:
        raise InvalidRule('a block_word rule takes one word; use block_text for a phrase')
    if rule.type == "block_pattern":
        _glob(rule.text)
    if rule.type in ("pin", "add") and policy is not None:
        category = policy.blocked(rule.text)
        if category is not None:
            raise RuleBlocked(f"the suggestion policy blocks this text (category {category})")


def _glob(pattern: str) -> re.Pattern[str]:
    key = normalize(pattern)
    wildcards = key.count("*") + key.count("?")
    if wildcards > MAX_PATTERN_WILDCARDS:
        raise InvalidRule(f"a pattern may hold at most {MAX_PATTERN_WILDCARDS} wildcards")
    if len(key.replace("*", "").replace("?", "").replace(" ", "")) < 2:
        raise InvalidRule("a pattern needs at least two characters that are not wildcards")
    # Only * and ? are special: brackets are matched literally, so no pattern can fail to
    # compile, and fnmatch's translation keeps the match linear.
    escaped = key.replace("[", "[[]")
    return re.compile(fnmatch.translate(escaped))


# --- the compiled rules -----------------------------------------------------------------------


@dataclass
class RuleSet:
    """Rules compiled for look-ups; ``version`` is the store's counter they came from."""

    rules: tuple[Rule, ...] = ()
    version: int = 0
    texts: frozenset[str] = frozenset()
    words: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None
    pins: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    additions: list[tuple[str, int]] = field(default_factory=list)  # (word-start suffix, i)
    added: tuple[Rule, ...] = ()

    @classmethod
    def compile(cls, rules: Iterable[Rule], version: int = 0) -> RuleSet:
        ordered = tuple(sorted(rules, key=lambda r: (r.created_at, r.id)))
        by_type: dict[str, list[Rule]] = {t: [] for t in RULE_TYPES}
        for rule in ordered:
            by_type[rule.type].append(rule)
        globs = [_glob(r.text).pattern for r in by_type["block_pattern"]]
        pins: dict[str, list[Rule]] = {}
        for rule in reversed(by_type["pin"]):  # the newest pin for a prefix first
            pins.setdefault(normalize(rule.prefix or ""), []).append(rule)
        added = tuple(by_type["add"])
        return cls(
            rules=ordered, version=version,
            texts=frozenset(normalize(r.text) for r in by_type["block_text"]),
            words=frozenset(normalize(r.text) for r in by_type["block_word"]),
            pattern=re.compile("|".join(f"(?:{g})" for g in globs)) if globs else None,
            pins={p: tuple(rs) for p, rs in pins.items()},
            additions=sorted((suffix, i) for i, r in enumerate(added)
                             for suffix in _word_starts(normalize(r.text))),
            added=added,
        )

    @property
    def blocks(self) -> bool:
        return bool(self.texts or self.words or self.pattern is not None)

    @property
    def curates(self) -> bool:
        return bool(self.pins or self.added)

    def pinned(self) -> list[Rule]:
        return [rule for rules in self.pins.values() for rule in rules]

    def blocks_key(self, key: str) -> bool:
        if key in self.texts or (self.pattern is not None and self.pattern.match(key)):
            return True
        return bool(self.words) and not self.words.isdisjoint(key.split(" "))


def _word_starts(key: str) -> list[str]:
    starts = [key]
    at = key.find(" ")
    while at >= 0:
        starts.append(key[at + 1:])
        at = key.find(" ", at + 1)
    return starts


class EntryKeys(Protocol):
    """An index's matching keys by entry id (``mapped.StringTable``)."""

    def __len__(self) -> int: ...

    def many(self, ids: list[int]) -> list[str]: ...


class Overlay:
    """The rules and the policy's late removals, applied to one index's suggestions.

    Everything a keystroke needs is worked out here, once per rule change, so a keystroke pays
    set look-ups only: which entries are removed and why (every key is judged: linear in the
    index, about 0.7 µs an entry, which ``SuggestService.overlay_for`` runs off the event loop),
    and which entries the pinned and added texts stand for. ``policy_blocked`` holds the ids of
    entries an index built under another policy still serves; ``key_of_text`` gives a text's
    matching key as the index made its keys."""

    def __init__(self, rules: RuleSet, keys: EntryKeys,
                 policy_blocked: frozenset[int] = frozenset(),
                 policy: SuggestionPolicy | None = None,
                 popularity: Callable[[float], float] = lambda w: 0.0,
                 counts: dict[str, int] | None = None,
                 key_of_text: Callable[[str], str] = normalize,
                 ranges: Callable[[frozenset[int]], dict[tuple[int, int], Refilled]] | None = None
                 ) -> None:
        self.rules = rules
        self._policy = policy
        self._popularity = popularity
        self.counts = {} if counts is None else counts  # removals by category, to be flushed
        self._key_of_text = key_of_text
        self._curation: dict[str, _Curation] = {}
        self.filters = rules.blocks or bool(policy_blocked)
        self.curates = rules.curates
        curated = {key_of_text(r.text) for r in (*rules.added, *rules.pinned())}
        self.verdicts, self._held = self._judge(keys, policy_blocked, curated)
        self.removed = frozenset(self.verdicts)
        self.ranges = ranges(self.removed) if ranges is not None and self.removed else {}
        kinds = set(self.verdicts.values())
        self.only_verdict = kinds.pop() if len(kinds) == 1 else None  # most often "curated"
        # What the lexical tiers pass over. One for every request: a request runs start to end
        # on the event loop's thread, and ``report`` empties it at the end of each.
        self.blocked: Blocked = Removals(self) if self.filters else NOTHING_BLOCKED

    def _judge(self, keys: EntryKeys, policy_blocked: frozenset[int], curated: set[str]
               ) -> tuple[dict[int, str], dict[str, int]]:
        """Why each removed entry is removed (a policy category, "policy" or "curated"), and
        the entry ids of the curated texts the index holds, by key."""
        verdicts: dict[int, str] = {}
        held: dict[str, int] = {}
        if not (self.rules.blocks or curated or policy_blocked):
            return verdicts, held
        blocks = self.rules.blocks_key if self.rules.blocks else None
        for start in range(0, len(keys), SCAN_CHUNK):
            ids = list(range(start, min(start + SCAN_CHUNK, len(keys))))
            for entry, key in zip(ids, keys.many(ids), strict=True):
                if entry in policy_blocked:
                    assert self._policy is not None
                    verdicts[entry] = self._policy.blocked(key) or "policy"
                elif blocks is not None and blocks(key):
                    verdicts[entry] = "curated"
                if key in curated:
                    held[key] = entry
        return verdicts, held

    def promote(self, query: str, found: list[Suggestion], k: int) -> list[Suggestion]:
        """Pinned texts first, added texts at their score; blocks still apply to both."""
        curation = self._curation.get(query)  # by the raw input: no normalising on a hit
        if curation is None:
            if len(self._curation) >= CURATION_MEMO:
                self._curation.clear()
            key = normalize(query)
            curation = self._curation[query] = self._curation_of(key) if key else NO_CURATION
        if curation is NO_CURATION:
            return found[:k]
        held, keys = curation.held, curation.keys
        # A generated completion's text is its key; an entry's is its display form, which
        # equals a curated key only where the entry is that text (and so in ``held``).
        out = [s for s in found if s.id not in held and s.text not in keys]
        for added in curation.extra:  # each after the suggestions scoring at least as high
            at = 0
            for s in out:
                if s.score < added.score:
                    break
                at += 1
            out.insert(at, added)
        pinned = curation.pinned
        if pinned is not None:
            # First, at the first suggestion's score (tuple.__new__: the NamedTuple
            # constructor is a Python-level wrapper).
            top = found[0].score if found else 1.0
            out.insert(0, tuple.__new__(Suggestion, (pinned.id, pinned.text, top,
                                                     pinned.source, pinned.spans)))
        return out[:k]

    def _curation_of(self, key: str) -> _Curation:
        """The added texts and the pinned one (its score set when shown) for one input key,
        less what the block rules remove. Remembered per key: inputs repeat."""
        text = self._pinned(key)
        pinned = None if text is None or self.rules.blocks_key(normalize(text)) \
            else _curated(text, key, 1.0)
        pinned_key = None if pinned is None else self._key_of_text(pinned.text)
        extra = [s for s in self._added(key) if not self.rules.blocks_key(normalize(s.text))
                 and self._key_of_text(s.text) != pinned_key]
        if not extra and pinned is None:
            return NO_CURATION
        keys = {self._key_of_text(s.text) for s in (*extra, *([pinned] if pinned else []))}
        return _Curation(tuple(extra), pinned,
                         frozenset(self._held[k] for k in keys if k in self._held),
                         frozenset(keys))

    def _pinned(self, key: str) -> str | None:
        pins = self.rules.pins
        for end in range(len(key), 0, -1):
            for rule in pins.get(key[:end], ()):
                if normalize(rule.text).startswith(key):
                    return rule.text
        return None

    def _added(self, key: str) -> list[Suggestion]:
        """The added texts whose words match ``key``, best first."""
        additions = self.rules.additions
        at = bisect.bisect_left(additions, (key, -1))
        seen: dict[int, Suggestion] = {}
        while at < len(additions) and additions[at][0].startswith(key):
            suffix, i = additions[at]
            rule = self.rules.added[i]
            whole = normalize(rule.text) == suffix
            tier = 2 if whole else 1
            score = (tier + self._popularity(rule.weight or 0.0)) / 3
            if i not in seen or seen[i].score < score:
                seen[i] = _curated(rule.text, key, score)
            at += 1
        return sorted(seen.values(), key=lambda s: -s.score)


@dataclass(frozen=True)
class _Curation:
    """What the pins and additions do to one input's suggestions."""

    extra: tuple[Suggestion, ...]  # the added texts to show, best first
    pinned: Suggestion | None
    held: frozenset[int]  # the entries of the index that are these texts
    keys: frozenset[str]  # and their keys, for suggestions that are no entry (generated)


NO_CURATION = _Curation((), None, frozenset(), frozenset())


class Removals(Blocked):
    """The overlay's removed entries as the ``Blocked`` the lexical tiers pass over while
    they collect their top k: a block costs a set look-up there instead of a second, larger
    search. ``report`` counts the entries a request met, once each."""

    __slots__ = ("_counts", "_only", "_verdicts")

    def __init__(self, overlay: Overlay) -> None:
        super().__init__(overlay.removed, overlay.ranges)
        self._counts, self._only, self._verdicts = \
            overlay.counts, overlay.only_verdict, overlay.verdicts

    def report(self) -> None:
        """Count the removals met since the last report (one request's) into the overlay's
        ``counts``, one count per category, and start afresh."""
        met, counts = self.met, self._counts
        if self._only is not None:
            counts[self._only] = counts.get(self._only, 0) + len(met)
        else:
            for entry in met:
                category = self._verdicts[entry]
                counts[category] = counts.get(category, 0) + 1
        met.clear()


def _curated(text: str, key: str, score: float) -> Suggestion:
    spans = match_words(key.split(" "), normalize(text)) or ()
    return Suggestion(CURATED, text, score, "prefix", map_spans(spans, text))

