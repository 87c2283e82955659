"""The training data stream: datasets from the config, a deterministic resumable sampler, the DataLoader.

Exact resume needs the stream after step k of a resumed run to equal the stream after step k of an uninterrupted
one, whatever the number of worker processes. Two rules give that:

* the order of samples is a pure function of ``(seed, step)``: :class:`InfiniteSampler` walks through one seeded
  permutation per epoch, slicing each global batch by rank, and starts at any step without replaying the ones
  before;
* a sample is a pure function of its index (datasets seed any augmentation from the index, never from a worker's
  RNG), and the DataLoader draws its worker seeds from its own generator, so it does not advance the training
  process's global RNG either.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from .config import DataSection, DatasetSpec
from .synthetic import SyntheticClips

__all__ = ["InfiniteSampler", "build_dataset", "build_loader"]

SYNTHETIC_VOCAB_SIZE = 1000  # below the smallest model vocabulary (the tiny models': 2048)


class InfiniteSampler(Sampler[int]):
    """Endless, rank-sliced sample indices, epoch after epoch, startable at any step.

    Epoch ``e`` is a permutation of ``range(num_samples)`` drawn from ``(seed, e)``, cut into global batches of
    ``batch_size * world_size`` indices (the remainder is dropped); at each step rank ``r`` receives slice ``r`` of
    the global batch. Iteration starts at global batch ``start_step``.

    Args:
        num_samples: Dataset size.
        batch_size: Samples per rank per step.
        rank: This process's rank.
        world_size: Number of processes.
        seed: Fixes every epoch's permutation.
        start_step: The first global batch to produce (the resumed step).
    """

    def __init__(self, num_samples: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start_step: int = 0) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size, self.seed, self.start_step = rank, world_size, seed, start_step
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = num_samples // self.global_batch
        if self.batches_per_epoch < 1:
            raise ValueError(f"the dataset has {num_samples} samples, fewer than one global batch of "
                             f"{self.global_batch} ({batch_size} per rank x {world_size} ranks)")

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def indices_at(self, step: int) -> list[int]:
        """The indices this rank receives at global step ``step``."""
        epoch, batch = divmod(step, self.batches_per_epoch)
        begin = batch * self.global_batch + self.rank * self.batch_size
        return self.permutation(epoch)[begin:begin + self.batch_size].tolist()

    def __iter__(self) -> Iterator[int]:
        step, epoch, order = self.start_step, None, None
        while True:
            this_epoch, batch = divmod(step, self.batches_per_epoch)
            if this_epoch != epoch:
                epoch, order = this_epoch, self.permutation(this_epoch)
            begin = batch * self.global_batch + self.rank * self.batch_size
            yield from order[begin:begin + self.batch_size].tolist()
            step += 1

    def state_dict(self, step: int) -> dict[str, Any]:
        """What a checkpoint at ``step`` must record to continue this stream."""
        return {"kind": "infinite", "seed": self.seed, "num_samples": self.num_samples,
                "global_batch": self.global_batch, "step": step}


def build_dataset(data: DataSection, seed: int) -> Dataset:
    """The training dataset the config describes (several are mixed by weight)."""
    if len(data.datasets) != 1:
        raise ValueError("mixing several datasets needs the data pipeline's MixedDataset (mmv.data.datasets)")
    spec = data.datasets[0]
    if spec.kind == "synthetic":
        return synthetic_dataset(spec, data, seed)
    raise ValueError(f"dataset kind {spec.kind!r} needs the data pipeline (mmv.data.datasets), not available yet")


def synthetic_dataset(spec: DatasetSpec, data: DataSection, seed: int) -> SyntheticClips:
    """:class:`SyntheticClips` shaped like the real clips of ``data`` (frames, crop, spectrogram, narrations)."""
    return SyntheticClips(
        spec.size, num_frames=data.num_frames, crop=data.crop, audio_frames=data.num_audio_frames,
        mel_bins=data.num_mel_bins, num_narrations=data.num_narrations, max_words=data.max_words,
        vocab_size=SYNTHETIC_VOCAB_SIZE, seed=seed, nonfinite_every=spec.nonfinite_every, fps=data.fps)


def build_loader(dataset: Dataset, sampler: InfiniteSampler, *, workers: int, seed: int, rank: int,
                 pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``sampler`` whose worker seeding leaves the global RNG alone (see the module doc)."""
    collate = getattr(dataset, "collate_fn", None) or default_collate
    return DataLoader(
        dataset, batch_size=sampler.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        pin_memory=pin_memory, drop_last=True, generator=torch.Generator().manual_seed(seed * 7919 + rank),
        prefetch_factor=4 if workers else None, persistent_workers=False)
