"""The training data stream: datasets from the config, and batches of a fixed size that resume exactly.

Every step needs exactly ``batch_size`` clips on every rank (the contrastive loss gathers equal slices from all
ranks), but a dataset may skip clips it cannot decode (:class:`mmv.data.datasets.SkippedSample`). The
:class:`BatchStream` therefore tops batches up from the following clips, and it knows the position of each clip in
the sampler's order, so its state (the position of the first clip not yet trained on) resumes the same sequence of
batches after a restart.

Exactness, whatever the number of DataLoader workers, rests on three rules:

* the order of clips is a pure function of ``(seed, epoch, rank)`` (:class:`mmv.data.sampling.ResumableSampler`);
* a clip is a pure function of ``(index, epoch)``: datasets seed their augmentation from it, never from a worker's
  RNG (the sampler passes ``(index, epoch)`` keys);
* the DataLoader draws its worker seeds from its own generator, so it never advances the global RNG.
"""
from __future__ import annotations

import collections
import logging
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .config import DataSection, DatasetSpec
from .synthetic import SyntheticClips

__all__ = ["BatchStream", "build_dataset", "mel_config", "synthetic_dataset"]

log = logging.getLogger(__name__)

SYNTHETIC_VOCAB_SIZE = 1000  # below the smallest model vocabulary (the tiny models': 2048)


# ----------------------------------------------------------------------------------------------------------------
# Datasets from the config
# ----------------------------------------------------------------------------------------------------------------

def mel_config(data: DataSection) -> Any:
    """The :class:`mmv.data.audio.MelConfig` of the config's audio settings (what the trained model records)."""
    from mmv.preprocess import Preprocess

    return Preprocess.from_training_data(data).audio.mel


def num_audio_frames(data: DataSection) -> int:
    """Spectrogram frames T' of one clip, as the data pipeline computes them."""
    from mmv.data.audio import num_spectrogram_frames

    return num_spectrogram_frames(round(data.num_frames / data.fps * data.sample_rate), mel_config(data))


def build_dataset(data: DataSection, seed: int, vocab_size: int | None = None, *, rank: int = 0,
                  world_size: int = 1) -> Dataset:
    """The training dataset the config describes; several datasets are mixed by weight.

    Args:
        data: The data section.
        seed: Seeds clip choice and augmentation.
        vocab_size: The model's vocabulary size; a larger word-to-id table is an error. None: not checked.
        rank: This process's rank (shards are split across ranks by the dataset itself).
        world_size: Number of processes.
    """
    tokenizer = _tokenizer(data, vocab_size)
    datasets = [_one_dataset(spec, data, seed, tokenizer, rank, world_size) for spec in data.datasets]
    if len(datasets) == 1:
        return datasets[0]
    if any(isinstance(d, IterableDataset) for d in datasets):
        raise ValueError("shards stream in order and cannot be mixed with other datasets by weight; mix the "
                         "sources when writing the shards (mmv prepare) or use folders/manifests")
    from mmv.data.datasets import MixedDataset

    return MixedDataset(datasets, [spec.weight for spec in data.datasets], seed=seed)


def _tokenizer(data: DataSection, vocab_size: int | None) -> Any:
    if not data.vocab:
        if any(spec.kind != "synthetic" for spec in data.datasets):
            log.warning("data.vocab is empty: real datasets will have no text (text_mask all False)")
        return None
    from mmv.data.tokenizer import Tokenizer, Vocabulary

    vocab = Vocabulary.load(data.vocab)
    if vocab_size is not None and len(vocab) > vocab_size:
        raise ValueError(f"{data.vocab}: {len(vocab)} words, more than the model's text embedding holds "
                         f"({vocab_size}); rebuild it with a smaller size or change the model")
    return Tokenizer(vocab, max_words=data.max_words)


