"""AudioSet (MLP, mAP) and Kinetics-600 (streaming linear probe, top-1/top-5) end to end on tiny copies in the
official layouts, with the metrics checked against independent computations (sklearn's average precision,
brute-force top-k, the in-memory solver)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from eval_fixtures import class_frames, class_tone, single_thread, tiny_model, write_video, write_wav  # noqa: F401
from mmv.data.audio import MelConfig
from mmv.eval.datasets import PartialDatasetError
from mmv.preprocess import AudioPreprocess, VideoPreprocess

RATE = 16000
AUDIO_SPEC = AudioPreprocess(1.0, MelConfig(sample_rate=RATE, n_fft=683, hop_length=341))
VIDEO_SPEC = VideoPreprocess(num_frames=8, fps=10, min_resize=32, crop=32)

# ---------------------------------------------------------------------------------------------------- AudioSet
AUDIOSET_CLASSES = [("/m/09x0r", "Speech"), ("/m/0bt9lr", "Dog, bark"), ("/m/04rlf", "Music"),
                    ("/m/028v0c", "Silence")]
LABEL_SETS = [(0,), (1,), (2,), (0, 1), (1, 2), (0, 2)]


def _mixture(labels: tuple[int, ...], seconds: float, seed: int) -> np.ndarray:
    return sum(class_tone(label, seconds, RATE, seed=seed + label) for label in labels) / len(labels)


def _segments_csv(path: Path, rows: list[tuple[str, str, str, tuple[str, ...]]]) -> None:
    lines = ["# Segments csv created Sun Mar  5 10:54:31 2017",
             f"# num_ytids={len(rows)}, num_segs={len(rows)}, num_unique_labels=4, num_positive_labels=9",
             "# YTID, start_seconds, end_seconds, positive_labels"]
    lines += [f'{ytid}, {start}, {end}, "{",".join(mids)}"' for ytid, start, end, mids in rows]
    path.write_text("\n".join(lines) + "\n")


def make_audioset(root: Path) -> Path:
    """Official lists; balanced clips ``<YTID>_<start>.wav``, unbalanced ``<YTID>_<int start>.wav`` in a sub-folder,
    evaluation clips ``<YTID>_<start>.mp4`` (with sound) and one whole video ``<YTID>.mp4`` cut at the listed times;
    class 3 ("Silence") has training positives only; one listed evaluation clip is missing."""
    root.mkdir(parents=True)
    with open(root / "class_labels_indices.csv", "w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([i, mid, name] for i, (mid, name) in enumerate(AUDIOSET_CLASSES))
    mids = [mid for mid, _ in AUDIOSET_CLASSES]
    balanced, unbalanced, evaluation = [], [], []
    for i in range(12):
        labels = LABEL_SETS[i % 6] + ((3,) if i % 4 == 0 else ())
        ytid = f"bal-{i:02d}_x"  # ids may hold '-' and '_'
        write_wav(root / "clips" / f"{ytid}_30.000.wav", _mixture(labels, 2.0, i), RATE)
        balanced.append((ytid, "30.000", "32.000", tuple(mids[c] for c in labels)))
    for i in range(6):
        labels = LABEL_SETS[i]
        ytid = f"unb{i:02d}"
        write_wav(root / "unbalanced" / f"{ytid}_10.wav", _mixture(labels, 2.0, 50 + i), RATE)
        unbalanced.append((ytid, "10.000", "12.000", tuple(mids[c] for c in labels)))
    for i in range(6):
        labels = LABEL_SETS[i]
        ytid = f"ev{i:02d}"
        frames = class_frames(i % 3, i, num_frames=20)
        if i == 5:  # the whole YouTube video: sound of the labels only in [2, 4], silence elsewhere
            sound = np.concatenate([np.zeros(2 * RATE), _mixture(labels, 2.0, 90 + i), np.zeros(2 * RATE)])
            write_video(root / "eval" / f"{ytid}.mp4", class_frames(0, i, num_frames=60),
                        audio=sound.astype(np.float32), audio_rate=RATE)
            evaluation.append((ytid, "2.000", "4.000", tuple(mids[c] for c in labels)))
            continue
        write_video(root / "eval" / f"{ytid}_0.000.mp4", frames, audio=_mixture(labels, 2.0, 90 + i), audio_rate=RATE)
        evaluation.append((ytid, "0.000", "2.000", tuple(mids[c] for c in labels)))
    evaluation.append(("gone01", "0.000", "2.000", (mids[0],)))  # listed, never downloaded
    _segments_csv(root / "balanced_train_segments.csv", balanced)
    _segments_csv(root / "unbalanced_train_segments.csv", unbalanced)
    _segments_csv(root / "eval_segments.csv", evaluation)
    return root


@pytest.fixture(scope="module")
def audioset_root(tmp_path_factory) -> Path:
    return make_audioset(tmp_path_factory.mktemp("audioset") / "as")


def test_audioset_lists_are_read_as_published(audioset_root):
    from mmv.eval.audioset import audioset, read_class_labels, read_segments

    mids, names = read_class_labels(audioset_root / "class_labels_indices.csv")
    assert names[1] == "Dog, bark" and mids[3] == "/m/028v0c"
    segments = read_segments(audioset_root / "eval_segments.csv", {m: i for i, m in enumerate(mids)})
    assert len(segments) == 7 and segments[3].labels == (0, 1) and segments[3].start == "0.000"
    data = audioset(audioset_root)
    assert len(data.train.items) == 18 and len(data.eval.items) == 6
    assert (data.coverage.found, data.coverage.listed) == (24, 25)
    assert data.coverage.missing[0].endswith("gone01_0.000.*")
    whole = next(item for item in data.eval.items if Path(item.path).name == "ev05.mp4")
    assert (whole.start, whole.end) == (2.0, 4.0)  # found by id alone: cut at the listed times
    parts = data.coverage.by_part()
    assert parts == {"balanced_train": {"found": 12, "listed": 12}, "unbalanced_train": {"found": 6, "listed": 6},
                     "eval": {"found": 6, "listed": 7}}
    only_balanced = audioset(audioset_root, ("balanced",))
    assert len(only_balanced.train.items) == 12 and "unbalanced_train" not in only_balanced.coverage.by_part()


def test_audioset_bad_label_names_its_line(tmp_path):
    from mmv.eval.audioset import read_segments

    path = tmp_path / "eval_segments.csv"
    _segments_csv(path, [("abc", "0.000", "10.000", ("/m/unknown",))])
    with pytest.raises(ValueError, match=r"line 4: label '/m/unknown' is not in class_labels_indices.csv"):
        read_segments(path, {"/m/09x0r": 0})


def test_audioset_mlp_end_to_end_with_sklearn_map(audioset_root, tiny_model, tmp_path, single_thread):
    from sklearn.metrics import average_precision_score

    from mmv.eval.audioset import AudioSetConfig, audioset_table, evaluate_audioset

    cfg = AudioSetConfig(spec=AUDIO_SPEC, windows=2, hidden=(32,), epochs=60, batch_size=6, lr=3e-3, chunk_items=5)
    with pytest.raises(PartialDatasetError, match="1 of the 25 files listed"):
        evaluate_audioset(tiny_model, audioset_root, cfg=cfg, progress=False)
    result = evaluate_audioset(tiny_model, audioset_root, cfg=cfg, cache_dir=tmp_path, progress=False,
                               allow_partial=True, return_scores=True)
    scores, targets = result.pop("eval_scores"), result.pop("eval_targets")
    assert scores.shape == (6, 4) and result["num_train"] == 18 and result["num_eval"] == 6
    # Independent mAP: sklearn's AP per class, over the classes with a positive among the evaluated clips.
    present = [c for c in range(4) if targets[:, c].any()]
    expected = np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in present])
    assert result["mAP"] == pytest.approx(100 * expected)
    assert result["classes_left_out"] == ["Silence"] and result["classes_evaluated"] == 3
    assert result["chance"]["mAP"] == pytest.approx(100 * targets[:, present].mean(axis=0).mean())
    assert result["mAP"] > result["chance"]["mAP"]  # tones of each class: the frozen features separate them
    assert result["partial"] and result["coverage"]["missing"][0].endswith("gone01_0.000.*")
    table = audioset_table(result)
    assert "PARTIAL" in table and "| 18/18 partial | 6/7 partial |" in table and "Silence" in table
    json.dumps(result)
    # Features are on disk in chunks of 5 clips (18 training clips: 4 chunks); a rerun reads them back.
    chunks = sorted(tmp_path.glob("audioset-train-*/chunk-*.npy"))
    assert len(chunks) == 4 and max(len(np.load(c)) for c in chunks) == 5
    again = evaluate_audioset(tiny_model, audioset_root, cfg=cfg, cache_dir=tmp_path, progress=False,
                              allow_partial=True)
    assert again["mAP"] == pytest.approx(result["mAP"])


def test_clip_index_naming_and_whole_videos(tmp_path):
    from mmv.data.windows import MediaItem
    from mmv.eval.youtube_clips import ClipIndex, resolve_segment

    write_wav(tmp_path / "a" / "abc_30.wav", np.zeros(RATE, dtype=np.float32), RATE)
    write_wav(tmp_path / "b" / "def_000010_000020.wav", np.zeros(RATE, dtype=np.float32), RATE)
    write_wav(tmp_path / "Yghi.wav", np.zeros(10 * RATE, dtype=np.float32), RATE)  # PANNs: a trimmed 10-s clip
    write_wav(tmp_path / "jkl.wav", np.zeros(30 * RATE, dtype=np.float32), RATE)  # a whole video
    index = ClipIndex(tmp_path)
    assert index.find("abc", "30.000", "40.000") == MediaItem(str(tmp_path / "a" / "abc_30.wav"))
    assert index.find("def", "10", "20") == MediaItem(str(tmp_path / "b" / "def_000010_000020.wav"))
    assert index.find("xyz", "0", "10") is None
    ghi = index.find("ghi", "50.000", "60.000")
    assert resolve_segment(ghi) == MediaItem(str(tmp_path / "Yghi.wav"))  # no longer than the segment: itself
    jkl = index.find("jkl", "5.000", "15.000")
    assert resolve_segment(jkl) == MediaItem(str(tmp_path / "jkl.wav"), 5.0, 15.0)  # cut at the listed times


# ---------------------------------------------------------------------------------------------------- Kinetics-600
KINETICS_CLASSES = ["air drumming", "beatboxing", "cartwheeling"]


def make_kinetics600(root: Path, missing: bool = False) -> Path:
    """Official CSVs in ``annotations/``; training clips ``train/<label_with_underscores>/<id>_%06d_%06d.mp4``,
    validation clips flat in ``val/``, one validation clip as the whole video ``<id>.mp4`` (its class colour only
    inside the listed segment); ``missing`` lists one validation clip that is not on disk."""
    header = ["label", "youtube_id", "time_start", "time_end", "split"]
    train, validate = [], []
    for label, name in enumerate(KINETICS_CLASSES):
        for i in range(4):
            ytid = f"t{label}{i}-x_"
            write_video(root / "train" / name.replace(" ", "_") / f"{ytid}_000010_000012.mp4",
                        class_frames(label, 10 * label + i, num_frames=20))
            train.append([name, ytid, 10, 12, "train"])
        for i in range(2):
            ytid = f"v{label}{i}"
            if label == 2 and i == 1:  # whole video: another class's colour outside [2, 4]
                frames = np.concatenate([class_frames(0, 1, num_frames=20), class_frames(2, 77, num_frames=20),
                                         class_frames(0, 2, num_frames=20)])
                write_video(root / "val" / f"{ytid}.mp4", frames)
                validate.append([name, ytid, 2, 4, "val"])
                continue
            write_video(root / "val" / f"{ytid}_000000_000002.mp4", class_frames(label, 100 + 10 * label + i,
                                                                                 num_frames=20))
            validate.append([name, ytid, 0, 2, "val"])
    if missing:
        validate.append(["beatboxing", "gone", 0, 10, "val"])
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for file_name, rows in (("train.csv", train), ("validate.csv", validate)):
        with open(root / "annotations" / file_name, "w", newline="") as handle:
            csv.writer(handle).writerows([header] + rows)
    return root


@pytest.fixture(scope="module")
def kinetics_root(tmp_path_factory) -> Path:
    return make_kinetics600(tmp_path_factory.mktemp("k600") / "k600")


def test_kinetics_lists_and_clips(kinetics_root):
    from mmv.eval.kinetics import kinetics600

    data = kinetics600(kinetics_root)
    assert data.classes == KINETICS_CLASSES
    assert len(data.train) == 12 and len(data.test) == 6 and data.coverage.complete
    np.testing.assert_array_equal(data.train_labels, np.repeat([0, 1, 2], 4))
    whole = data.test[-1]
    assert Path(whole.path).name == "v21.mp4" and (whole.start, whole.end) == (2.0, 4.0)


def _store_arrays(cache: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Every row of a feature store and its item, read straight from the files."""
    [directory] = cache.glob(f"{prefix}-*")
    chunks = sorted(directory.glob("chunk-*.npy"))
    features = np.concatenate([np.load(c) for c in chunks])
    items = np.concatenate([np.load(c.with_suffix(".meta.npz"))["items"] for c in chunks])
    return features, items


