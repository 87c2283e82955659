"""Frozen features of very many clips on disk, and classifiers trained on them in bounded memory.

Kinetics-600 has about 390k training clips and AudioSet about 2M: their pooled features (390k x 2048 float32 is
3.2 GB, 2M x 2048 is 16 GB) do not belong in memory, and the in-memory cache of :mod:`mmv.eval.features` (one
``.npz`` per pass) would hold them there twice. Here:

* :func:`extract_store` embeds a list of items ``chunk_items`` at a time (through the same
  :func:`~mmv.eval.features.embed_videos` / :func:`~mmv.eval.features.embed_audio` as every protocol) and writes
  each chunk's pooled features to ``<cache>/<name>-<hash>/chunk-NNNNN.npy`` atomically, keyed like the feature cache
  (model checksum, every option, the file list). An interrupted extraction resumes at the first missing chunk.
* :class:`ChunkedRows` reads ``(features, targets, items)`` one chunk at a time (the ``.npy`` memory-mapped), so
  at most one chunk of rows is in memory, whatever the number of clips.
* :func:`fit_streaming` trains a softmax (single-label) or sigmoid (multi-label) classifier, linear or an MLP, on
  standardised features (mean and spread from a first streaming pass, as sklearn's ``StandardScaler``): ``adam``
  takes mini-batches from the chunks in a shuffled order; ``lbfgs`` (linear only) minimises the exact full-batch
  objective of :func:`mmv.eval.classifiers.fit_softmax_torch`, summing loss and gradient over the chunks in each
  evaluation.
* :func:`predict_streaming` scores rows chunk by chunk.

The L2 penalty follows sklearn's convention, as every classifier of :mod:`mmv.eval.classifiers`: the objective is
``mean loss + |W|^2 / (2 C N)`` over the weight matrices (biases unpenalised); ``C=None`` means no penalty.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from mmv.atomic import atomic_save_npy, atomic_save_npz
from mmv.data.skips import SkipReport

logger = logging.getLogger(__name__)

# A chunk: features [n, D] (float32, maybe memory-mapped), targets [n] or [n, C], items [n] (indices of the clips).
ChunkArrays = tuple[np.ndarray, np.ndarray, np.ndarray]


# ------------------------------------------------------------------------------------------------ the feature store
@dataclass
class FeatureStore:
    """Pooled features of a list of items, on disk in chunks.

    Attributes:
        directory: ``<cache>/<name>-<hash>``; ``chunk-NNNNN.npy`` holds float32 ``[n, D]`` features,
            ``chunk-NNNNN.meta.npz`` the item index of each row and the items of that chunk that were skipped.
        num_chunks: Chunks of the item list.
        skipped: The items that could not be embedded, by reason.
    """

    directory: Path
    num_chunks: int
    skipped: SkipReport = field(default_factory=SkipReport)

    def features_path(self, chunk: int) -> Path:
        return self.directory / f"chunk-{chunk:05d}.npy"

    def meta_path(self, chunk: int) -> Path:
        return self.directory / f"chunk-{chunk:05d}.meta.npz"

    def read(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """``(features [n, D] memory-mapped, items [n])`` of one chunk."""
        with np.load(self.meta_path(chunk), allow_pickle=False) as meta:
            items = meta["items"].astype(np.int64)
        return np.load(self.features_path(chunk), mmap_mode="r"), items

    def items(self) -> np.ndarray:
        """The item index of every stored row, in storage order (small: 8 bytes per row)."""
        parts = []
        for chunk in range(self.num_chunks):
            with np.load(self.meta_path(chunk), allow_pickle=False) as meta:
                parts.append(meta["items"].astype(np.int64))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def rows(self, targets_of: Callable[[np.ndarray], np.ndarray]) -> "ChunkedRows":
        """The stored rows with targets: ``targets_of(items)`` gives the targets of the rows of those items."""
        def loader(chunk: int) -> Callable[[], ChunkArrays]:
            def load() -> ChunkArrays:
                features, items = self.read(chunk)
                return features, targets_of(items), items
            return load

        return ChunkedRows([loader(chunk) for chunk in range(self.num_chunks)])


def extract_store(
    directory: Path,
    items: Sequence[Any],
    embed: Callable[[list[Any], int], Any],
    *,
    chunk_items: int = 4096,
    progress: bool = True,
    desc: str = "features",
) -> FeatureStore:
    """Embeds ``items`` ``chunk_items`` at a time into ``directory`` (chunks already there are kept: resume).

    Args:
        directory: The store's folder (its name should carry the hash of everything the features depend on).
        items: The items (files or :class:`~mmv.data.windows.MediaItem` segments).
        embed: ``embed(chunk_items, chunk_index)`` returns the :class:`~mmv.eval.features.Embeddings` of those
            items (``[windows, D]`` per item, None for a skipped one); the windows are averaged here.
        chunk_items: Items per chunk; bounds the memory of extraction and of every later read.
        progress: Log each chunk.
        desc: Name used in the log.
    """
    directory.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(directory, max(1, math.ceil(len(items) / chunk_items)) if len(items) else 0)
    for chunk in range(store.num_chunks):
        first = chunk * chunk_items
        if not store.meta_path(chunk).is_file():  # the meta file is written last: its presence marks a whole chunk
            start = time.perf_counter()
            embeddings = embed(list(items[first:first + chunk_items]), chunk)
            valid = embeddings.valid()
            width = next((f.shape[1] for f in embeddings.features if f is not None), 0)
            pooled = (np.stack([embeddings.features[i].mean(axis=0) for i in valid]) if len(valid)
                      else np.zeros((0, width))).astype(np.float32)
            atomic_save_npy(store.features_path(chunk), pooled)
            atomic_save_npz(store.meta_path(chunk), items=(valid + first).astype(np.int64),
                            skipped_reason=np.array([r for r, _ in embeddings.skipped.files.values()], dtype=str),
                            skipped_path=np.array(list(embeddings.skipped.files), dtype=str))
            if progress:
                logger.info("%s: chunk %d/%d (%d items) in %.1f s", desc, chunk + 1, store.num_chunks,
                            len(embeddings.features), time.perf_counter() - start)
        with np.load(store.meta_path(chunk), allow_pickle=False) as meta:
            for reason, path in zip(meta["skipped_reason"].tolist(), meta["skipped_path"].tolist()):
                store.skipped.add(reason, path)
    return store


# ------------------------------------------------------------------------------------------------ rows in chunks
class ChunkedRows:
    """``(features, targets, items)`` read one chunk at a time, optionally restricted to some items.

    Args:
        loaders: One callable per chunk returning its arrays (read when called, e.g. a memory-mapped file).
        keep: Boolean mask over item indices: only rows whose item is True are used (None: all rows).
    """

    def __init__(self, loaders: Sequence[Callable[[], ChunkArrays]], keep: np.ndarray | None = None) -> None:
        self.loaders = list(loaders)
        self.keep = keep

    @classmethod
    def from_arrays(cls, features: np.ndarray, targets: np.ndarray, chunk_rows: int) -> "ChunkedRows":
        """In-memory arrays cut into chunks of ``chunk_rows`` rows (item index = row index), for tests."""
        def loader(first: int) -> Callable[[], ChunkArrays]:
            rows = slice(first, first + chunk_rows)
            return lambda: (features[rows], targets[rows], np.arange(len(features))[rows])

        return cls([loader(first) for first in range(0, len(features), chunk_rows)])

    def __len__(self) -> int:
        return len(self.loaders)

    def read(self, chunk: int) -> ChunkArrays:
        """One chunk's rows (those of kept items)."""
        features, targets, items = self.loaders[chunk]()
        if self.keep is None:
            return features, targets, items
        mask = self.keep[items]
        return features[mask], targets[mask], items[mask]

    def restricted(self, keep: np.ndarray) -> "ChunkedRows":
        """The same chunks, with only the rows of the items where ``keep`` is True (combined with any mask)."""
        return ChunkedRows(self.loaders, keep if self.keep is None else keep & self.keep)

    def __iter__(self) -> Iterator[ChunkArrays]:
        for chunk in range(len(self)):
            yield self.read(chunk)


