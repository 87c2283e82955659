"""Process-group helpers for runs launched by ``torchrun`` (or ``srun``), and a no-op single-process fallback.

``init_distributed()`` reads the launcher's environment: torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; under SLURM without torchrun, ``SLURM_PROCID``, ``SLURM_LOCALID`` and
``SLURM_NTASKS`` stand in for the first three (``MASTER_ADDR``/``MASTER_PORT`` must then be exported by the batch
script). Without any of them the run is a single process and every helper here is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "world_info_from_env", "is_primary", "barrier", "all_reduce_mean", "cleanup"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank, 0 to ``world_size - 1``.
        local_rank: Rank on this node; it selects the GPU.
        world_size: Number of processes in the job.
        device: The device this process computes on (``cuda:<local_rank>`` or ``cpu``).
    """

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def primary(self) -> bool:
        return self.rank == 0


def _env_int(names: tuple[str, ...], default: int) -> int:
    """The first of ``names`` set in the environment, as an int; ``default`` if none is set."""
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"environment variable {name}={value!r} is not an integer") from None
    return default


def world_info_from_env() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's variables, else SLURM's, else ``(0, 0, 1)``."""
    if "WORLD_SIZE" in os.environ:
        names = ("RANK",), ("LOCAL_RANK",), ("WORLD_SIZE",)
    else:
        names = ("SLURM_PROCID",), ("SLURM_LOCALID",), ("SLURM_NTASKS",)
    return _env_int(names[0], 0), _env_int(names[1], 0), _env_int(names[2], 1)


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Joins the process group described by the environment (see the module doc) and picks the device.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; None picks nccl when CUDA is available and gloo otherwise.
        timeout_s: Collective timeout in seconds.

    Returns:
        This process's :class:`DistInfo`. With a world size of 1 no process group is created.

    Raises:
        RuntimeError: A multi-process launch without ``MASTER_ADDR``/``MASTER_PORT``, or an impossible rank.
    """
    rank, local_rank, world_size = world_info_from_env()
    if not 0 <= rank < world_size:
        raise RuntimeError(f"rank {rank} is outside the world of size {world_size} (check RANK/WORLD_SIZE)")
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    if use_cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise RuntimeError(f"a {world_size}-process launch needs {' and '.join(missing)} in the environment "
                               "(torchrun sets them; under SLURM export them in the batch script)")
        dist.init_process_group(
            backend=backend or ("nccl" if use_cuda else "gloo"), init_method="env://", rank=rank,
            world_size=world_size, timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def is_primary() -> bool:
    """True on rank 0, or when no process group is running (the process that logs and writes checkpoints)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    """Waits for all ranks; a no-op in a single process."""
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of a floating-point ``tensor`` over ranks, as a new detached tensor (a copy in a single process).

    Under nccl the tensor must be on this rank's GPU.

    Used for logging: with the local loss of :class:`mmv.losses.MMVLoss`, the mean of the per-rank values is the
    global-batch loss.
    """
    result = tensor.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(result, op=dist.ReduceOp.SUM)
        result /= dist.get_world_size()
    return result


def cleanup() -> None:
    """Leaves the process group, if one is running."""
    if dist.is_initialized():
        dist.destroy_process_group()
