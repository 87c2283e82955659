"""``mmv.embed_video / embed_audio / embed_text / embed_image``: raw inputs in one call, as the model expects them.

Each result is checked against the model run by hand on inputs prepared independently (decoders called directly,
resize and crop written out), for paths and for arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mmv
from eval_fixtures import calibrated_tiny_model, class_frames, class_tone, single_thread, write_image  # noqa: F401
from eval_fixtures import resize_short_side, write_video, write_wav
from mmv.data.audio import MelConfig, log_mel_spectrogram
from mmv.data.media import MediaError
from mmv.data.tokenizer import Vocabulary
from mmv.preprocess import Preprocess

DATA = {"num_frames": 4, "fps": 5.0, "crop": 24, "min_resize": 28, "sample_rate": 16000, "num_mel_bins": 32,
        "stft_window": 400, "stft_hop": 200, "mel_fmin": 100.0, "mel_fmax": 6000.0, "max_words": 5}
MEL = MelConfig(sample_rate=16000, n_fft=400, hop_length=200, n_mels=32, fmin=100.0, fmax=6000.0)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    model = calibrated_tiny_model()
    model.preprocess = Preprocess.from_training_data(DATA, Vocabulary(["tone", "red", "green", "blue"]))
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("embed")
    return {
        "video": write_video(root / "red.mp4", class_frames(0, 0, num_frames=20, size=40), fps=10,
                             audio=class_tone(0, 2.0, 16000), audio_rate=16000),
        "wav": write_wav(root / "tone.wav", class_tone(2, 1.5, 16000), 16000),
        "image": write_image(root / "blue.png", 2, seed=0, size=40),
        "broken": _broken(root / "broken.mp4"),
    }


def _broken(path: Path) -> Path:
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    return path


def _normalized_mean(rows: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(rows, dim=-1).mean(dim=0)


def _crop(frames: np.ndarray, size: int) -> np.ndarray:
    top, left = (frames.shape[-3] - size) // 2, (frames.shape[-2] - size) // 2
    return frames[..., top:top + size, left:left + size, :]


def test_video_paths_windows_and_times(model, files, single_thread):
    from mmv.data.media import decode_clip, evenly_spaced_starts, probe

    result = mmv.embed_video(model, [files["video"]], space="vt", windows=3, return_windows=True, batch_size=1)
    starts = evenly_spaced_starts(probe(files["video"]).duration, 4 / 5.0, 3)
    assert [start for start, _ in result.times[0]] == pytest.approx(starts)
    assert [end - start for start, end in result.times[0]] == pytest.approx([0.8] * 3)
    with torch.no_grad():
        hand = torch.stack([model.encode_video(torch.from_numpy(_crop(resize_short_side(decode_clip(
            files["video"], s, 4, 5.0, with_audio=False).frames, 28), 24).copy())[None].float() / 255,
            space="vt")[0] for s in starts])
    torch.testing.assert_close(result.windows[0], hand, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result.pooled[0], _normalized_mean(hand), rtol=1e-4, atol=1e-5)
    # The same call without windows: [N, D], the pooled rows; the model's default window count otherwise.
    pooled = mmv.embed_video(model, [files["video"], files["video"]], space="vt", windows=3, batch_size=1)
    assert pooled.shape == (2, 64)
    torch.testing.assert_close(pooled[1], result.pooled[0], rtol=1e-4, atol=1e-5)
    assert mmv.embed_video(model, files["video"], space="repr").shape == (1, 128)


def test_video_arrays_are_resized_and_cropped_as_the_model_says(model, single_thread):
    frames = torch.from_numpy(class_frames(1, 3, num_frames=4, size=40))  # uint8 [T, 40, 40, 3]
    one = mmv.embed_video(model, frames, space="va")  # one clip without a batch dimension
    resized = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float(), size=(28, 28), mode="bilinear",
                                              align_corners=False, antialias=True).round().clamp(0, 255)
    clip = _crop(resized.permute(0, 2, 3, 1).numpy(), 24)
    with torch.no_grad():
        hand = model.encode_video(torch.from_numpy(clip.copy())[None] / 255, space="va")
    torch.testing.assert_close(one, torch.nn.functional.normalize(hand, dim=-1), rtol=1e-4, atol=1e-5)
    # Float clips already at the crop size go in as they are; a batch gives one row each.
    clips = torch.rand(3, 4, 24, 24, 3)
    with torch.no_grad():
        direct = model.encode_video(clips, space="repr")  # backbone features: a plain mean of one window
    torch.testing.assert_close(mmv.embed_video(model, clips, space="repr"), direct, rtol=1e-4, atol=1e-5)


def test_audio_files_and_waveforms_agree(model, files, single_thread):
    from mmv.data.media import decode_audio

    from_file = mmv.embed_audio(model, [files["wav"]], space="va", windows=2, return_windows=True)
    wave = decode_audio(files["wav"], sample_rate=16000)
    from_wave = mmv.embed_audio(model, wave, space="va", windows=2, return_windows=True)
    torch.testing.assert_close(from_file.pooled, from_wave.pooled, rtol=1e-5, atol=1e-6)
    # By hand: two evenly spaced windows of the model's 0.8 s, its own mel settings.
    with torch.no_grad():
        hand = torch.stack([model.encode_audio(log_mel_spectrogram(wave[s:s + 12800], MEL)[None], space="va")[0]
                            for s in (0, len(wave) - 12800)])
    torch.testing.assert_close(from_file.windows[0], hand, rtol=1e-4, atol=1e-5)
    assert from_file.times[0][-1][1] == pytest.approx(1.5)
    # A video's soundtrack, and waveforms of different lengths in one call.
    assert mmv.embed_audio(model, files["video"], space="vt").shape == (1, 64)
    rows = mmv.embed_audio(model, [np.zeros(4000, np.float32), wave], space="va", windows=2)
    assert rows.shape == (2, 128)
    torch.testing.assert_close(rows[1], from_wave.pooled[0], rtol=1e-4, atol=1e-5)


def test_text_uses_the_stored_vocabulary_or_one_given(model, tmp_path):
    tokens = model.preprocess.text.tokenizer().encode_batch(["The red tone", "blue"])
    assert tokens.tolist() == [[3, 2, 0, 0, 0], [5, 0, 0, 0, 0]]
    with torch.no_grad():
        hand = torch.nn.functional.normalize(model.encode_text(torch.from_numpy(tokens), space="vt"), dim=-1)
    torch.testing.assert_close(mmv.embed_text(model, ["The red tone", "blue"]), hand, rtol=1e-5, atol=1e-6)
    other = tmp_path / "other.txt"
    Vocabulary(["blue", "red"]).save(other)
    swapped = mmv.embed_text(model, "blue", vocab=other)  # 'blue' is id 2 there
    with torch.no_grad():
        direct = model.encode_text(torch.tensor([[2, 0, 0, 0, 0]]), space="vt")
    torch.testing.assert_close(swapped, torch.nn.functional.normalize(direct, dim=-1), rtol=1e-5, atol=1e-6)
    bare = mmv.create_model("mmv_tiny_s3dg")
    with pytest.raises(ValueError, match="no word vocabulary"):
        mmv.embed_text(bare, ["anything"])


def test_images_go_through_a_deflated_copy(model, files, single_thread):
    import copy

    from PIL import Image

    with Image.open(files["image"]) as image:
        pixels = np.array(image.convert("RGB"))  # 40x40: resized to 28, centre crop 24 (the model's image settings)
    resized = torch.nn.functional.interpolate(torch.from_numpy(pixels).permute(2, 0, 1)[None].float(), size=(28, 28),
                                              mode="bilinear", align_corners=False, antialias=True)
    image = _crop(resized.round().clamp(0, 255)[0].permute(1, 2, 0).numpy(), 24)
    deflated = mmv.deflate(copy.deepcopy(model)).eval()
    with torch.no_grad():
        hand = torch.nn.functional.normalize(deflated.encode_video(torch.from_numpy(image.copy())[None] / 255,
                                                                   space="vt"), dim=-1)
    from_path = mmv.embed_image(model, [files["image"]])
    from_array = mmv.embed_image(model, pixels)
    torch.testing.assert_close(from_path, hand, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_array, hand, rtol=1e-4, atol=1e-5)
    assert not model.deflated and model.video_backbone is not deflated.video_backbone
    # The caller's video network still takes clips, and a static clip is the other way in.
    with torch.no_grad():
        static = model.encode_video(torch.from_numpy(image.copy())[None, None].expand(-1, 4, -1, -1, -1) / 255,
                                    space="vt")
    torch.testing.assert_close(mmv.embed_image(model, pixels, static_frames=4),
                               torch.nn.functional.normalize(static, dim=-1), rtol=1e-4, atol=1e-5)


def test_a_bad_file_names_itself_and_the_mode_is_restored(model, files):
    with pytest.raises(MediaError, match="broken.mp4"):
        mmv.embed_video(model, [files["video"], files["broken"]])
    with pytest.raises(MediaError, match="no_audio|not_media|truncated"):
        mmv.embed_audio(model, [files["image"]])
    model.train()
    try:
        mmv.embed_video(model, files["video"], space="repr")
        assert model.training, "a model in training mode must be given back in training mode"
    finally:
        model.eval()