def moments(rows: ChunkedRows) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Mean and standard deviation per feature in one streaming pass (float64 sums), and the rows of each chunk.

    Features whose spread is numerically zero get a scale of 1, as sklearn's ``StandardScaler`` does, so that
    dividing by it never blows noise up.
    """
    counts, total, total_sq = [], None, None
    for features, _, _ in rows:
        x = np.asarray(features, dtype=np.float64)
        if total is None and len(x):
            total, total_sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        counts.append(len(x))
        if len(x):
            total += x.sum(axis=0)
            total_sq += (x * x).sum(axis=0)
    if not sum(counts):
        raise ValueError("no training rows")
    mean = total / sum(counts)
    variance = np.maximum(total_sq / sum(counts) - mean * mean, 0.0)
    scale = np.sqrt(variance)
    scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))] = 1.0
    return mean, scale, counts


# ------------------------------------------------------------------------------------------------ the classifier
@dataclass
class StreamingConfig:
    """A classifier trained on features streamed from disk.

    Attributes:
        hidden: Hidden layer widths (ReLU after each); ``()`` is a linear classifier.
        multilabel: Sigmoid outputs and binary cross-entropy per class (AudioSet) instead of softmax (one class).
        solver: ``adam`` (mini-batches over the chunks, in a shuffled order of chunks and of rows in each chunk,
            cosine learning-rate decay) or ``lbfgs`` (the exact full-batch objective, linear softmax only).
        epochs: Passes over the training rows (``adam``).
        batch_size: Rows per mini-batch (``adam``).
        lr: Adam's peak learning rate.
        C: Inverse L2 strength in sklearn's convention (``|W|^2 / (2 C N)``); None: no penalty.
        dropout: Dropout before each linear layer of an MLP (not before a linear classifier's only layer).
        max_iter: L-BFGS iterations.
        seed: Initial weights, chunk and row order, dropout.
        device: Where the classifier trains (features are read on the CPU and moved one mini-batch at a time).
    """

    hidden: tuple[int, ...] = ()
    multilabel: bool = False
    solver: str = "adam"
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    C: float | None = None
    dropout: float = 0.0
    max_iter: int = 100
    seed: int = 0
    device: str = "cpu"


class StreamingClassifier(torch.nn.Module):
    """Standardisation (fixed mean and scale), then a linear layer or an MLP."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, num_outputs: int, hidden: Sequence[int] = (),
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        layers: list[torch.nn.Module] = []
        width = len(mean)
        for size in hidden:
            layers += [torch.nn.Dropout(dropout)] if dropout else []
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            width = size
        layers += [torch.nn.Dropout(dropout)] if dropout and hidden else []
        layers.append(torch.nn.Linear(width, num_outputs))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, D] -> [B, num_outputs]
        return self.net((features - self.mean) / self.scale)

    def weights(self) -> list[torch.Tensor]:
        """The weight matrices (what the L2 penalty covers)."""
        return [m.weight for m in self.net if isinstance(m, torch.nn.Linear)]


