"""Evaluation metrics: retrieval ranks (with explicit tie handling), recall@K, top-K accuracy, average precision.

All functions are plain numpy so they can be checked by hand on small matrices.

Tie handling in retrieval. A similarity matrix can hold exact ties (a collapsed model maps every input to the same
embedding; quantised or ReLU'd embeddings tie often). Sorting with ``argsort`` then breaks ties by index order,
which silently favours whichever item happens to come first. Here ties are resolved by an explicit rule:

* ``"pessimistic"`` (default): the correct item is ranked *after* every negative that scores the same. A model that
  gives every candidate the same score gets the worst rank, never a perfect one.
* ``"optimistic"``: ranked *before* every tied negative (an upper bound on quality).
* ``"average"``: the expected rank under uniformly random tie-breaking (may be fractional, e.g. 1.5).
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

TieMode = Literal["pessimistic", "optimistic", "average"]
TIE_MODES: tuple[str, ...] = ("pessimistic", "optimistic", "average")


def _positive_mask(positives: np.ndarray | Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """Turns an index per query (``[Nq]``) or a boolean mask (``[Nq, Nc]``) into a boolean mask."""
    positives = np.asarray(positives)
    if positives.ndim == 2:
        if positives.shape != shape:
            raise ValueError(f"positives mask has shape {positives.shape}, the similarity matrix {shape}")
        mask = positives.astype(bool)
    elif positives.ndim == 1:
        if len(positives) != shape[0]:
            raise ValueError(f"got {len(positives)} positive indices for {shape[0]} queries")
        if positives.size and (positives.min() < 0 or positives.max() >= shape[1]):
            raise ValueError(f"positive indices must lie in [0, {shape[1]}), got {positives.min()}..{positives.max()}")
        mask = np.zeros(shape, dtype=bool)
        mask[np.arange(shape[0]), positives.astype(np.int64)] = True
    else:
        raise ValueError(f"positives must be [Nq] indices or an [Nq, Nc] mask, got shape {positives.shape}")
    if not mask.any(axis=1).all():
        missing = np.flatnonzero(~mask.any(axis=1))
        raise ValueError(f"queries {missing[:10].tolist()} have no positive candidate")
    return mask


def retrieval_ranks(
    similarity: np.ndarray, positives: np.ndarray | Sequence[int], ties: TieMode = "pessimistic", atol: float = 0.0
) -> np.ndarray:
    """1-based rank of the best-scoring correct candidate for each query.

    Only negatives push a query's rank down: with several correct candidates (a mask), the rank is that of the
    highest-scoring one among the negatives.

    Args:
        similarity: ``[Nq, Nc]`` scores, higher is more similar.
        positives: the correct candidate per query as ``[Nq]`` column indices, or an ``[Nq, Nc]`` boolean mask.
        ties: how a negative scoring the same as the best positive counts (see module docstring).
        atol: scores within ``atol`` of the best positive count as ties (default: exact ties only).

    Returns:
        ``[Nq]`` float ranks (integers except for ``ties="average"``).
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be a 2-D [queries, candidates] matrix, got shape {similarity.shape}")
    if ties not in TIE_MODES:
        raise ValueError(f"ties must be one of {TIE_MODES}, got {ties!r}")
    mask = _positive_mask(positives, similarity.shape)
    best_positive = np.where(mask, similarity, -np.inf).max(axis=1, keepdims=True)  # [Nq, 1]
    negatives = ~mask
    greater = (negatives & (similarity > best_positive + atol)).sum(axis=1)
    tied = (negatives & (np.abs(similarity - best_positive) <= atol)).sum(axis=1)
    if ties == "optimistic":
        return 1.0 + greater
    if ties == "pessimistic":
        return 1.0 + greater + tied
    return 1.0 + greater + tied / 2.0


def retrieval_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (in percent), median rank and mean rank from 1-based ranks.

    Args:
        ranks: ``[Nq]`` ranks from :func:`retrieval_ranks`.
        ks: the K of each recall@K.

    Returns:
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "median_rank": ..., "mean_rank": ..., "num_queries": ...}``.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no queries to evaluate")
    out: dict[str, float] = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    out["num_queries"] = int(ranks.size)
    return out


