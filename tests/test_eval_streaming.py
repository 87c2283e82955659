"""Classifiers trained on features streamed from disk: the same optimum as in memory, bounded reads, the store."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from eval_fixtures import single_thread  # noqa: F401
from mmv.eval.classifiers import fit_softmax_torch
from mmv.eval.streaming import (
    ChunkedRows,
    StreamingConfig,
    extract_store,
    fit_streaming,
    held_out_items,
    moments,
    predict_streaming,
    select_c_streaming,
)


def _blobs(n: int, dim: int, classes: int, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, size=(classes, dim))
    labels = rng.integers(classes, size=n)
    features = centres[labels] + spread * rng.normal(size=(n, dim)) + 5.0  # offset: standardisation matters
    return features.astype(np.float32), labels.astype(np.int64)


def test_moments_match_numpy_and_sklearn_scaler():
    from sklearn.preprocessing import StandardScaler

    x, y = _blobs(103, 7, 3)
    x[:, 2] = 4.0  # a constant feature gets scale 1, as sklearn's
    mean, scale, counts = moments(ChunkedRows.from_arrays(x, y, chunk_rows=10))
    reference = StandardScaler().fit(x.astype(np.float64))
    np.testing.assert_allclose(mean, reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(scale, reference.scale_, rtol=1e-9)
    assert counts == [10] * 10 + [3]


def test_lbfgs_over_chunks_reaches_the_in_memory_optimum(single_thread):
    x, y = _blobs(240, 12, 4, spread=3.0)  # overlapping classes: the penalty decides the optimum
    C = 0.05
    model = fit_streaming(ChunkedRows.from_arrays(x, y, chunk_rows=37), 4,
                          StreamingConfig(solver="lbfgs", C=C, max_iter=200))
    # Brute force: the whole standardised matrix in memory, the classifiers module's own solver.
    scaled = (x - x.mean(axis=0)) / x.std(axis=0)
    weight, bias = fit_softmax_torch(scaled, y, 4, C=C, max_iter=200)
    layer = model.net[-1]
    np.testing.assert_allclose(layer.weight.detach().numpy(), weight, atol=2e-4)
    np.testing.assert_allclose(layer.bias.detach().numpy(), bias, atol=2e-4)
    scores, targets, items = predict_streaming(model, ChunkedRows.from_arrays(x, y, chunk_rows=50))
    np.testing.assert_allclose(scores, scaled @ weight.T + bias, atol=2e-3)
    np.testing.assert_array_equal(targets, y)
    np.testing.assert_array_equal(items, np.arange(len(x)))


def test_adam_linear_and_mlp_learn_separable_classes(single_thread):
    x, y = _blobs(400, 16, 5, seed=1, spread=0.5)
    test_x, test_y = _blobs(100, 16, 5, seed=1, spread=0.5)  # same centres (same seed), new noise
    for hidden in ((), (32,)):
        model = fit_streaming(ChunkedRows.from_arrays(x, y, chunk_rows=64), 5,
                              StreamingConfig(hidden=hidden, epochs=15, batch_size=32, lr=1e-2, C=1.0, dropout=0.1))
        scores, _, _ = predict_streaming(model, ChunkedRows.from_arrays(test_x, test_y, chunk_rows=64))
        assert (scores.argmax(axis=1) == test_y).mean() > 0.95


def test_multilabel_mlp_learns_independent_labels(single_thread):
    rng = np.random.default_rng(0)
    targets = (rng.random((600, 6)) < 0.3).astype(np.uint8)
    features = (targets @ rng.normal(size=(6, 20)) + 0.3 * rng.normal(size=(600, 20))).astype(np.float32)
    model = fit_streaming(ChunkedRows.from_arrays(features[:500], targets[:500], chunk_rows=100), 6,
                          StreamingConfig(hidden=(32,), multilabel=True, epochs=20, batch_size=50, lr=1e-2))
    scores, _, _ = predict_streaming(model, ChunkedRows.from_arrays(features[500:], targets[500:], chunk_rows=100))
    assert ((scores > 0) == targets[500:].astype(bool)).mean() > 0.95


class _CountingRows(ChunkedRows):
    """Records how many feature rows each read materialises."""

    def __init__(self, features, targets, chunk_rows):
        base = ChunkedRows.from_arrays(features, targets, chunk_rows)
        super().__init__(base.loaders)
        self.sizes: list[int] = []

    def read(self, chunk):
        features, targets, items = super().read(chunk)
        self.sizes.append(len(features))
        return features, targets, items


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_solvers_read_one_chunk_at_a_time(solver, single_thread):
    x, y = _blobs(1000, 8, 3)
    rows = _CountingRows(x, y, chunk_rows=128)
    fit_streaming(rows, 3, StreamingConfig(solver=solver, epochs=2, C=1.0, max_iter=5))
    assert max(rows.sizes) <= 128
    # moments, then every epoch (adam) or every objective evaluation (lbfgs) reads each chunk once
    assert sum(rows.sizes) % len(x) == 0 and sum(rows.sizes) >= 2 * len(x)


def test_peak_memory_of_the_solver_does_not_grow_with_the_rows(tmp_path, single_thread):
    """Features on disk (memory-mapped): eight times the rows, about the same peak of Python/numpy allocations."""
    from mmv.eval.streaming import FeatureStore

    def peak(num_chunks: int) -> int:
        directory = tmp_path / f"store{num_chunks}"
        directory.mkdir()
        rng = np.random.default_rng(num_chunks)
        for chunk in range(num_chunks):
            np.save(directory / f"chunk-{chunk:05d}.npy", rng.normal(size=(2000, 256)).astype(np.float32))
            np.savez(directory / f"chunk-{chunk:05d}.meta.npz", items=np.arange(chunk * 2000, (chunk + 1) * 2000),
                     skipped_reason=np.array([], dtype=str), skipped_path=np.array([], dtype=str))
        labels = rng.integers(10, size=num_chunks * 2000)
        rows = FeatureStore(directory, num_chunks).rows(lambda items: labels[items])
        tracemalloc.start()
        fit_streaming(rows, 10, StreamingConfig(epochs=1, batch_size=500))
        _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return high

    small, large = peak(2), peak(16)  # 4 MB and 33 MB of float32 features
    assert large < 1.3 * small, (small, large)
    # The peak is about one chunk in float64 and its square (the moments pass): a fixed size, not the data's.
    chunk_float64 = 2000 * 256 * 8
    assert large < 2.5 * chunk_float64 < 16 * 2000 * 256 * 4, (large, chunk_float64)


def test_select_c_on_held_out_items(single_thread):
    x, y = _blobs(300, 10, 3, spread=2.0)
    held_out = held_out_items(len(x), 0.2, seed=0)
    assert held_out.sum() == 60
    rows = ChunkedRows.from_arrays(x, y, chunk_rows=64)
    best, accuracy = select_c_streaming(rows, 3, StreamingConfig(epochs=3), held_out, grid=(1e-4, 1.0))
    assert set(accuracy) == {1e-4, 1.0} and best in accuracy
    assert best == max(sorted(accuracy), key=lambda c: accuracy[c])


def test_extract_store_writes_chunks_and_resumes(tmp_path):
    from mmv.data.skips import SkipReport
    from mmv.eval.features import Embeddings

    calls = []

    def embed(items, chunk):
        calls.append(chunk)
        features = [None if item == "bad" else np.full((2, 3), float(item)) for item in items]
        skipped = SkipReport()
        for item in items:
            if item == "bad":
                skipped.add("decode_error", f"/data/{item}")
        return Embeddings(features, [[] for _ in items], skipped)

    items = ["1", "2", "bad", "4", "5"]
    store = extract_store(tmp_path / "store", items, embed, chunk_items=2, progress=False)
    assert calls == [0, 1, 2] and store.num_chunks == 3 and store.skipped.total == 1
    np.testing.assert_array_equal(store.items(), [0, 1, 3, 4])
    features, chunk_items = store.read(1)
    np.testing.assert_array_equal(features, [[4, 4, 4]]) and np.testing.assert_array_equal(chunk_items, [3])
    # A second run finds every chunk on disk; a lost chunk is recomputed alone.
    (tmp_path / "store" / "chunk-00001.meta.npz").unlink()
    again = extract_store(tmp_path / "store", items, embed, chunk_items=2, progress=False)
    assert calls == [0, 1, 2, 1] and again.skipped.total == 1
    rows = again.rows(lambda idx: np.asarray(idx) * 10)
    assert [r[1].tolist() for r in rows] == [[0, 10], [30], [40]]
