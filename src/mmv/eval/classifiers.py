"""Linear classifiers on frozen features.

The paper's protocol (fact sheet §5.2; the released ``eval_ucf101.py`` and DMVR's ``linear_mmv_hmdb.py``) is
``StandardScaler`` followed by ``sklearn.svm.LinearSVC(C)``. :class:`LinearProbe` wraps exactly that. Two
alternatives exist for speed comparisons (``benchmarks/bench_eval.py``) and for users without the patience for
LinearSVC on very large feature sets: sklearn ``LogisticRegression`` and a softmax classifier trained in torch.

Averaging over test windows. Scaler and linear classifier are affine, so the mean of the per-window decision scores
equals the decision score of the mean feature. The official scripts average scores over the 10 test windows; we
average features, which gives the same numbers (checked in ``tests/test_eval_metrics.py``) with 10x less work.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from mmv.extras import require

logger = logging.getLogger(__name__)

ClassifierKind = Literal["svm", "logreg", "torch"]
CLASSIFIER_KINDS: tuple[str, ...] = ("svm", "logreg", "torch")

# Published SVM C values (fact sheet §5.2): UCF101 from the released script, HMDB51 from DMVR's example.
PUBLISHED_C = {
    "ucf101": {"s3dg": 1e-3, "tsm_resnet50": 1e-3, "tsm_resnet50x2": 1e-3, "default": 1e-3},
    "hmdb51": {"s3dg": 3e-4, "tsm_resnet50": 1e-4, "tsm_resnet50x2": 3e-4, "default": 3e-4},
}
C_GRID: tuple[float, ...] = (1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1, 1.0)


def published_c(dataset: str, backbone: str | None) -> float:
    """The paper's C for ``dataset`` ("ucf101"/"hmdb51") and a backbone name (matched by substring)."""
    table = PUBLISHED_C[dataset]
    name = (backbone or "").lower().replace("-", "_")
    for key in ("tsm_resnet50x2", "tsm_resnet50", "s3dg"):
        if key in name or key.replace("_", "") in name.replace("_", ""):
            return table[key]
    return table["default"]


