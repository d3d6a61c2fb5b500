"""The GPU-free grounded summariser: extractive, cited, streamed.

It is the default backend when no LLM URL is set, so the product runs end to end on a laptop.
For a query and its top documents it scores every sentence by similarity to the query (student
embeddings, or a hashed bag of words when no student model is installed), picks the best ones
while skipping near-duplicates (maximal marginal relevance), puts them back in reading order
(document rank, then position) and streams them a few words at a time, each sentence followed
by its source's number, e.g. "[2]". Every word it outputs comes from a document, so it cannot
hallucinate; it can only pick badly.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import zlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from typeahead.prompt import Doc

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"\w+", re.UNICODE)
NO_DOCS = "No indexed document matches this query, so there is nothing to summarise."


class Embedder(Protocol):
    """What the summariser needs from the student model (``typeahead.student.Student``)."""

    @property
    def fingerprint(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class HashingEmbedder:
    """Hashed unigrams and bigrams, log term frequency, L2-normalised: a lexical fallback."""

    def __init__(self, dim: int = 1024) -> None:
        self.dim = dim

    @property
    def fingerprint(self) -> str:
        return f"hash{self.dim}-v1"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            grams = words + [a + " " + b for a, b in itertools.pairwise(words)]
            for gram in grams:
                out[row, zlib.crc32(gram.encode()) % self.dim] += 1.0
        np.log1p(out, out=out)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


def load_embedder() -> Embedder:
    """The packaged student model when it is installed, else the hashing fallback."""
    try:
        from typeahead.student import Student  # the student engineer's module
    except ImportError:
        return HashingEmbedder()
    try:
        return Student.load(None)
    except Exception:
        return HashingEmbedder()


@dataclass(frozen=True, slots=True)
class Sentence:
    doc: int  # rank of its document, 0-based
    pos: int  # position within the document
    text: str


def split_sentences(text: str, *, min_chars: int = 25, max_chars: int = 400) -> list[str]:
    parts = (p.strip() for p in _SENTENCE_END.split(" ".join(text.split())))
    return [p for p in parts if min_chars <= len(p) <= max_chars]


def candidates(docs: Sequence[Doc]) -> list[Sentence]:
    return [
        Sentence(d, i, s)
        for d, doc in enumerate(docs)
        for i, s in enumerate(split_sentences(doc.text))
    ]


def select(
    query_vec: np.ndarray, sent_vecs: np.ndarray, sents: Sequence[Sentence], *,
    max_sentences: int = 3, max_chars: int = 600, redundancy: float = 0.8, mmr: float = 0.7,
) -> list[int]:
    """Greedy maximal marginal relevance; near-duplicates (cosine > redundancy) are skipped."""
    # A small prior for higher-ranked documents and for lead sentences, which tend to define.
    prior = np.array([0.05 / (1 + s.doc) + (0.03 if s.pos == 0 else 0.0) for s in sents])
    relevance = sent_vecs @ query_vec + prior
    chosen: list[int] = []
    used = 0
    for _ in range(len(sents)):
        if len(chosen) >= max_sentences:
            break
        sim = sent_vecs @ sent_vecs[chosen].T if chosen else np.zeros((len(sents), 1))
        score = mmr * relevance - (1 - mmr) * sim.max(axis=1)
        score[chosen] = -np.inf
        score[(sim.max(axis=1) > redundancy)] = -np.inf
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            break
        chosen.append(best)
        used += len(sents[best].text)
        if used >= max_chars:
            break
    return sorted(chosen, key=lambda i: (sents[i].doc, sents[i].pos))


def pieces(text: str, words_per_piece: int = 4) -> list[str]:
    """Split text into streamable pieces that concatenate back to exactly ``text``."""
    words = text.split(" ")
    return [
        " ".join(words[i : i + words_per_piece]) + (" " if i + words_per_piece < len(words) else "")
        for i in range(0, len(words), words_per_piece)
    ]


def summarise(query: str, docs: Sequence[Doc], embedder: Embedder) -> str:
    """The whole extractive summary with citations (the streamed text, joined)."""
    sents = candidates(docs)
    if not sents:
        return NO_DOCS
    vecs = embedder.encode([query] + [s.text for s in sents]).astype(np.float32)
    order = select(vecs[0], vecs[1:], sents)
    return " ".join(f"{sents[i].text} [{sents[i].doc + 1}]" for i in order)


class ExtractiveBackend:
    """The ``Backend`` that needs no GPU and no network."""

    def __init__(self, embedder: Embedder | None = None, *, piece_delay_s: float = 0.0) -> None:
        self.embedder = embedder if embedder is not None else load_embedder()
        self.piece_delay_s = piece_delay_s

    @property
    def model_id(self) -> str:
        return f"extractive:{self.embedder.fingerprint}"

    async def generate(self, query: str, docs: Sequence[Doc]) -> AsyncGenerator[str, None]:
        text = summarise(query, docs, self.embedder)
        for piece in pieces(text):
            yield piece
            # Yield the loop between pieces so that listeners see a stream, not one block.
            await asyncio.sleep(self.piece_delay_s)

    async def close(self) -> None:
        return None
