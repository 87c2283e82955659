"""Synthetic clips with real correspondence between video, audio and narrations, in the training sample format.

Each clip belongs to one of ``num_classes`` hidden concepts, and every modality shows the concept through its own
evidence under per-clip noise:

* video: a drifting sinusoidal grating whose orientation, spatial frequency and direction of motion are the
  concept's, over the concept's background colour, with a random phase and pixel noise;
* audio: a log-mel spectrogram with energy in the concept's two mel bands, pulsing at the concept's rate from a
  random phase, over noise;
* text: up to K narrations of random filler words in which one to three of the concept's four words appear.

So a model can only match a clip's modalities through the concept, which is what contrastive training must learn;
the clips are cheap to make (no decoding), which suits smoke tests, benchmarks and the training tests. A sample is
a pure function of ``(seed, index)``: the same on every run, in every worker process, which keeps resumed runs
bit-exact. The concept prototypes depend on ``seed`` only, so clips of another index range (``first_index``) with
the same seed are held-out data from the same distribution.

Samples follow the data contract of ``docs/design.md`` ("Sample dict").
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SyntheticClips"]

WORDS_PER_CONCEPT = 4


class SyntheticClips(Dataset):
    """A map-style dataset of ``size`` synthetic clips (see the module doc).

    Args:
        size: Number of clips.
        num_frames: T, frames per clip.
        crop: H = W, frame side.
        audio_frames: T', spectrogram frames.
        mel_bins: F, mel bins.
        num_narrations: K, narration rows per clip.
        max_words: L, tokens per narration.
        vocab_size: Word ids are drawn below this (id 0 is padding).
        num_classes: Number of hidden concepts (the ``label``).
        seed: Fixes the concepts and, with the index, every clip.
        first_index: Index of the first clip; another range with the same seed is held-out data.
        audio_missing: Fraction of clips without audio (``audio_mask`` False, audio zeros).
        text_missing: Fraction of clips without narrations (``text_mask`` all False, word ids 0).
        nonfinite_every: Fault injection: clips whose index is a multiple of this carry an infinite pixel (0: none).
        fps: Frame rate, for the ``start``/``end`` times only.
    """

    def __init__(
        self,
        size: int,
        *,
        num_frames: int = 8,
        crop: int = 32,
        audio_frames: int = 32,
        mel_bins: int = 40,
        num_narrations: int = 2,
        max_words: int = 8,
        vocab_size: int = 1000,
        num_classes: int = 8,
        seed: int = 0,
        first_index: int = 0,
        audio_missing: float = 0.1,
        text_missing: float = 0.1,
        nonfinite_every: int = 0,
        fps: float = 10.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if vocab_size <= 1 + num_classes * WORDS_PER_CONCEPT + 16:
            raise ValueError(f"vocab_size {vocab_size} is too small for {num_classes} concepts and filler words")
        if mel_bins < 8:
            raise ValueError(f"mel_bins must be >= 8, got {mel_bins}")
        self.size, self.num_frames, self.crop = size, num_frames, crop
        self.audio_frames, self.mel_bins = audio_frames, mel_bins
        self.num_narrations, self.max_words, self.vocab_size = num_narrations, max_words, vocab_size
        self.num_classes, self.seed, self.first_index = num_classes, seed, first_index
        self.audio_missing, self.text_missing = audio_missing, text_missing
        self.nonfinite_every, self.fps = nonfinite_every, fps
        self._concepts = self._make_concepts(np.random.default_rng([seed, 2**31 - 1]))

    def _make_concepts(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.num_classes
        # Orientation, frequency and velocity are spread evenly (then shuffled) so no two concepts coincide.
        return {
            "angle": rng.permutation(np.linspace(0, math.pi, c, endpoint=False)),
            "frequency": rng.permutation(np.linspace(1.5, 4.0, c)),  # cycles per frame width
            "velocity": rng.choice([-1.0, 1.0], size=c) * rng.uniform(0.1, 0.25, size=c),  # cycles per frame
            "colour": rng.uniform(0.25, 0.75, size=(c, 3)),
            "bands": np.stack([rng.permutation(np.arange(2, self.mel_bins - 2))[:2] for _ in range(c)]),
            "pulse": rng.uniform(0.1, 0.4, size=c),  # pulses per spectrogram frame
        }

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        # (index, epoch) keys come from mmv.data.sampling.ResumableSampler; a synthetic clip ignores the epoch.
        index = key[0] if isinstance(key, tuple) else key
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} synthetic clips")
        global_index = self.first_index + index
        rng = np.random.default_rng([self.seed, global_index])
        label = int(rng.integers(self.num_classes))
        has_audio = rng.random() >= self.audio_missing
        has_text = rng.random() >= self.text_missing
        video = self._video(label, rng)
        if self.nonfinite_every and global_index % self.nonfinite_every == 0:
            video[0, 0, 0, 0] = np.inf
        audio = self._audio(label, rng) if has_audio else np.zeros((self.audio_frames, self.mel_bins), np.float32)
        word_ids, text_mask = self._narrations(label, rng, has_text)
        return {
            "video": torch.from_numpy(video),  # [T, H, W, 3]
            "audio": torch.from_numpy(audio),  # [T', F]
            "audio_mask": torch.tensor(has_audio),
            "word_ids": torch.from_numpy(word_ids),  # [K, L]
            "text_mask": torch.from_numpy(text_mask),  # [K]
            "label": label,
            "path": f"synthetic://{self.seed}/{global_index}",
            "start": 0.0,
            "end": self.num_frames / self.fps,
        }

    def _video(self, label: int, rng: np.random.Generator) -> np.ndarray:
        concepts, side = self._concepts, self.crop
        y, x = np.meshgrid(np.arange(side) / side, np.arange(side) / side, indexing="ij")
        angle = concepts["angle"][label]
        along = x * math.cos(angle) + y * math.sin(angle)  # [H, W]
        t = np.arange(self.num_frames)[:, None, None]
        phase = rng.uniform(0, 2 * math.pi)
        wave = np.cos(2 * math.pi * (concepts["frequency"][label] * along + concepts["velocity"][label] * t) + phase)
        frames = concepts["colour"][label] + 0.2 * wave[..., None]  # [T, H, W, 3]
        frames = frames + rng.normal(0.0, 0.1, size=frames.shape)
        return np.clip(frames, 0.0, 1.0).astype(np.float32)

    def _audio(self, label: int, rng: np.random.Generator) -> np.ndarray:
        concepts = self._concepts
        spec = rng.normal(-4.0, 0.5, size=(self.audio_frames, self.mel_bins))  # log-mel noise floor
        t = np.arange(self.audio_frames)
        pulse = 0.5 + 0.5 * np.cos(2 * math.pi * concepts["pulse"][label] * t + rng.uniform(0, 2 * math.pi))
        for band in concepts["bands"][label]:
            spec[:, band - 1:band + 2] += 3.0 * pulse[:, None]
        return spec.astype(np.float32)

    def _narrations(self, label: int, rng: np.random.Generator, has_text: bool) -> tuple[np.ndarray, np.ndarray]:
        k, length = self.num_narrations, self.max_words
        word_ids = np.zeros((k, length), dtype=np.int64)
        text_mask = np.zeros(k, dtype=bool)
        if not has_text:
            return word_ids, text_mask
        first_filler = 1 + self.num_classes * WORDS_PER_CONCEPT
        concept_words = 1 + label * WORDS_PER_CONCEPT + np.arange(WORDS_PER_CONCEPT)
        for row in range(int(rng.integers(1, k + 1))):
            n = int(rng.integers(min(3, length), length + 1))
            words = rng.integers(first_filler, self.vocab_size, size=n)
            hits = rng.choice(n, size=min(n, int(rng.integers(1, 4))), replace=False)
            words[hits] = rng.choice(concept_words, size=len(hits))
            word_ids[row, :n] = words
            text_mask[row] = True
        return word_ids, text_mask
