"""The augmented (training-feature) crop of the evaluation: flips only where the spec allows them."""
from __future__ import annotations

import numpy as np
import torch

from mmv.eval.features import VideoClipSpec, _crop_video


def _left_bright_clip() -> np.ndarray:
    clip = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    clip[:, :, :4] = 255
    return clip


def test_augmented_crop_flips_only_when_allowed() -> None:
    clip = _left_bright_clip()
    left_brighter = []
    for seed in range(40):
        for flip in (False, True):
            out = _crop_video(clip, 8, torch.Generator().manual_seed(seed), flip).float()
            left_brighter.append((flip, bool(out[:, :, :4].mean() > out[:, :, 4:].mean())))
    assert all(brighter for flip, brighter in left_brighter if not flip)
    flipped = sum(not brighter for flip, brighter in left_brighter if flip)
    assert 5 < flipped < 35  # about half of the augmented clips are mirrored


def test_centre_crop_never_flips_and_spec_default() -> None:
    out = _crop_video(_left_bright_clip(), 8, None, True).float()
    assert out[:, :, :4].mean() > out[:, :, 4:].mean()
    assert VideoClipSpec().flip is True
