"""The index directory: building it from a corpus and loading it for serving.

Layout (all arrays are ``.npy`` memory-mapped read-only, so N worker processes share one copy):

- ``manifest.json``: kind, format version, source file and checksum, options, counts, build
  time and the size and sha256 of every data file.
- ``display.bin`` / ``display.off.npy``: the text shown to users, by entry id.
- ``keys.bin`` / ``keys.off.npy``: normalised matching keys, by entry id.
- ``weights.npy``: merged popularity, by entry id (ids are popularity ranks: 0 is the top).
- ``prefix.*.npy``: sorted whole keys (``typeahead.suggest.prefix``); ``words.*.npy``: sorted
word-start
  suffixes; ``fuzzy.*``: the typo index (``typeahead.suggest.fuzzy``).
- ``gen.*.npy``: words and word pairs for generated completions (``typeahead.suggest.generated``),
  when built with them.

Entries whose merged weight is below ``min_count`` are dropped before anything is written:
they are never served, by any path.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from typeahead import __version__
from typeahead.corpus import Row
from typeahead.errors import ArtifactError, DataError
from typeahead.manifest import (
    atomic_directory,
    describe_files,
    read_manifest,
    sha256_file,
    verify_files,
    write_manifest,
)
from typeahead.mapped import StringTable, load_array
from typeahead.normalize import display_form, fold_punctuation, normalize
from typeahead.safety.policy import SuggestionPolicy
from typeahead.safety.screen import Blocked, screen
from typeahead.suggest.fuzzy import FuzzyVocab
from typeahead.suggest.generated import MIN_PIECES, Completer, Generator, build_generator
from typeahead.suggest.lexical import LexicalData, LexicalEngine
from typeahead.suggest.prefix import PrefixArray, build_prefix_array
from typeahead.suggest.semantic import SemanticLayer, load_semantic

KIND = "typeahead-index"
FORMAT_VERSION = 1
# The longest text an index serves: the longest query the API accepts (max_query_chars'
# default). A longer log entry is no query anyone typed, and would make every answer it
# appears in as large as it is; it is skipped and counted as "too_long".
MAX_ENTRY_CHARS = 200
NORMALIZATION = "nfkc+casefold+strip-accents+collapse-whitespace"  # of every index's keys
FOLD_TAG = "+fold-punctuation"  # added where punctuation is folded too
ARTICLES = frozenset(("the", "a", "an"))  # leading articles a title is also found without
Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(f"build-index: {message}", file=sys.stderr, flush=True)


@dataclass
class BuildOptions:
    text_col: str
    weight_col: str | None
    min_count: float = 3.0
    fmt: str | None = None
    # Semantic layer: entry vectors (None: when a student model is available) and documents.
    vectors: bool | None = False
    vector_factory: str | None = None
    student_dir: Path | None = None
    docs: Path | None = None
    docs_id_field: str | None = None
    # The suggestion policy's adult categories allowed in this index (never minors etc.),
    # and a printer for what it removes (build-index --show-blocked); None prints nothing.
    safety_allow: tuple[str, ...] = ()
    on_blocked: Blocked | None = None
    # Generated completions: pieces (words, word pairs) must each occur in this many distinct
    # queries of the corpus; 0: no generator.
    piece_min_queries: int = MIN_PIECES
    # Key options for titles and names (off for query logs): punctuation folded
    # ("sorcerer's" = "sorcerers"), and each key without its leading article also a prefix.
    fold_punctuation: bool = False
    leading_articles: bool = False


@dataclass
class _Merged:
    weight: float = 0.0
    displays: dict[str, float] = field(default_factory=dict)

    def display(self) -> str:
        """The most weighted way the text was written (ties: the later in sort order)."""
        return max(self.displays.items(), key=lambda kv: (kv[1], kv[0]))[0]


def merge_rows(rows: Iterable[Row], progress: Progress | None = None, *,
               fold: bool = False) -> tuple[dict[str, _Merged], dict[str, int]]:
    """Group rows by normalised key, summing weights; the most weighted display form wins."""
    merged: dict[str, _Merged] = {}
    counts = {"rows": 0, "empty": 0, "too_long": 0}
    for row in rows:
        counts["rows"] += 1
        if progress and counts["rows"] % 200_000 == 0:
            progress(f"read {counts['rows']:,} rows")
        key = normalize(row.text)
        if fold:
            key = fold_punctuation(key)
        if not key:
            counts["empty"] += 1
            continue
        shown = display_form(row.text)
        if len(shown) > MAX_ENTRY_CHARS:
            counts["too_long"] += 1
            continue
        m = merged.get(key)
        if m is None:
            m = merged[key] = _Merged()
        m.weight += row.weight
        m.displays[shown] = m.displays.get(shown, 0.0) + row.weight
    return merged, counts


def build_index(rows: Iterable[Row], out: Path, options: BuildOptions, source: Path,
                progress: Progress | None = stderr_progress) -> dict[str, Any]:
    started = time.time()
    merged, counts = merge_rows(rows, progress, fold=options.fold_punctuation)
    served = sorted(
        ((k, m) for k, m in merged.items() if m.weight >= options.min_count),
        key=lambda km: (-km[1].weight, len(km[0]), km[0]),
    )
    above_floor = len(served)
    policy = SuggestionPolicy.load(options.safety_allow)
    served, screened = screen(served, lambda km: km[1].display(), policy, options.on_blocked)
    if not served:
        raise DataError(f"{source}: no entry reaches --min-count {options.min_count:g}")
    if progress:
        progress(screened.summary())
        progress(f"{len(merged):,} distinct, {above_floor:,} at or above the floor, "
                 f"{len(served):,} served; indexing")
    with atomic_directory(out, kind=KIND,
                          protected=(source, options.docs, options.student_dir)) as tmp:
        displays = [m.display() for _, m in served]
        files = _write_lexical(tmp, served, displays, progress, options.leading_articles)
        generated = _write_generator(tmp, merged, policy, options, progress)
        files += generated[0]
        semantic = _write_semantic(tmp, displays, options, progress)
        manifest = {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "typeahead_version": __version__,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.time() - started, 3),
            "source": {"path": str(source), "sha256": sha256_file(source),
                       "bytes": source.stat().st_size},
            "options": {"text_col": options.text_col, "weight_col": options.weight_col,
                        "min_count": options.min_count, "format": options.fmt},
            "normalization": NORMALIZATION + (FOLD_TAG if options.fold_punctuation else ""),
            "leading_articles": options.leading_articles,
            "counts": {"rows": counts["rows"], "empty": counts["empty"],
                       "too_long": counts["too_long"],
                       "distinct": len(merged), "below_floor": len(merged) - above_floor,
                       "blocked": screened.removed,
                       "entries": len(served)},
            "files": describe_files(tmp, files),
            "semantic": semantic,
            "generated": generated[1],
            "safety": screened.manifest(policy),
        }
        write_manifest(tmp, manifest)
    if progress:
        progress(f"wrote {out} ({len(served):,} entries) in {time.time() - started:.1f}s")
    return manifest


def _write_lexical(tmp: Path, served: list[tuple[str, _Merged]], displays: list[str],
                   progress: Progress | None, articles: bool = False) -> list[Path]:
    keys = [k for k, _ in served]
    files = StringTable.write(displays, tmp / "display.bin", tmp / "display.off.npy")
    files += StringTable.write(keys, tmp / "keys.bin", tmp / "keys.off.npy")
    weights = np.array([m.weight for _, m in served], dtype=np.float64)
    np.save(tmp / "weights.npy", weights)
    np.save(tmp / "popularity.npy", popularity(weights))
    files += [tmp / "weights.npy", tmp / "popularity.npy"]
    ids = np.arange(len(keys), dtype=np.int32)
    raw = [k.encode("utf-8") for k in keys]
    if articles:
        extra = [(k.split(" ", 1)[1], i) for i, k in enumerate(keys)
                 if k.split(" ", 1)[0] in ARTICLES and " " in k]
        raw += [k.encode("utf-8") for k, _ in extra]
        ids = np.concatenate([ids, np.array([i for _, i in extra], dtype=np.int32)])
    files += build_prefix_array(raw, ids).save(tmp, "prefix")
    if progress:
        progress("prefix array done; word index")
    suffixes, owners = word_suffixes(keys)
    files += build_prefix_array(suffixes, np.array(owners, dtype=np.int32)).save(tmp, "words")
    files += FuzzyVocab.build((w for k in keys for w in k.split(" ")), tmp)
    return files


def _write_generator(tmp: Path, merged: dict[str, _Merged], policy: SuggestionPolicy,
                     options: BuildOptions, progress: Progress | None
                     ) -> tuple[list[Path], dict[str, Any] | None]:
    """Pieces are counted over every distinct query of the corpus, below the floor included:
    a word or word pair in at least ``piece_min_queries`` distinct queries belongs to no one
    query, while the served dictionary alone holds too few pairs to compose anything."""
    if options.piece_min_queries <= 0:
        return [], None
    # A row with no weight is no query of this corpus (a log's other split, say).
    keys = [k for k, m in merged.items() if m.weight > 0]
    gen = build_generator(keys, [merged[k].weight for k in keys], options.piece_min_queries,
                          allowed=lambda text: policy.blocked(text) is None)
    if gen is None:  # no word is in enough queries: nothing to generate from
        return [], None
    if progress:
        progress(f"generator: {len(gen):,} words, {len(gen.succ):,} word pairs")
    return gen.save(tmp), {"min_queries": options.piece_min_queries, "words": len(gen),
                           "pairs": len(gen.succ)}


def popularity(weights: np.ndarray) -> np.ndarray:
    """log1p(weight) scaled by the top entry's, kept below 1 so tiers never overlap."""
    top = max(float(weights.max()) if len(weights) else 1.0, 1e-9)
    return (np.log1p(weights) / (np.log1p(top) * 1.0001)).astype(np.float32)