def retrieval_chance(
    num_candidates: int, num_positives: int | Sequence[int] = 1, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Expected metrics of a uniformly random ranking.

    With P correct candidates among N, the best one lands in the top K with probability
    ``1 - C(N-P, K) / C(N, K)`` and has mean rank ``(N + 1) / (P + 1)``.

    Args:
        num_candidates: N.
        num_positives: P, one value for all queries or one per query.
        ks: the K of each recall@K.

    Returns:
        R@K (percent, averaged over queries), ``mean_rank`` (averaged) and ``median_rank`` (the median over
        queries of each query's median rank).
    """
    n = int(num_candidates)
    positives = np.atleast_1d(np.asarray(num_positives, dtype=np.int64))

    def p_within(k: int, p: int) -> float:
        # 1 - prod_{i<k} (n - p - i) / (n - i): the chance that none of the first k is correct.
        miss = np.prod([(n - p - i) / (n - i) for i in range(min(k, n))]) if n - p >= 1 else 0.0
        return float(1.0 - max(miss, 0.0))

    def median_rank(p: int) -> float:
        return float(next(r for r in range(1, n + 1) if p_within(r, p) >= 0.5))

    out: dict[str, float] = {f"R@{k}": 100.0 * float(np.mean([p_within(k, p) for p in positives])) for k in ks}
    out["median_rank"] = float(np.median([median_rank(p) for p in positives]))
    out["mean_rank"] = float(np.mean((n + 1) / (positives + 1)))
    return out


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-K accuracy in percent from class scores.

    A sample counts as correct at K when fewer than K classes score strictly higher than its true class, so a tie
    is resolved in the model's favour only if it fits within K (pessimistic for exact ties at the boundary would
    need the same care as retrieval; classifier scores are continuous and practically never tie).

    Args:
        scores: ``[N, C]`` class scores.
        labels: ``[N]`` integer class indices.
        ks: which K to report; K above C is clipped to C.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} do not match")
    true_score = scores[np.arange(len(labels)), labels][:, None]
    num_higher = (scores > true_score).sum(axis=1)
    return {f"top{k}": float(100.0 * np.mean(num_higher < min(k, scores.shape[1]))) for k in ks}


def average_precision(scores: np.ndarray, targets: np.ndarray, method: str = "area") -> float:
    """Average precision of one binary problem.

    Args:
        scores: ``[N]`` classifier scores.
        targets: ``[N]`` 1 for positive, 0 for negative (filter out "difficult" samples beforehand).
        method: ``"area"``: area under the interpolated precision–recall curve, summed at every recall change
            (the VOC 2010+ devkit rule); ``"11point"``: the mean over recall 0, 0.1, ..., 1 of the highest precision
            at that recall or above (the VOC 2007 devkit rule); ``"step"``: the precision at each distinct score
            threshold times the recall gained there, without interpolation (sklearn's ``average_precision_score``,
            which AudioSet's benchmarks use).

    Returns:
        AP in [0, 1]; NaN when there is no positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets).astype(bool)
    num_pos = int(targets.sum())
    if num_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = targets[order]
    if method == "step":
        # Tied scores form one threshold: the precision there counts all of them (the last index of each tie run).
        ends = np.append(np.flatnonzero(np.diff(scores[order])), len(order) - 1)
        true_pos = np.cumsum(hits)[ends]
        recall = true_pos / num_pos
        return float(np.sum(np.diff(recall, prepend=0.0) * true_pos / (ends + 1)))
    true_pos = np.cumsum(hits)
    false_pos = np.cumsum(~hits)
    recall = true_pos / num_pos
    precision = true_pos / np.maximum(true_pos + false_pos, np.finfo(np.float64).eps)
    if method == "11point":
        points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0.0, 1.0, 11)]
        return float(np.mean(points))
    if method != "area":
        raise ValueError(f"method must be 'area', '11point' or 'step', got {method!r}")
    # Interpolate: precision at recall r is the best precision at any recall >= r (devkit's VOCap).
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[changes] - mrec[changes - 1]) * mpre[changes]))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Multi-label mAP as AudioSet's benchmarks compute it: the mean over classes of the non-interpolated AP
    (``average_precision(..., method="step")``, sklearn's), leaving out the classes without a positive example.

    Args:
        scores: ``[N, C]`` class scores.
        targets: ``[N, C]`` 1 where the example has the class, 0 otherwise.

    Returns:
        ``(mAP in [0, 1], [C] AP per class, NaN for a class without positives)``.
    """
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must be the same [N, C] shape")
    per_class = np.array([average_precision(scores[:, c], targets[:, c], method="step")
                          for c in range(scores.shape[1])])
    present = ~np.isnan(per_class)
    if not present.any():
        raise ValueError("no class has a positive example")
    return float(per_class[present].mean()), per_class


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation, for reporting a metric over splits or folds."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())
