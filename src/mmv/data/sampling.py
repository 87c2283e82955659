"""A sampler that is deterministic given (seed, epoch), shards across ranks, and resumes mid-epoch.

The order of epoch ``e`` is a permutation drawn from ``seed + e`` (as ``torch.utils.data.DistributedSampler``
does), padded by repeating its head so that every rank gets the same number of samples (or cut with
``drop_last``), then dealt to ranks round-robin: rank ``r`` of ``W`` takes positions ``r, r + W, ...``.

Resuming: the training loop knows how many samples this rank has *consumed* in the current epoch (batches seen x
batch size); DataLoader workers prefetch indices ahead of that, so the sampler cannot know it. Save
``sampler.state_dict(consumed)`` in the checkpoint; after ``load_state_dict`` the next iteration yields exactly the
rest of that epoch, in the same order, and later epochs are whole again::

    sampler = ResumableSampler(len(dataset), seed=0, rank=rank, world_size=world_size)
    sampler.load_state_dict(checkpoint["sampler"])        # when resuming
    for epoch in range(sampler.epoch, num_epochs):
        sampler.set_epoch(epoch)                          # keeps a resumed position for this epoch
        for step, batch in enumerate(loader):
            ...
            checkpoint["sampler"] = sampler.state_dict((step + 1) * batch_size)  # counted from this pass's start
"""
from __future__ import annotations

from typing import Any, Iterator

import torch


class ResumableSampler(torch.utils.data.Sampler):
    """Deterministic, rank-sharded, resumable sampler over ``range(num_samples)``.

    Args:
        num_samples: Size of the dataset.
        shuffle: Permute each epoch (False: dataset order).
        seed: The order of epoch ``e`` depends only on ``seed + e``.
        rank: This process's rank.
        world_size: Number of ranks.
        drop_last: Drop the tail that does not divide evenly across ranks instead of padding with repeats.
        yield_epoch: Yield ``(index, epoch)`` pairs instead of ints, so that a dataset's per-sample randomness
            follows the epoch even in persistent DataLoader workers (:class:`mmv.data.datasets.ClipDataset`
            accepts both).
    """

    def __init__(self, num_samples: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, yield_epoch: bool = False) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.yield_epoch = yield_epoch
        self.epoch = 0
        self.position = 0  # where the next pass over the epoch starts (set when resuming)
        self.pass_offset = 0  # where the current pass started

    @property
    def samples_per_rank(self) -> int:
        if self.drop_last:
            return self.num_samples // self.world_size
        return -(-self.num_samples // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``; a position restored by :meth:`load_state_dict` for this same epoch is kept."""
        if epoch != self.epoch:
            self.position = 0
        self.epoch = epoch

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's full index order for ``epoch``."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.samples_per_rank * self.world_size
        if total > len(order) and order:
            order += (order * (-(-total // len(order))))[: total - len(order)]  # pad by repeating the head
        return order[:total][self.rank::self.world_size]

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        order = self.epoch_order(self.epoch)[self.position:]
        epoch = self.epoch
        # The resume offset applies to one pass only: iterating again (next epoch) starts from the beginning.
        self.pass_offset, self.position = self.position, 0
        if self.yield_epoch:
            return iter([(index, epoch) for index in order])
        return iter(order)

    def __len__(self) -> int:
        return max(0, self.samples_per_rank - self.position)

    def state_dict(self, consumed: int) -> dict[str, Any]:
        """Where this rank stands, given the samples the training loop has consumed since the current pass began.

        A pass that resumed mid-epoch began at the resumed position; the state counts from the epoch's start.
        """
        position = self.pass_offset + consumed
        if not 0 <= position <= self.samples_per_rank:
            raise ValueError(f"position {position} is outside the epoch's {self.samples_per_rank} samples")
        return {"epoch": self.epoch, "position": position, "seed": self.seed, "num_samples": self.num_samples,
                "world_size": self.world_size, "rank": self.rank, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration yields the rest of ``state["epoch"]``.

        Raises:
            ValueError: The state was saved for another dataset size, seed or number of ranks, where the rest of
                the epoch would be a different set of samples.
        """
        for key in ("seed", "num_samples", "world_size", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]!r} but this sampler has {getattr(self, key)!r}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.pass_offset = 0
