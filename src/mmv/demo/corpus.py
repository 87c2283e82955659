"""The built-in demo corpus: small narrated MP4 videos of handwritten digits, generated from a seed.

``mmv demo`` trains tiny MMV models on this corpus and checks the paper's claims in miniature, so the corpus is
built to make those claims measurable without making them trivial:

* **Class** (the digit 0-9) shows in all three modalities, each through its own evidence:

  - video: a real handwritten digit (scikit-learn's ``load_digits``, upscaled smoothly) drifting over a cluttered,
    noisy, randomly textured background with moving distractor shapes; its colour, size, tilt, start position and
    speed are random per video, so no pixel statistic or colour code gives the class away;
  - audio: a DTMF-like pair of tones per digit (one from a low group of four, one from a high group of three,
    laid out like a telephone keypad), repeated as beeps, with noise and distractor chirps. Options, off by
    default (see docs/demo_corpus.md): ``p_single_tone`` makes a fraction of the videos play one tone of the pair,
    which narrows the digit down to a keypad row or column; ``p_neutral_sound`` makes a fraction beep a neutral
    pair that no digit owns, so the sound keeps the attribute but not the class;
  - text: ASR-like WebVTT narrations that say the digit ("seven", sometimes "7") among fillers, homophone
    substitutions (four/for, two/to/too, eight/ate, one/won), dropped words, timing jitter and off-topic lines.

* **Attribute** (fine-grained, shared by audio and vision only, never narrated): the digit's motion direction
  (right, left, up, down) is tied to the pitch glide of every beep (rising, falling, rise-fall, fall-rise).
  It is drawn independently of the class (every class/attribute pair is equally frequent) and can be read from
  any short clip: the motion wraps around the frame, and each beep carries the full glide.

* **Missing modalities**: about 15% of videos have no audio track, 15% no narrations (half with no caption file,
  half with an empty one), and 10% only off-topic narrations.

* **Held-out handwriting and instruments**: the digit *images* are split between train and test, so test videos
  show handwriting never seen in training; the training soundtracks play pure tones and the test ones the same
  notes on unseen instruments (harmonics added, ``test_harmonics``).

Layout written by :func:`generate_demo_corpus`::

    DIR/corpus.json             generation parameters, class and attribute names, counts
    DIR/train/manifest.jsonl    one JSON object per video (see :func:`generate_demo_corpus`)
    DIR/train/train_00000.mp4   H.264 video (+ AAC audio unless the video has none)
    DIR/train/train_00000.vtt   WebVTT narrations (absent for some videos)
    DIR/test/...

Every file is a pure function of the seed and the parameters: the same seed gives byte-identical files, whatever
the number of worker processes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmv.atomic import atomic_path, atomic_write_text
from mmv.extras import require

log = logging.getLogger(__name__)

CORPUS_VERSION = 4

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Attribute value -> (motion direction of the digit, pitch glide of each beep). The pairing is arbitrary but fixed.
ATTRIBUTE_NAMES = ("right", "left", "up", "down")
GLIDE_NAMES = ("rising", "falling", "rise-fall", "fall-rise")
# Unit motion vectors in image coordinates (x to the right, y downwards).
_DIRECTIONS = {0: (1.0, 0.0), 1: (-1.0, 0.0), 2: (0.0, -1.0), 3: (0.0, 1.0)}
# Pixels kept free between the digit's ink and the frame edges.
_EDGE_MARGIN = 1.0

# DTMF-like keypad: digit -> (row, column). Rows pick the low tone, columns the high tone. The groups are spread
# wider than real DTMF (ratios 4/3 and sqrt 2) so that neighbours stay apart on a 16 kHz mel scale even while
# the glide moves every tone by +-glide.
LOW_TONES_HZ = (300.0, 400.0, 533.3, 711.1)
HIGH_TONES_HZ = (1000.0, 1414.2, 2000.0)
_KEYPAD = {1: (0, 0), 2: (0, 1), 3: (0, 2), 4: (1, 0), 5: (1, 1), 6: (1, 2), 7: (2, 0), 8: (2, 1), 9: (2, 2),
           0: (3, 1)}
# The neutral pair (``p_neutral_sound``): one step below the low group and one step above the high group, so that
# even at the extremes of the glide it overlaps no digit's tone.
NEUTRAL_TONES_HZ = (225.0, 2828.4)

_HOMOPHONES = {"one": ("won",), "two": ("to", "too"), "four": ("for",), "eight": ("ate",)}
_FILLERS = ("um", "uh", "so", "okay", "like", "you know", "alright", "well")
_ON_TOPIC = (
    "so now we write a {d}", "{d}", "okay this is {d}", "here is the number {d}", "let me draw the {d} again",
    "and that makes {d}", "{d} over here", "you can see the {d}", "we have a {d} now", "that is a {d}",
    "this digit is {d}", "now the {d}", "look at this {d}", "{d} {d}",
)
_OFF_TOPIC = (
    "don't forget to subscribe", "let me grab the tools", "the light is a bit bad today", "hold on a second",
    "thanks for watching", "can you hear me okay", "i will put a link below", "my cat wants to play",
    "sorry about the noise", "we are almost done", "leave a comment below", "where did i put the pen",
)
# Log-mel settings that resolve the tone groups and the glide at 16 kHz (MelConfig keyword arguments; the paper's
# defaults assume 48 kHz audio). Recorded in corpus.json for the code that trains on the corpus.
SUGGESTED_MEL = {"sample_rate": 16000, "n_fft": 512, "hop_length": 160, "n_mels": 64, "fmin": 80.0, "fmax": 7600.0}
# Text kinds of a video's narrations (manifest field ``text_kind``).
TEXT_KINDS = ("on_topic", "off_topic", "empty", "missing")
# Sound kinds (manifest field ``sound``): the digit's tones, the neutral pair, or no audio track.
SOUND_KINDS = ("digit", "neutral", "none")


@dataclass(frozen=True)
class DemoCorpusConfig:
    """How the demo videos look and sound. The defaults are what ``mmv demo`` uses.

    Attributes:
        size: frame width and height in pixels.
        fps: frames per second.
        duration: seconds per video.
        sample_rate: audio sample rate (Hz); mono.
        digit_size: range of the digit's height in pixels.
        digit_max_tilt: largest rotation of the digit, degrees.
        speed: range of the digit's speed, pixels per second.
        num_distractors: range of the number of distractor shapes.
        pixel_noise: standard deviation of per-pixel, per-frame Gaussian noise (intensity in [0, 1]).
        p_dark_scene: fraction of videos with a light digit on a dark background (the others: dark on light).
        glide: relative depth of the pitch glide (each tone moves within f * (1 +- glide)).
        beep_duration: range of the beep length, seconds.
        beep_gap: range of the silence between beeps, seconds.
        snr_db: range of the tones-to-noise power ratio, dB.
        tone_detune: each video scales both of its tones by a random factor in 1 +- this ("another instrument").
        p_single_tone: fraction of videos whose beeps play only one tone of the digit's pair: such a sound narrows
            the digit down to its keypad row or column, not to one digit.
        single_tone: which tone those videos keep: "high" (the column's; the glide stays in the band where it
            spans the most Hz), "low" or "either" (at random).
        p_neutral_sound: fraction of the videos with audio whose beeps play the neutral tone pair (owned by no
            digit) instead of the digit's: the sound keeps the attribute (the glide) and says nothing of the class.
        test_harmonics: held-out instruments. The training soundtracks play pure tones; each held-out soundtrack
            plays the same notes on an unseen instrument whose 2nd and 3rd harmonics have relative amplitudes drawn
            from this range (per video), as the held-out videos show the digits in unseen handwriting. (0, 0): pure
            tones in both splits.
        p_no_audio: fraction of videos without an audio track.
        p_no_text: fraction of videos without narrations (half with no caption file, half with an empty one).
        p_off_topic: fraction of videos whose narrations are all off-topic.
        p_numeral: probability that a narration writes the digit as a numeral ("7").
        p_homophone: probability that a digit word with a homophone is transcribed as the homophone.
        p_drop_word: probability that the recogniser drops a word.
        test_image_fraction: fraction of each class's handwritten images reserved for the test split.
        crf: x264 constant rate factor (quality; lower is better).
    """

    size: int = 64
    fps: int = 10
    duration: float = 3.0
    sample_rate: int = 16000
    digit_size: tuple[int, int] = (32, 40)
    digit_max_tilt: float = 12.0
    speed: tuple[float, float] = (6.0, 10.0)
    num_distractors: tuple[int, int] = (1, 3)
    pixel_noise: float = 0.04
    p_dark_scene: float = 1.0
    glide: float = 0.12
    beep_duration: tuple[float, float] = (0.25, 0.4)
    beep_gap: tuple[float, float] = (0.08, 0.2)
    snr_db: tuple[float, float] = (0.0, 12.0)
    tone_detune: float = 0.01
    p_single_tone: float = 0.0
    single_tone: str = "high"
    p_neutral_sound: float = 0.0
    test_harmonics: tuple[float, float] = (0.3, 0.8)
    p_no_audio: float = 0.15
    p_no_text: float = 0.15
    p_off_topic: float = 0.10
    p_numeral: float = 0.2
    p_homophone: float = 0.25
    p_drop_word: float = 0.08
    test_image_fraction: float = 0.3
    crf: int = 23

    def __post_init__(self) -> None:
        if self.single_tone not in ("high", "low", "either"):
            raise ValueError(f"single_tone must be 'high', 'low' or 'either', got {self.single_tone!r}")
        low, high = self.test_harmonics
        if not 0 <= low <= high:
            raise ValueError(
                f"test_harmonics must be a range (low, high) with 0 <= low <= high, got {self.test_harmonics}")

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.fps))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DemoCorpusConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown demo corpus option(s): {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class VideoSpec:
    """Everything that decides one video; rendering is a pure function of it and the config."""

    name: str
    split: str
    label: int
    attribute: int
    image_index: int  # index into sklearn's load_digits()
    has_audio: bool
    text_kind: str  # one of TEXT_KINDS
    seed: tuple[int, ...]
    sound: str = "digit"  # one of SOUND_KINDS


# ----------------------------------------------------------------------------------------------------------------
# Planning: which video gets which class, attribute, handwriting and modalities.


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    load_digits = require("sklearn.datasets", "demo", "the demo").load_digits  # bundled with scikit-learn, no download

    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def split_digit_images(targets: np.ndarray, seed: int, test_fraction: float) -> dict[str, list[np.ndarray]]:
    """Split the handwritten images of each class between train and test (disjoint).

    Returns:
        ``{"train": [indices of class 0, ..., class 9], "test": [...]}``, each list in a seeded random order.
    """
    rng = np.random.default_rng([seed, 7919])
    pools: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for label in range(len(CLASS_NAMES)):
        indices = rng.permutation(np.flatnonzero(targets == label))
        num_test = max(1, int(round(test_fraction * len(indices))))
        pools["test"].append(indices[:num_test])
        pools["train"].append(indices[num_test:])
    return pools


def _exact_flags(rng: np.random.Generator, n: int, fractions: dict[str, float], default: str) -> list[str]:
    """Assign ``round(f * n)`` items to each kind (exact counts, random positions), the rest to ``default``."""
    kinds: list[str] = []
    for kind, fraction in fractions.items():
        kinds += [kind] * int(round(fraction * n))
    if len(kinds) > n:
        raise ValueError(f"fractions {fractions} add up to more than 1")
    kinds += [default] * (n - len(kinds))
    return [kinds[i] for i in rng.permutation(n)]


def plan_split(split: str, num_videos: int, seed: int, cfg: DemoCorpusConfig,
               image_pools: list[np.ndarray]) -> list[VideoSpec]:
    """Decide class, attribute, handwriting image and modalities of every video of one split.

    Class/attribute pairs cycle through all 40 combinations before repeating, so the attribute is independent of
    the class and both are balanced.
    """
    split_id = {"train": 0, "test": 1}[split]
    rng = np.random.default_rng([seed, split_id, 104729])
    num_classes, num_attributes = len(CLASS_NAMES), len(ATTRIBUTE_NAMES)
    pairs = [(c, a) for c in range(num_classes) for a in range(num_attributes)]
    cycles = [rng.permutation(len(pairs)) for _ in range(-(-num_videos // len(pairs)))]
    order = np.concatenate(cycles)[:num_videos] if cycles else np.zeros(0, dtype=int)
    audio_flags = _exact_flags(rng, num_videos, {"no": cfg.p_no_audio}, "yes")
    text_kinds = _exact_flags(
        rng, num_videos,
        {"missing": cfg.p_no_text / 2, "empty": cfg.p_no_text / 2, "off_topic": cfg.p_off_topic}, "on_topic")
    # Drawn after the other flags, so that a corpus without neutral sounds plans exactly as version 3 did.
    sound_flags = iter(_exact_flags(rng, audio_flags.count("yes"), {"neutral": cfg.p_neutral_sound}, "digit"))
    uses_per_class = [0] * num_classes
    specs = []
    for i in range(num_videos):
        label, attribute = pairs[order[i]]
        pool = image_pools[label]
        image_index = int(pool[uses_per_class[label] % len(pool)])
        uses_per_class[label] += 1
        specs.append(VideoSpec(
            name=f"{split}_{i:05d}", split=split, label=label, attribute=attribute, image_index=image_index,
            has_audio=audio_flags[i] == "yes", text_kind=text_kinds[i], seed=(seed, split_id, i),
            sound=next(sound_flags) if audio_flags[i] == "yes" else "none"))
    return specs


# ----------------------------------------------------------------------------------------------------------------
# Video.


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Periodic smooth noise in [0, 1] with blobs about ``size / cells`` pixels wide. float [H, W, C]."""
    white = rng.standard_normal((channels, size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    # Gaussian low-pass in the Fourier domain: cheap, and periodic, so the texture tiles like the motion wraps.
    lowpass = np.exp(-0.5 * (fx**2 + fy**2) / (0.5 * cells / size) ** 2)
    field = np.fft.irfft2(np.fft.rfft2(white) * lowpass, s=(size, size))
    low, high = field.min(axis=(1, 2), keepdims=True), field.max(axis=(1, 2), keepdims=True)
    return np.moveaxis((field - low) / (high - low + 1e-12), 0, -1)


def render_background(rng: np.random.Generator, size: int, dark: bool) -> np.ndarray:
    """A random colour texture: smooth colour blobs, finer grain and stripes. float32 [H, W, 3] in [0, 1].

    ``dark`` centres the colours on 0.3 instead of 0.7, leaving room for a contrasting digit.
    """
    base = (0.3 if dark else 0.7) + 0.4 * (_smooth_noise(rng, size, 4, 3) - 0.5)
    grain = 0.25 * (_smooth_noise(rng, size, 16, 1) - 0.5)
    yy, xx = np.mgrid[0:size, 0:size]
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 16)
    stripes = 0.08 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)[..., None]
    return np.clip(base + grain + stripes, 0, 1).astype(np.float32)


