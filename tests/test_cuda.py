"""What only a GPU shows: parity on CUDA, bf16 autocast, SyncBatchNorm with DDP and the gathered loss across two
processes, and the training loop with AMP and channels_last. Every test here is skipped on a machine without CUDA (CI's).

Run on a GPU machine with ``python -m pytest -q -m cuda``.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import mmv
from mmv.convert.released import model_from_haiku
from official_params import MODEL_NAMES, io_path, make_official_params, tree_path

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
OUTPUTS = ("vid_repr", "aud_repr", "vid_embd_toaud", "vid_embd_totxt",
           "aud_embd_tovid", "aud_embd_totxt", "txt_embd_tovid", "txt_embd_toaud")
ARCH = {"s3d": "mmv_fac_s3dg", "tsm_resnet_x1": "mmv_fac_tsm_resnet50", "tsm_resnet_x2": "mmv_fac_tsm_resnet50x2"}


@pytest.fixture
def full_fp32():
    """Plain float32 matmuls and convolutions (no TF32), as the parity bound assumes."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def official_model_and_io(name: str) -> tuple[nn.Module, dict[str, np.ndarray]]:
    params, state = make_official_params(tree_path(name))
    model = model_from_haiku(ARCH[name], params, state).eval()
    return model, dict(np.load(io_path(name)))


