"""Raw inputs to embeddings in one call: videos, sounds, sentences and images, each prepared as the model expects.

>>> import mmv
>>> model = mmv.load("models/mmv_s3d")
>>> videos = mmv.embed_video(model, ["a.mp4", "b.mp4"])               # [2, 256] in S_vat
>>> sounds = mmv.embed_audio(model, ["bird.wav"], space="va")          # [1, 512] in S_va
>>> texts = mmv.embed_text(model, ["someone chops onions"])            # [1, 256] (needs the model's vocabulary)
>>> photos = mmv.embed_image(model, ["photo.jpg"])                     # [1, 256] through a deflated copy

Each function reads the model's preprocessing (``model.preprocess``: frames, rate, crop, spectrogram, vocabulary,
windows), decodes files with the library's clip pipeline (:mod:`mmv.data.windows`, the one training and
evaluation use), batches internally and runs the model in eval mode under ``torch.inference_mode`` (a model in
training mode is put back in it afterwards). A file is covered by ``model.preprocess.windows`` evenly spaced
windows whose embeddings are pooled into one row (``model.preprocess.pooling``); ``return_windows=True`` gives
every window with its start and end time instead.

Spaces: ``"repr"`` (backbone features, for linear probes), ``"va"`` (the video-audio space S_va) and ``"vt"`` (the
space where text lives, S_vat; in FAC audio reaches it through the video's head, so sound and text compare there
although they were never paired in training). With the default pooling (``normalized_mean``) a row of an embedding
space is the mean of the L2-normalised windows, so a sentence, an image or a one-window clip gives a unit vector
and a longer file a vector of norm at most 1; compare rows by cosine similarity. ``repr`` rows are plain means.

A file that cannot be used raises :class:`mmv.data.media.MediaError` naming the file and the problem; for folders
with broken files use ``mmv embed``, which skips and reports them.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

__all__ = ["EmbeddedWindows", "embed_audio", "embed_image", "embed_text", "embed_video"]


@dataclass
class EmbeddedWindows:
    """The windows of each input and their pooled embedding.

    Attributes:
        pooled: ``[N, D]``: one row per input, its windows pooled as the model's preprocessing says.
        windows: ``N`` tensors ``[W_i, D]``: every window of input ``i``.
        times: ``N`` lists of ``(start, end)`` seconds per window (NaN for inputs without a timeline: images and
            tensors).
    """

    pooled: torch.Tensor
    windows: list[torch.Tensor]
    times: list[list[tuple[float, float]]]


# --------------------------------------------------------------------------------------------------------------------
# Shared plumbing.


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and inference mode for the duration; the model's own mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _pool(rows: torch.Tensor, space: str, pooling: str) -> torch.Tensor:
    """One embedding from a file's windows: plain mean of backbone features; in the embedding spaces the mean of
    L2-normalised windows when ``pooling`` is ``normalized_mean`` (the retrieval protocol)."""
    if space != "repr" and pooling == "normalized_mean":
        rows = torch.nn.functional.normalize(rows, dim=-1)
    return rows.mean(dim=0)


def _result(per_input: list[torch.Tensor], times: list[list[tuple[float, float]]], space: str, pooling: str,
            return_windows: bool) -> torch.Tensor | EmbeddedWindows:
    pooled = torch.stack([_pool(rows, space, pooling) for rows in per_input]) if per_input else torch.zeros(0, 0)
    return EmbeddedWindows(pooled, per_input, times) if return_windows else pooled


def _is_path(value: Any) -> bool:
    from mmv.data.windows import MediaItem

    return isinstance(value, (str, Path, MediaItem))


def _paths(inputs: Any) -> list[Any] | None:
    """The inputs as a list of paths, or None when they are arrays."""
    if _is_path(inputs):
        return [inputs]
    if isinstance(inputs, Sequence) and not isinstance(inputs, (np.ndarray, torch.Tensor)) and inputs \
            and all(_is_path(v) for v in inputs):
        return list(inputs)
    return None


def _from_files(embeddings: Any, space: str, pooling: str, return_windows: bool) -> torch.Tensor | EmbeddedWindows:
    """Pooled results of :mod:`mmv.eval.features`; the first unusable file raises its error."""
    from mmv.data.media import MediaError

    for path, (reason, detail) in embeddings.skipped.files.items():
        raise MediaError(path, reason, detail or reason)
    rows = [torch.from_numpy(f) for f in embeddings.features]
    return _result(rows, embeddings.windows, space, pooling, return_windows)


def _batched(model: torch.nn.Module, encode: Any, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    from mmv.eval.features import device_of

    device = device_of(model)
    return torch.cat([encode(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def _frames_tensor(value: Any, ndim_one: int) -> torch.Tensor:
    """Arrays as one batched tensor: a single input (``ndim_one`` dims) gains a batch dimension; lists are stacked."""
    if isinstance(value, (list, tuple)):
        return torch.stack([torch.as_tensor(np.asarray(v)) for v in value])
    x = torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
    return x[None] if x.dim() == ndim_one else x


def _prepare_pixels(frames: torch.Tensor, min_resize: int, crop: int, pixel_range: tuple[float, float]) -> torch.Tensor:
    """``[N, T, H, W, 3]`` (uint8 0-255, or float already in ``pixel_range``) resized and centre-cropped as the
    model expects, as float pixels."""
    from mmv.data.transforms import VideoTransform
    from mmv.eval.features import model_pixels

    if frames.dim() != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [N, T, H, W, 3] (or [T, H, W, 3] for one clip), got {tuple(frames.shape)}")
    if frames.shape[2:4] != (crop, crop):
        transform = VideoTransform(train=False, crop_size=crop, min_resize=min_resize)
        frames = torch.stack([transform.geometry(clip) for clip in frames])
    return model_pixels(frames, pixel_range) if frames.dtype == torch.uint8 else frames.float()


# --------------------------------------------------------------------------------------------------------------------
# The four modalities.


def embed_video(model: torch.nn.Module, videos: Any, space: str = "vt", *, windows: int | None = None,
                return_windows: bool = False, batch_size: int = 8, num_workers: int = 0,
                progress: bool = False) -> torch.Tensor | EmbeddedWindows:
    """Embeds videos: ``[N, D]``, one row per video.

    Args:
        model: An MMV model (``mmv.load``); its preprocessing says how videos become clips.
        videos: A path, a list of paths (or :class:`~mmv.data.windows.MediaItem` segments), or clips as an array or
            tensor: ``[T, H, W, 3]`` (one clip) or ``[N, T, H, W, 3]``, uint8 (0-255) or float in the model's
            pixel range; frames of another size are resized and centre-cropped as the model's preprocessing says.
        space: ``"repr"``, ``"va"`` or ``"vt"``.
        windows: Evenly spaced windows per file (default ``model.preprocess.windows``); clips given as arrays are
            one window each.
        return_windows: Return an :class:`EmbeddedWindows` (every window, with times) instead of ``[N, D]``.
        batch_size: Clips per forward pass.
        num_workers: Decoding processes.
        progress: A progress bar over the files.

    Raises:
        MediaError: A file cannot be used (the message names it and the problem).
    """
    from mmv.data.windows import Windowing
    from mmv.eval.features import embed_videos, preprocess_of

    preprocess = preprocess_of(model)
    paths = _paths(videos)
    with _evaluating(model):
        if paths is not None:
            result = embed_videos(model, paths, space=space, windowing=Windowing("even", windows or preprocess.windows),
                                  batch_size=batch_size, num_workers=num_workers, progress=progress,
                                  desc="embedding videos")
            return _from_files(result, space, preprocess.pooling, return_windows)
        v = preprocess.video
        clips = _prepare_pixels(_frames_tensor(videos, 4), v.min_resize, v.crop, v.pixel_range)
        rows = _batched(model, lambda x: model.encode_video(x, space=space), clips, batch_size)
    nan = (float("nan"), float("nan"))
    return _result([row[None] for row in rows], [[nan] for _ in rows], space, preprocess.pooling, return_windows)


def embed_audio(model: torch.nn.Module, sounds: Any, space: str = "vt", *, windows: int | None = None,
                return_windows: bool = False, batch_size: int = 16, num_workers: int = 0,
                progress: bool = False) -> torch.Tensor | EmbeddedWindows:
    """Embeds sounds: ``[N, D]``, one row per sound.

    Args:
        model: An MMV model with an audio branch.
        sounds: A path, a list of paths (audio files, or videos whose soundtrack is used; or
            :class:`~mmv.data.windows.MediaItem` segments), or waveforms at the model's sample rate
            (``model.preprocess.audio.sample_rate``): ``[S]`` (one), ``[N, S]``, or a list of 1-D arrays of any
            lengths, floats in [-1, 1].
        space: ``"repr"``, ``"va"`` or ``"vt"``.
        windows: Evenly spaced windows of ``model.preprocess.audio.clip_seconds`` per sound (default
            ``model.preprocess.windows``); a sound shorter than a window is zero-padded.
        return_windows: Return an :class:`EmbeddedWindows` instead of ``[N, D]``.
        batch_size: Spectrograms per forward pass.
        num_workers: Decoding processes (files).
        progress: A progress bar over the files.

    Raises:
        MediaError: A file cannot be used or has no sound (reason ``no_audio``).
    """
    from mmv.data.windows import Windowing, waveform_windows
    from mmv.eval.features import embed_audio as embed_audio_files
    from mmv.eval.features import preprocess_of

    preprocess = preprocess_of(model)
    windowing = Windowing("even", windows or preprocess.windows)
    paths = _paths(sounds)
    with _evaluating(model):
        if paths is not None:
            result = embed_audio_files(model, paths, space=space, windowing=windowing, batch_size=batch_size,
                                       num_workers=num_workers, progress=progress, desc="embedding sounds")
            return _from_files(result, space, preprocess.pooling, return_windows)
        if isinstance(sounds, (list, tuple)):
            waves = [np.asarray(w, dtype=np.float32) for w in sounds]
        else:
            array = np.asarray(sounds.detach().cpu() if isinstance(sounds, torch.Tensor) else sounds, np.float32)
            waves = [array] if array.ndim == 1 else list(array)
        if any(w.ndim != 1 for w in waves):
            raise ValueError("waveforms must be [S] or [N, S] mono samples (or a list of 1-D arrays)")
        cut = [waveform_windows(w, preprocess.audio, windowing) for w in waves]
        mels = torch.from_numpy(np.concatenate([m for m, _ in cut]))
        rows = _batched(model, lambda x: model.encode_audio(x, space=space), mels, batch_size)
    per_input = list(rows.split([len(m) for m, _ in cut]))
    return _result(per_input, [t for _, t in cut], space, preprocess.pooling, return_windows)


def embed_text(model: torch.nn.Module, sentences: str | Sequence[str], space: str = "vt", *,
               vocab: Any = None, batch_size: int = 256) -> torch.Tensor:
    """Embeds sentences: ``[N, D]``, one row per sentence.

    Args:
        model: An MMV model with a text branch.
        sentences: One sentence or a list.
        space: ``"repr"``, ``"va"`` (text's audio-side head, where the model has one) or ``"vt"``.
        vocab: A vocabulary (file or :class:`~mmv.data.tokenizer.Vocabulary`) instead of the model's own.
        batch_size: Sentences per forward pass.

    Raises:
        ValueError: The model has no vocabulary and none is given.
    """
    from mmv.eval.features import embed_texts, preprocess_of

    preprocess = preprocess_of(model)
    if vocab is not None:
        preprocess = preprocess.with_vocabulary(vocab)
    sentences = [sentences] if isinstance(sentences, str) else list(sentences)
    tokenizer = preprocess.text.tokenizer().encode_batch
    with _evaluating(model):
        out = torch.from_numpy(embed_texts(model, sentences, tokenizer, space=space, batch_size=batch_size))
    return _result([row[None] for row in out], [], space, preprocess.pooling, False)


def deflated_view(model: torch.nn.Module) -> torch.nn.Module:
    """The model with a deflated *copy* of its visual backbone (the caller's model is left as it is).

    Only the visual backbone is copied; heads, audio and text branches are shared with ``model``.
    """
    import mmv

    if getattr(model, "deflated", False):
        return model
    view = copy.copy(model)  # a shallow copy: its own module table, the same submodules
    view._modules = dict(model._modules)
    view._modules["video_backbone"] = copy.deepcopy(model.video_backbone)
    view.deflated = False
    return mmv.deflate(view)


def embed_image(model: torch.nn.Module, images: Any, space: str = "vt", *, static_frames: int | None = None,
                batch_size: int = 16, num_workers: int = 0, progress: bool = False) -> torch.Tensor:
    """Embeds still images: ``[N, D]``, one row per image.

    Images go through a deflated copy of the visual network (the paper's deflation; ``model`` itself is not
    changed), or, with ``static_frames``, through the video network as static clips of that many frames.

    Args:
        model: An MMV model (deflated or not).
        images: A path, a list of paths, or arrays: ``[H, W, 3]`` (one image), ``[N, H, W, 3]`` or a list of
            ``[H, W, 3]``, uint8 (0-255) or float in the model's pixel range; resized and centre-cropped as
            ``model.preprocess.image`` says.
        space: ``"repr"``, ``"va"`` or ``"vt"``.
        static_frames: Use the video network on static clips of this many frames instead of deflating.
        batch_size: Images per forward pass.
        num_workers: Decoding processes (files).
        progress: A progress bar over the files.

    Raises:
        MediaError: A file is missing or not a readable image.
    """
    from mmv.eval.features import embed_images, preprocess_of

    preprocess = preprocess_of(model)
    net = model if static_frames is not None else deflated_view(model)
    paths = _paths(images)
    with _evaluating(net):
        if paths is not None:
            result = embed_images(net, paths, space=space, spec=preprocess.image, static_frames=static_frames,
                                  batch_size=batch_size, num_workers=num_workers, progress=progress,
                                  desc="embedding images")
            return _from_files(result, space, preprocess.pooling, False)
        image = preprocess.image
        frames = _frames_tensor(images, 3)[:, None]  # images as one-frame clips through the same resize and crop
        pixels = _prepare_pixels(frames, image.min_resize, image.crop, preprocess.video.pixel_range)[:, 0]
        if static_frames is not None:
            pixels = pixels[:, None].expand(-1, static_frames, -1, -1, -1)
        rows = _batched(model, lambda x: net.encode_video(x, space=space), pixels, batch_size)
    return _result([row[None] for row in rows], [], space, preprocess.pooling, False)
