"""``typeahead eval intent --keystrokes``: the served offer decision, keystroke by keystroke.

Every prefix of each labelled query (``t``, ``ti``, ..., the whole query) goes through the
service's own answer (``SuggestService.suggest``: completions, embedding and the keystroke
decision), as a user typing it would see. Reported:

* ``nav_trans_keystroke_offer_rate``: the share of the prefixes of navigational and
  transactional queries that offered generation (the button shown where it should not be);
* ``inf_keystroke_offer_rate``: the same over the prefixes of informational queries;
* ``inf_whole_offer_rate``: the share of informational whole queries that got the offer;
* ``binary``: offer-vs-not scores of the whole query (its last keystroke), as ``eval intent``;
* ``flips_per_query``: how often the button changed state while a query was typed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from typeahead.eval.intent import BINARY_LABELS, Labelled, scores

INF = "informational"


def prefixes(text: str) -> list[str]:
    """What a user typing ``text`` sends: every prefix, the whole text last."""
    return [text[:i] for i in range(1, len(text) + 1)]


def replay(offer: Callable[[str], bool], items: Sequence[Labelled]) -> list[list[bool]]:
    """The offer at each keystroke of each item."""
    return [[offer(p) for p in prefixes(it.text)] for it in items]


def keystroke_metrics(items: Sequence[Labelled], offers: Sequence[Sequence[bool]]
                      ) -> dict[str, Any]:
    """Rates and whole-query scores from the replayed offers (see the module docstring)."""
    other = [seq for it, seq in zip(items, offers, strict=True) if it.label != INF]
    info = [seq for it, seq in zip(items, offers, strict=True) if it.label == INF]
    gold = ["offer" if it.label == INF else "no_offer" for it in items]
    pred = ["offer" if seq and seq[-1] else "no_offer" for seq in offers]
    flips = [sum(a != b for a, b in itertools.pairwise(seq)) for seq in offers]
    return {
        "n_queries": len(items),
        "n_keystrokes": sum(len(seq) for seq in offers),
        "nav_trans_keystroke_offer_rate": _rate(other),
        "inf_keystroke_offer_rate": _rate(info),
        "inf_whole_offer_rate": (sum(bool(seq[-1]) for seq in info if seq) / len(info)
                                 if info else 0.0),
        "flips_per_query": sum(flips) / len(flips) if flips else 0.0,
        "binary": scores(gold, pred, BINARY_LABELS),
    }


def _rate(seqs: Sequence[Sequence[bool]]) -> float:
    total = sum(len(s) for s in seqs)
    return sum(sum(s) for s in seqs) / total if total else 0.0


def service_offer(service: Any, k: int) -> Callable[[str], bool]:
    """The served decision of ``service`` (a ``SuggestService``) for one keystroke."""
    def offer(prefix: str) -> bool:
        return bool(service.suggest(prefix, k)["offer_generate"])

    return offer


def load_service(index_dir: Path, model: Path | None, student_dir: Path | None) -> Any:
    """The service as ``typeahead serve`` builds it, without documents (they do not change
    the decision and cost most of a keystroke)."""
    from typeahead.intent import IntentClassifier
    from typeahead.suggest import SuggestService, load_index

    index = load_index(index_dir, student_dir=student_dir)
    student = index.semantic.student if index.semantic is not None else None
    if student is None and student_dir is not None:
        from typeahead.embed import Student

        student = Student.load(student_dir)
    classifier = IntentClassifier.load(model, student=student)
    return SuggestService(index=index, intent=classifier, results_k=0)


def print_table(result: dict[str, Any]) -> None:
    b = result["binary"]
    print(f"keystrokes: queries={result['n_queries']} keystrokes={result['n_keystrokes']}")
    print(f"  offer rate, nav+trans keystrokes  {result['nav_trans_keystroke_offer_rate']:.3f}")
    print(f"  offer rate, informational keys    {result['inf_keystroke_offer_rate']:.3f}")
    print(f"  informational whole queries offer {result['inf_whole_offer_rate']:.3f}")
    print(f"  flips per query                   {result['flips_per_query']:.2f}")
    print(f"  whole query offer-vs-not macro-F1 {b['macro_f1']:.3f} accuracy {b['accuracy']:.3f}")