def _one_dataset(spec: DatasetSpec, data: DataSection, seed: int, tokenizer: Any, rank: int,
                 world_size: int) -> Dataset:
    if spec.kind == "synthetic":
        return synthetic_dataset(spec, data, seed)
    from mmv.data.transforms import VideoTransform

    transform = VideoTransform(train=True, crop_size=data.crop, min_resize=data.min_resize, flip=data.flip,
                               color_jitter=data.color_jitter)
    common = dict(num_frames=data.num_frames, fps=data.fps, transform=transform, mel_config=mel_config(data),
                  tokenizer=tokenizer, num_narrations=data.num_narrations, seed=seed)
    if spec.kind == "shards":
        from mmv.data.shards import ShardDataset

        return ShardDataset(spec.path, rank=rank, world_size=world_size, **common)
    from mmv.data.datasets import ClipDataset, read_manifest, scan_folder
    from mmv.data.skips import SkipReport

    if spec.kind == "folder":
        scan_report = SkipReport()  # the folder's other files, accounted for in the run's report
        items = scan_folder(spec.path, caption_lang=spec.caption_lang, report=scan_report)
        return ClipDataset(items, train=True, scan_report=scan_report, **common)
    return ClipDataset(read_manifest(spec.path), train=True, **common)


def synthetic_dataset(spec: DatasetSpec, data: DataSection, seed: int) -> SyntheticClips:
    """:class:`SyntheticClips` shaped like the real clips of ``data`` (frames, crop, spectrogram, narrations)."""
    return SyntheticClips(
        spec.size, num_frames=data.num_frames, crop=data.crop, audio_frames=num_audio_frames(data),
        mel_bins=data.num_mel_bins, num_narrations=data.num_narrations, max_words=data.max_words,
        vocab_size=SYNTHETIC_VOCAB_SIZE, seed=seed, nonfinite_every=spec.nonfinite_every, fps=data.fps)


# ----------------------------------------------------------------------------------------------------------------
# The stream of batches
# ----------------------------------------------------------------------------------------------------------------

def collate_with_positions(samples: list[Any]) -> dict[str, Any]:
    """:func:`mmv.data.datasets.collate_clips`, plus ``kept``: the positions (in ``samples``) of the usable ones."""
    from mmv.data.datasets import collate_clips
    from mmv.data.skips import SkippedSample

    batch = collate_clips(samples)
    batch["kept"] = [i for i, sample in enumerate(samples) if not isinstance(sample, SkippedSample)]
    return batch


