"""Video transform tests against independent references: PIL resizing, Python's colorsys, numpy slicing."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

from mmv.data import transforms as T
from mmv.data.transforms import VideoTransform


def _clip(t=4, h=36, w=52, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_to_float():
    clip = _clip()
    out = T.to_float(clip)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.from_numpy(clip).float() / 255)
    assert T.to_float(out) is not None and torch.equal(T.to_float(out), out)


@pytest.mark.parametrize("h, w, size, expected",
                         [(36, 52, 24, (24, 34)), (52, 36, 24, (34, 24)), (36, 52, 72, (72, 104))])
def test_resize_short_side_shape_and_pil_agreement(h, w, size, expected):
    clip = _clip(h=h, w=w)
    out = T.resize_short_side(clip, size)
    assert out.shape == (4, *expected, 3) and out.dtype == torch.uint8
    for frame, resized in zip(clip, out.numpy()):
        # PIL's bilinear filter widens with the scale factor (antialiasing), as torch's antialias=True does.
        reference = np.asarray(Image.fromarray(frame).resize(expected[::-1], Image.BILINEAR))
        assert np.abs(reference.astype(int) - resized).max() <= 1


@pytest.mark.parametrize("h, w, size", [(64, 64, 48), (240, 320, 224), (61, 97, 40), (36, 52, 72)])
def test_resize_is_the_rounded_float_kernel_exactly(h, w, size):
    """Every model was trained and evaluated on these pixels: a faster way to compute them must give the same ones
    (torch's float kernel on a channels-last view, rounded; its uint8 kernel differs by one grey level)."""
    clip = _clip(h=h, w=w, seed=h)
    out = T.resize_short_side(clip, size)
    view = torch.from_numpy(clip).permute(0, 3, 1, 2).float()  # channels-last strides, as the frames come
    reference = torch.nn.functional.interpolate(view, size=out.shape[1:3], mode="bilinear", align_corners=False,
                                                antialias=True).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(out, reference.permute(0, 2, 3, 1))


def test_resize_is_a_no_op_at_the_target_size():
    clip = torch.from_numpy(_clip(h=24, w=40))
    assert T.resize_short_side(clip, 24) is clip
    floats = T.resize_short_side(T.to_float(clip), 12)
    assert floats.dtype == torch.float32 and floats.shape == (4, 12, 20, 3)


def test_center_crop_takes_the_middle():
    clip = _clip(h=37, w=52)
    out = T.center_crop(clip, 20).numpy()
    np.testing.assert_array_equal(out, clip[:, 8:28, 16:36])  # offsets floor((37-20)/2), floor((52-20)/2)
    np.testing.assert_array_equal(T.center_crop(clip, (10, 30)).numpy(), clip[:, 13:23, 11:41])
    with pytest.raises(ValueError):
        T.center_crop(clip, 40)


def test_random_crop_is_seeded_consistent_over_time_and_covers_all_offsets():
    clip = _clip(h=12, w=14)
    a = T.random_crop(clip, 10, torch.Generator().manual_seed(3))
    b = T.random_crop(clip, 10, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    offsets = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        crop = T.random_crop(clip, 10, generator).numpy()
        found = [(y, x) for y in range(3) for x in range(5) if np.array_equal(crop, clip[:, y:y + 10, x:x + 10])]
        assert len(found) == 1  # one window, the same for every frame
        offsets.add(found[0])
    assert offsets == {(y, x) for y in range(3) for x in range(5)}


def test_horizontal_flip():
    clip = _clip()
    np.testing.assert_array_equal(T.horizontal_flip(clip).numpy(), clip[:, :, ::-1])
    torch.testing.assert_close(T.horizontal_flip(T.horizontal_flip(clip)), torch.from_numpy(clip))


def _colors(n=500, seed=0) -> np.ndarray:
    colors = np.random.default_rng(seed).uniform(0, 1, (n, 3))
    colors[:5] = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 0.3, 0.3]]  # greys and pure hues
    return colors


def test_hsv_conversions_match_colorsys():
    colors = _colors()
    hsv = T.rgb_to_hsv(torch.from_numpy(colors)).numpy()
    reference = np.array([colorsys.rgb_to_hsv(*c) for c in colors])
    np.testing.assert_allclose(hsv, reference, atol=1e-9)
    np.testing.assert_allclose(T.hsv_to_rgb(torch.from_numpy(reference)).numpy(), colors, atol=1e-9)


