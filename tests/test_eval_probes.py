"""Video and audio linear probes end to end on tiny datasets in the official layouts (UCF101, HMDB51, ESC-50)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval_fixtures import make_esc50, make_hmdb51, make_ucf101, single_thread, tiny_model  # noqa: F401
from mmv.eval.datasets import PartialDatasetError, esc50, hmdb51_splits, ucf101_splits
from mmv.data.audio import MelConfig
from mmv.preprocess import AudioPreprocess, VideoPreprocess
from mmv.eval.linear_probe import VideoProbeConfig, evaluate_video_probe, fit_and_score, split_features

SPEC = VideoPreprocess(num_frames=8, fps=10, min_resize=32, crop=32)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe_data")
    return {"ucf": make_ucf101(root / "ucf"), "hmdb": make_hmdb51(root / "hmdb"), "esc": make_esc50(root / "esc")}


def test_ucf101_split_files_are_read_as_published(datasets):
    splits = ucf101_splits(datasets["ucf"])
    assert [s.name for s in splits] == ["split1", "split2", "split3"]
    assert splits[0].classes == ["ApplyEyeMakeup", "Basketball", "HandstandPushups"]
    # Split k tests on group k: 3 classes x 1 group in test, 4 groups in train.
    for k, split in enumerate(splits, start=1):
        assert len(split.train) == 12 and len(split.test) == 3
        assert all(f"_g{k:02d}_" in f.path.name for f in split.test)
        assert not any(f"_g{k:02d}_" in f.path.name for f in split.train)
    labels = {f.path.parent.name: f.label for f in splits[0].train}
    assert labels == {"ApplyEyeMakeup": 0, "Basketball": 1, "HandstandPushups": 2}  # classInd is 1-based


def test_hmdb51_split_codes_train_test_unused(datasets):
    splits = hmdb51_splits(datasets["hmdb"])
    assert splits[0].classes == ["brush_hair", "cartwheel"]
    split1 = splits[0]
    # Per class: clip0, clip1 train (1); clip2 test (2); clip3 unused (0).
    assert sorted(f.path.name for f in split1.train) == [
        "brush_hair_clip0.avi", "brush_hair_clip1.avi", "cartwheel_clip0.avi", "cartwheel_clip1.avi"]
    assert sorted(f.path.name for f in split1.test) == ["brush_hair_clip2.avi", "cartwheel_clip2.avi"]
    assert sorted(f.path.name for f in splits[1].test) == ["brush_hair_clip3.avi", "cartwheel_clip3.avi"]


def test_video_probe_end_to_end_ucf101(datasets, tiny_model, tmp_path, single_thread):
    cfg = VideoProbeConfig(spec=SPEC, train_passes=2, test_windows=3, C=1.0)
    result = evaluate_video_probe(tiny_model, datasets["ucf"], cfg=cfg, cache_dir=tmp_path / "cache", progress=False)
    assert result["dataset"] == "ucf101" and set(result["splits"]) == {"split1", "split2", "split3"}
    for split in result["splits"].values():
        # Colour per class: any network separates the classes, so every test video is right.
        assert split["top1"] == 100.0 and split["top5"] == 100.0
        assert split["num_train_rows"] == 2 * 12 and split["num_test"] == 3
    assert result["mean"]["top1"] == 100.0 and result["chance"]["top1"] == pytest.approx(100 / 3)
    json.dumps(result)  # the report is JSON-serialisable


def test_video_probe_accuracy_matches_sklearn_pipeline_and_cache(datasets, tiny_model, tmp_path, monkeypatch,
                                                                 single_thread):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from mmv.eval import linear_probe
    from mmv.eval.io import FeatureCache, model_checksum

    split = hmdb51_splits(datasets["hmdb"])[0]
    cfg = VideoProbeConfig(spec=SPEC, train_passes=3, test_windows=2, C=0.01)
    cache = FeatureCache(tmp_path, model_checksum(tiny_model))
    train_x, train_y, test_x, test_y, skipped = split_features(tiny_model, split, cfg, cache, progress=False)
    assert train_x.shape[0] == 3 * 4 and test_x.shape[0] == 2 and skipped.total == 0
    np.testing.assert_array_equal(train_y, np.tile([0, 0, 1, 1], 3))
    # Augmented passes differ (random windows and crops), the seed makes them reproducible.
    assert not np.allclose(train_x[:4], train_x[4:8])
    ours = fit_and_score(train_x, train_y, test_x, test_y, C=0.01)
    reference = make_pipeline(StandardScaler(), LinearSVC(C=0.01, dual=True, random_state=0)).fit(train_x, train_y)
    assert ours["top1"] == pytest.approx(100 * np.mean(reference.predict(test_x) == test_y))

    def no_decoding(*args, **kwargs):
        raise AssertionError("features should come from the cache")

    monkeypatch.setattr(linear_probe, "embed_videos", no_decoding)
    again = split_features(tiny_model, split, cfg, cache, progress=False)
    np.testing.assert_array_equal(again[0], train_x)
    np.testing.assert_array_equal(again[2], test_x)


def test_corrupt_video_is_skipped_counted_and_reported(datasets, tiny_model, tmp_path, single_thread):
    import shutil

    root = tmp_path / "ucf"
    shutil.copytree(datasets["ucf"], root)
    bad = root / "UCF-101" / "Basketball" / "v_Basketball_g02_c01.avi"
    bad.write_bytes(b"RIFF" + b"\x00" * 100)  # an AVI header and nothing else
    (root / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g03_c01.avi").unlink()  # listed but missing
    cfg = VideoProbeConfig(spec=SPEC, train_passes=1, test_windows=1, C=1.0)
    with pytest.raises(PartialDatasetError, match="1 of the 15 files listed"):  # a missing file: not a benchmark
        evaluate_video_probe(tiny_model, root, splits=(1,), cfg=cfg, progress=False)
    result = evaluate_video_probe(tiny_model, root, splits=(1,), cfg=cfg, progress=False, allow_partial=True)
    split = result["splits"]["split1"]
    assert split["num_train_rows"] == 10  # 12 listed, one corrupt, one missing
    assert split["skipped"]["total"] == 2
    assert any(str(bad) in files for files in split["skipped"]["files"].values())
    assert "listed in the split file but missing" in split["skipped"]["by_reason"]
    # The corrupt file is on disk: coverage counts files found, decoding failures are the skipped column.
    assert result["partial"] and (result["coverage"]["found"], result["coverage"]["listed"]) == (14, 15)


def test_esc50_five_fold_probe(datasets, tiny_model, tmp_path, single_thread):
    from mmv.eval.audio_probe import AudioProbeConfig, evaluate_esc50

    data = esc50(datasets["esc"])
    assert data.classes == ["class0", "class1", "class2"] and sorted(set(data.folds.tolist())) == [1, 2, 3, 4, 5]
    cfg = AudioProbeConfig(spec=AudioPreprocess(1.0, MelConfig(sample_rate=16000, n_fft=683, hop_length=341)), windows=3, C=1.0)
    result = evaluate_esc50(tiny_model, datasets["esc"], cfg=cfg, cache_dir=tmp_path, progress=False)
    assert set(result["splits"]) == {f"fold{k}" for k in range(1, 6)}
    for fold in result["splits"].values():
        # Each fold: 4 folds x 3 clips x 3 windows of training rows, 3 test clips, one tone per class.
        assert fold["num_train_rows"] == 36 and fold["num_test"] == 3
        assert fold["top1"] == 100.0
    assert result["mean"]["top1"] == 100.0 and result["chance"]["top1"] == pytest.approx(100 / 3)