def _split(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """A collated batch back into sample dicts (without the bookkeeping keys)."""
    keys = [k for k in batch if k not in ("skipped", "kept", "notes")]
    return [{k: batch[k][i] for k in keys} for i in range(len(batch["kept"]))]


class BatchStream:
    """Endless batches of exactly ``batch_size`` usable clips for one rank, resumable at any step.

    Map-style datasets are read through :class:`~mmv.data.sampling.ResumableSampler` (a resumed stream starts
    directly at its position). Iterable datasets (:class:`~mmv.data.shards.ShardDataset`) have no random access:
    a resumed stream replays its epoch from the start and drops the clips before its position, which costs their
    decoding once, and is exact only with the same number of DataLoader workers (their interleaving is part of
    the order).

    Args:
        dataset: A map-style dataset accepting ``(index, epoch)`` keys, or an iterable one with ``set_epoch``; it
            may produce :class:`~mmv.data.datasets.SkippedSample` markers, which are counted and replaced by the
            next clips.
        batch_size: Clips per batch (per rank).
        rank: This process's rank.
        world_size: Number of processes.
        seed: Seeds the order of every epoch.
        workers: DataLoader worker processes.
        pin_memory: Pin batches for faster host-to-GPU copies.
        state: What :meth:`state_dict` returned, to continue from there.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 workers: int = 0, pin_memory: bool = False, state: dict[str, Any] | None = None) -> None:
        from mmv.data.skips import SkipReport
        from mmv.data.sampling import ResumableSampler

        self.dataset, self.batch_size = dataset, batch_size
        self.report = SkipReport()
        self.sampler = None
        self._epoch, self._next_position = 0, 0
        self._floor = (0, 0)  # (epoch, position): clips before it were trained on before the resume
        if isinstance(dataset, IterableDataset):
            if state is not None:
                self._epoch, self._floor = state["epoch"], (state["epoch"], state["position"])
        else:
            if len(dataset) < 1:
                raise ValueError("the training dataset is empty")
            self.sampler = ResumableSampler(len(dataset), seed=seed, rank=rank, world_size=world_size,
                                            yield_epoch=True)
            if state is not None:
                self.sampler.load_state_dict(state["sampler"])
            self._epoch, self._next_position = self.sampler.epoch, self.sampler.position
        if state is not None:
            self.report.counts.update(state.get("skipped_by_reason", {}))
            self.report.note_counts.update(state.get("noted_by_reason", {}))
        scan_report = getattr(dataset, "scan_report", None)
        if scan_report is not None:
            self.report.merge(scan_report)
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
            collate_fn=collate_with_positions, pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(seed * 7919 + rank), prefetch_factor=4 if workers else None)
        self.buffer: collections.deque[tuple[int, int, dict[str, Any]]] = collections.deque()  # (epoch, pos, sample)
        self._iterator = None
        self._empty_passes = 0

    def _start_pass(self) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(self._epoch)  # the pass starts at self._next_position
        elif hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self._epoch)
        self._iterator = iter(self.loader)

    def _pull(self) -> tuple[int, int, dict[str, Any]]:
        """The next collated loader batch, its epoch and the position of its first clip in that epoch's order."""
        while True:
            if self._iterator is None:
                self._start_pass()
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self._epoch, self._next_position = self._epoch + 1, 0
                self._empty_passes += 1
                if self._empty_passes > 2:
                    raise RuntimeError(f"no usable clip in a whole epoch; {self.report.details()}") from None
                continue
            start = self._next_position
            self._next_position += len(batch["kept"]) + len(batch["skipped"])
            if batch["kept"]:
                self._empty_passes = 0
            return self._epoch, start, batch

    def _record_skips(self, epoch: int, start: int, batch: dict[str, Any], floor: int) -> None:
        kept = set(batch["kept"])
        skipped_positions = [i for i in range(len(kept) + len(batch["skipped"])) if i not in kept]
        for position, skipped in zip(skipped_positions, batch["skipped"]):
            if start + position >= floor:  # those before the floor were counted before the resume
                self.report.add(skipped)
        if start >= floor:
            for note in batch.get("notes", ()):  # inputs used despite a problem (an unreadable caption file)
                self.report.note(note)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> dict[str, Any]:
        from mmv.data.datasets import collate_clips

        while len(self.buffer) < self.batch_size:
            epoch, start, batch = self._pull()
            floor = self._floor[1] if epoch == self._floor[0] else 0
            self._record_skips(epoch, start, batch, floor)
            self.report.samples_seen += len(batch["kept"])
            if not self.buffer and len(batch["kept"]) == self.batch_size and start >= floor:
                return batch  # the common case: a full batch, nothing to top up
            for position, sample in zip(batch["kept"], _split(batch)):
                if start + position >= floor:
                    self.buffer.append((epoch, start + position, sample))
        samples = [self.buffer.popleft()[2] for _ in range(self.batch_size)]
        return collate_clips(samples)

    def state_dict(self) -> dict[str, Any]:
        """Where the next batch starts (the first clip not yet returned), plus the skip counts so far."""
        if self.buffer:
            epoch, position = self.buffer[0][0], self.buffer[0][1]
        else:
            epoch, position = self._epoch, self._next_position
            if (epoch, position) < self._floor:  # still before the resume point
                epoch, position = self._floor
        state: dict[str, Any] = {"epoch": epoch, "position": position,
                                 "skipped_by_reason": dict(self.report.counts),
                                 "noted_by_reason": dict(self.report.note_counts)}
        if self.sampler is not None:
            state["sampler"] = {**self.sampler.state_dict(0), "epoch": epoch, "position": position}
        return state

    def close(self) -> None:
        """Stops the worker processes."""
        self._iterator = None
