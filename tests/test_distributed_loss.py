"""Two gloo processes on CPU give the single-process loss and gradients of the concatenated batch.

DDP averages gradients over ranks. Each rank's loss is therefore defined (mmv.losses) so that the *average over
ranks* of its gradients equals the gradient of the single-process loss on the global batch, and the average of
the per-rank loss values equals the global loss. The tests check exactly that: once on the embeddings directly
(rank r's gradient / world_size == the single-process gradient of r's rows, since only rank r's loss reaches
its rows through both local use and the gather's backward), and once through a real DDP-wrapped model.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from mmv import distributed
from mmv.losses import MMVLoss

WORLD_SIZE = 2
LOCAL_BATCH = 4
NUM_TEXTS = 3
DIM = 6
RTOL, ATOL = 1e-5, 1e-10


def global_batch(scenario: str):
    """A float64 global batch of 8 samples; ranks hold samples 0-3 and 4-7, with different valid counts."""
    gen = torch.Generator().manual_seed(0)
    batch = WORLD_SIZE * LOCAL_BATCH
    tensors = {
        "vid_embd_toaud": torch.randn(batch, DIM, generator=gen, dtype=torch.float64),
        "aud_embd_tovid": torch.randn(batch, DIM, generator=gen, dtype=torch.float64),
        "vid_embd_totxt": torch.randn(batch, DIM, generator=gen, dtype=torch.float64),
        "txt_embd_tovid": torch.randn(batch, NUM_TEXTS, DIM, generator=gen, dtype=torch.float64),
    }
    counts = torch.tensor([3, 1, 0, 2, 3, 3, 1, 2])  # narrations per clip; clip 2 has no text
    audio_mask = torch.tensor([True, True, True, True, False, True, False, False])  # rank 1 has 1 of 4
    if scenario == "rank1_has_no_text":
        counts[LOCAL_BATCH:] = 0
    text_mask = torch.arange(NUM_TEXTS)[None, :] < counts[:, None]
    return tensors, {"audio_mask": audio_mask, "text_mask": text_mask}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """rtol 1e-5 comparison (torch.testing.assert_close would import DTensor in a process group: seconds)."""
    if not torch.allclose(actual, expected, rtol=RTOL, atol=ATOL):
        error = ((actual - expected).abs() / expected.abs().clamp(min=ATOL)).max().item()
        raise AssertionError(f"{what}: max relative error {error:.3g} > {RTOL}\n{actual}\n!=\n{expected}")


def local_slice(tensor: torch.Tensor, rank: int) -> torch.Tensor:
    return tensor[rank * LOCAL_BATCH:(rank + 1) * LOCAL_BATCH]


def check_embedding_gradients(rank: int, direction: str, local_loss: bool, scenario: str) -> None:
    tensors, masks = global_batch(scenario)
    reference_inputs = {k: v.clone().requires_grad_(True) for k, v in tensors.items()}
    reference = MMVLoss(lambda_va=1.0, lambda_vt=10.0, direction=direction)(**reference_inputs, **masks)
    reference["loss"].backward()

    local_inputs = {k: local_slice(v, rank).clone().requires_grad_(True) for k, v in tensors.items()}
    local_masks = {k: local_slice(v, rank) for k, v in masks.items()}
    loss = MMVLoss(lambda_va=1.0, lambda_vt=10.0, direction=direction, local_loss=local_loss,
                   rank=rank, world_size=WORLD_SIZE)
    out = loss(**local_inputs, **local_masks)
    out["loss"].backward()

    where = f"rank {rank}, direction={direction}, local_loss={local_loss}, {scenario}"
    for key in ("loss", "nce_va", "milnce_vt"):
        assert_close(distributed.all_reduce_mean(out[key]), reference[key].detach(), f"{key} ({where})")
    for key, tensor in local_inputs.items():
        expected = local_slice(reference_inputs[key].grad, rank)
        assert_close(tensor.grad / WORLD_SIZE, expected, f"d loss / d {key} ({where})")


class TinyHeads(nn.Module):
    """Projection heads standing in for a model: raw features -> the embeddings the loss takes."""

    def __init__(self) -> None:
        super().__init__()
        self.video_to_audio = nn.Linear(5, DIM)
        self.audio = nn.Linear(7, DIM)
        self.video_to_text = nn.Linear(5, DIM)
        self.text = nn.Linear(3, DIM)

    def forward(self, video: torch.Tensor, audio: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"vid_embd_toaud": self.video_to_audio(video), "aud_embd_tovid": self.audio(audio),
                "vid_embd_totxt": self.video_to_text(video), "txt_embd_tovid": self.text(text),
                "vid_repr": video}


def check_ddp_parameter_gradients(rank: int) -> None:
    gen = torch.Generator().manual_seed(1)
    batch = WORLD_SIZE * LOCAL_BATCH
    inputs = {"video": torch.randn(batch, 5, generator=gen, dtype=torch.float64),
              "audio": torch.randn(batch, 7, generator=gen, dtype=torch.float64),
              "text": torch.randn(batch, NUM_TEXTS, 3, generator=gen, dtype=torch.float64)}
    _, masks = global_batch("mixed")
    torch.manual_seed(2)
    model = TinyHeads().double()
    reference_model = TinyHeads().double()
    reference_model.load_state_dict(model.state_dict())
    MMVLoss(lambda_vt=10.0)(**reference_model(**inputs), **masks)["loss"].backward()

    ddp_model = nn.parallel.DistributedDataParallel(model)
    loss = MMVLoss(lambda_vt=10.0, rank=rank, world_size=WORLD_SIZE)
    out = loss(**ddp_model(**{k: local_slice(v, rank) for k, v in inputs.items()}),
               **{k: local_slice(v, rank) for k, v in masks.items()})
    out["loss"].backward()
    for (name, param), reference_param in zip(model.named_parameters(), reference_model.parameters()):
        assert_close(param.grad, reference_param.grad, f"DDP gradient of {name} on rank {rank}")


def worker(rank: int, port: int, leaving: object) -> None:
    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD_SIZE),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    info = distributed.init_distributed(backend="gloo")
    try:
        assert (info.rank, info.world_size, info.device.type) == (rank, WORLD_SIZE, "cpu")
        assert distributed.is_primary() == (rank == 0)
        for scenario in ("mixed", "rank1_has_no_text"):
            for direction in ("joint", "released", "symmetric", "v2x"):
                for local_loss in (True, False):
                    check_embedding_gradients(rank, direction, local_loss, scenario)
        check_ddp_parameter_gradients(rank)
        distributed.barrier()
    finally:
        distributed.cleanup()
    # NOTE: rank 0 hosts the rendezvous store and a gloo connection to rank 1: if it exits while rank 1 is still
    # leaving the group, rank 1's gloo thread sees the peer gone and aborts the process (seen on a loaded machine).
    # Nobody exits before everybody has left.
    leaving.wait(timeout=60)  # type: ignore[attr-defined]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_two_gloo_ranks_equal_single_process():
    leaving = mp.get_context("spawn").Barrier(WORLD_SIZE)
    mp.spawn(worker, args=(free_port(), leaving), nprocs=WORLD_SIZE, join=True)


def test_single_process_helpers_without_launcher(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    info = distributed.init_distributed(backend="gloo")
    assert (info.rank, info.local_rank, info.world_size, info.device) == (0, 0, 1, torch.device("cpu"))
    assert info.primary and not info.distributed
    assert distributed.is_primary()
    distributed.barrier()
    value = torch.tensor([1.5, 2.0], requires_grad=True)
    reduced = distributed.all_reduce_mean(value)
    assert torch.equal(reduced, value.detach()) and not reduced.requires_grad
    distributed.cleanup()


def test_slurm_environment_is_read(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert distributed.world_info_from_env() == (5, 1, 8)


def test_multi_process_launch_without_master_address_is_explained(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR and MASTER_PORT"):
        distributed.init_distributed(backend="gloo")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(RuntimeError, match="outside the world"):
        distributed.init_distributed(backend="gloo")
