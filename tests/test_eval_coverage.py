"""Partial and empty copies of the benchmarks: coverage in the JSON and the Markdown, refusal without
--allow-partial, and an error naming the folder searched when nothing is found."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eval_fixtures import (make_esc50, make_hmdb51, make_msrvtt, make_ucf101, make_youcook2,  # noqa: F401
                           single_thread, tiny_model)
from mmv.cli.main import main
from mmv.data.audio import MelConfig
from mmv.eval.datasets import (
    Coverage,
    PartialDatasetError,
    esc50,
    hmdb51_splits,
    msrvtt_1ka,
    ucf101_splits,
    voc2007,
    youcook2,
)
from mmv.preprocess import AudioPreprocess, VideoPreprocess

SPEC = VideoPreprocess(num_frames=8, fps=10, min_resize=32, crop=32)


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> Path:
    return make_ucf101(tmp_path_factory.mktemp("ucf_full"))


@pytest.fixture
def partial_ucf(ucf, tmp_path) -> Path:
    """9 of the 15 videos: no HandstandPushups at all, Basketball without its group 5."""
    root = tmp_path / "ucf"
    shutil.copytree(ucf, root)
    shutil.rmtree(root / "UCF-101" / "HandstandPushups")
    (root / "UCF-101" / "Basketball" / "v_Basketball_g05_c01.avi").unlink()
    return root


def _table_rows(markdown: str) -> list[str]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return lines[2:]  # after the header and the separator


def test_partial_ucf101_is_refused_before_any_feature(partial_ucf, tiny_model, monkeypatch):
    from mmv.eval import linear_probe
    from mmv.eval.linear_probe import VideoProbeConfig, evaluate_video_probe

    def no_features(*args, **kwargs):
        raise AssertionError("a refused copy must not cost a feature pass")

    monkeypatch.setattr(linear_probe, "embed_videos", no_features)
    with pytest.raises(PartialDatasetError) as info:
        evaluate_video_probe(tiny_model, partial_ucf, cfg=VideoProbeConfig(spec=SPEC), progress=False)
    message = str(info.value)
    # One line: the count, the first few missing files, where the full list goes, and the way out.
    assert "\n" not in message
    assert "6 of the 15 files listed in ucfTrainTestlist/{train,test}list01.txt" in message
    assert "e.g. Basketball/v_Basketball_g05_c01.avi, HandstandPushups/v_HandStandPushups_g01_c01.avi" in message
    assert "coverage.missing" in message and "--allow-partial" in message


def test_partial_ucf101_with_allow_partial_reports_coverage_everywhere(partial_ucf, tiny_model, tmp_path,
                                                                     single_thread):
    from mmv.eval.linear_probe import VideoProbeConfig, evaluate_video_probe, probe_table

    cfg = VideoProbeConfig(spec=SPEC, train_passes=1, test_windows=1, C=1.0)
    result = evaluate_video_probe(tiny_model, partial_ucf, splits=(1,), cfg=cfg, progress=False, allow_partial=True)
    json.dumps(result)
    coverage = result["coverage"]
    assert result["partial"] and (coverage["found"], coverage["listed"]) == (9, 15) and not coverage["complete"]
    assert coverage["classes"] == {"ApplyEyeMakeup": {"found": 5, "listed": 5},
                                   "Basketball": {"found": 4, "listed": 5},
                                   "HandstandPushups": {"found": 0, "listed": 5}}
    assert len(coverage["missing"]) == 6 and coverage["missing"][0].endswith("v_Basketball_g05_c01.avi")
    split = result["splits"]["split1"]
    # Split 1 tests on group 1: train groups 2-5 (7 of 12 found), test group 1 (2 of 3 found).
    assert split["coverage"]["parts"] == {"train": {"found": 7, "listed": 12}, "test": {"found": 2, "listed": 3}}
    # Chance is that of the 2 classes the classifier saw, not the 3 of the listing.
    assert result["chance"]["top1"] == pytest.approx(50.0) and split["num_classes_present"] == 2
    table = probe_table(result)
    assert "PARTIAL copy: 2 of 3 classes" in table.splitlines()[0]
    rows = _table_rows(table)
    # The split, the mean and chance: each ends with the coverage of what it was computed on, marked partial.
    assert len(rows) == 3 and all(row.endswith("| 9/15 partial |") for row in rows)
    assert "Basketball 4/5, HandstandPushups 0/5" in table and "**PARTIAL**" in table


def test_complete_ucf101_table_has_coverage_and_no_partial(ucf, tiny_model, single_thread):
    from mmv.eval.linear_probe import VideoProbeConfig, evaluate_video_probe, probe_table

    cfg = VideoProbeConfig(spec=SPEC, train_passes=1, test_windows=1, C=1.0)
    result = evaluate_video_probe(tiny_model, ucf, splits=(2,), cfg=cfg, progress=False)
    assert not result["partial"] and result["coverage"]["missing"] == []
    table = probe_table(result)
    assert "partial" not in table.lower() and "| 15/15 |" in table and "Every class complete." in table


def test_ucf101_without_any_video_names_the_folder_and_the_expected_files(ucf, tmp_path, capsys):
    root = tmp_path / "ucf"
    shutil.copytree(ucf / "ucfTrainTestlist", root / "ucfTrainTestlist")
    (root / "UCF-101").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        ucf101_splits(root)
    message = str(info.value)
    assert f"searched {root / 'UCF-101'} for ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi" in message
    assert "none of the 15 files" in message and "need at least two classes" not in message
    # From the command line: one line, not a traceback; a folder without the split lists names the layout.
    assert main(["eval", "ucf101", "--model", "mmv_tiny_s3dg", "--data", str(root), "--out",
                 str(tmp_path / "out"), "--no-progress"]) == 1
    assert f"searched {root / 'UCF-101'}" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "ucf101", "--model", "mmv_tiny_s3dg", "--data", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "ucfTrainTestlist/classInd.txt: split file not found" in err and "UCF-101/<Class>/v_*.avi" in err


def test_cli_refuses_a_partial_copy_without_the_flag(partial_ucf, tmp_path, capsys):
    assert main(["eval", "ucf101", "--model", "mmv_tiny_s3dg", "--data", str(partial_ucf), "--out",
                 str(tmp_path / "out"), "--no-progress"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # one line says it all
    assert last.startswith("mmv eval: error: ucf101: 6 of the 15 files") and "--allow-partial" in last
    assert not (tmp_path / "out" / "ucf101.json").exists()


def test_hmdb51_coverage_per_split_and_class(tmp_path):
    root = make_hmdb51(tmp_path / "hmdb")
    (root / "cartwheel" / "cartwheel_clip2.avi").unlink()  # split 1 test, split 2 train, split 3 train
    splits = hmdb51_splits(root)
    assert splits[0].coverage.by_part() == {"train": {"found": 4, "listed": 4}, "test": {"found": 1, "listed": 2}}
    assert splits[0].coverage.by_class() == {"brush_hair": {"found": 3, "listed": 3},
                                             "cartwheel": {"found": 2, "listed": 3}}
    assert Coverage.union(s.coverage for s in splits).as_dict()["missing"] == [
        str(root / "cartwheel" / "cartwheel_clip2.avi")]
    for clip in (root / "brush_hair").iterdir():
        clip.unlink()
    for clip in (root / "cartwheel").iterdir():
        clip.unlink()
    with pytest.raises(FileNotFoundError, match=f"searched {root} for brush_hair/brush_hair_clip"):
        hmdb51_splits(root)


def test_esc50_partial_copy(tmp_path, tiny_model, single_thread):
    from mmv.eval.audio_probe import AudioProbeConfig, evaluate_esc50
    from mmv.eval.linear_probe import probe_table

    root = make_esc50(tmp_path / "esc")
    (root / "audio" / "2-100-A-1.wav").unlink()  # fold 2, class 1
    data = esc50(root)
    assert data.coverage.by_part()["fold2"] == {"found": 2, "listed": 3}
    assert data.coverage.by_class()["class1"] == {"found": 4, "listed": 5}
    cfg = AudioProbeConfig(spec=AudioPreprocess(1.0, MelConfig(sample_rate=16000, n_fft=683, hop_length=341)),
                           windows=1, C=1.0)
    with pytest.raises(PartialDatasetError, match="1 of the 15 files listed in meta/esc50.csv"):
        evaluate_esc50(tiny_model, root, cfg=cfg, progress=False)
    result = evaluate_esc50(tiny_model, root, cfg=cfg, progress=False, allow_partial=True)
    assert result["partial"] and result["splits"]["fold2"]["coverage"] == {"found": 2, "listed": 3}
    rows = _table_rows(probe_table(result, "fold"))
    assert len(rows) == 7 and all("partial" in row for row in rows)
    assert "| 2/3 partial |" in rows[1] and "| 14/15 partial |" in rows[-1]
    for wav in (root / "audio").iterdir():
        wav.unlink()
    with pytest.raises(FileNotFoundError, match=f"searched {root / 'audio'} for 1-0-A-0.wav"):
        esc50(root)


def test_msrvtt_partial_copy_and_empty_copy(tmp_path, tiny_model, single_thread):
    from mmv.eval.retrieval import RetrievalConfig, evaluate_msrvtt, retrieval_table

    root = make_msrvtt(tmp_path / "msrvtt", num_videos=3)
    with open(root / "MSRVTT_JSFUSION_test.csv", "a") as handle:
        handle.write("ret9,msr9,video9,word9\n")
    with pytest.raises(PartialDatasetError, match="1 of the 4 files listed in MSRVTT_JSFUSION_test.csv"):
        evaluate_msrvtt(tiny_model, root, None, directions=["audio->video"], progress=False)
    cfg = RetrievalConfig(spec=SPEC, windows=1, audio=AudioPreprocess(0.8, MelConfig(sample_rate=16000, n_fft=683,
                                                                                     hop_length=341)))
    result = evaluate_msrvtt(tiny_model, root, None, cfg=cfg, directions=["audio->video"], progress=False,
                             allow_partial=True)
    assert result["partial"] and (result["coverage"]["found"], result["coverage"]["listed"]) == (3, 4)
    table = retrieval_table(result)
    rows = _table_rows(table)
    assert len(rows) == 2 and all(row.endswith("| 3/4 partial |") for row in rows)
    assert "(PARTIAL copy)" in table.splitlines()[0]
    shutil.rmtree(root / "videos")
    with pytest.raises(FileNotFoundError, match=f"searched {root / 'videos' / 'all'} for video0.mp4"):
        msrvtt_1ka(root)


def test_youcook2_coverage_by_recipe_type(tmp_path):
    root = make_youcook2(tmp_path / "yc2")
    coverage = Coverage("youcook2", root, "")
    youcook2(root, "validation", coverage=coverage)
    assert coverage.by_class() == {"101": {"found": 2, "listed": 3}}  # 'gone' is annotated but not on disk
    assert coverage.missing == [str(root / "raw_videos" / "validation" / "101" / "gone.*")]


def test_voc2007_partial_and_empty_copies(tmp_path, tiny_model):
    from mmv.eval.images import evaluate_voc2007
    from test_eval_images import _make_voc

    root = _make_voc(tmp_path / "voc")
    images = root / "VOCdevkit" / "VOC2007" / "JPEGImages"
    (images / "000101.jpg").unlink()  # a test image showing the classes k with k % 3 == 2
    test = voc2007(root, "test")
    assert (test.coverage.found, test.coverage.listed) == (8, 9)
    assert test.coverage.by_class()["bird"] == {"found": 2, "listed": 3}  # bird is class 2
    assert test.coverage.by_class()["aeroplane"] == {"found": 3, "listed": 3}
    with pytest.raises(PartialDatasetError, match="1 of the 24 files listed"):
        evaluate_voc2007(tiny_model, root, variants=("video",), progress=False)
    for image in images.iterdir():
        image.unlink()
    with pytest.raises(FileNotFoundError, match=f"searched {images} for 000000.jpg"):
        voc2007(root, "trainval")