def _loss_fn(multilabel: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if multilabel:
        return lambda logits, y: torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float(),
                                                                                     reduction="sum")
    return lambda logits, y: torch.nn.functional.cross_entropy(logits, y, reduction="sum")


def _init_linear(model: StreamingClassifier, seed: int) -> None:
    """A linear classifier starts as :func:`~mmv.eval.classifiers.fit_softmax_torch` does (0.01 N(0, 1), bias 0),
    so that the L-BFGS solver here can be compared with it step for step."""
    layer = model.net[-1]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(0.01 * torch.randn(layer.weight.shape, generator=generator))
        layer.bias.zero_()


def fit_streaming(rows: ChunkedRows, num_outputs: int, cfg: StreamingConfig) -> StreamingClassifier:
    """Trains a classifier on ``rows`` (targets: class indices ``[n]``, or multi-hot ``[n, C]`` when multilabel).

    Memory: one chunk of features plus the classifier, whatever the number of rows.
    """
    mean, scale, counts = moments(rows)
    count = sum(counts)
    torch.manual_seed(cfg.seed)
    model = StreamingClassifier(mean, scale, num_outputs, cfg.hidden, cfg.dropout)
    if not cfg.hidden:
        _init_linear(model, cfg.seed)
    model.to(cfg.device)
    penalty = 0.0 if cfg.C is None else 1.0 / (2.0 * cfg.C * count)
    start = time.perf_counter()
    if cfg.solver == "lbfgs":
        if cfg.hidden or cfg.multilabel:
            raise ValueError("the lbfgs solver fits a linear softmax classifier; use adam for an MLP or multi-label")
        _fit_lbfgs(model, rows, count, penalty, cfg)
    elif cfg.solver == "adam":
        _fit_adam(model, rows, counts, penalty, cfg)
    else:
        raise ValueError(f"solver must be 'adam' or 'lbfgs', got {cfg.solver!r}")
    logger.info("streaming %s classifier (%s) on %d rows: %.1f s", "MLP" if cfg.hidden else "linear", cfg.solver,
                count, time.perf_counter() - start)
    return model.eval()


