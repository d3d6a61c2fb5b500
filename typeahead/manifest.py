"""Manifests for built artefacts: what built them, from what, and checksums of every file.

Loading an artefact reads its manifest first and refuses anything missing, corrupt or built
by an incompatible format version, with one line naming the problem.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from typeahead.errors import ArtifactError, ConfigError

MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_files(directory: Path, paths: list[Path]) -> dict[str, dict[str, Any]]:
    return {
        str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(paths)
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    path = directory / MANIFEST
    path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return path


def read_manifest(directory: Path, *, kind: str, version: int) -> dict[str, Any]:
    """Read and check ``directory/manifest.json`` for an artefact of ``kind`` and ``version``."""
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such {kind} directory")
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{directory}: not a {kind}: {MANIFEST} is missing")
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: corrupt manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != kind:
        raise ArtifactError(f"{path}: not a {kind} manifest (kind={_get(manifest, 'kind')!r})")
    found = manifest.get("format_version")
    if found != version:
        raise ArtifactError(
            f"{directory}: {kind} format version {found!r} is not supported "
            f"(this build reads version {version}); rebuild it"
        )
    return manifest


def check_model(raw: dict[str, Any], *, what: str, kind: str, version: int,
                normalization: str, path: Path, command: str) -> None:
    """What a completion model file (the ranker, the character language model) must match:
    its kind, its format version and the key normalisation of the index it serves."""
    if raw.get("kind") != kind:
        raise ArtifactError(f"{what} {path}: not a {what} (kind {raw.get('kind')!r})")
    if raw.get("format_version") != version:
        raise ArtifactError(f"{what} {path}: format version {raw.get('format_version')!r}, "
                            f"this release reads {version}; train it again with "
                            f"typeahead {command}")
    if raw.get("normalization") != normalization:
        raise ArtifactError(f"{what} {path}: trained for keys normalised as "
                            f"{raw.get('normalization')!r}, the index's are {normalization!r}")


def read_format_manifest(root: Path, fmt: str, what: str) -> dict[str, Any]:
    """Read ``root/manifest.json`` of an artefact whose manifest names its ``format`` string
    (student, vector index, documents index); ``what`` names the artefact in errors."""
    path = root / MANIFEST
    try:
        manifest = orjson.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise ArtifactError(f"no {what} at {root}: {MANIFEST} is missing") from exc
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ArtifactError(f"{what} manifest {path} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise ArtifactError(f"{path} is not a {fmt} manifest")
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any], *, checksums: bool) -> None:
    """Every listed file must exist with its recorded size (and checksum when asked)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{directory}: manifest lists no data files")
    for name, meta in files.items():
        _check_entry(directory, name, meta)
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{directory}: data file {name} is missing")
        if path.stat().st_size != meta.get("bytes"):
            raise ArtifactError(f"{directory}: data file {name} has the wrong size (truncated?)")
        if checksums and sha256_file(path) != meta.get("sha256"):
            raise ArtifactError(f"{directory}: data file {name} is corrupt (checksum mismatch)")


def _check_entry(directory: Path, name: str, meta: Any) -> None:
    """A crafted manifest must fail here with its own message, not as a TypeError later."""
    if not isinstance(meta, dict) or type(meta.get("bytes")) is not int or not isinstance(
            meta.get("sha256"), str):
        raise ArtifactError(f"{directory}: manifest entry for {name!r} must be an object "
                            'with "bytes" (a whole number) and "sha256" (a string)')
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ArtifactError(f"{directory}: manifest names a file outside the index: {name!r}")


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def check_replaceable(target: Path, *, kind: str, protected: Iterable[Path | None] = ()) -> None:
    """Refuse an output directory whose replacement could destroy anything but an earlier
    artefact of ``kind``.

    ``target`` may be missing, an empty directory, or a directory whose manifest says it is
    a ``kind``; it must not be or hold the working directory or any ``protected`` path (the
    inputs being read). Raises ConfigError naming the problem; deletes nothing.
    """
    resolved = target.resolve()
    for path in (_cwd(), *protected):
        if path is not None and _within(path.resolve(), resolved):
            raise ConfigError(f"{target}: refusing to replace a directory that holds {path}")
    if not resolved.exists():
        return
    if not resolved.is_dir():
        raise ConfigError(f"{target}: exists and is not a directory; refusing to replace it")
    if next(resolved.iterdir(), None) is not None and not _is_kind(resolved, kind):
        raise ConfigError(f"{target}: exists, is not empty and is not a {kind} (its "
                          f"{MANIFEST} does not say so); refusing to replace it")


def _cwd() -> Path | None:
    try:
        return Path.cwd()
    except OSError:  # the working directory was deleted: nothing there to protect
        return None


def _within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _is_kind(directory: Path, kind: str) -> bool:
    try:
        manifest = orjson.loads((directory / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return _get(manifest, "kind") == kind


@contextmanager
def atomic_directory(target: Path, *, kind: str,
                     protected: Iterable[Path | None] = ()) -> Iterator[Path]:
    """Build into a temporary sibling and swap it in only on success.

    A failed build leaves whatever was at ``target`` untouched; a reader never sees a
    half-written directory. Only a missing or empty ``target``, or an earlier artefact of
    ``kind`` (``check_replaceable``), is ever replaced; anything else is refused before the
    build and checked again before the swap.
    """
    check_replaceable(target, kind=kind, protected=protected)
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    # mkdtemp makes the directory private (0700); the result is read by other users' processes
    # (a service account, a container), so give it the mode a plain mkdir would.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        yield tmp
        # The build took a while: whatever is at target now must still be replaceable.
        check_replaceable(target, kind=kind, protected=protected)
        _swap(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; the earlier directory there is deleted only once ``new`` is
    in its place, and put back if that fails."""
    if not target.exists():
        new.rename(target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