def test_kinetics600_linear_probe_matches_brute_force(kinetics_root, tiny_model, tmp_path, single_thread):
    from mmv.eval.classifiers import fit_softmax_torch
    from mmv.eval.kinetics import KineticsConfig, evaluate_kinetics600
    from mmv.eval.linear_probe import probe_table

    cfg = KineticsConfig(spec=VIDEO_SPEC, train_passes=2, test_windows=3, solver="lbfgs", C=1.0, chunk_items=5)
    result = evaluate_kinetics600(tiny_model, kinetics_root, cfg=cfg, cache_dir=tmp_path, progress=False,
                                  return_scores=True)
    scores, labels = result.pop("test_scores"), result.pop("test_labels")
    split = result["splits"]["validate"]
    assert split["num_train_rows"] == 24 and split["num_test"] == 6 and split["C"] == 1.0
    # Brute force, in memory: both passes' rows from the files, standardised, the classifiers module's solver.
    rows = [_store_arrays(tmp_path, f"kinetics600-train-pass{p}") for p in range(2)]
    train_x = np.concatenate([features for features, _ in rows])
    train_y = np.repeat([0, 1, 2], 4)[np.concatenate([items for _, items in rows])]
    test_x, test_items = _store_arrays(tmp_path, "kinetics600-validate")
    mean, std = train_x.astype(np.float64).mean(axis=0), train_x.astype(np.float64).std(axis=0)
    std[std < 1e-12] = 1.0
    weight, bias = fit_softmax_torch((train_x - mean) / std, train_y, 3, C=1.0)
    expected = ((test_x - mean) / std) @ weight.T + bias
    np.testing.assert_allclose(scores, expected, atol=5e-3)
    # Brute-force top-k: is the true class among the k highest scores?
    true = np.repeat([0, 1, 2], 2)[test_items]
    np.testing.assert_array_equal(labels, true)
    for k in (1, 5):
        top = np.argsort(-scores, axis=1)[:, :k]
        assert split[f"top{k}"] == pytest.approx(100 * np.mean([t in row for t, row in zip(true, top)]))
    assert split["top1"] == 100.0  # colour per class, the whole video cut at its segment included
    assert result["chance"]["top1"] == pytest.approx(100 / 3)
    table = probe_table(result)
    assert "kinetics600" in table and "| 6/6 |" in table
    json.dumps(result)


