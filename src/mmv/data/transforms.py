"""Video transforms on ``[T, H, W, 3]`` clips: resize, crops, flip, colour jitter, and the MMV training/eval pipeline.

Functions are pure: randomness comes from an explicit ``torch.Generator``, so a seeded generator gives the same clip
every time. The same random parameters apply to every frame of a clip (a crop or colour change that flickered over
time would be a different kind of augmentation).

Defaults follow DMVR, which the released MMV evaluation uses (paper fact sheet §1.3): short side resized to 224, crop
200, random horizontal flip, and DMVR's ``color_default_augm`` (applied with probability 0.8: brightness ±32/255,
saturation ×[0.6, 1.4], contrast ×[0.6, 1.4], hue ±0.2, in that order, then clipped to [0, 1]). Those colour values
are the ones VATT states it took from MMV; MMV's own values are unconfirmed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "VideoTransform",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "center_crop",
    "color_jitter",
    "horizontal_flip",
    "hsv_to_rgb",
    "random_crop",
    "resize_short_side",
    "rgb_to_hsv",
    "to_float",
]


def _as_tensor(video: np.ndarray | torch.Tensor) -> torch.Tensor:
    video = torch.as_tensor(video)
    if video.dim() != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a [T, H, W, 3] clip, got shape {tuple(video.shape)}")
    return video


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def to_float(video: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] to float32 in [0, 1]; float input is returned as float32 unchanged."""
    video = _as_tensor(video)
    if video.dtype == torch.uint8:
        return video.to(torch.float32) / 255.0
    return video.to(torch.float32)