def _write_semantic(tmp: Path, displays: list[str], options: BuildOptions,
                    progress: Progress | None) -> dict[str, Any] | None:
    vectors = options.vectors
    if vectors is None:
        # A student named explicitly must load (build_semantic says why it does not); only
        # the packaged default may be absent.
        vectors = options.student_dir is not None or _student_available(None)
        if not vectors and progress:
            progress("no student model found: building without entry vectors")
    if not vectors and options.docs is None:
        return None
    from typeahead.suggest.semantic import build_semantic

    if progress:
        progress("embedding entries and documents with the student")
    return build_semantic(tmp, displays, docs=options.docs, docs_id_field=options.docs_id_field,
                          student_dir=options.student_dir, factory=options.vector_factory,
                          vectors=vectors)


def _student_available(student_dir: Path | None) -> bool:
    try:
        from typeahead.embed import Student

        Student.load(student_dir)
    except (ImportError, ArtifactError):
        return False
    return True


def word_suffixes(keys: list[str]) -> tuple[list[bytes], list[int]]:
    suffixes: list[bytes] = []
    owners: list[int] = []
    for entry, key in enumerate(keys):
        raw = key.encode("utf-8")
        start = 0
        while True:
            suffixes.append(raw[start:])
            owners.append(entry)
            nxt = raw.find(b" ", start)
            if nxt < 0:
                break
            start = nxt + 1
    return suffixes, owners


