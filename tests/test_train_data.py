"""The training batch stream: fixed-size batches around skipped clips, and exact resume from its state."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmv.data.skips import SkippedSample
from mmv.train.data import BatchStream
from mmv.train.synthetic import SyntheticClips


def _is_bad(index: int) -> bool:
    return index % 7 == 3


class SkippyDataset(torch.utils.data.Dataset):
    """Map-style; every 7th index (from 3) is unusable. A sample records (index, epoch)."""

    def __len__(self) -> int:
        return 23

    def __getitem__(self, key):
        index, epoch = key
        if _is_bad(index):
            return SkippedSample(f"clip{index}.mp4", "decode_error", "broken")
        return {"video": torch.tensor([index, epoch]), "label": index, "path": f"clip{index}.mp4"}


class SkippyStream(torch.utils.data.IterableDataset):
    """Iterable; a seeded order per epoch, split across DataLoader workers like a shard reader."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        order = np.random.default_rng([5, self.epoch]).permutation(23)
        for index in order[worker::workers]:
            index = int(index)
            if _is_bad(index):
                yield SkippedSample(f"clip{index}.mp4", "decode_error", "broken")
            else:
                yield {"video": torch.tensor([index, self.epoch]), "label": index, "path": f"clip{index}.mp4"}


def _take(stream: BatchStream, n: int) -> list[torch.Tensor]:
    return [next(stream)["video"] for _ in range(n)]


@pytest.mark.parametrize("make, workers", [(SkippyDataset, 0), (SkippyDataset, 2), (SkippyStream, 0),
                                           (SkippyStream, 2)], ids=["map-0", "map-2", "iterable-0", "iterable-2"])
def test_batches_are_full_and_resume_exactly(make, workers):
    batch_size, total = 4, 16  # 64 clips from 23 items of which 3 are bad: several epochs, most batches topped up
    reference = _take(BatchStream(make(), batch_size, seed=1, workers=workers), total)
    assert all(b.shape == (batch_size, 2) for b in reference)
    seen = torch.cat(reference)
    assert not any(_is_bad(int(i)) for i in seen[:, 0])
    # Epoch by epoch, every good clip appears exactly once (20 good clips per epoch).
    for epoch in range(int(seen[:, 1].max())):
        assert sorted(seen[seen[:, 1] == epoch, 0].tolist()) == [i for i in range(23) if not _is_bad(i)]

    # Stops at the first batch, at an epoch boundary, mid-epoch with clips left over in the top-up buffer; with
    # workers (slow to start) only the last.
    for stop in (1, 5, 6, 11) if workers == 0 else (6,):
        first = BatchStream(make(), batch_size, seed=1, workers=workers)
        head = _take(first, stop)
        state = json.loads(json.dumps(first.state_dict()))  # as stored in trainer_state.json
        tail = _take(BatchStream(make(), batch_size, seed=1, workers=workers, state=state), total - stop)
        for got, want in zip(head + tail, reference):
            assert torch.equal(got, want), f"resumed after {stop} batches"


def test_skips_are_counted_once_across_a_resume():
    stream = BatchStream(SkippyDataset(), 4, seed=0)
    _take(stream, 5)  # 20 good clips = one epoch: its 3 bad ones were met
    state = stream.state_dict()
    assert state["skipped_by_reason"] == {"decode_error": 3}
    resumed = BatchStream(SkippyDataset(), 4, seed=0, state=state)
    _take(resumed, 5)  # the second epoch
    assert resumed.report.counts["decode_error"] == 6


def test_the_stream_stops_when_nothing_is_usable():
    class AllBad(SkippyDataset):
        def __getitem__(self, key):
            return SkippedSample("x.mp4", "decode_error", "broken")

    with pytest.raises(RuntimeError, match="no usable clip"):
        next(BatchStream(AllBad(), 4))


def test_synthetic_clips_follow_the_sample_contract():
    data = SyntheticClips(16, num_frames=4, crop=16, audio_frames=10, mel_bins=12, num_narrations=3, max_words=6,
                          audio_missing=0.3, text_missing=0.3, nonfinite_every=5)
    for index in range(16):
        sample = data[(index, 7)]
        assert sample["video"].shape == (4, 16, 16, 3) and sample["video"].dtype == torch.float32
        assert sample["audio"].shape == (10, 12)
        assert sample["word_ids"].shape == (3, 6) and sample["word_ids"].dtype == torch.int64
        assert sample["text_mask"].shape == (3,) and sample["text_mask"].dtype == torch.bool
        # Masks agree with the content: absent audio is zeros, absent narrations are all-padding rows.
        assert bool(sample["audio_mask"]) or not sample["audio"].any()
        assert torch.equal(sample["text_mask"], (sample["word_ids"] != 0).any(dim=1))
        finite = bool(torch.isfinite(sample["video"]).all())
        assert finite == (index % 5 != 0)
        if finite:
            assert 0.0 <= sample["video"].min() and sample["video"].max() <= 1.0
        assert torch.equal(sample["video"], data[index]["video"])  # a pure function of the index
    audio_present = [bool(data[i]["audio_mask"]) for i in range(16)]
    assert 0 < sum(audio_present) < 16
