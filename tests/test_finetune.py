"""Fine-tuning end to end on tiny datasets in the official layouts: test scores recomputed by hand, brute-force
top-k, checkpoints that mmv.load reads, exact resume, the command line, and a two-process launch."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from eval_fixtures import (calibrated_tiny_model, class_frames, make_ucf101, resize_short_side,  # noqa: F401
                           single_thread, write_video)
from mmv.eval.datasets import PartialDatasetError
from mmv.eval.finetune import FinetuneConfig, VideoClassifier, finetune, finetune_split, finetune_splits, spatial_crops
from mmv.preprocess import Preprocess, VideoPreprocess

SPEC = VideoPreprocess(num_frames=8, fps=10, min_resize=32, crop=24)
QUICK = dict(spec=SPEC, epochs=2, batch_size=4, test_windows=2, test_crops=3, scale_jitter=None, log_every=1)


def _tiny_model() -> torch.nn.Module:
    """The calibrated tiny model with the BN momentum a model normally has (the fixture sets None to calibrate)."""
    from mmv.models.layers import BN_MOMENTUM

    model = calibrated_tiny_model()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = BN_MOMENTUM
    return model


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> Path:
    return make_ucf101(tmp_path_factory.mktemp("ft_ucf") / "ucf")


def make_manifest_corpus(root: Path, per_class: tuple[int, int] = (4, 2), classes: int = 3) -> Path:
    """``{train,test}/manifest.jsonl`` with a label per video, as the demo corpus."""
    for side, count in zip(("train", "test"), per_class):
        rows = []
        for label in range(classes):
            for i in range(count):
                name = f"{side}_{label}_{i}.mp4"
                write_video(root / side / name, class_frames(label, 1000 * (side == "test") + 10 * label + i))
                rows.append(json.dumps({"video": name, "caption": None, "label": label}))
        (root / side / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    return root


def test_spatial_crops_take_both_ends_and_the_centre_of_the_long_side():
    wide = torch.arange(16).repeat(2, 10, 1)[..., None].expand(2, 10, 16, 3)  # pixel value = column
    left, centre, right = spatial_crops(wide, 8, 3)
    assert [int(c[0, 0, 0, 0]) for c in (left, centre, right)] == [0, 4, 8] and left.shape == (2, 8, 8, 3)
    assert int(spatial_crops(wide, 8, 1)[0][0, 0, 0, 0]) == 4  # one crop: the centre
    tall = wide.transpose(1, 2)  # 16 rows x 10 columns: the crops move down the rows
    assert [int(c[0, 0, 1, 0]) for c in spatial_crops(tall, 8, 3)] == [0, 4, 8]


def test_finetune_split_scores_match_a_hand_computation(ucf, tmp_path, single_thread):
    import mmv
    from mmv.data.media import decode_clip, evenly_spaced_starts, probe

    split = finetune_splits(ucf, "ucf101", (1,))[1][0]
    cfg = FinetuneConfig(**QUICK, head_lr=0.05, dropout=0.0)
    result = finetune_split(_tiny_model(), split, cfg, tmp_path / "run", progress=False, return_scores=True)
    assert result["status"] == "completed" and result["step"] == 6 and result["num_train"] == 12
    # The last checkpoint is a saved model (the fine-tuned network) plus the classifier.
    final = tmp_path / "run" / "ckpt_6"
    tuned = mmv.load(final)
    assert tuned.preprocess.video == SPEC
    classifier = VideoClassifier(tuned.video_backbone, tuned.video_backbone.num_features, 3, 0.0)
    classifier.head.load_state_dict(load_file(final / "classifier.safetensors"))
    classifier.eval()
    # By hand: 2 evenly spaced windows, resized, 3 crops each; the softmax of each view, averaged per video.
    expected = []
    for item in split.test:
        views = []
        for start in evenly_spaced_starts(probe(item.path).duration, SPEC.seconds, 2):
            frames = resize_short_side(decode_clip(item.path, start, 8, 10, with_audio=False).frames, 32)
            views += [frames[:, 4:28, left:left + 24] for left in (0, 4, 8)]
        with torch.no_grad():
            logits = classifier(torch.from_numpy(np.stack(views)).float() / 255)
        expected.append(torch.softmax(logits, dim=-1).mean(dim=0).numpy())
    np.testing.assert_allclose(result["test_probabilities"], np.stack(expected), atol=1e-5)
    # Brute-force top-k from the probabilities.
    labels = np.array([f.label for f in split.test])
    np.testing.assert_array_equal(result["test_labels"], labels)
    for k in (1, 5):
        top = np.argsort(-result["test_probabilities"], axis=1)[:, :k]
        assert result[f"top{k}"] == pytest.approx(100 * np.mean([y in row for y, row in zip(labels, top)]))


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return {**load_file(path / "model.safetensors"), **{f"head.{k}": v for k, v in
                                                        load_file(path / "classifier.safetensors").items()},
            **{f"opt.{k}": v for k, v in load_file(path / "optimizer.safetensors").items()}}


def test_stopped_run_resumes_exactly_and_finished_splits_are_read_back(ucf, tmp_path, single_thread):
    model = _tiny_model()
    cfg = FinetuneConfig(**QUICK)  # dropout, flips and colour jitter on: every random stream matters
    whole = finetune(model, ucf, tmp_path / "a", dataset="ucf101", splits=(1,), cfg=cfg, progress=False)
    assert whole["status"] == "completed"
    # Stopped after 4 of 6 steps (mid-way through the second epoch), then continued.
    stopped = finetune(model, ucf, tmp_path / "b", splits=(1,), cfg=FinetuneConfig(**QUICK, stop_after=4),
                       progress=False)
    run_b = tmp_path / "b" / "finetune-ucf101" / "split1"
    assert stopped["status"] == "interrupted" and stopped["splits"] == {}
    assert (run_b / "latest").read_text().strip() == "ckpt_4" and not (run_b / "result.json").exists()
    with pytest.raises(ValueError, match="already holds a fine-tuning run"):
        finetune(model, ucf, tmp_path / "b", splits=(1,), cfg=cfg, progress=False)
    with pytest.raises(ValueError, match="trained with other settings .head_lr: 0.05 there, 0.1 now"):
        finetune(model, ucf, tmp_path / "b", splits=(1,), cfg=FinetuneConfig(**QUICK, head_lr=0.1), resume="auto",
                 progress=False)
    resumed = finetune(model, ucf, tmp_path / "b", splits=(1,), cfg=cfg, resume="auto", progress=False)
    run_a = tmp_path / "a" / "finetune-ucf101" / "split1"
    a, b = _tensors(run_a / "ckpt_6"), _tensors(run_b / "ckpt_6")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resume changed the weights"
    assert resumed["splits"]["split1"]["top1"] == whole["splits"]["split1"]["top1"]
    assert sorted(p.name for p in run_b.iterdir() if p.name.startswith("ckpt_")) == ["ckpt_4", "ckpt_6"]
    assert not [p for p in run_b.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    # A finished split is read back, not trained again.
    again = finetune(model, ucf, tmp_path / "b", splits=(1,), cfg=cfg, resume="auto", progress=False)
    assert again["splits"]["split1"] == json.loads((run_b / "result.json").read_text())
    assert model.video_backbone.state_dict().keys() and torch.equal(  # the caller's model is left as it was
        next(iter(model.video_backbone.state_dict().values())),
        next(iter(_tiny_model().video_backbone.state_dict().values())))


def test_all_three_ucf101_splits_and_the_report(ucf, tmp_path, single_thread):
    from mmv.eval.finetune import finetune_table

    cfg = FinetuneConfig(**{**QUICK, "epochs": 1, "test_windows": 1, "test_crops": 1})
    result = finetune(_tiny_model(), ucf, tmp_path, cfg=cfg, progress=False)
    assert result["dataset"] == "ucf101" and list(result["splits"]) == ["split1", "split2", "split3"]
    assert result["coverage"]["complete"] and not result["partial"]
    assert result["chance"]["top1"] == pytest.approx(100 / 3)
    table = finetune_table(result)
    assert "| split3 |" in table and "| 15/15 |" in table and "**mean** (3 splits)" in table
    json.dumps(result)


def test_partial_copy_is_refused_before_training(ucf, tmp_path, monkeypatch):
    from mmv.eval import finetune as finetune_module

    root = tmp_path / "ucf"
    shutil.copytree(ucf, root)
    (root / "UCF-101" / "Basketball" / "v_Basketball_g05_c01.avi").unlink()
    monkeypatch.setattr(finetune_module, "finetune_split", lambda *a, **k: pytest.fail("trained a partial copy"))
    with pytest.raises(PartialDatasetError, match="1 of the 15 files"):
        finetune(_tiny_model(), root, tmp_path / "out", cfg=FinetuneConfig(spec=SPEC), progress=False)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    import mmv

    return mmv.save(_tiny_model(), tmp_path_factory.mktemp("ft_model") / "tiny",
                    preprocess=Preprocess(video=VideoPreprocess(num_frames=8, fps=10, min_resize=32, crop=32)))


def test_cli_finetune_manifest_stop_and_resume(saved_model, tmp_path, capsys, single_thread):
    from mmv.cli.main import main

    data = make_manifest_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    common = ["finetune", "manifest", "--model", str(saved_model), "--data", str(data), "--out", str(out),
              "--no-progress", "--epochs", "2", "--batch-size", "3", "--windows", "2", "--crops", "1",
              "--no-flip", "--scale-jitter", "none", "--crop", "24"]
    assert main([*common, "--stop-after", "3"]) == 3  # of 8 steps (2 epochs of 12 // 3): stopped with a checkpoint
    assert "--resume auto" in capsys.readouterr().err
    assert main(common) == 1 and "already holds a fine-tuning run" in capsys.readouterr().err
    assert main([*common, "--resume", "auto"]) == 0
    report = json.loads((out / "finetune-manifest.json").read_text())
    split = report["splits"]["manifest"]
    assert split["num_train"] == 12 and split["num_test"] == 6 and split["step"] == 8
    assert report["options"]["spec"]["crop"] == 24 and report["preprocess"]["differs_from_model"]["video.crop"]
    assert "| manifest |" in (out / "finetune-manifest.md").read_text()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_under_torchrun(saved_model, tmp_path):
    """Each rank takes its share of every batch and of the test videos; the checkpoint holds both ranks' states."""
    from mmv.train.checkpoint import read_trainer_state

    data = make_manifest_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [*torchrun, "-m", "mmv.cli.main", "finetune", "manifest", "--model", str(saved_model), "--data",
               str(data), "--out", str(out), "--no-progress", "--epochs", "2", "--batch-size", "2", "--windows", "1",
               "--crops", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "finetune-manifest.json").read_text())
    split = report["splits"]["manifest"]
    assert report["options"]["world_size"] == 2 and split["num_test"] == 6  # every test video, once
    assert split["steps_per_epoch"] == 12 // (2 * 2) and split["step"] == 6
    state = read_trainer_state(out / "finetune-manifest" / "manifest" / "ckpt_6")
    assert state["world_size"] == 2 and [r["data"]["sampler"]["rank"] for r in state["ranks"]] == [0, 1]
