"""The augmented (training-feature) crop of the clip pipeline: flips only where allowed, never in the centre crop."""
from __future__ import annotations

import numpy as np
import torch

from mmv.data.transforms import VideoTransform


def _left_bright_clip() -> np.ndarray:
    clip = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    clip[:, :, :4] = 255
    return clip


def test_augmented_crop_flips_only_when_allowed() -> None:
    clip = _left_bright_clip()
    left_brighter = []
    for seed in range(40):
        for flip in (False, True):
            transform = VideoTransform(train=True, crop_size=8, min_resize=8, flip=flip, color_jitter=False)
            out = transform.geometry(clip, torch.Generator().manual_seed(seed)).float()
            left_brighter.append((flip, bool(out[:, :, :4].mean() > out[:, :, 4:].mean())))
    assert all(brighter for flip, brighter in left_brighter if not flip)
    flipped = sum(not brighter for flip, brighter in left_brighter if flip)
    assert 5 < flipped < 35  # about half of the augmented clips are mirrored


def test_centre_crop_never_flips_and_geometry_keeps_uint8() -> None:
    out = VideoTransform(train=False, crop_size=8, min_resize=8, flip=True).geometry(_left_bright_clip())
    assert out.dtype == torch.uint8 and out[:, :, :4].float().mean() > out[:, :, 4:].float().mean()


def test_geometry_draws_what_the_training_transform_draws() -> None:
    # The training clip is the uint8 geometry, scaled to [0, 1], then colour jitter: the same crop and flip for the
    # same generator state, so evaluation's augmented windows and training clips share one code path.
    clip = torch.randint(0, 256, (3, 12, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    transform = VideoTransform(train=True, crop_size=8, min_resize=12, flip=True, color_jitter=False)
    for seed in range(10):
        full = transform(clip, torch.Generator().manual_seed(seed))
        geometry = transform.geometry(clip, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(full, geometry.float() / 255.0)