def test_color_adjustments_match_their_definitions():
    colors = _colors()
    x = torch.from_numpy(colors)
    np.testing.assert_allclose(T.adjust_brightness(x, 0.1).numpy(), colors + 0.1)
    saturated = np.array([colorsys.hsv_to_rgb(h, min(s * 1.3, 1.0), v) for h, s, v in
                          (colorsys.rgb_to_hsv(*c) for c in colors)])
    np.testing.assert_allclose(T.adjust_saturation(x, 1.3).numpy(), saturated, atol=1e-9)
    # Outside [0, 1] (after a brightness shift) it still equals the HSV round trip that TensorFlow computes.
    wide = torch.from_numpy(np.random.default_rng(2).uniform(-0.3, 1.3, (500, 3)))
    for factor in (0.6, 1.4):
        hue, sat, val = T.rgb_to_hsv(wide).unbind(-1)
        round_trip = T.hsv_to_rgb(torch.stack([hue, (sat * factor).clamp(0, 1), val], dim=-1))
        torch.testing.assert_close(T.adjust_saturation(wide, factor), round_trip, atol=1e-9, rtol=0)
    shifted = np.array([colorsys.hsv_to_rgb((h + 0.15) % 1.0, s, v) for h, s, v in
                        (colorsys.rgb_to_hsv(*c) for c in colors)])
    np.testing.assert_allclose(T.adjust_hue(x, 0.15).numpy(), shifted, atol=1e-9)
    video = torch.from_numpy(np.random.default_rng(1).uniform(0, 1, (3, 5, 6, 3)))
    mean = video.numpy().mean(axis=(1, 2), keepdims=True)  # per frame and channel
    np.testing.assert_allclose(T.adjust_contrast(video, 0.7).numpy(), (video.numpy() - mean) * 0.7 + mean)


def test_color_jitter_is_one_draw_per_clip_within_the_stated_ranges():
    frame = T.to_float(_clip(t=1))
    video = frame.repeat(3, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):
        out = T.color_jitter(video, generator)
        assert out.min() >= 0 and out.max() <= 1
        torch.testing.assert_close(out[0], out[2])  # the same change on every frame
    # Brightness alone: a constant shift of at most 32/255 (away from the clipping bounds).
    mid = torch.full((2, 4, 4, 3), 0.5)
    shifts = [(T.color_jitter(mid, generator, saturation=0, contrast=0, hue=0) - mid) for _ in range(60)]
    deltas = torch.stack([s.flatten()[0] for s in shifts])
    assert all(torch.allclose(s, s.flatten()[0].expand_as(s)) for s in shifts)
    assert deltas.abs().max() <= 32 / 255 + 1e-6 and deltas.abs().max() > 28 / 255
    first = T.color_jitter(video, torch.Generator().manual_seed(5))
    torch.testing.assert_close(first, T.color_jitter(video, torch.Generator().manual_seed(5)))


def test_eval_transform_is_resize_then_centre_crop():
    clip = _clip(t=3, h=240, w=320)
    out = VideoTransform(train=False)(clip)
    assert out.shape == (3, 200, 200, 3) and out.dtype == torch.float32
    expected = T.to_float(T.center_crop(T.resize_short_side(clip, 224), 200))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(VideoTransform(train=False)(torch.from_numpy(clip)), out)


def test_train_transform_is_seeded_and_random():
    clip = _clip(t=2, h=240, w=300)
    transform = VideoTransform(train=True)
    a = transform(clip, torch.Generator().manual_seed(11))
    b = transform(clip, torch.Generator().manual_seed(11))
    c = transform(clip, torch.Generator().manual_seed(12))
    assert a.shape == (2, 200, 200, 3) and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_train_transform_flips_about_half_the_time():
    # A clip whose left half is dark and right half bright, no colour jitter: flips are visible in the first column.
    clip = np.zeros((1, 8, 8, 3), np.uint8)
    clip[:, :, 4:] = 255
    transform = VideoTransform(train=True, crop_size=8, min_resize=8, color_jitter=False)
    generator = torch.Generator().manual_seed(0)
    flipped = sum(transform(clip, generator)[0, :, 0].mean() > 0.5 for _ in range(400))
    assert 160 < flipped < 240
    never = VideoTransform(train=True, crop_size=8, min_resize=8, color_jitter=False, flip=False)
    assert all(never(clip, generator)[0, :, 0].mean() < 0.5 for _ in range(20))


def test_scale_jitter_keeps_the_crop_size():
    transform = VideoTransform(train=True, scale_jitter=(0.8, 1.2))
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        assert transform(_clip(t=1, h=240, w=320), generator).shape == (1, 200, 200, 3)


def test_invalid_configuration():
    with pytest.raises(ValueError):
        VideoTransform(train=True, crop_size=256, min_resize=224)
    with pytest.raises(ValueError):
        VideoTransform(train=True)(np.zeros((4, 8, 8), np.uint8))
