"""Applying the policy to a whole dictionary: at build time, and to an index built before.

Entries the policy blocks are dropped before anything is written, so no tier (prefix,
any-order, fuzzy, semantic) can ever reach them and the keystroke path pays nothing. Screening
consults the text model too (``SuggestionPolicy.screened``); the report counts what it added
beyond the word lists under ``by_model`` (they are in ``sexual`` as well). What
was dropped is reported by category, as counts only: the texts themselves are shown on
request (``build-index --show-blocked``), never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from typeahead.safety.policy import CATEGORIES, SuggestionPolicy

T = TypeVar("T")
Blocked = Callable[[str, str], None]  # (category, text): --show-blocked's printer


@dataclass
class ScreenReport:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    by_model: int = 0  # removed as sexual by the text model alone (counted in counts too)

    @property
    def removed(self) -> int:
        return sum(self.counts.values())

    def manifest(self, policy: SuggestionPolicy) -> dict[str, Any]:
        """The manifest's ``safety`` section: the policy's fingerprint and counts, no texts."""
        return {**policy.describe(), "removed": self.removed, "by_category": dict(self.counts),
                "by_model": self.by_model}

    def summary(self) -> str:
        parts = [f"{c} {n:,}" for c, n in self.counts.items() if n]
        if self.by_model:
            parts.append(f"{self.by_model:,} of them by the text model alone")
        return f"suggestion policy removed {self.removed:,} entries" + (
            f" ({', '.join(parts)})" if parts else "")


def screen(items: Sequence[T], text: Callable[[T], str], policy: SuggestionPolicy,
           on_blocked: Blocked | None = None) -> tuple[list[T], ScreenReport]:
    """The items whose text the policy lets through, in order, and what it removed."""
    report = ScreenReport()
    kept: list[T] = []
    for item in items:
        shown = text(item)
        category = policy.screened(shown)
        if category is None:
            kept.append(item)
            continue
        report.counts[category] += 1
        if category == "sexual" and policy.model is not None and policy.blocked(shown) is None:
            report.by_model += 1
        if on_blocked is not None:
            on_blocked(category, shown)
    return kept, report


def blocked_ids(texts: Iterable[str], policy: SuggestionPolicy) -> frozenset[int]:
    """Ids (positions) of the texts the policy blocks: for an index built under another policy."""
    return frozenset(i for i, text in enumerate(texts) if policy.screened(text) is not None)


def needs_screen(manifest: dict[str, Any], policy: SuggestionPolicy) -> bool:
    """True when an index was not built under exactly this policy (or under none)."""
    recorded = manifest.get("safety")
    if not isinstance(recorded, dict):
        return True
    return (recorded.get("fingerprint") != policy.fingerprint
            or sorted(recorded.get("allow") or []) != sorted(policy.allow))