def _distractor_masks(distractor: dict[str, Any], seconds: np.ndarray, size: int) -> np.ndarray:
    """Where one distractor covers each frame: bool [T, H, W]. Positions wrap around the frame edges."""
    centres = distractor["start"] + distractor["velocity"] * seconds[:, None]  # [T, 2] (x, y)
    grid = np.arange(size, dtype=np.float32)
    # Signed distances on a torus from the centre to every pixel column / row: [T, 1, W] and [T, H, 1].
    dx = ((grid[None, :] - centres[:, :1] + size / 2) % size - size / 2)[:, None, :]
    dy = ((grid[None, :] - centres[:, 1:] + size / 2) % size - size / 2)[:, :, None]
    rx, ry = distractor["radius"]
    if distractor["shape"] == "rect":
        return (np.abs(dx) <= rx) & (np.abs(dy) <= ry)
    ellipse = (dx / rx) ** 2 + (dy / ry) ** 2
    if distractor["shape"] == "ellipse":
        return ellipse <= 1
    return (ellipse <= 1) & (ellipse >= 0.35)  # ring


def _make_distractors(rng: np.random.Generator, cfg: DemoCorpusConfig) -> list[dict[str, Any]]:
    count = int(rng.integers(cfg.num_distractors[0], cfg.num_distractors[1] + 1))
    distractors = []
    for _ in range(count):
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0, cfg.speed[1])
        distractors.append({
            "shape": str(rng.choice(["rect", "ellipse", "ring"])),
            "radius": rng.uniform(2.0, 6.0, size=2), "colour": rng.random(3).astype(np.float32),
            "start": rng.uniform(0, cfg.size, size=2), "velocity": speed * np.array([np.cos(angle), np.sin(angle)]),
            "on_top": bool(rng.random() < 0.25),
        })
    return distractors