def run_on(model: nn.Module, io: dict[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    inputs = {k: torch.from_numpy(io[k]).to(device) for k in ("video", "audio", "word_ids")}
    with torch.inference_mode():
        return {k: v.float().cpu() for k, v in model.to(device)(**inputs).items()}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_official_parity_on_cuda(name: str, full_fp32) -> None:
    """The converted model on the GPU reproduces the official outputs within the CPU parity bound (1e-4)."""
    model, io = official_model_and_io(name)
    out = run_on(model, io, "cuda")
    for key in OUTPUTS:
        err = float(np.abs(out[key].numpy() - io[key]).max() / np.abs(io[key]).max())
        print(f"{name} {key}: max abs error {err:.2e} x max|ref|")
        assert err <= 1e-4, f"{name} {key} on CUDA: max abs error {err:.2e} x max|ref|"


@pytest.mark.parametrize("name", ["s3d", "tsm_resnet_x1"])
def test_bf16_autocast_keeps_the_embeddings(name: str) -> None:
    """Under bf16 autocast (the training default on CUDA) every embedding points where the float32 one does."""
    model, io = official_model_and_io(name)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = run_on(model, io, "cuda")
    for key in OUTPUTS:
        ref = torch.from_numpy(io[key]).flatten(1).double()
        cosine = torch.nn.functional.cosine_similarity(out[key].flatten(1).double(), ref, dim=1).min().item()
        print(f"{name} {key}: min cosine(bf16, fp32 reference) {cosine:.5f}")
        assert cosine > 0.99, f"{name} {key}: bf16 embedding cosine {cosine:.4f} to the reference"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_batch(batch: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"video": torch.rand(batch, 4, 32, 32, 3, generator=gen, dtype=dtype),
            "audio": torch.randn(batch, 40, 40, generator=gen, dtype=dtype),
            "word_ids": torch.randint(1, 2048, (batch, 2, 8), generator=gen)}


def tiny_masks(batch: int) -> dict[str, torch.Tensor]:
    """Some clips without audio, some with fewer narrations, one with none: the masks the loss must respect."""
    audio_mask = torch.tensor([True, False, True, True, True, True, False, True])[:batch]
    counts = torch.tensor([2, 1, 0, 2, 2, 1, 2, 2])[:batch]
    return {"audio_mask": audio_mask, "text_mask": torch.arange(2)[None, :] < counts[:, None]}


def sync_bn_worker(rank: int, world_size: int, port: int, result_dir: str) -> None:
    """Rank r trains on its half of the batch: SyncBatchNorm, DDP, and the MMV loss over the gathered batch."""
    from mmv.losses import MMVLoss

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    # NCCL refuses two ranks on one GPU; gloo runs the same collectives on CUDA tensors, SyncBatchNorm included.
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(mmv.create_model("mmv_tiny_s3dg")).cuda().double().train()
        model = nn.parallel.DistributedDataParallel(model, device_ids=[0])
        rows = slice(rank * 4, (rank + 1) * 4)
        inputs = {k: v[rows].cuda() for k, v in tiny_batch(8, torch.float64).items()}
        masks = {k: v[rows].cuda() for k, v in tiny_masks(8).items()}
        out = model(**inputs)
        loss = MMVLoss(lambda_va=1.0, lambda_vt=1.0, local_loss=True, gather_with_grad=True, rank=rank,
                       world_size=world_size)(**out, **masks)
        loss["loss"].backward()
        mean_loss = loss["loss"].detach().clone()
        torch.distributed.all_reduce(mean_loss)
        torch.save({"out": out["vid_embd_toaud"].detach().cpu(), "loss": mean_loss.cpu() / world_size,
                    "stats": {k: v.cpu() for k, v in model.module.state_dict().items() if "running" in k},
                    "grads": {k: p.grad.cpu() for k, p in model.module.named_parameters() if p.grad is not None}},
                   Path(result_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_two_ranks_with_sync_batchnorm_equal_one_process_on_the_whole_batch(tmp_path) -> None:
    """Two ranks (SyncBatchNorm, DDP, gathered-negatives loss, all on CUDA) give what one process on the whole
    batch gives with plain BatchNorm: the same embeddings, loss, running statistics and gradients.

    In float64: at float32 the two differ by the rounding of differently ordered reductions, amplified by the
    near-constant channels of a freshly initialised network (about 1e-3 here, 0.3 with TF32 convolutions), which
    would hide a real error; at float64 they agree to 1e-9."""
    from mmv.losses import MMVLoss

    mp.spawn(sync_bn_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    torch.manual_seed(0)
    reference = mmv.create_model("mmv_tiny_s3dg").cuda().double().train()
    out = reference(**{k: v.cuda() for k, v in tiny_batch(8, torch.float64).items()})
    loss = MMVLoss(lambda_va=1.0, lambda_vt=1.0)(**out, **{k: v.cuda() for k, v in tiny_masks(8).items()})
    loss["loss"].backward()
    print(f"loss: one process {loss['loss'].item():.6f}, two ranks {ranks[0]['loss'].item():.6f}")
    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), out["vid_embd_toaud"].detach().cpu(),
                               rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ranks[0]["loss"], loss["loss"].detach().cpu(), rtol=1e-7, atol=1e-9)
    stats = {k: v.cpu() for k, v in reference.state_dict().items() if "running" in k}
    assert stats and stats.keys() == ranks[0]["stats"].keys()
    for key, value in stats.items():
        torch.testing.assert_close(ranks[0]["stats"][key], value, rtol=1e-7, atol=1e-9, msg=key)
    compared = 0
    for name, param in reference.named_parameters():
        if param.grad is not None and name in ranks[0]["grads"]:
            torch.testing.assert_close(ranks[0]["grads"][name], param.grad.cpu(), rtol=1e-6, atol=1e-9, msg=name)
            torch.testing.assert_close(ranks[1]["grads"][name], ranks[0]["grads"][name], msg=name)
            compared += 1
    assert compared > 50


def test_training_loop_on_cuda_with_bf16_and_channels_last(tmp_path) -> None:
    """The real loop on the GPU, bf16 autocast and channels_last weights: the loss falls and the checkpoint loads."""
    import json

    from mmv.train.config import load_config
    from mmv.train.loop import train

    cfg = load_config(CONFIGS / "synthetic_tiny.yaml", [
        f"run.out_dir={tmp_path}", "run.progress=false", "run.tensorboard=false", "run.log_every=1",
        "run.device=cuda", "run.amp=bf16", "run.channels_last=true", "run.steps=40", "run.checkpoint_every=40",
        "run.batch_size=16"])
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["nonfinite_steps"] == 0
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} logged steps")
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    model = mmv.load(summary["checkpoint"]).cuda()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(**{k: v.cuda() for k, v in tiny_batch(2).items()})
    assert all(torch.isfinite(v).all() for v in out.values())
