"""Answers to held-out keystrokes, byte for byte: record them, or check them against a record.

    .venv/bin/python bench/check_answers.py --out before.answers [--index /tmp/idx18]
    .venv/bin/python bench/check_answers.py --compare before.answers [--index /tmp/idx18]

The served index is loaded in process the way ``typeahead serve`` loads it (settings from the
environment, the semantic layer, the intent model, the suggestion policy) and asked for every
keystroke of held-out AOL queries: those typed by the held-out users (log rows 800,001+, the
split ``typeahead eval qac`` scores), a fixed sample of them, each typed from its first
character. Each answer is the ``GET /v1/suggest`` body with ``took_us`` set to 0.

The index directory is copied first (``make index`` builds the source when it is missing), so
that a rebuild of ``indexes/aol`` between two runs cannot change the answers. The record's first
line names the suggestion policy's fingerprint: a change of the lists in
``typeahead/safety/lists`` changes the answers to explicit inputs, and ``--compare`` says so.
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import AOL, ROOT, print_table
from typeahead.http.app import load_service, suggest_body
from typeahead.settings import Settings

KEYSTROKES = 12_000
SEED = 18
SHOWN = 5  # differences printed
TOOK = re.compile(rb',"took_us":\d+}$')


def held_out_queries(path: Path) -> list[str]:
    """Queries the held-out users typed (a positive count in rows 800,001-999,999)."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            query, _, _, held_out = line.rstrip("\n").split("\t")
            if int(held_out) > 0:
                out.append(query)
    return out


def keystrokes(queries: list[str], n: int, seed: int = SEED) -> Iterator[str]:
    """Every prefix of a fixed random sample of ``queries``, until ``n`` keystrokes."""
    rng = random.Random(seed)
    order = rng.sample(queries, len(queries))
    sent = 0
    for query in order:
        for end in range(1, len(query) + 1):
            if sent == n:
                return
            yield query[:end]
            sent += 1


def served_copy(index: Path, copy: Path) -> Path:
    if not (copy / "manifest.json").exists():
        if not (index / "manifest.json").exists():
            subprocess.run(["make", "index", f"INDEX={index}"], cwd=ROOT, check=True)
        shutil.copytree(index, copy)
    return copy


def answers(index: Path, n: int) -> tuple[str, list[str], list[bytes]]:
    settings = Settings.from_env(index_dir=index)
    service = load_service(settings)
    fingerprint = service.policy.fingerprint if service.policy is not None else "none"
    inputs = list(keystrokes(held_out_queries(AOL), n))
    bodies = [TOOK.sub(b',"took_us":0}', suggest_body(service, q, settings.default_k))
              for q in inputs]
    return fingerprint, inputs, bodies


def write(path: Path, fingerprint: str, bodies: list[bytes]) -> None:
    with path.open("wb") as fh:
        fh.write(f"policy {fingerprint}\n".encode())
        for body in bodies:
            fh.write(body + b"\n")


def compare(path: Path, fingerprint: str, inputs: list[str], bodies: list[bytes]) -> int:
    lines = path.read_bytes().split(b"\n")
    recorded_policy = lines[0].decode().removeprefix("policy ")
    before = lines[1:len(bodies) + 1]
    different = [i for i, body in enumerate(bodies) if i >= len(before) or before[i] != body]
    print_table(f"Answers to held-out AOL keystrokes against {path}",
                ["keystrokes", "identical", "different", "policy before", "policy now"],
                [[len(bodies), len(bodies) - len(different), len(different), recorded_policy,
                  fingerprint]])
    for i in different[:SHOWN]:
        print(f"\n#{i} q={inputs[i]!r}\n  before: {before[i][:300]!r}\n  now:    "
              f"{bodies[i][:300]!r}" if i < len(before) else f"\n#{i}: not recorded")
    if different and recorded_policy != fingerprint:
        print("\nthe suggestion policy's lists differ between the runs: explicit inputs may "
              "answer differently")
    return 1 if different else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", type=Path, default=ROOT / "indexes" / "aol",
                   help="the served index, copied to --copy before use")
    p.add_argument("--copy", type=Path, default=Path("/tmp/idx18"))
    p.add_argument("--keystrokes", type=int, default=KEYSTROKES)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="record the answers in this file")
    group.add_argument("--compare", type=Path, help="check the answers against this record")
    args = p.parse_args(argv)
    fingerprint, inputs, bodies = answers(served_copy(args.index, args.copy), args.keystrokes)
    if args.out is not None:
        write(args.out, fingerprint, bodies)
        print(f"{len(bodies)} answers to {args.out} (policy {fingerprint})")
        return 0
    return compare(args.compare, fingerprint, inputs, bodies)


if __name__ == "__main__":
    sys.exit(main())