@dataclass(frozen=True)
class LoadedIndex:
    path: Path
    manifest: dict[str, Any]
    lexical: LexicalEngine
    load_seconds: float
    semantic: SemanticLayer | None = None
    generator: Completer | None = None  # the n-gram Generator unless a service swaps it

    @property
    def entries(self) -> int:
        return len(self.lexical)


def load_index(path: Path, *, verify: bool = True, semantic: bool = True,
               student_dir: Path | None = None) -> LoadedIndex:
    """Open an index directory, checking its manifest; raises ArtifactError on any problem.

    ``semantic=False`` skips the vectors and documents (and so the student model)."""
    started = time.perf_counter()
    manifest = read_manifest(path, kind=KIND, version=FORMAT_VERSION)
    verify_files(path, manifest, checksums=verify)
    try:
        data = LexicalData(
            display=StringTable(path / "display.bin", path / "display.off.npy"),
            keys=StringTable(path / "keys.bin", path / "keys.off.npy"),
            weights=load_array(path / "weights.npy"),
            popularity=load_array(path / "popularity.npy"),
            prefixes=PrefixArray.load(path, "prefix"),
            words=PrefixArray.load(path, "words"),
            vocab=FuzzyVocab.load(path),
            fold=str(manifest.get("normalization", "")).endswith(FOLD_TAG),
            articles=manifest.get("leading_articles") is True,
        )
        _check_shapes(path, manifest, data)
        _check_arrays(data)
        generator = Generator.load(path) if manifest.get("generated") else None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        # Checksums only prove the files are the ones the manifest lists; a crafted or
        # mis-built index still must not reach a keystroke.
        raise ArtifactError(f"{path}: cannot load index data: {exc}") from exc
    layer = load_semantic(path, len(data.display), student_dir, verify=verify) \
        if semantic else None
    return LoadedIndex(path, manifest, LexicalEngine(data), time.perf_counter() - started, layer,
                       generator)


