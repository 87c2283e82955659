"""Log-mel spectrograms as MMV's audio network consumes them.

The defaults follow DMVR's ``compute_audio_spectrogram`` (the spectrogram the released MMV TF-Hub models compute in
their graph; paper fact sheet §1.4): 48 kHz audio, Hann window of 2048 samples, hop 1024, STFT magnitude (power 1),
80 mel bins between 80 and 7600 Hz, ``log(mel + 1e-6)``.

Framing is TensorFlow's ``tf.signal.stft(..., pad_end=True)``: frames are *not* centred; frame ``k`` covers samples
``[k * hop, k * hop + n_fft)`` and the signal is zero-padded at the end, giving ``ceil(S / hop)`` frames. A 3.2 s clip
at 48 kHz (153,600 samples) gives 150 frames; a 1.6 s clip gives 75.

Two mel filterbanks are available (``MelConfig.filterbank``): ``"tensorflow"`` (the default, what DMVR uses:
``tf.signal.linear_to_mel_weight_matrix``, triangles linear in mel, HTK mel scale, DC bin zeroed) and ``"librosa"``
(``librosa.filters.mel(htk=True, norm=None)``: triangles linear in Hz). They differ by a few percent per weight.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch

__all__ = ["MelConfig", "log_mel_spectrogram", "mel_filterbank", "num_spectrogram_frames"]


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """Log-mel spectrogram settings; defaults are DMVR's, used for MMV (fact sheet §1.4).

    Attributes:
        sample_rate: Input sample rate (Hz).
        n_fft: Window length and FFT size in samples (2048 = 42.7 ms at 48 kHz).
        hop_length: Samples between frames (1024 = 21.3 ms at 48 kHz).
        n_mels: Number of mel bins F.
        fmin: Lower edge of the lowest mel band (Hz).
        fmax: Upper edge of the highest mel band (Hz).
        log_offset: Added before the log, ``log(mel + log_offset)``.
        power: Exponent of the STFT magnitude (1: magnitude as DMVR, 2: power).
        filterbank: ``"tensorflow"`` (DMVR) or ``"librosa"`` (see the module docstring).
    """

    sample_rate: int = 48000
    n_fft: int = 2048
    hop_length: int = 1024
    n_mels: int = 80
    fmin: float = 80.0
    fmax: float = 7600.0
    log_offset: float = 1e-6
    power: float = 1.0
    filterbank: str = "tensorflow"

    def __post_init__(self) -> None:
        if self.filterbank not in ("tensorflow", "librosa"):
            raise ValueError(f"filterbank must be 'tensorflow' or 'librosa', got {self.filterbank!r}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, fmax={self.fmax}")
        if self.hop_length < 1 or self.n_fft < 2 or self.n_mels < 1:
            raise ValueError("n_fft, hop_length and n_mels must be positive")


def num_spectrogram_frames(num_samples: int, cfg: MelConfig = MelConfig()) -> int:
    """Number of frames T' for ``num_samples`` samples: ``ceil(num_samples / hop_length)`` (end padding)."""
    return max(0, math.ceil(num_samples / cfg.hop_length))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """HTK mel scale, as TensorFlow and ``librosa(htk=True)`` define it."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


@functools.lru_cache(maxsize=8)
def _filterbank_numpy(cfg: MelConfig) -> np.ndarray:
    num_bins = cfg.n_fft // 2 + 1
    bin_hz = np.linspace(0.0, cfg.sample_rate / 2, num_bins)
    edges_mel = np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2)
    lower, center, upper = edges_mel[:-2], edges_mel[1:-1], edges_mel[2:]
    if cfg.filterbank == "tensorflow":
        # Triangles linear in mel; TensorFlow zeroes the DC bin.
        bin_mel = _hz_to_mel(bin_hz)[:, None]
        rising = (bin_mel - lower) / (center - lower)
        falling = (upper - bin_mel) / (upper - center)
        weights = np.maximum(0.0, np.minimum(rising, falling))
        weights[0] = 0.0
    else:
        # Triangles linear in Hz between mel-spaced edges (librosa.filters.mel with htk=True, norm=None).
        lower_hz, center_hz, upper_hz = _mel_to_hz(lower), _mel_to_hz(center), _mel_to_hz(upper)
        f = bin_hz[:, None]
        rising = (f - lower_hz) / (center_hz - lower_hz)
        falling = (upper_hz - f) / (upper_hz - center_hz)
        weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights.astype(np.float32)  # [n_fft // 2 + 1, n_mels]


def mel_filterbank(cfg: MelConfig = MelConfig()) -> torch.Tensor:
    """The ``[n_fft // 2 + 1, n_mels]`` matrix mapping STFT bins to mel bins (a new tensor each call)."""
    return torch.from_numpy(_filterbank_numpy(cfg).copy())


def log_mel_spectrogram(waveform: np.ndarray | torch.Tensor, cfg: MelConfig = MelConfig()) -> torch.Tensor:
    """Computes the log-mel spectrogram of a mono waveform, or of a batch of them.

    Args:
        waveform: ``[S]`` or ``[B, S]`` samples at ``cfg.sample_rate`` (numpy or torch, any float dtype).

    Returns:
        ``[T', F]`` or ``[B, T', F]`` float32 (float64 for float64 torch input) with ``T' = ceil(S / hop_length)``
        and ``F = n_mels``, on the input's device.
    """
    x = torch.as_tensor(waveform)
    if not x.is_floating_point():
        raise TypeError(f"waveform must hold floats in [-1, 1], got dtype {x.dtype}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if x.dim() not in (1, 2):
        raise ValueError(f"waveform must be [S] or [B, S], got shape {tuple(x.shape)}")
    batched = x.dim() == 2
    x = x if batched else x[None]
    num_frames = num_spectrogram_frames(x.shape[-1], cfg)
    # NOTE: pad so that frame k = samples [k * hop, k * hop + n_fft) exists for every k < ceil(S / hop), as
    # tf.signal.stft(pad_end=True) does; torch.stft then runs uncentred.
    padded_length = max((num_frames - 1) * cfg.hop_length + cfg.n_fft, cfg.n_fft)
    x = torch.nn.functional.pad(x, (0, padded_length - x.shape[-1]))
    window = torch.hann_window(cfg.n_fft, periodic=True, dtype=x.dtype, device=x.device)
    stft = torch.stft(x, cfg.n_fft, cfg.hop_length, window=window, center=False, return_complex=True)
    spectrum = stft.abs()[..., :num_frames]  # [B, n_fft // 2 + 1, T']
    if cfg.power != 1.0:
        spectrum = spectrum.pow(cfg.power)
    weights = mel_filterbank(cfg).to(device=x.device, dtype=x.dtype)
    mel = torch.einsum("bkt,km->btm", spectrum, weights)  # [B, T', F]
    log_mel = torch.log(mel + cfg.log_offset)
    return log_mel if batched else log_mel[0]
