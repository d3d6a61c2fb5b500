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
texts as to the index. The overlay is pure CPU over a handful of dict and set look-ups; with no
rules it is skipped entirely.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from typeahead.errors import ClientError
from typeahead.normalize import display_form, normalize
from typeahead.safety.policy import SuggestionPolicy
from typeahead.suggest.lexical import Blocked, Suggestion, map_spans, match_words

RULE_TYPES = ("block_text", "block_word", "block_pattern", "pin", "add")
MAX_RULE_CHARS = 200
MAX_PATTERN_WILDCARDS = 4
MAX_NOTE_CHARS = 500
MAX_AUTHOR_CHARS = 100
_FIELDS = {"type", "text", "prefix", "weight", "author", "note"}
TEXT_VERDICTS = 100_000  # generated texts' verdicts and inputs' curation, per overlay
CURATED = -1  # the entry id of a pinned or added text the index does not hold


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


class Overlay:
    """The rules and the policy's late removals, applied to one index's suggestions.

    ``policy_blocked`` holds the ids of entries an index built under another policy still
    serves; ``key_of`` reads an entry's normalised key. Verdicts are remembered per entry id
    (cleared with the overlay, which is rebuilt whenever the rules change)."""

    def __init__(self, rules: RuleSet, key_of: Callable[[int], str],
                 policy_blocked: frozenset[int] = frozenset(),
                 policy: SuggestionPolicy | None = None,
                 popularity: Callable[[float], float] = lambda w: 0.0,
                 removed: Callable[[str, int], None] | None = None) -> None:
        self.rules = rules
        self._key_of = key_of
        self._policy_blocked = policy_blocked
        self._policy = policy
        self._popularity = popularity
        self._removed = removed
        self._verdicts: dict[int, str | None] = {}
        self._allowed: set[int] = set()  # the entries judged allowed, for Removals.isdisjoint
        self._text_verdicts: dict[str, bool] = {}
        self._curation: dict[str, tuple[list[Suggestion], Suggestion | None]] = {}
        self.filters = rules.blocks or bool(policy_blocked)
        self.curates = rules.curates

    def verdict(self, entry: int) -> str | None:
        """Why the entry is removed (a policy category, "policy" or "curated"), or None."""
        verdict = self._verdicts.get(entry, "")
        if verdict == "":
            verdict = self._verdict(entry)
            self._verdicts[entry] = verdict
            if verdict is None:
                self._allowed.add(entry)
        return verdict

    def count(self, verdict: str, n: int = 1) -> None:
        if self._removed is not None:
            self._removed(verdict, n)

    def blocks_text(self, key: str) -> bool:
        """Whether the rules block a text the index does not hold (a generated completion),
        by its key. Remembered: the same completions come back keystroke after keystroke."""
        verdict = self._text_verdicts.get(key)
        if verdict is None:
            if len(self._text_verdicts) >= TEXT_VERDICTS:
                self._text_verdicts.clear()
            verdict = self._text_verdicts[key] = self.rules.blocks_key(key)
        return verdict

    def removals(self) -> Removals:
        """A container of the removed entries for one request's lexical search."""
        return Removals(self)

    def _verdict(self, entry: int) -> str | None:
        if entry in self._policy_blocked:
            assert self._policy is not None
            return self._policy.blocked(self._key_of(entry)) or "policy"
        if self.rules.blocks and self.rules.blocks_key(self._key_of(entry)):
            return "curated"
        return None

    def promote(self, query: str, found: list[Suggestion], k: int) -> list[Suggestion]:
        """Pinned texts first, added texts at their score; blocks still apply to both."""
        key = normalize(query)
        if not key:
            return found
        curation = self._curation.get(key)
        if curation is None:
            if len(self._curation) >= TEXT_VERDICTS:
                self._curation.clear()
            curation = self._curation[key] = self._curation_of(key)
        extra, pinned = curation
        if extra:
            found = self._merge(found, extra)
        if pinned is not None:
            top = max((s.score for s in found), default=1.0)
            pinned_key = normalize(pinned.text)
            found = [pinned._replace(score=top),
                     *(s for s in found if normalize(s.text) != pinned_key)]
        return found[:k]

    def _curation_of(self, key: str) -> tuple[list[Suggestion], Suggestion | None]:
        """The added texts and the pinned one (its score set when shown) for one input key,
        less what the block rules remove. Remembered per key: inputs repeat."""
        extra = [s for s in self._added(key) if not self.rules.blocks_key(normalize(s.text))]
        pinned = self._pinned(key)
        if pinned is None or self.rules.blocks_key(normalize(pinned)):
            return extra, None
        return extra, _curated(pinned, key, 1.0)

    @staticmethod
    def _merge(found: list[Suggestion], extra: list[Suggestion]) -> list[Suggestion]:
        """Added texts among the index's, by score (an added text the index holds replaces
        it)."""
        keys = {normalize(s.text) for s in extra}
        merged = [s for s in found if normalize(s.text) not in keys] + extra
        merged.sort(key=lambda s: -s.score)  # stable: the index's order holds among equals
        return merged

    def _pinned(self, key: str) -> str | None:
        pins = self.rules.pins
        for end in range(len(key), 0, -1):
            for rule in pins.get(key[:end], ()):
                if normalize(rule.text).startswith(key):
                    return rule.text
        return None

    def _added(self, key: str) -> list[Suggestion]:
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
        return list(seen.values())


class Removals(Blocked):
    """The overlay's removed entries as the ``Blocked`` the lexical tiers pass over while
    they collect their top k: a block costs a look-up there instead of a second, larger
    search. One per request: the entries it met are counted by ``report`` once, however many
    tiers met them."""

    __slots__ = ("_allowed", "_met", "_overlay", "_verdicts")

    def __init__(self, overlay: Overlay) -> None:
        self._overlay = overlay
        # Read directly: these run once per candidate.
        self._verdicts = overlay._verdicts
        self._allowed = overlay._allowed
        self._met: dict[int, str] = {}

    def __bool__(self) -> bool:
        return True

    def __contains__(self, entry: object) -> bool:
        return self._removed(entry)  # type: ignore[arg-type]

    def _removed(self, entry: int) -> bool:
        verdict = self._verdicts.get(entry, "")
        if verdict is None:
            return False
        if verdict == "":
            verdict = self._overlay.verdict(entry)
            if verdict is None:
                return False
        self._met[entry] = verdict
        return True

    def isdisjoint(self, entries: list[int]) -> bool:
        """True when none of ``entries`` is removed: one C-level set test when all were judged
        allowed before, as nearly every keystroke's top k were."""
        if self._allowed.issuperset(entries):
            return True
        removed = self._removed
        return not any(removed(entry) for entry in entries)

    def first(self, entries: list[int], k: int) -> list[int]:
        kept: list[int] = []
        removed = self._removed
        for entry in entries:
            if not removed(entry):
                kept.append(entry)
                if len(kept) == k:
                    break
        return kept

    def report(self) -> None:
        """Count this request's removals, one counter update per category."""
        if not self._met:
            return
        counts: dict[str, int] = {}
        for category in self._met.values():
            counts[category] = counts.get(category, 0) + 1
        for category, n in counts.items():
            self._overlay.count(category, n)


def _curated(text: str, key: str, score: float) -> Suggestion:
    spans = match_words(key.split(" "), normalize(text)) or ()
    return Suggestion(CURATED, text, score, "prefix", map_spans(spans, text))