def test_kinetics600_partial_copy_and_c_selection(tmp_path, tiny_model, single_thread):
    from mmv.eval.kinetics import KineticsConfig, evaluate_kinetics600

    root = make_kinetics600(tmp_path / "k600", missing=True)
    cfg = KineticsConfig(spec=VIDEO_SPEC, test_windows=2, epochs=30, batch_size=4, lr=1e-2, chunk_items=8)
    with pytest.raises(PartialDatasetError, match="kinetics600: 1 of the 19 files"):
        evaluate_kinetics600(tiny_model, root, cfg=cfg, progress=False)
    result = evaluate_kinetics600(tiny_model, root, cfg=cfg, cache_dir=tmp_path / "cache", progress=False,
                                  allow_partial=True)
    split = result["splits"]["validate"]
    assert result["partial"] and split["coverage"] == {"found": 6, "listed": 7}
    assert set(split["C_selection"]) == {"0.001", "0.01", "0.1", "1"} and split["C"] in (1e-3, 1e-2, 0.1, 1.0)
    assert split["top1"] > result["chance"]["top1"]
    assert any("gone_0.*" in path for path in result["coverage"]["missing"])


def test_eval_cli_runs_audioset_and_kinetics600(kinetics_root, audioset_root, tiny_model, tmp_path, capsys,
                                               single_thread):
    import mmv
    from mmv.cli.main import main
    from mmv.preprocess import Preprocess

    model_dir = mmv.save(tiny_model, tmp_path / "model", preprocess=Preprocess(video=VIDEO_SPEC, audio=AUDIO_SPEC))
    out = tmp_path / "out"
    assert main(["eval", "kinetics600", "--model", str(model_dir), "--data", str(kinetics_root), "--out", str(out),
                 "--no-progress", "--windows", "2", "--C", "1", "--solver", "lbfgs", "--chunk-items", "4"]) == 0
    report = json.loads((out / "kinetics600.json").read_text())
    assert report["splits"]["validate"]["top1"] > report["chance"]["top1"] and report["options"]["chunk_items"] == 4
    assert report["options"]["train_passes"] == 1 and report["options"]["solver"] == "lbfgs"
    assert main(["eval", "audioset", "--model", str(model_dir), "--data", str(audioset_root), "--out", str(out),
                 "--no-progress", "--audio-windows", "2", "--mlp-hidden", "16", "--solver-epochs", "5"]) == 1
    assert "--allow-partial" in capsys.readouterr().err
    assert main(["eval", "audioset", "--model", str(model_dir), "--data", str(audioset_root), "--out", str(out),
                 "--no-progress", "--audio-windows", "2", "--mlp-hidden", "16", "--solver-epochs", "5",
                 "--audioset-train", "balanced", "--allow-partial"]) == 0
    report = json.loads((out / "audioset.json").read_text())
    assert report["num_train"] == 12 and report["options"]["hidden"] == [16]
    assert "mAP" in (out / "audioset.md").read_text()