def _fit_adam(model: StreamingClassifier, rows: ChunkedRows, counts: list[int], penalty: float,
              cfg: StreamingConfig) -> None:
    loss_fn = _loss_fn(cfg.multilabel)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    total = max(1, cfg.epochs * sum(math.ceil(n / cfg.batch_size) for n in counts))
    step = 0
    device = torch.device(cfg.device)
    model.train()
    for _ in range(cfg.epochs):
        for chunk in rng.permutation(len(rows)):
            features, targets, _ = rows.read(int(chunk))
            order = rng.permutation(len(features))
            for first in range(0, len(order), cfg.batch_size):
                # Sorted indices read the memory-mapped chunk front to back.
                batch = np.sort(order[first:first + cfg.batch_size])
                x = torch.as_tensor(np.asarray(features[batch], dtype=np.float32), device=device)
                y = torch.as_tensor(np.asarray(targets[batch]), device=device)
                for group in optimiser.param_groups:
                    group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
                loss = loss_fn(model(x), y) / len(x) + penalty * sum(w.pow(2).sum() for w in model.weights())
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                step += 1


def _fit_lbfgs(model: StreamingClassifier, rows: ChunkedRows, count: int, penalty: float,
               cfg: StreamingConfig) -> None:
    loss_fn = _loss_fn(False)
    layer = model.net[-1]
    device = torch.device(cfg.device)
    optimiser = torch.optim.LBFGS([layer.weight, layer.bias], lr=1.0, max_iter=cfg.max_iter, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6)

    def closure() -> torch.Tensor:
        # The full objective and its gradient, summed chunk by chunk: one chunk's graph at a time.
        optimiser.zero_grad()
        total = torch.zeros((), device=device)
        for features, targets, _ in rows:
            x = torch.as_tensor(np.array(features, dtype=np.float32), device=device)  # a writable copy
            loss = loss_fn(model(x), torch.as_tensor(np.asarray(targets), device=device)) / count
            loss.backward()
            total += loss.detach()
        reg = penalty * layer.weight.pow(2).sum()
        reg.backward()
        return total + reg.detach()

    optimiser.step(closure)


def predict_streaming(model: StreamingClassifier, rows: ChunkedRows, device: str = "cpu",
                      batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores [N, C] float32, targets, items)`` of every row, computed chunk by chunk."""
    model.eval()
    scores, targets, items = [], [], []
    with torch.inference_mode():
        for features, chunk_targets, chunk_items in rows:
            for first in range(0, len(features), batch_size):
                # A copy: a memory-mapped chunk is read-only, and torch wants writable memory.
                x = torch.as_tensor(np.array(features[first:first + batch_size], dtype=np.float32), device=device)
                scores.append(model(x).float().cpu().numpy())
            targets.append(np.asarray(chunk_targets))
            items.append(np.asarray(chunk_items))
    if not scores:
        raise ValueError("no rows to score")
    return np.concatenate(scores), np.concatenate(targets), np.concatenate(items)


def select_c_streaming(rows: ChunkedRows, num_outputs: int, cfg: StreamingConfig, held_out: np.ndarray,
                       grid: Sequence[float]) -> tuple[float, dict[float, float]]:
    """Chooses C on held-out training items (never the test set): a classifier per C on the other items, scored
    by top-1 accuracy (percent) on the held-out ones; ties go to the smaller C (stronger regularisation)."""
    import dataclasses

    from mmv.eval.metrics import topk_accuracy

    accuracy: dict[float, float] = {}
    for c in grid:
        model = fit_streaming(rows.restricted(~held_out), num_outputs, dataclasses.replace(cfg, C=c))
        scores, targets, _ = predict_streaming(model, rows.restricted(held_out), cfg.device)
        accuracy[c] = topk_accuracy(scores, targets, ks=(1,))["top1"]
    best = max(sorted(grid), key=lambda c: accuracy[c])
    logger.info("C selection on %d held-out items: %s -> C=%g", int(held_out.sum()),
                ", ".join(f"{c:g}:{a:.1f}" for c, a in accuracy.items()), best)
    return best, accuracy


def held_out_items(num_items: int, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask choosing ``fraction`` of the items (at least one), seeded."""
    mask = np.zeros(num_items, dtype=bool)
    count = max(1, int(round(fraction * num_items)))
    mask[np.random.default_rng(seed).choice(num_items, size=count, replace=False)] = True
    return mask
