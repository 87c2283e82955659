"""The training loop: learning rate schedule, non-finite steps, clean stop on SIGTERM, real data end to end."""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmv
from mmv.data.sampling import ResumableSampler
from mmv.train.config import OptimSection, load_config
from mmv.train.loop import NonFiniteLossError, lr_at, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(out_dir: Path, *overrides: str):
    return load_config(CONFIGS / "synthetic_tiny.yaml", [
        f"run.out_dir={out_dir}", "run.progress=false", "run.tensorboard=false", "run.log_every=1",
        "data.num_frames=4", "data.datasets.0.size=48", *overrides])


def _metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


# ----------------------------------------------------------------------------------------------------------------
# Learning rate

def test_lr_warms_up_linearly_then_follows_half_a_cosine():
    optim = OptimSection(lr=0.002, warmup_steps=100, min_lr=1e-5)
    total = 1100
    assert lr_at(0, optim, total) == pytest.approx(0.002 / 100)
    assert lr_at(49, optim, total) == pytest.approx(0.001)
    assert lr_at(99, optim, total) == pytest.approx(0.002)  # the peak is reached, no step at lr 0
    assert lr_at(100, optim, total) == pytest.approx(0.002)  # the cosine starts at its top
    assert lr_at(600, optim, total) == pytest.approx((0.002 + 1e-5) / 2)  # half-way: the cosine's midpoint
    assert lr_at(850, optim, total) == pytest.approx(1e-5 + (0.002 - 1e-5) * (1 + math.cos(math.pi * 0.75)) / 2)
    assert lr_at(total, optim, total) == pytest.approx(1e-5)
    values = [lr_at(s, optim, total) for s in range(100, total)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    constant = OptimSection(lr=0.5, warmup_steps=10, schedule="constant")
    assert [lr_at(s, constant, 100) for s in (9, 10, 99)] == [0.5, 0.5, 0.5]


# ----------------------------------------------------------------------------------------------------------------
# Non-finite steps

def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    every, batch, steps = 11, 8, 6
    cfg = _tiny(tmp_path, f"data.datasets.0.nonfinite_every={every}", f"run.batch_size={batch}",
                f"run.steps={steps}", "run.checkpoint_every=1", f"run.keep_last={steps}", "run.max_nonfinite=10")
    summary = train(cfg)
    # Independently: which batches of the sampler's order hold a clip with an infinite pixel.
    order = ResumableSampler(48, seed=cfg.run.seed).epoch_order(0)
    bad_steps = [s for s in range(steps) if any(i % every == 0 for i in order[s * batch:(s + 1) * batch])]
    assert 0 < len(bad_steps) < steps
    assert summary["status"] == "completed" and summary["nonfinite_steps"] == len(bad_steps)
    rows = _metrics(tmp_path)
    assert [r["step"] - 1 for r in rows if r["loss"] is None] == bad_steps  # logged as null, not NaN
    # A skipped step leaves weights and BN statistics exactly as they were; a good one changes them.
    torch.manual_seed(cfg.run.seed)
    before = mmv.create_model(cfg.model.name).state_dict()
    for step in range(steps):
        after = _state(tmp_path / f"ckpt_{step + 1}")
        unchanged = all(torch.equal(before[k], after[k]) for k in after)
        assert unchanged == (step in bad_steps), f"step {step}"
        before = after


def test_consecutive_nonfinite_steps_stop_the_run_with_the_last_good_state(tmp_path):
    cfg = _tiny(tmp_path, "data.datasets.0.nonfinite_every=1", "run.max_nonfinite=3", "run.steps=10")
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps") as error:
        train(cfg)
    assert "ckpt_3" in str(error.value)
    torch.manual_seed(cfg.run.seed)
    initial = mmv.create_model(cfg.model.name).state_dict()
    saved = _state(tmp_path / "ckpt_3")
    assert all(torch.equal(initial[k], saved[k]) for k in initial)  # nothing was learned from the bad batches
    state = json.loads((tmp_path / "ckpt_3" / "trainer_state.json").read_text())
    assert (state["nonfinite_total"], state["nonfinite_consecutive"]) == (3, 3)


# ----------------------------------------------------------------------------------------------------------------
# Signals

def test_sigterm_finishes_the_step_and_writes_a_checkpoint(tmp_path):
    cfg = _tiny(tmp_path, "run.steps=50", "run.checkpoint_every=100", "run.batch_size=4")

    def send_sigterm_after_two_steps():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            path = tmp_path / "metrics.jsonl"
            if path.exists() and len(path.read_text().splitlines()) >= 2:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.02)

    handler_before = signal.getsignal(signal.SIGTERM)
    sender = threading.Thread(target=send_sigterm_after_two_steps, daemon=True)
    sender.start()
    summary = train(cfg)
    sender.join()
    assert signal.getsignal(signal.SIGTERM) is handler_before  # the loop's handler is gone again
    assert summary["status"] == "interrupted"
    assert 2 <= summary["step"] < 50
    assert summary["checkpoint"] == str(tmp_path / f"ckpt_{summary['step']}")
    # The run directory now refuses a fresh start, and continues with resume=auto.
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(cfg)


