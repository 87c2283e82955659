"""Metrics against hand-computed values: retrieval ranks with ties, recall@K, top-K, AP, linear probes."""
from __future__ import annotations

import numpy as np
import pytest

from eval_fixtures import single_thread  # noqa: F401
from mmv.eval.classifiers import LinearProbe, published_c, select_c
from mmv.eval.metrics import (
    average_precision,
    retrieval_chance,
    retrieval_metrics,
    retrieval_ranks,
    topk_accuracy,
)

# 4 queries x 5 candidates; the correct candidate of query i is column i.
#   q0: gt 0.9, nothing higher                           -> rank 1 in every mode
#   q1: gt 0.5, one higher (0.7), two tied (0.5, 0.5)    -> optimistic 2, pessimistic 4, average 3
#   q2: gt 0.1, four higher                              -> rank 5
#   q3: all five equal                                   -> optimistic 1, pessimistic 5, average 3
SIM = np.array([
    [0.9, 0.1, 0.2, 0.3, 0.4],
    [0.7, 0.5, 0.5, 0.5, 0.0],
    [0.3, 0.4, 0.1, 0.2, 0.5],
    [0.2, 0.2, 0.2, 0.2, 0.2],
])


@pytest.mark.parametrize("ties, expected", [
    ("optimistic", [1, 2, 5, 1]),
    ("pessimistic", [1, 4, 5, 5]),
    ("average", [1, 3, 5, 3]),
])
def test_ranks_with_ties_match_hand_computed(ties, expected):
    np.testing.assert_array_equal(retrieval_ranks(SIM, np.arange(4), ties=ties), expected)


def test_ranks_from_mask_use_best_positive_and_ignore_other_positives():
    mask = np.zeros_like(SIM, dtype=bool)
    mask[1, [1, 0]] = True  # q1 has two correct candidates: 0.7 (best) and 0.5
    mask[0, 0] = mask[2, 2] = mask[3, 3] = True
    ranks = retrieval_ranks(SIM, mask, ties="pessimistic")
    # q1: best positive 0.7, no negative >= 0.7 (the other positive 0.5 does not count) -> 1.
    np.testing.assert_array_equal(ranks, [1, 1, 5, 5])


def test_ranks_agree_with_argsort_without_ties():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(30, 40))
    gt = rng.integers(0, 40, size=30)
    order = np.argsort(-sim, axis=1)
    brute = np.array([np.flatnonzero(order[i] == gt[i])[0] + 1 for i in range(30)])
    for ties in ("optimistic", "pessimistic", "average"):
        np.testing.assert_array_equal(retrieval_ranks(sim, gt, ties=ties), brute)


def test_retrieval_metrics_hand_computed():
    ranks = np.array([1, 4, 5, 5, 12, 2])
    m = retrieval_metrics(ranks)
    assert m["R@1"] == pytest.approx(100 / 6)
    assert m["R@5"] == pytest.approx(500 / 6)
    assert m["R@10"] == pytest.approx(500 / 6)
    assert m["median_rank"] == 4.5
    assert m["mean_rank"] == pytest.approx(29 / 6)
    assert m["num_queries"] == 6
    chance = retrieval_chance(20)
    assert chance["R@1"] == pytest.approx(5.0) and chance["R@10"] == pytest.approx(50.0)
    assert chance["mean_rank"] == 10.5 and chance["median_rank"] == 10


def test_retrieval_chance_matches_simulation():
    # 12 candidates, 3 of them correct: P(top-1) = 3/12, P(top-5) = 1 - C(9,5)/C(12,5) = 1 - 126/792.
    chance = retrieval_chance(12, 3, ks=(1, 5))
    assert chance["R@1"] == pytest.approx(25.0)
    assert chance["R@5"] == pytest.approx(100 * (1 - 126 / 792))
    assert chance["mean_rank"] == pytest.approx(13 / 4)
    rng = np.random.default_rng(0)
    mask = np.zeros((20000, 12), dtype=bool)
    mask[:, :3] = True
    ranks = retrieval_ranks(rng.random((20000, 12)), mask)
    assert np.mean(ranks <= 5) * 100 == pytest.approx(chance["R@5"], abs=1.0)
    assert np.mean(ranks) == pytest.approx(chance["mean_rank"], abs=0.05)
    assert np.median(ranks) == chance["median_rank"]


def test_ranks_reject_bad_input():
    with pytest.raises(ValueError, match="positive indices"):
        retrieval_ranks(SIM, [0, 1, 2, 7])
    with pytest.raises(ValueError, match="ties"):
        retrieval_ranks(SIM, np.arange(4), ties="random")
    with pytest.raises(ValueError, match="no positive"):
        retrieval_ranks(SIM, np.zeros_like(SIM, dtype=bool))


