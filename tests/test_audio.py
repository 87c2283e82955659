"""Log-mel spectrogram tests against librosa's STFT and mel filterbank, and TensorFlow's filterbank formula."""
from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import torch

from mmv.data.audio import MelConfig, log_mel_spectrogram, mel_filterbank, num_spectrogram_frames


def _test_signal(num_samples: int, seed: int = 0, rate: int = 48000) -> np.ndarray:
    """Tones plus noise, loud enough that every mel bin carries energy (the log then compares meaningfully)."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / rate
    tones = sum(0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (150, 440, 1000, 3100, 6500))
    return (tones + 0.05 * rng.standard_normal(num_samples)).astype(np.float32)


def _librosa_log_mel(y: np.ndarray, cfg: MelConfig, weights: np.ndarray) -> np.ndarray:
    """Reference: librosa's uncentred STFT of the end-padded signal, a [n_mels, bins] filterbank, log."""
    num_frames = math.ceil(len(y) / cfg.hop_length)
    padded = np.pad(y.astype(np.float64), (0, (num_frames - 1) * cfg.hop_length + cfg.n_fft - len(y)))
    spectrum = np.abs(librosa.stft(padded, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window="hann", center=False))
    spectrum = spectrum[:, :num_frames] ** cfg.power  # [bins, T']
    return np.log(weights @ spectrum + cfg.log_offset).T  # [T', n_mels]


def _tensorflow_filterbank_reference(cfg: MelConfig) -> np.ndarray:
    """``tf.signal.linear_to_mel_weight_matrix`` as its documentation states it, one weight at a time."""
    def hz_to_mel(hz: float) -> float:
        return 1127.0 * math.log(1.0 + hz / 700.0)

    num_bins = cfg.n_fft // 2 + 1
    low, high = hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax)
    edges = [low + (high - low) * i / (cfg.n_mels + 1) for i in range(cfg.n_mels + 2)]
    weights = np.zeros((num_bins, cfg.n_mels))
    for k in range(1, num_bins):  # bin 0 (DC) stays zero
        mel = hz_to_mel(k * cfg.sample_rate / 2 / (num_bins - 1))
        for m in range(cfg.n_mels):
            rising = (mel - edges[m]) / (edges[m + 1] - edges[m])
            falling = (edges[m + 2] - mel) / (edges[m + 2] - edges[m + 1])
            weights[k, m] = max(0.0, min(rising, falling))
    return weights


def test_defaults_are_the_papers():
    cfg = MelConfig()
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels) == (48000, 2048, 1024, 80)
    assert (cfg.fmin, cfg.fmax, cfg.log_offset, cfg.power) == (80.0, 7600.0, 1e-6, 1.0)


@pytest.mark.parametrize("num_samples, frames", [(153600, 150), (76800, 75), (1000, 1), (1024, 1), (1025, 2), (0, 0)])
def test_number_of_frames(num_samples, frames):
    assert num_spectrogram_frames(num_samples) == frames
    assert log_mel_spectrogram(np.zeros(num_samples, np.float32)).shape == (frames, 80)


def test_librosa_filterbank_is_librosas():
    cfg = MelConfig(filterbank="librosa")
    reference = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin,
                                    fmax=cfg.fmax, htk=True, norm=None)
    np.testing.assert_allclose(mel_filterbank(cfg).numpy(), reference.T, atol=1e-6)


def test_tensorflow_filterbank_follows_its_formula_and_is_close_to_librosa():
    cfg = MelConfig()
    weights = mel_filterbank(cfg).numpy()
    np.testing.assert_allclose(weights, _tensorflow_filterbank_reference(cfg), atol=1e-6)
    # Triangles linear in mel vs linear in Hz over the same edges: within 0.01 per weight.
    librosa_weights = librosa.filters.mel(sr=48000, n_fft=2048, n_mels=80, fmin=80, fmax=7600, htk=True, norm=None).T
    assert np.abs(weights - librosa_weights).max() < 0.01
    assert np.array_equal(weights > 0, librosa_weights > 0)


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_log_mel_matches_librosa(power):
    y = _test_signal(153600)
    cfg = MelConfig(filterbank="librosa", power=power)
    weights = librosa.filters.mel(sr=48000, n_fft=2048, n_mels=80, fmin=80, fmax=7600, htk=True, norm=None)
    ours = log_mel_spectrogram(y, cfg).numpy()
    reference = _librosa_log_mel(y, cfg, weights)
    assert ours.shape == (150, 80) and ours.dtype == np.float32
    # float32 FFT against librosa's float64: log-mel values agree to ~5e-6 (measured); tolerance 5e-5.
    np.testing.assert_allclose(ours, reference, atol=5e-5)


def test_default_spectrogram_matches_librosa_stft_with_the_tensorflow_filterbank():
    y = _test_signal(76800, seed=3)
    cfg = MelConfig()
    reference = _librosa_log_mel(y, cfg, _tensorflow_filterbank_reference(cfg).T)
    ours = log_mel_spectrogram(y, cfg).numpy()
    np.testing.assert_allclose(ours, reference, atol=5e-5)
    # The two filterbanks give log-mel values within 0.02 of each other (measured: max 0.009, mean 0.002).
    assert np.abs(ours - log_mel_spectrogram(y, MelConfig(filterbank="librosa")).numpy()).max() < 0.02


def test_frames_are_not_centred():
    # An impulse at sample 5000 lies in frames k with k * 1024 <= 5000 < k * 1024 + 2048 only: frames 3 and 4.
    y = np.zeros(20480, np.float32)
    y[5000] = 1.0
    energy = log_mel_spectrogram(y).max(dim=1).values
    silent = math.log(1e-6)
    assert [k for k in range(len(energy)) if energy[k] > silent + 1.0] == [3, 4]


def test_a_tone_peaks_in_its_mel_bin():
    cfg = MelConfig()
    t = np.arange(48000) / 48000
    spec = log_mel_spectrogram(np.sin(2 * np.pi * 1000 * t).astype(np.float32), cfg)
    edges_mel = np.linspace(1127 * np.log1p(80 / 700), 1127 * np.log1p(7600 / 700), 82)
    centers_hz = 700 * np.expm1(edges_mel[1:-1] / 1127)
    assert int(spec.mean(0).argmax()) == int(np.abs(centers_hz - 1000).argmin())


def test_batched_numpy_and_torch_inputs_agree():
    batch = np.stack([_test_signal(30000, seed=s) for s in range(3)])
    batched = log_mel_spectrogram(batch)
    assert batched.shape == (3, 30, 80)
    for i in range(3):
        torch.testing.assert_close(batched[i], log_mel_spectrogram(torch.from_numpy(batch[i])))
    as_double = log_mel_spectrogram(torch.from_numpy(batch).double())
    assert as_double.dtype == torch.float64
    torch.testing.assert_close(as_double.float(), batched, atol=1e-4, rtol=0)


def test_bad_inputs():
    with pytest.raises(TypeError):
        log_mel_spectrogram(np.zeros(100, np.int16))
    with pytest.raises(ValueError):
        log_mel_spectrogram(np.zeros((2, 3, 100), np.float32))
    with pytest.raises(ValueError):
        MelConfig(sample_rate=8000)  # fmax 7600 is above the Nyquist frequency
    with pytest.raises(ValueError):
        MelConfig(filterbank="slaney")