# ----------------------------------------------------------------------------------------------------------------
# Real data: the demo corpus through the data pipeline

@pytest.mark.slow
def test_training_on_demo_videos(tmp_path):
    from mmv.demo.corpus import DemoCorpusConfig, generate_demo_corpus
    from mmv.data.narrations import read_narrations
    from mmv.data.tokenizer import build_vocabulary

    corpus = tmp_path / "demo"
    generate_demo_corpus(corpus, num_train=4, num_test=1, seed=3, workers=1, progress=False,
                         config=DemoCorpusConfig(duration=2.0))
    texts = [n.text for vtt in sorted((corpus / "train").glob("*.vtt")) for n in read_narrations(vtt)]
    build_vocabulary(texts, max_size=512).save(corpus / "vocab.txt")
    cfg = load_config(CONFIGS / "demo_cpu.yaml", [
        f"run.out_dir={tmp_path / 'run'}", f"data.datasets.0.path={corpus / 'train' / 'manifest.jsonl'}",
        f"data.vocab={corpus / 'vocab.txt'}", "data.num_frames=8", "data.workers=0", "run.steps=2",
        "run.batch_size=4", "run.progress=false", "run.tensorboard=false", "run.log_every=1"])
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["step"] == 2
    rows = _metrics(tmp_path / "run")
    assert all(math.isfinite(r["loss"]) for r in rows)
    model = mmv.load(summary["checkpoint"])
    assert model.cfg.video_backbone == "s3dg"


# ----------------------------------------------------------------------------------------------------------------
# Learning

def _retrieval_ranks(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Rank of each query's own key among all keys by cosine similarity (0 = first), by brute force."""
    ranks = []
    for i in range(queries.shape[0]):
        scores = [torch.nn.functional.cosine_similarity(queries[i], keys[j], dim=0) for j in range(keys.shape[0])]
        ranks.append(sum(float(s) > float(scores[i]) for s in scores))
    return torch.tensor(ranks, dtype=torch.float)


@pytest.mark.slow
def test_training_learns_the_correspondence_between_modalities(tmp_path):
    from mmv.train.data import num_audio_frames
    from mmv.train.synthetic import SyntheticClips

    cfg = _tiny(tmp_path, "run.steps=80", "run.batch_size=16", "optim.lr=5e-3", "optim.warmup_steps=10",
                "run.checkpoint_every=1000", "data.datasets.0.size=1024")
    summary = train(cfg)
    losses = [r["loss"] for r in _metrics(tmp_path)]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 1.0, losses

    # Held-out clips of the same concepts (another index range), one narration each, every modality present.
    data = cfg.data
    held_out = SyntheticClips(128, first_index=10**6, seed=cfg.run.seed, num_frames=data.num_frames, crop=data.crop,
                              audio_frames=num_audio_frames(data), mel_bins=data.num_mel_bins, num_narrations=1,
                              max_words=data.max_words, audio_missing=0.0, text_missing=0.0)
    batch = torch.utils.data.default_collate([held_out[i] for i in range(len(held_out))])
    model = mmv.load(summary["checkpoint"])
    with torch.no_grad():
        out = model(video=batch["video"], audio=batch["audio"], word_ids=batch["word_ids"][:, 0])
    chance_median = (len(held_out) - 1) / 2
    for video, other in (("vid_embd_toaud", "aud_embd_tovid"), ("vid_embd_totxt", "txt_embd_tovid")):
        ranks = _retrieval_ranks(out[video], out[other])
        recall_at_10 = float((ranks < 10).float().mean())
        assert ranks.median() < 0.7 * chance_median, (video, ranks.median())
        assert recall_at_10 > 1.6 * 10 / len(held_out), (video, recall_at_10)