def resize_short_side(video: np.ndarray | torch.Tensor, size: int, *, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize so that ``min(H, W) == size``, keeping the aspect ratio (long side rounded down).

    A clip whose short side already equals ``size`` is returned as is (as DMVR's ``resize_smallest``).

    Args:
        video: ``[T, H, W, 3]`` uint8 or float.
        size: Target length of the shorter side.
        antialias: Low-pass before downscaling (DMVR's TensorFlow resize does not; it aliases on large downscales).

    Returns:
        ``[T, H', W', 3]`` of the input's dtype (uint8 results are rounded).
    """
    video = _as_tensor(video)
    height, width = video.shape[1:3]
    if min(height, width) == size:
        return video
    if height <= width:
        out_h, out_w = size, max(size, width * size // height)
    else:
        out_h, out_w = max(size, height * size // width), size
    # [T, 3, H, W], made contiguous: the float kernel runs about 1.8x faster than on the permuted (channels-last)
    # view, with the same result. torch's uint8 kernel (about 10x faster, within one grey level) was measured and
    # not taken: models trained on the demo corpus with it searched worse (docs/search.md).
    x = video.permute(0, 3, 1, 2).contiguous()
    x = x.float() if video.dtype == torch.uint8 else x
    x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=antialias)
    if video.dtype == torch.uint8:
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous()  # [T, H', W', 3]


def _crop_size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _check_fits(video: torch.Tensor, height: int, width: int) -> None:
    if video.shape[1] < height or video.shape[2] < width:
        raise ValueError(f"cannot crop {height}x{width} from frames of {video.shape[1]}x{video.shape[2]}")


def center_crop(video: np.ndarray | torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """The central ``size`` (or ``(height, width)``) window of every frame; offsets rounded down like TF's."""
    video = _as_tensor(video)
    height, width = _crop_size(size)
    _check_fits(video, height, width)
    top, left = (video.shape[1] - height) // 2, (video.shape[2] - width) // 2
    return video[:, top:top + height, left:left + width]


def random_crop(video: np.ndarray | torch.Tensor, size: int | tuple[int, int],
                generator: torch.Generator | None = None) -> torch.Tensor:
    """A window at a uniformly random position, the same for every frame."""
    video = _as_tensor(video)
    height, width = _crop_size(size)
    _check_fits(video, height, width)
    top = int(torch.randint(video.shape[1] - height + 1, (), generator=generator))
    left = int(torch.randint(video.shape[2] - width + 1, (), generator=generator))
    return video[:, top:top + height, left:left + width]


def horizontal_flip(video: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Mirrors every frame left to right."""
    return _as_tensor(video).flip(2)


# NOTE: the colour functions work on channel planes ([3, ...], each plane contiguous). On channels-last tensors,
# elementwise ops that broadcast a per-pixel value against the size-3 last dimension run ~10x slower in PyTorch on
# CPU; one transpose in and one out is far cheaper. The public functions take and return channels-last tensors.


def _to_planes(video: torch.Tensor) -> torch.Tensor:
    return video.movedim(-1, 0).contiguous()  # [..., 3] -> [3, ...]


def _from_planes(planes: torch.Tensor) -> torch.Tensor:
    return planes.movedim(0, -1)  # [3, ...] -> [..., 3]


def _rgb_to_hsv_planes(rgb: torch.Tensor) -> torch.Tensor:
    r, g, b = rgb
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    safe_value = value.where(value > 0, torch.ones_like(value))
    saturation = torch.where(value > 0, chroma / safe_value, torch.zeros_like(value))
    safe_chroma = chroma.where(chroma > 0, torch.ones_like(chroma))
    hue = torch.where(value == r, (g - b) / safe_chroma,
                      torch.where(value == g, 2.0 + (b - r) / safe_chroma, 4.0 + (r - g) / safe_chroma))
    hue = torch.where(chroma > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    return torch.stack([hue, saturation, value])


def _hsv_to_rgb_planes(hsv: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = hsv
    # Channel n (red 5, green 3, blue 1) is v - v s clamp(min(k, 4 - k), 0, 1), with k = (n + 6 h) mod 6.
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (n + hue * 6.0) % 6.0
        channels.append(value - value * saturation * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(channels)


def _contrast_planes(rgb: torch.Tensor, factor: float) -> torch.Tensor:
    mean = rgb.mean(dim=(-2, -1), keepdim=True)  # per channel and frame
    return (rgb - mean) * factor + mean


def _saturation_planes(rgb: torch.Tensor, factor: float) -> torch.Tensor:
    # With hue and value v = max(r, g, b) fixed, each channel's distance below v is proportional to the saturation
    # s = (v - min) / v, so scaling s to s' = min(s * factor, 1) is v - (v - rgb) * s' / s, and
    # s' / s = min(factor, 1 / s). Grey pixels (v == min) stay as they are; a pixel with v <= 0 has s = 0 in
    # TensorFlow's HSV and comes back as the grey (v, v, v), hence ratio 0 there.
    r, g, b = rgb
    value = torch.maximum(torch.maximum(r, g), b)
    spread = value - torch.minimum(torch.minimum(r, g), b)
    inverse_saturation = torch.where(spread > 0, value / spread.where(spread > 0, torch.ones_like(spread)),
                                     torch.full_like(spread, float("inf")))
    ratio = torch.where(value > 0, torch.clamp(inverse_saturation, max=factor), torch.zeros_like(value))
    return value - (value - rgb) * ratio


def _hue_planes(rgb: torch.Tensor, delta: float) -> torch.Tensor:
    hue, saturation, value = _rgb_to_hsv_planes(rgb)
    return _hsv_to_rgb_planes(torch.stack([(hue + delta) % 1.0, saturation, value]))


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` RGB to HSV, all in [0, 1] (hue as a fraction of the circle), as ``tf.image.rgb_to_hsv``."""
    return _from_planes(_rgb_to_hsv_planes(_to_planes(rgb)))


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_hsv``."""
    return _from_planes(_hsv_to_rgb_planes(_to_planes(hsv)))


def adjust_brightness(video: torch.Tensor, delta: float) -> torch.Tensor:
    """Adds ``delta`` to every value (``tf.image.adjust_brightness``; no clipping)."""
    return video + delta


def adjust_contrast(video: torch.Tensor, factor: float) -> torch.Tensor:
    """Scales each frame's channels about their spatial mean (``tf.image.adjust_contrast``, per frame)."""
    return _from_planes(_contrast_planes(_to_planes(video), factor))


def adjust_saturation(video: torch.Tensor, factor: float) -> torch.Tensor:
    """Multiplies HSV saturation by ``factor``, clipped to [0, 1] (``tf.image.adjust_saturation``).

    Computed without the HSV round trip, with the same result (see ``_saturation_planes``).
    """
    return _from_planes(_saturation_planes(_to_planes(video), factor))


def adjust_hue(video: torch.Tensor, delta: float) -> torch.Tensor:
    """Rotates hue by ``delta`` (a fraction of the colour circle) (``tf.image.adjust_hue``)."""
    return _from_planes(_hue_planes(_to_planes(video), delta))


def color_jitter(video: torch.Tensor, generator: torch.Generator | None = None, *, brightness: float = 32 / 255,
                 saturation: float = 0.4, contrast: float = 0.4, hue: float = 0.2) -> torch.Tensor:
    """DMVR's colour augmentation: random brightness, saturation, contrast and hue, in that order, then clip.

    Args:
        video: ``[T, H, W, 3]`` float in [0, 1].
        generator: Source of randomness.
        brightness: Brightness delta drawn from ``[-brightness, brightness]``.
        saturation: Saturation factor drawn from ``[1 - saturation, 1 + saturation]``.
        contrast: Contrast factor drawn from ``[1 - contrast, 1 + contrast]``.
        hue: Hue delta drawn from ``[-hue, hue]``.

    Returns:
        The jittered clip, clipped to [0, 1]; one draw of each parameter for the whole clip.
    """
    if not video.is_floating_point():
        raise TypeError("color_jitter expects a float clip in [0, 1]; convert with to_float first")
    planes = _to_planes(video) + _uniform(generator, -brightness, brightness)
    planes = _saturation_planes(planes, _uniform(generator, 1 - saturation, 1 + saturation))
    planes = _contrast_planes(planes, _uniform(generator, 1 - contrast, 1 + contrast))
    planes = _hue_planes(planes, _uniform(generator, -hue, hue))
    return _from_planes(planes.clamp_(0.0, 1.0))


class VideoTransform:
    """MMV's clip pipeline: uint8 ``[T, H, W, 3]`` in, float32 ``[T, crop, crop, 3]`` in [0, 1] out.

    Training: resize the short side to ``min_resize`` (optionally scale-jittered), random crop, random horizontal
    flip, colour jitter (with probability ``color_jitter_prob``). Evaluation: resize and centre crop.

    Args:
        train: Training (random) or evaluation (deterministic) pipeline.
        crop_size: Output height and width (200 for MMV training; 224 in some evaluations).
        min_resize: Short side after resizing, before cropping.
        flip: Random horizontal flip with probability 1/2 (training only).
        color_jitter: Colour augmentation (training only).
        color_jitter_prob: Probability of applying the colour augmentation to a clip (DMVR: 0.8).
        scale_jitter: ``(low, high)``: multiply the resized short side by a factor drawn from this range (training
            only; the paper lists scale jitter but not its range, so it is off by default; DMVR uses (0.8, 1.2)).
            The short side never drops below ``crop_size``.
    """

    def __init__(self, train: bool, crop_size: int = 200, min_resize: int = 224, flip: bool = True,
                 color_jitter: bool = True, color_jitter_prob: float = 0.8,
                 scale_jitter: tuple[float, float] | None = None) -> None:
        if crop_size > min_resize:
            raise ValueError(f"crop_size ({crop_size}) must not exceed min_resize ({min_resize})")
        if not 0.0 <= color_jitter_prob <= 1.0:
            raise ValueError(f"color_jitter_prob must be in [0, 1], got {color_jitter_prob}")
        self.train = train
        self.crop_size = crop_size
        self.min_resize = min_resize
        self.flip = flip
        self.color_jitter = color_jitter
        self.color_jitter_prob = color_jitter_prob
        self.scale_jitter = scale_jitter

    def __call__(self, clip: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Transforms one clip; ``generator`` makes the training pipeline deterministic."""
        video, color_coin = self._geometry(clip, generator)
        video = to_float(video)
        if self.train and self.color_jitter and color_coin < self.color_jitter_prob:
            video = color_jitter(video, generator)
        return video.contiguous()

    def geometry(self, clip: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Only the resize, crop and flip, on uint8 frames (pixels unchanged: no colour jitter, no scaling).

        Evaluation windows travel through DataLoader workers as uint8, a quarter of the bytes of float32; the
        model's input is ``to_float`` of this. Training clips go through :meth:`__call__`, which draws the same
        random numbers in the same order, then the colour jitter.
        """
        return self._geometry(clip, generator)[0].contiguous()

    def _geometry(self, clip: np.ndarray | torch.Tensor,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, float]:
        video = _as_tensor(clip)
        if not self.train:
            return center_crop(resize_short_side(video, self.min_resize), self.crop_size), 1.0
        video = random_crop(resize_short_side(video, self._short_side(generator)), self.crop_size, generator)
        flip_coin, color_coin = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        if self.flip and flip_coin < 0.5:
            video = horizontal_flip(video)
        return video, color_coin

    def _short_side(self, generator: torch.Generator | None) -> int:
        if self.scale_jitter is None:
            return self.min_resize
        factor = _uniform(generator, *self.scale_jitter)
        return max(self.crop_size, round(self.min_resize * factor))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(train={self.train}, crop_size={self.crop_size}, min_resize={self.min_resize}, "
                f"flip={self.flip}, color_jitter={self.color_jitter}, color_jitter_prob={self.color_jitter_prob}, "
                f"scale_jitter={self.scale_jitter})")