def test_topk_accuracy_hand_computed():
    scores = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = np.array([2, 0, 0, 2])
    # top1: only sample 1 correct -> 25%; top2: samples 0 (2nd), 1, 2 (3rd? no: 0.2 is lowest) -> 0,1 -> 50%.
    acc = topk_accuracy(scores, labels, ks=(1, 2, 5))
    assert acc == {"top1": 25.0, "top2": 50.0, "top5": 100.0}


def test_average_precision_hand_computed():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    targets = np.array([1, 0, 1, 0, 0])
    # Hits at ranks 1 and 3: precision 1 at recall .5, 2/3 at recall 1.
    assert average_precision(scores, targets, "area") == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # 11-point: recall thresholds 0..0.5 (6 points) -> 1; 0.6..1.0 (5 points) -> 2/3.
    assert average_precision(scores, targets, "11point") == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert np.isnan(average_precision(scores, np.zeros(5), "area"))


def test_average_precision_matches_sklearn():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    scores, targets = rng.normal(size=200), rng.integers(0, 2, size=200)
    # sklearn's AP is the non-interpolated sum; ours interpolates, so ours is >= it and close on random data.
    ours, theirs = average_precision(scores, targets, "area"), average_precision_score(targets, scores)
    assert ours >= theirs - 1e-12 and ours - theirs < 0.05


def test_linear_probe_matches_sklearn_pipeline():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 16)) + np.repeat(np.eye(3, 16) * 3, 40, axis=0)
    y = np.repeat(np.arange(3), 40)
    ours = LinearProbe(kind="svm", C=0.01).fit(x, y)
    reference = make_pipeline(StandardScaler(), LinearSVC(C=0.01, dual=True, random_state=0)).fit(x, y)
    np.testing.assert_allclose(ours.decision_function(x), reference.decision_function(x), rtol=1e-6, atol=1e-8)


def test_mean_of_window_scores_equals_score_of_mean_feature():
    """Why averaging features over test windows reproduces the official score averaging."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 8)), np.repeat(np.arange(3), 20)
    probe = LinearProbe(C=0.1).fit(x, y)
    windows = rng.normal(size=(5, 10, 8))  # 5 videos x 10 windows
    mean_of_scores = probe.decision_function(windows.reshape(50, 8)).reshape(5, 10, 3).mean(axis=1)
    np.testing.assert_allclose(probe.decision_function(windows.mean(axis=1)), mean_of_scores, atol=1e-10)


@pytest.mark.parametrize("kind", ["logreg", "torch"])
def test_alternative_classifiers_separate_easy_classes(kind, single_thread):
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(4, 10)) * 4
    y = np.repeat(np.arange(4), 30)
    x = centres[y] + rng.normal(size=(120, 10))
    probe = LinearProbe(kind=kind, C=1.0, max_iter=200).fit(x, y)
    assert np.mean(probe.predict(x) == y) == 1.0
    assert probe.decision_function(x).shape == (120, 4)


def test_binary_probe_has_one_score_column_per_class():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    probe = LinearProbe(C=10.0).fit(x, np.array([0, 0, 1, 1]))
    scores = probe.decision_function(x)
    assert scores.shape == (4, 2)
    np.testing.assert_array_equal(scores.argmax(axis=1), [0, 0, 1, 1])


def test_published_c_and_selection():
    assert published_c("hmdb51", "tsm_resnet50") == 1e-4
    assert published_c("hmdb51", "tsm_resnet50x2") == 3e-4
    assert published_c("hmdb51", "s3dg") == 3e-4
    assert published_c("ucf101", "tsm_resnet50x2") == 1e-3
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(2), 50)
    x = np.c_[y * 2.0 + rng.normal(size=100) * 0.3, rng.normal(size=(100, 5))]
    best, scores = select_c(x, y, grid=(1e-3, 1.0))
    assert set(scores) == {1e-3, 1.0} and best in scores and max(scores.values()) == 100.0


def test_tie_tolerance_counts_near_equal_scores_as_ties():
    sim = np.array([[0.5, 0.5 + 1e-9, 0.4]])
    assert retrieval_ranks(sim, [0], ties="pessimistic")[0] == 2  # strictly higher without tolerance
    assert retrieval_ranks(sim, [0], ties="optimistic")[0] == 2
    assert retrieval_ranks(sim, [0], ties="optimistic", atol=1e-6)[0] == 1  # a tie with tolerance
    assert retrieval_ranks(sim, [0], ties="pessimistic", atol=1e-6)[0] == 2