@dataclass
class LinearProbe:
    """Standardise features, then fit a linear classifier; ``decision_function`` gives ``[N, C]`` scores.

    Attributes:
        kind: ``"svm"`` (LinearSVC, the paper's), ``"logreg"`` (sklearn LogisticRegression) or ``"torch"``
            (softmax regression, full-batch L-BFGS).
        C: inverse regularisation strength (sklearn convention: larger C, weaker regularisation).
        max_iter: iteration cap of the solver.
        seed: seed of the solver's randomness.
    """

    kind: ClassifierKind = "svm"
    C: float = 1e-3
    max_iter: int = 1000
    seed: int = 0
    fit_seconds: float = field(default=0.0, init=False)
    _mean: np.ndarray | None = field(default=None, init=False, repr=False)
    _scale: np.ndarray | None = field(default=None, init=False, repr=False)
    _weight: np.ndarray | None = field(default=None, init=False, repr=False)
    _bias: np.ndarray | None = field(default=None, init=False, repr=False)
    classes_: np.ndarray | None = field(default=None, init=False)

    def fit(self, features: np.ndarray, labels: np.ndarray) -> "LinearProbe":
        """Fits scaler and classifier on ``features [N, D]`` with integer ``labels [N]``."""
        if self.kind not in CLASSIFIER_KINDS:
            raise ValueError(f"classifier kind must be one of {CLASSIFIER_KINDS}, got {self.kind!r}")
        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels)
        if features.ndim != 2 or len(features) != len(labels):
            raise ValueError(f"features {features.shape} and labels {labels.shape} do not match")
        self.classes_ = np.unique(labels)
        if len(self.classes_) < 2:
            raise ValueError(f"need at least two classes to train a classifier, got {self.classes_.tolist()}")
        StandardScaler = require("sklearn.preprocessing", "eval", "the linear probe").StandardScaler

        start = time.perf_counter()
        # sklearn's scaler treats numerically constant features (e.g. ReLU units that are zero on every training
        # row up to rounding) as constant; dividing by their ~1e-17 spread would blow test noise up to huge values.
        scaler = StandardScaler().fit(features)
        self._mean, self._scale = scaler.mean_, scaler.scale_
        scaled = scaler.transform(features)
        fitter = {"svm": self._fit_svm, "logreg": self._fit_logreg, "torch": self._fit_torch}[self.kind]
        self._weight, self._bias = fitter(scaled, labels)
        self.fit_seconds = time.perf_counter() - start
        return self

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """``[N, num_classes]`` scores, columns ordered as ``classes_``."""
        if self._weight is None:
            raise RuntimeError("LinearProbe.decision_function called before fit")
        scaled = (np.asarray(features, dtype=np.float64) - self._mean) / self._scale
        return scaled @ self._weight.T + self._bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(features), axis=1)]

    def _fit_svm(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ConvergenceWarning = require("sklearn.exceptions", "eval", "the linear probe").ConvergenceWarning
        LinearSVC = require("sklearn.svm", "eval", "the linear probe").LinearSVC

        # NOTE: dual=True as in the released script (sklearn's default in 2020); recent sklearn's "auto" picks the
        # primal solver when rows outnumber features, which is 3x slower here for the same solution.
        svm = LinearSVC(C=self.C, dual=True, max_iter=self.max_iter, random_state=self.seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            svm.fit(x, y)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            logger.warning("LinearSVC (C=%g) did not converge in %d iterations", self.C, self.max_iter)
        return _as_multiclass(svm.coef_, svm.intercept_)

    def _fit_logreg(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        LogisticRegression = require("sklearn.linear_model", "eval", "the linear probe").LogisticRegression

        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings at small max_iter are expected in benchmarks
            clf.fit(x, y)
        return _as_multiclass(clf.coef_, clf.intercept_)

    def _fit_torch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return fit_softmax_torch(x, np.searchsorted(self.classes_, y), len(self.classes_), C=self.C,
                                 max_iter=self.max_iter, seed=self.seed)


def _as_multiclass(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sklearn stores a binary problem as one row (positive class); expand to one score column per class."""
    if coef.shape[0] == 1:
        coef = np.concatenate([-coef, coef]) / 2.0
        intercept = np.concatenate([-intercept, intercept]) / 2.0
    return coef, intercept


def fit_softmax_torch(
    x: np.ndarray, y: np.ndarray, num_classes: int, *, C: float, max_iter: int = 100, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression with L2 penalty ``1/(2C) |W|^2`` (sklearn's scaling), full-batch L-BFGS.

    The objective is ``sum_i CE_i + |W|^2 / (2C)``, divided by N so that the optimiser sees O(1) values.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    inputs = torch.as_tensor(x, dtype=torch.float32)
    targets = torch.as_tensor(y, dtype=torch.int64)
    weight = (0.01 * torch.randn(num_classes, inputs.shape[1], generator=gen)).requires_grad_()
    bias = torch.zeros(num_classes, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6)
    penalty = 1.0 / (2.0 * C * len(inputs))

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(inputs @ weight.T + bias, targets) + penalty * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach().double().numpy(), bias.detach().double().numpy()


def select_c(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    grid: Sequence[float] = C_GRID,
    kind: ClassifierKind = "svm",
    val_fraction: float = 0.2,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """Chooses C on a held-out part of the training set (never the test set).

    Args:
        features, labels: training features and labels.
        grid: candidate C values.
        kind: classifier kind.
        val_fraction: share of training *groups* held out.
        groups: ``[N]`` group id per row (e.g. the source file) so that windows of one file never straddle the
            train/validation boundary; default: each row its own group.
        seed: seed of the held-out draw.

    Returns:
        ``(best_C, {C: validation top-1 accuracy in percent})``; ties go to the smaller C (stronger regularisation).
    """
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    unique_groups = np.unique(groups)
    rng = np.random.default_rng(seed)
    held_out = rng.choice(unique_groups, size=max(1, int(round(val_fraction * len(unique_groups)))), replace=False)
    is_val = np.isin(groups, held_out)
    if len(np.unique(labels[~is_val])) < 2:
        raise ValueError("too few training samples to choose C on a held-out part; pass C explicitly")
    accuracy: dict[float, float] = {}
    for c in grid:
        probe = LinearProbe(kind=kind, C=c, seed=seed).fit(features[~is_val], labels[~is_val])
        accuracy[c] = float(100.0 * np.mean(probe.predict(features[is_val]) == labels[is_val]))
    best = max(sorted(grid), key=lambda c: accuracy[c])  # max() keeps the first (smallest) of equal scores
    logger.info("C selection on %d held-out rows: %s -> C=%g", int(is_val.sum()),
                ", ".join(f"{c:g}:{a:.1f}" for c, a in accuracy.items()), best)
    return best, accuracy