def _check_shapes(path: Path, manifest: dict[str, Any], data: LexicalData) -> None:
    counts = manifest.get("counts")
    n = counts.get("entries") if isinstance(counts, dict) else None
    if type(n) is not int or n < 0:
        raise ArtifactError(f"{path}: the manifest's counts.entries must be a whole number, "
                            f"got {n!r}")
    sizes = {len(data.display), len(data.keys), len(data.weights), len(data.popularity)}
    if sizes != {n}:
        raise ArtifactError(f"{path}: data files disagree with the manifest's entry count {n}")


def _check_arrays(data: LexicalData) -> None:
    """Types and ranges of every array a lookup indexes with (ValueError when one is off)."""
    n = len(data.display)
    data.display.check()
    data.keys.check()
    _want(data.weights, "f8", "weights")
    _want(data.popularity, "f4", "popularity")
    for name, arr in (("prefix", data.prefixes), ("words", data.words)):
        _want(arr.keys, "S32", f"{name}.keys")
        _want(arr.ids, "i4", f"{name}.ids", below=n, size=len(arr.keys))
        _want(arr.topk, "i4", f"{name}.topk", below=n)
        _want(arr.topk_off, "i8", f"{name}.topk_off", below=len(arr.topk) + 1,
              size=len(arr.node_index) + 1)
    vocab = data.vocab
    vocab.prefixes.check()
    _want(vocab.hashes, "u8", "fuzzy.hashes")
    _want(vocab.pids, "i4", "fuzzy.pids", below=len(vocab.prefixes), size=len(vocab.hashes))


def _want(arr: Any, dtype: str, name: str, *, below: int | None = None,
          size: int | None = None) -> None:
    if arr.ndim != 1 or arr.dtype.str[1:] != dtype:
        raise ValueError(f"{name} must be a 1-d {dtype} array, got {arr.ndim}-d {arr.dtype}")
    if size is not None and len(arr) != size:
        raise ValueError(f"{name} has {len(arr)} items, expected {size}")
    if below is not None and len(arr) and (int(arr.min()) < 0 or int(arr.max()) >= below):
        raise ValueError(f"{name} holds ids outside 0..{below - 1}")