def render_digit_alpha(image: np.ndarray, rng: np.random.Generator, cfg: DemoCorpusConfig) -> np.ndarray:
    """The handwritten 8x8 digit upscaled smoothly, tilted, on a transparent frame-sized canvas (alpha in [0, 1])."""
    ndimage = require("scipy.ndimage", "demo", "the demo")
    rotate, zoom = ndimage.rotate, ndimage.zoom

    height = int(rng.integers(cfg.digit_size[0], cfg.digit_size[1] + 1))
    glyph = np.clip(zoom(image, height / 8.0, order=3), 0, 1)
    glyph = np.clip(rotate(glyph, rng.uniform(-cfg.digit_max_tilt, cfg.digit_max_tilt), reshape=True, order=1), 0, 1)
    glyph = glyph[: cfg.size, : cfg.size]
    canvas = np.zeros((cfg.size, cfg.size), np.float32)
    canvas[: glyph.shape[0], : glyph.shape[1]] = glyph * rng.uniform(0.85, 1.0)
    return canvas


def _moving_alpha(alpha: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``alpha`` [H, W] shifted by each (dx, dy) of ``offsets`` [T, 2], wrapping around: float32 [T, H, W].

    A Fourier-domain shift: exact sub-pixel motion on a torus, all frames at once.
    """
    height, width = alpha.shape
    fy = np.fft.fftfreq(height)[None, :, None]
    fx = np.fft.rfftfreq(width)[None, None, :]
    phase = np.exp(-2j * np.pi * (fx * offsets[:, 0, None, None] + fy * offsets[:, 1, None, None]))
    moved = np.fft.irfft2(np.fft.rfft2(alpha)[None] * phase, s=(height, width))
    return np.clip(moved, 0, 1).astype(np.float32)


def digit_path(alpha: np.ndarray, attribute: int, cfg: DemoCorpusConfig,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Start offset and velocity (pixels, pixels per second; (x, y)) of the digit drawn by ``alpha``.

    The digit moves at constant velocity in the attribute's direction and its ink stays whole inside the frame for
    the whole video: the start is drawn among the positions from which it does not reach an edge, and a speed
    drawn too fast for the room left by this glyph is lowered to the fastest that fits.
    """
    size = cfg.size
    rows, cols = np.nonzero(alpha > 0.02)
    low, extent = np.zeros(2), np.zeros(2)  # ink bounding box, (x, y); empty for a blank glyph
    if rows.size:
        low = np.array([cols.min(), rows.min()], dtype=np.float64)
        extent = np.array([cols.max(), rows.max()], dtype=np.float64) - low + 1
    room = np.maximum(size - 2 * _EDGE_MARGIN - extent, 0.0)  # free travel per axis
    seconds = (cfg.num_frames - 1) / cfg.fps
    direction = np.array(_DIRECTIONS[attribute])
    axis = 0 if direction[0] else 1
    speed = min(rng.uniform(*cfg.speed), room[axis] / max(seconds, 1e-9))
    travel = speed * seconds
    start = _EDGE_MARGIN + rng.uniform(0, 1, size=2) * room  # ink top-left, (x, y)
    start[axis] = _EDGE_MARGIN + rng.uniform(0, 1) * (room[axis] - travel)
    if direction[axis] < 0:
        start[axis] += travel
    return start - low, speed * direction


def render_frames(spec: VideoSpec, digit_image: np.ndarray, cfg: DemoCorpusConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """Render the video of ``spec``: uint8 [T, H, W, 3].

    The digit moves at constant velocity in the attribute's direction and stays whole inside the frame (see
    :func:`digit_path`), so both its shape and its direction are visible in any window of a few frames.
    """
    size, num_frames = cfg.size, cfg.num_frames
    seconds = np.arange(num_frames) / cfg.fps
    dark_scene = bool(rng.random() < cfg.p_dark_scene)
    background = render_background(rng, size, dark_scene)
    alpha = render_digit_alpha(digit_image, rng, cfg)
    # A light digit on a dark background or the reverse, with a random hue: contrast without a colour code.
    hue = rng.random(3).astype(np.float32)
    colour = 0.8 + 0.2 * hue if dark_scene else 0.2 * hue
    start, velocity = digit_path(alpha, spec.attribute, cfg, rng)
    distractors = _make_distractors(rng, cfg)
    frames = np.repeat(background[None], num_frames, axis=0)  # [T, H, W, 3] float32
    for distractor in (d for d in distractors if not d["on_top"]):
        np.copyto(frames, distractor["colour"], where=_distractor_masks(distractor, seconds, size)[..., None])
    moved = _moving_alpha(alpha, start + velocity * seconds[:, None])[..., None]  # [T, H, W, 1]
    frames -= moved * (frames - colour)  # alpha blending, in place
    for distractor in (d for d in distractors if d["on_top"]):
        np.copyto(frames, distractor["colour"], where=_distractor_masks(distractor, seconds, size)[..., None])
    flicker = rng.uniform(0.97, 1.03, size=(num_frames, 1, 1, 1)).astype(np.float32)
    frames *= flicker * 255
    frames += (cfg.pixel_noise * 255) * rng.standard_normal(frames.shape, dtype=np.float32)
    return np.clip(frames + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Audio.


def tone_pair(label: int) -> tuple[float, float]:
    """The (low, high) tone frequencies in Hz that identify digit ``label``."""
    row, column = _KEYPAD[label]
    return LOW_TONES_HZ[row], HIGH_TONES_HZ[column]


def glide_shape(attribute: int, u: np.ndarray) -> np.ndarray:
    """Relative pitch offset in [-1, 1] over a beep, as a function of the beep's phase ``u`` in [0, 1]."""
    ramp = 2 * u - 1
    triangle = 1 - 2 * np.abs(2 * u - 1)
    return (ramp, -ramp, triangle, -triangle)[attribute]


def synthesize_audio(spec: VideoSpec, cfg: DemoCorpusConfig, rng: np.random.Generator) -> np.ndarray:
    """The soundtrack of ``spec``: beeps of the digit's tone pair, each gliding as the attribute says, in noise.

    Returns:
        float32 [S] mono waveform in [-1, 1], S = duration * sample_rate.
    """
    sr = cfg.sample_rate
    num_samples = int(round(cfg.duration * sr))
    t = np.arange(num_samples) / sr
    beep_duration, gap = rng.uniform(*cfg.beep_duration), rng.uniform(*cfg.beep_gap)
    onset = rng.uniform(0, gap)
    period = beep_duration + gap
    # Position of every sample in its beep: u in [0, 1) inside a beep, the envelope is 0 outside.
    cycle_time = (t - onset) % period
    inside = (t >= onset) & (cycle_time < beep_duration)
    u = np.clip(cycle_time / beep_duration, 0, 1)
    ramp = 0.015  # seconds of raised-cosine attack and release, so beeps do not click
    envelope = inside * np.minimum(1, np.minimum(cycle_time, beep_duration - cycle_time) / ramp).clip(0, 1)
    envelope = np.sin(0.5 * np.pi * envelope) ** 2
    factor = 1 + cfg.glide * glide_shape(spec.attribute, u)
    detune = rng.uniform(1 - cfg.tone_detune, 1 + cfg.tone_detune)  # a slightly different "instrument" per video
    tones = np.zeros(num_samples)
    # The held-out instrument's harmonics come from their own stream, so every other sample of the soundtrack is
    # what it would be with pure tones.
    harmonics = (np.random.default_rng([*spec.seed, 1031]).uniform(*cfg.test_harmonics, size=2)
                 if spec.split == "test" else np.zeros(2))
    pair = NEUTRAL_TONES_HZ if spec.sound == "neutral" else tone_pair(spec.label)
    if spec.sound == "digit" and cfg.p_single_tone and rng.random() < cfg.p_single_tone:
        keep = {"low": 0, "high": 1}.get(cfg.single_tone)
        pair = (pair[int(rng.integers(2)) if keep is None else keep],)
    for frequency in pair:
        phase = 2 * np.pi * np.cumsum(frequency * detune * factor) / sr  # phase-continuous glide
        amplitude, offset = rng.uniform(0.6, 1.0), rng.uniform(0, 2 * np.pi)
        note = np.sin(phase + offset)
        for order, weight in zip((2, 3), harmonics):
            if weight:
                note += weight * np.sin(order * (phase + offset))
        tones += amplitude * note
    tones *= envelope
    noise = _background_noise(rng, num_samples, sr)
    snr = 10 ** (rng.uniform(*cfg.snr_db) / 10)
    noise *= np.sqrt(np.mean(tones**2) / (snr * np.mean(noise**2) + 1e-12))
    audio = tones + noise + _chirps(rng, t, sr) * np.sqrt(np.mean(tones**2))
    return (0.8 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


def _background_noise(rng: np.random.Generator, num_samples: int, sr: int) -> np.ndarray:
    """White plus low-passed ("room") noise."""
    lfilter = require("scipy.signal", "demo", "the demo").lfilter

    white = rng.standard_normal(num_samples)
    rumble = lfilter([0.05], [1, -0.95], rng.standard_normal(num_samples))
    return white + rng.uniform(0.5, 3.0) * rumble / (rumble.std() + 1e-9)


def _chirps(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    """A few short, quieter distractor chirps at random pitches, unrelated to the class or the attribute."""
    out = np.zeros_like(t)
    for _ in range(int(rng.integers(0, 4))):
        start, length = rng.uniform(0, t[-1]), rng.uniform(0.05, 0.2)
        inside = (t >= start) & (t < start + length)
        f0, f1 = rng.uniform(200, 3000, size=2)
        local = (t[inside] - start) / length
        phase = 2 * np.pi * np.cumsum(f0 + (f1 - f0) * local) / sr
        out[inside] += rng.uniform(0.2, 0.5) * np.sin(phase) * np.sin(np.pi * local)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Narrations.


def _digit_word(label: int, cfg: DemoCorpusConfig, rng: np.random.Generator) -> str:
    if rng.random() < cfg.p_numeral:
        return str(label)
    word = CLASS_NAMES[label]
    if word in _HOMOPHONES and rng.random() < cfg.p_homophone:
        return str(rng.choice(_HOMOPHONES[word]))
    return word


def _asr_noise(words: list[str], cfg: DemoCorpusConfig, rng: np.random.Generator) -> list[str]:
    """Drop words and insert fillers the way speech recognition of casual speech does."""
    kept = [w for w in words if rng.random() >= cfg.p_drop_word] or words[:1]
    if rng.random() < 0.5:
        kept.insert(int(rng.integers(0, len(kept) + 1)), str(rng.choice(_FILLERS)))
    return kept


def make_narrations(spec: VideoSpec, cfg: DemoCorpusConfig,
                    rng: np.random.Generator) -> list[tuple[float, float, str]]:
    """Timed narration lines (start, end, text) for ``spec``; empty for the 'empty' and 'missing' kinds."""
    if spec.text_kind in ("empty", "missing"):
        return []
    cues = []
    start = rng.uniform(0, 0.6)
    while start < cfg.duration - 0.3:
        end = min(cfg.duration, start + rng.uniform(0.8, 1.6))
        cues.append((start, end))
        start = end + rng.uniform(0.0, 0.5)
    on_topic = [spec.text_kind == "on_topic" and rng.random() >= 0.2 for _ in cues]
    if spec.text_kind == "on_topic" and not any(on_topic):
        on_topic[int(rng.integers(0, len(cues)))] = True
    narrations = []
    for (start, end), topical in zip(cues, on_topic):
        if topical:
            template = str(rng.choice(_ON_TOPIC))
            words = []
            for word in template.split():
                words.append(_digit_word(spec.label, cfg, rng) if word == "{d}" else word)
        else:
            words = str(rng.choice(_OFF_TOPIC)).split()
        text = " ".join(_asr_noise(words, cfg, rng))
        # Recogniser timestamps are loose: jitter both ends, keep the cue inside the video and non-empty.
        jittered_start = float(np.clip(start + rng.normal(0, 0.15), 0, cfg.duration - 0.2))
        jittered_end = float(np.clip(end + rng.normal(0, 0.15), jittered_start + 0.2, cfg.duration))
        narrations.append((round(jittered_start, 3), round(jittered_end, 3), text))
    return narrations


# ----------------------------------------------------------------------------------------------------------------
# Files.


def encode_mp4(path: Path, frames: np.ndarray, audio: np.ndarray | None, fps: int, sample_rate: int,
               crf: int = 20, keyframe_interval: int | None = None) -> None:
    """Write an H.264 (+ AAC) MP4 atomically and deterministically.

    Args:
        path: destination.
        frames: uint8 [T, H, W, 3] RGB.
        audio: float32 [S] mono waveform in [-1, 1], or None for a file without an audio track.
        fps: frame rate.
        sample_rate: audio sample rate.
        crf: x264 quality.
        keyframe_interval: frames between keyframes (default: ``fps``, one a second). A clip is decoded from the
            keyframe before it, so short intervals make random clips cheap to read; x264's own default (250)
            would decode every clip from the start of the file.
    """
    import av

    with atomic_path(path, suffix=".mp4") as tmp, av.open(tmp, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        # NOTE: x264's output depends on its thread count; one thread makes the bytes reproducible.
        video.codec_context.thread_count = 1
        video.codec_context.gop_size = keyframe_interval or fps
        video.options = {"crf": str(crf), "preset": "veryfast"}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "mono"
            audio_stream.options = {"aac_coder": "fast"}  # the default coder is ~3x slower for no gain here
        for index, frame in enumerate(frames):
            av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            av_frame.pts = index
            container.mux(video.encode(av_frame))
        container.mux(video.encode())
        if audio_stream is not None:
            for offset in range(0, len(audio), 1024):
                chunk = np.ascontiguousarray(audio[None, offset:offset + 1024])
                av_frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                av_frame.sample_rate, av_frame.pts = sample_rate, offset
                container.mux(audio_stream.encode(av_frame))
            container.mux(audio_stream.encode())


def _generate_video(job: tuple[VideoSpec, np.ndarray, DemoCorpusConfig, str]) -> dict[str, Any]:
    """Render, encode and write one video (+ narrations); return its manifest record."""
    from mmv.data.narrations import Narration, write_webvtt

    spec, digit_image, cfg, folder = job
    rng = np.random.default_rng(list(spec.seed))
    # Independent streams per modality, so changing e.g. the audio code leaves the pixels unchanged.
    video_rng, audio_rng, text_rng = (np.random.default_rng(s) for s in rng.bit_generator.seed_seq.spawn(3))
    frames = render_frames(spec, digit_image, cfg, video_rng)
    audio = synthesize_audio(spec, cfg, audio_rng) if spec.has_audio else None
    narrations = make_narrations(spec, cfg, text_rng)
    video_name = f"{spec.name}.mp4"
    encode_mp4(Path(folder) / video_name, frames, audio, cfg.fps, cfg.sample_rate, cfg.crf)
    caption = None
    if spec.text_kind != "missing":
        caption = f"{spec.name}.vtt"
        write_webvtt([Narration(*line) for line in narrations], Path(folder) / caption)
    return {
        "video": video_name, "caption": caption, "label": spec.label, "attribute": spec.attribute,
        "has_audio": spec.has_audio, "sound": spec.sound, "has_text": bool(narrations), "text_kind": spec.text_kind,
        "digit_image": spec.image_index, "duration": cfg.duration,
    }


def _map_jobs(jobs: list, workers: int, progress: bool) -> list[dict[str, Any]]:
    from tqdm import tqdm

    bar = dict(total=len(jobs), desc="demo corpus", disable=not progress, unit="video")
    if workers <= 1:
        return list(tqdm(map(_generate_video, jobs), **bar))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(_generate_video, jobs, chunksize=4), **bar))


def generate_demo_corpus(out_dir: str | os.PathLike, *, num_train: int = 400, num_test: int = 200, seed: int = 0,
                         config: DemoCorpusConfig | None = None, workers: int | None = None,
                         overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Generate the demo corpus in ``out_dir`` (see the module docstring for what it contains).

    Each manifest line holds ``video`` and ``caption`` (paths relative to the manifest; ``caption`` is null when
    the video has no caption file), ``label`` (the digit), ``attribute`` (index into ``attribute_names``),
    ``has_audio``, ``sound`` (digit / neutral / none: which tones the soundtrack beeps), ``has_text`` (at least one
    narration), ``text_kind`` (on_topic / off_topic / empty / missing),
    ``digit_image`` (index of the handwriting in ``sklearn.datasets.load_digits``) and ``duration``.

    Args:
        out_dir: destination folder; created if needed.
        num_train: number of training videos.
        num_test: number of held-out videos (unseen handwriting).
        seed: everything is a pure function of the seed and ``config``.
        config: look-and-sound parameters; the defaults when None.
        workers: processes used for encoding (the output does not depend on it); default min(2, CPUs).
        overwrite: replace an existing corpus made with other parameters.
        progress: show progress bars.

    Returns:
        The content of ``corpus.json``: parameters, class and attribute names, counts per split, and ``root``.

    Raises:
        FileExistsError: ``out_dir`` holds a different corpus (or other files) and ``overwrite`` is False.
    """
    cfg = config or DemoCorpusConfig()
    if num_train < 0 or num_test < 0:
        raise ValueError(f"num_train and num_test must be >= 0, got {num_train} and {num_test}")
    root = Path(out_dir)
    parameters = {"version": CORPUS_VERSION, "seed": seed, "num_train": num_train, "num_test": num_test,
                  "config": cfg.to_dict()}
    existing = _existing_corpus(root)
    if existing is not None and existing.get("parameters") == parameters:
        log.info("demo corpus already present in %s (same parameters); reusing it", root)
        return {**existing, "root": str(root)}
    _prepare_output(root, existing, overwrite)
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    images, targets = _load_digits()
    pools = split_digit_images(targets, seed, cfg.test_image_fraction)
    jobs = []
    for split, num_videos in (("train", num_train), ("test", num_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        specs = plan_split(split, num_videos, seed, cfg, pools[split])
        jobs += [(spec, images[spec.image_index], cfg, str(root / split)) for spec in specs]
    records = _map_jobs(jobs, workers, progress)
    counts = {}
    for split in ("train", "test"):
        split_records = [r for (spec, *_), r in zip(jobs, records) if spec.split == split]
        atomic_write_text(root / split / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in split_records))
        counts[split] = _count(split_records)
    corpus = {
        "name": "mmv demo corpus", "parameters": parameters, "class_names": list(CLASS_NAMES),
        "attribute_names": list(ATTRIBUTE_NAMES),
        "attribute_description": {
            name: {"video": f"the digit moves {name}", "audio": f"every beep's pitch is {glide}"}
            for name, glide in zip(ATTRIBUTE_NAMES, GLIDE_NAMES)},
        "class_tones_hz": {CLASS_NAMES[c]: list(tone_pair(c)) for c in range(len(CLASS_NAMES))},
        "neutral_tones_hz": list(NEUTRAL_TONES_HZ),
        "suggested_mel_config": {**SUGGESTED_MEL, "sample_rate": cfg.sample_rate},
        "manifests": {"train": "train/manifest.jsonl", "test": "test/manifest.jsonl"}, "counts": counts,
    }
    # corpus.json is written last: its presence marks a complete corpus.
    atomic_write_text(root / "corpus.json", json.dumps(corpus, indent=2) + "\n")
    return {**corpus, "root": str(root)}


def _existing_corpus(root: Path) -> dict[str, Any] | None:
    path = root / "corpus.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FileExistsError(f"{path}: unreadable corpus description ({err}); remove the folder") from err


def _prepare_output(root: Path, existing: dict[str, Any] | None, overwrite: bool) -> None:
    if existing is not None:
        if not overwrite:
            raise FileExistsError(
                f"{root} holds a demo corpus made with other parameters; pass overwrite=True (--overwrite) "
                "to replace it, or choose another folder")
        (root / "corpus.json").unlink()
        for split in ("train", "test"):
            shutil.rmtree(root / split, ignore_errors=True)
    elif root.exists() and any(root.iterdir()):
        # Never delete files we did not write.
        if {p.name for p in root.iterdir()} - {"train", "test"}:
            raise FileExistsError(f"{root} is not empty and holds no demo corpus; choose an empty folder")
    root.mkdir(parents=True, exist_ok=True)


def _count(records: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "videos": len(records),
        "with_audio": sum(r["has_audio"] for r in records),
        "with_neutral_sound": sum(r["sound"] == "neutral" for r in records),
        "with_text": sum(r["has_text"] for r in records),
        **{f"text_{kind}": sum(r["text_kind"] == kind for r in records) for kind in TEXT_KINDS},
    }


def read_corpus(root: str | os.PathLike) -> dict[str, Any]:
    """Read ``corpus.json`` of a generated corpus.

    Raises:
        FileNotFoundError: ``root`` holds no complete demo corpus.
    """
    path = Path(root) / "corpus.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no demo corpus here (run 'mmv demo-data --out {root}')")
    return {**json.loads(path.read_text(encoding="utf-8")), "root": str(root)}


def corpus_records(root: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """The manifest records of one split as dicts, every field kept (``label``, ``attribute``, ``has_audio``,
    ``digit_image``, ...), with ``path`` and ``caption_path`` (None without captions) made absolute."""
    manifest = _split_manifest(root, split)
    records = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            record["path"] = manifest.parent / record["video"]
            record["caption_path"] = manifest.parent / record["caption"] if record.get("caption") else None
            records.append(record)
    return records


def corpus_items(root: str | os.PathLike, split: str, *, label_field: str = "label") -> list:
    """The videos of one split as :class:`mmv.data.datasets.VideoItem` (``label_field="attribute"`` for the
    attribute as the label); other manifest fields are in ``item.extra``."""
    from mmv.data.datasets import read_manifest

    return read_manifest(_split_manifest(root, split), label_field=label_field)


def _split_manifest(root: str | os.PathLike, split: str) -> Path:
    """``<root>/<split>/manifest.jsonl``, after checking the split name and that the corpus is complete."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    read_corpus(root)  # a clear error when the corpus is absent or incomplete
    return Path(root) / split / "manifest.jsonl"
