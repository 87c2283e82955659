"""Datasets of training and evaluation clips, read straight from video files (a folder or a manifest).

A dataset yields the sample dict of ``docs/design.md``: ``video`` ``[T, H, W, 3]`` float32 in [0, 1], ``audio``
``[T', F]`` log-mel with ``audio_mask``, ``word_ids`` ``[K, L]`` with ``text_mask`` ``[K]``, ``label``, ``path``,
``start``, ``end`` (plus ``index``, the item the clip came from, so evaluation can average over windows).

Randomness never comes from global state: the clip of item ``i`` in epoch ``e`` is drawn from a generator seeded by
``(seed, e, i)``, so it does not depend on the number of DataLoader workers nor on the order in which they run.

Bad data never ends a run. A sample whose video cannot be used comes back as a :class:`SkippedSample` marker; a
video whose caption file cannot be read is still used, with its text masked, and carries a
:class:`~mmv.data.skips.SampleNote` naming the caption file. :func:`collate_clips` drops the markers from the batch
and lists them under ``batch["skipped"]`` and ``batch["notes"]``, and a :class:`mmv.data.skips.SkipReport` in the
main process counts them by reason and summarises them at the end (one line per reason)::

    report = SkipReport()
    items = scan_folder("videos/", report=report)   # files that are not videos are counted as ignored
    loader = DataLoader(ClipDataset(items, ...), batch_size=8, num_workers=2, collate_fn=collate_clips)
    for batch in report.track(loader):   # yields only non-empty batches
        ...
    report.log_summary(logger)
"""
from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from mmv.data.audio import MelConfig, log_mel_spectrogram, num_spectrogram_frames
from mmv.data.files import VIDEO_EXTENSIONS, ignored_kind, pair_captions, scan_files
from mmv.data.skips import SampleNote, SkippedSample, SkipReport
from mmv.data.windows import Windowing, sample_generator

log = logging.getLogger(__name__)

_VIDEO_KEYS = ("video", "path", "video_path", "file")
_CAPTION_KEYS = ("caption", "captions", "caption_path", "narrations", "text_path")


@dataclass(frozen=True)
class VideoItem:
    """One video of a dataset.

    Attributes:
        path: The video file.
        caption: Its narrations file (WebVTT, SRT, HowTo100M CSV/JSON), or None when it has none.
        label: Class index, -1 when unlabelled.
        duration: Seconds, when known in advance (saves probing the file).
        extra: Other fields of the manifest line (e.g. the demo corpus's ``attribute``), for evaluation code.
    """

    path: str
    caption: str | None = None
    label: int = -1
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


# ----------------------------------------------------------------------------------------------------------------
# Finding the videos.


def scan_folder(root: str | os.PathLike, *, extensions: Sequence[str] = VIDEO_EXTENSIONS,
                labels_from_subfolders: bool = False, caption_lang: str = "en",
                report: SkipReport | None = None) -> list[VideoItem]:
    """Find the videos under ``root`` (recursively), each with its caption file if there is one.

    A video's caption file shares its stem, with or without a language tag: ``talk.vtt``, or ``talk.en.vtt``,
    ``talk.en-orig.vtt``, ``talk.de.srt`` as yt-dlp and youtube-dl save them (see
    :func:`mmv.data.files.pair_captions` for the preference among several).

    Args:
        root: Folder to scan.
        extensions: Video file extensions (case-insensitive).
        labels_from_subfolders: Label each video by its first-level subfolder (``root/CLASS/...``), classes numbered
            in sorted name order; videos directly under ``root`` are then an error.
        caption_lang: The captions' preferred language tag (``en``, ``de``, ``pt-BR``); captions only in other
            languages are not used.
        report: When given, every other file under ``root`` is recorded in it as ignored (by extension): stray
            files, hidden files, and caption files no video uses (no video of that name, or another language).

    Returns:
        Items sorted by path (a stable order for seeding).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: No video found, or a video outside the class folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    others: list[Path] = []
    videos = scan_files(root, extensions, left_out=others)
    if not videos:
        found = Counter(ignored_kind(p) for p in others)
        what = f"; found {len(others)} other files ({', '.join(f'{k}: {n}' for k, n in sorted(found.items()))})" \
            if others else "; the folder holds no file"
        raise ValueError(f"{root}: no video files found (extensions: {', '.join(sorted(extensions))}){what}")
    captions, unused = pair_captions(videos, others, caption_lang)
    if report is not None:
        used = set(captions.values())
        for other in others:
            if other not in used:
                report.ignore(other)
    if len(captions) < len(videos):
        log.info("%s: %d of %d videos have no caption file in language %r (%d caption files unused)", root,
                 len(videos) - len(captions), len(videos), caption_lang, len(unused))
    classes: dict[str, int] = {}
    if labels_from_subfolders:
        names = sorted({p.relative_to(root).parts[0] for p in videos if len(p.relative_to(root).parts) > 1})
        classes = {name: i for i, name in enumerate(names)}
    items = []
    for video in videos:
        label = -1
        if labels_from_subfolders:
            parts = video.relative_to(root).parts
            if len(parts) < 2:
                raise ValueError(f"{video}: not inside a class folder (labels_from_subfolders=True)")
            label = classes[parts[0]]
        caption = captions.get(video)
        items.append(VideoItem(str(video), str(caption) if caption is not None else None, label))
    return items


def read_manifest(path: str | os.PathLike, *, label_field: str = "label") -> list[VideoItem]:
    """Read a manifest: JSONL (one object per line), a JSON list of objects, or CSV (with a header).

    Fields (line numbers in errors count objects for a JSON list): the video (``video`` or ``path``), optionally its caption file (``caption``; empty or null for none), a
    ``label`` (int) and a ``duration`` (seconds). Relative paths are relative to the manifest's folder. Other fields
    are kept in ``VideoItem.extra``.

    Args:
        path: The manifest.
        label_field: The field read as the label, e.g. ``"attribute"`` to probe the demo corpus's attribute.

    Raises:
        FileNotFoundError: The manifest does not exist.
        ValueError: A line is malformed; the message names the manifest and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = list(enumerate(json.loads(text), 1))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from err
        if not all(isinstance(row, dict) for _, row in rows):
            raise ValueError(f"{path}: expected a JSON list of objects")
    elif path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number}: invalid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    elif path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        rows = [(number, row) for number, row in enumerate(reader, 2)]
    else:
        raise ValueError(f"{path}: unknown manifest format (expected .jsonl or .csv)")
    return [_item_from_row(row, path, number, label_field) for number, row in rows]


def _item_from_row(row: dict[str, Any], manifest: Path, number: int, label_field: str) -> VideoItem:
    where = f"{manifest}: line {number}"
    video = next((row[k] for k in _VIDEO_KEYS if row.get(k)), None)
    if not isinstance(video, str):
        raise ValueError(f"{where}: no video path (expected a '{_VIDEO_KEYS[0]}' or '{_VIDEO_KEYS[1]}' field)")
    caption = next((row[k] for k in _CAPTION_KEYS if row.get(k)), None)
    try:
        label = int(row[label_field]) if row.get(label_field) not in (None, "") else -1
        duration = float(row["duration"]) if row.get("duration") not in (None, "") else None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {label_field} must be an integer and duration a number ({err})") from None
    base = manifest.parent
    known = {*_VIDEO_KEYS, *_CAPTION_KEYS, label_field, "duration"}
    extra = {k: v for k, v in row.items() if k not in known}
    return VideoItem(str(base / video), str(base / caption) if caption else None, label, duration, extra)


def read_items(source: str | os.PathLike, **scan_options: Any) -> list[VideoItem]:
    """Items of a folder (:func:`scan_folder`, which takes ``scan_options``) or a manifest file
    (:func:`read_manifest`; a manifest names its files, so the folder options do not apply)."""
    return scan_folder(source, **scan_options) if Path(source).is_dir() else read_manifest(source)


# ----------------------------------------------------------------------------------------------------------------
# Turning a video (and its narrations) into a sample.


@dataclass
class ClipBuilder:
    """Builds the sample dict of one clip: decoding, video transform, log-mel audio and tokenized narrations.

    Shared by :class:`ClipDataset` (files) and ``ShardDataset`` (tar shards).

    Attributes:
        num_frames: Frames per clip T.
        fps: Frame rate of the clip.
        transform: uint8 ``[T, H, W, 3]`` (+ generator) -> float32 ``[T, H', W', 3]``; None: only scaled to [0, 1].
        mel_config: Audio features (its ``sample_rate`` is the decoding rate).
        tokenizer: Has ``encode(text) -> [L]`` ids and ``max_words``; None: no text.
        num_narrations: K, narrations per clip (the nearest in time).
        max_narration_distance: Narrations farther than this (seconds) from the clip are not used; None: no limit.
        with_audio: Decode audio (False: audio zeros and ``audio_mask`` False).
        short_side: Resize frames to exactly this short side while decoding. None (the clip pipeline's way): with
            a ``transform`` that resizes (``min_resize``), large frames are shrunk while decoding only down to
            :func:`mmv.data.windows.decode_limit` and the transform does the final resize, as evaluation does.
        max_words: L when there is no tokenizer.
    """

    num_frames: int = 32
    fps: float = 10.0
    transform: Callable[..., torch.Tensor] | None = None
    mel_config: MelConfig = field(default_factory=MelConfig)
    tokenizer: Any = None
    num_narrations: int = 5
    max_narration_distance: float | None = None
    with_audio: bool = True
    short_side: int | None = None
    max_words: int = 16

    @property
    def clip_duration(self) -> float:
        return self.num_frames / self.fps

    def _decode_limit(self) -> int | None:
        from mmv.data.windows import decode_limit

        min_resize = getattr(self.transform, "min_resize", None)
        return decode_limit(min_resize) if min_resize else None

    def window_start(self, duration: float, *, train: bool, window: int = 0, num_windows: int = 1,
                     generator: torch.Generator | None = None) -> float:
        """Where a clip of a ``duration``-second video starts: a random start in training (drawn from
        ``generator``), else window ``window`` of ``num_windows`` evenly spaced ones (:class:`Windowing`)."""
        windowing = Windowing("random") if train else Windowing("even", num_windows)
        return windowing.starts(duration, self.clip_duration, generator)[0 if train else window]

    @property
    def num_audio_frames(self) -> int:
        return num_spectrogram_frames(round(self.clip_duration * self.mel_config.sample_rate), self.mel_config)

    def build(self, media_path: str, start: float, narrations: Sequence[Any] | None, *, label: int, path: str,
              index: int, generator: torch.Generator | None) -> dict[str, Any]:
        """Decode the clip at ``start`` of ``media_path`` and assemble its sample dict.

        Raises:
            MediaError: The video cannot be decoded.
        """
        from mmv.data.media import decode_clip

        clip = decode_clip(media_path, start, self.num_frames, self.fps, with_audio=self.with_audio,
                           audio_rate=self.mel_config.sample_rate, short_side=self.short_side,
                           max_short_side=self._decode_limit())
        if self.transform is not None:
            video = self.transform(clip.frames, generator)
        else:
            video = torch.from_numpy(clip.frames).float().div_(255.0)
        if clip.audio is not None:
            audio, audio_mask = log_mel_spectrogram(clip.audio, self.mel_config).float(), True
        else:
            audio, audio_mask = torch.zeros(self.num_audio_frames, self.mel_config.n_mels), False
        word_ids, text_mask = self.encode_narrations(narrations, clip.start, clip.end)
        return {"video": video, "audio": audio, "audio_mask": torch.tensor(audio_mask), "word_ids": word_ids,
                "text_mask": text_mask, "label": label, "path": path, "start": clip.start, "end": clip.end,
                "index": index}

    def encode_narrations(self, narrations: Sequence[Any] | None, start: float,
                          end: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``[K, L]`` ids of the K narrations nearest the clip (zero rows pad) and the ``[K]`` mask of real ones."""
        from mmv.data.narrations import select_narrations

        length = getattr(self.tokenizer, "max_words", self.max_words)
        word_ids = torch.zeros(self.num_narrations, length, dtype=torch.int64)
        text_mask = torch.zeros(self.num_narrations, dtype=torch.bool)
        if not narrations or self.tokenizer is None:
            return word_ids, text_mask
        chosen = select_narrations(narrations, start, end, k=self.num_narrations,
                                   max_distance=self.max_narration_distance)
        for row, narration in enumerate(chosen):
            ids = torch.as_tensor(self.tokenizer.encode(narration.text), dtype=torch.int64)
            word_ids[row] = ids
            # A narration made only of stop words encodes to all padding: it carries no text.
            text_mask[row] = bool((ids != 0).any())
        return word_ids, text_mask


def item_narrations(item: VideoItem, captions: Mapping[str, Sequence[Any]] | None = None, *,
                    guesses: list[str] | None = None) -> Sequence[Any] | None:
    """The narrations of ``item``: from ``captions`` (keyed by the video's stem) if listed there, else from its
    caption file; None when it has neither. What the caption reader had to guess goes to ``guesses`` if given.

    Raises:
        NarrationError: The caption file cannot be read.
    """
    from mmv.data.narrations import read_narrations

    if captions is not None:
        found = captions.get(Path(item.path).stem)
        if found is not None:
            return found
    return read_narrations(item.caption, guesses=guesses) if item.caption is not None else None


def narrations_and_notes(item: VideoItem, captions: Mapping[str, Sequence[Any]] | None = None
                         ) -> tuple[Sequence[Any] | None, list[SampleNote]]:
    """:func:`item_narrations`, with caption problems as notes rather than errors: the video and its sound stay
    good for the video-audio loss, so a broken caption file only masks the text.

    Returns:
        ``(narrations or None, notes)``: a ``bad_caption`` note (``missing_caption`` for a listed file that does not
        exist) naming the caption file when it cannot be read, narrations None; a ``repaired_caption`` note when
        the reader had to guess (``line N: ...``), narrations as read.
    """
    from mmv.data.narrations import NarrationError

    guesses: list[str] = []
    try:
        narrations = item_narrations(item, captions, guesses=guesses)
    except (NarrationError, OSError, UnicodeError) as err:
        source = getattr(err, "path", None) if isinstance(err, NarrationError) else item.caption
        reason = "missing_caption" if isinstance(err, FileNotFoundError) else "bad_caption"
        detail = err.reason if isinstance(err, NarrationError) else str(err)  # the note's path names the file
        return None, [SampleNote(str(source or item.caption), reason, detail)]
    notes = [SampleNote(str(item.caption), "repaired_caption", "; ".join(guesses))] if guesses else []
    return narrations, notes


def data_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean "this sample's data is unusable" (skip it) rather than "the code is wrong" (raise)."""
    import av

    from mmv.data.media import MediaError
    from mmv.data.narrations import NarrationError

    return MediaError, NarrationError, av.error.FFmpegError, OSError, UnicodeError


def skip_reason(error: BaseException) -> str:
    """The reason a data error is counted under (``bad_caption`` when a caption error surfaces as one)."""
    from mmv.data.narrations import NarrationError

    if isinstance(error, NarrationError):
        return "bad_caption"
    if isinstance(error, FileNotFoundError):
        return "missing"
    return getattr(error, "reason", None) or "decode_error"


# ----------------------------------------------------------------------------------------------------------------
# The map-style dataset.


class ClipDataset(torch.utils.data.Dataset):
    """Clips from video files, as sample dicts (see the module docstring).

    Training (``train=True``): item ``i`` gives one clip per epoch, at a random start drawn from ``(seed, epoch,
    i)``; the same generator drives the video transform. Evaluation: ``num_windows`` evenly spaced clips per video
    (dataset index ``i * num_windows + w``), or one clip at ``clip_start`` seconds.

    Keys from a sampler may be ints or ``(index, epoch)`` pairs (see :class:`mmv.data.sampling.ResumableSampler`),
    which keeps epochs right with persistent DataLoader workers; with int keys, :meth:`set_epoch` sets the epoch.

    Args:
        items: The videos.
        num_frames: Frames per clip.
        fps: Clip frame rate.
        transform: Video transform (e.g. :class:`mmv.data.transforms.VideoTransform`); None: frames scaled to [0, 1].
        mel_config: Audio features; its sample rate is the decoding rate.
        tokenizer: Narration tokenizer (``encode(text)``, ``max_words``); None: no text.
        num_narrations: K narrations per clip.
        max_narration_distance: Ignore narrations farther than this from the clip (seconds).
        train: Random clips (True) or fixed windows (False).
        seed: Seed of every random choice.
        num_windows: Evaluation windows per video.
        clip_start: Evaluation: one clip per video at this start (seconds) instead of windows.
        with_audio: Decode audio.
        with_text: Read narrations.
        short_side: Resize while decoding.
        captions: Narrations by video id (the file stem), e.g. HowTo100M's caption JSON read with
            :func:`mmv.data.narrations.read_howto100m_captions`; used before any caption file of the item.
        scan_report: What the scan of the source folder found besides videos (``scan_folder(..., report=...)``);
            the training loop adds it to its own report, so every file of the folder is accounted for.
    """

    def __init__(self, items: Sequence[VideoItem], *, num_frames: int = 32, fps: float = 10.0,
                 transform: Callable[..., torch.Tensor] | None = None, mel_config: MelConfig | None = None,
                 tokenizer: Any = None, num_narrations: int = 5, max_narration_distance: float | None = None,
                 train: bool = True, seed: int = 0, num_windows: int = 1, clip_start: float | None = None,
                 with_audio: bool = True, with_text: bool = True, short_side: int | None = None,
                 captions: Mapping[str, Sequence[Any]] | None = None, scan_report: SkipReport | None = None) -> None:
        if num_windows < 1:
            raise ValueError(f"num_windows must be >= 1, got {num_windows}")
        self.items = list(items)
        self.builder = ClipBuilder(num_frames, fps, transform, mel_config or MelConfig(), tokenizer, num_narrations,
                                   max_narration_distance, with_audio, short_side)
        self.train = train
        self.seed = seed
        self.num_windows = 1 if (train or clip_start is not None) else num_windows
        self.clip_start = clip_start
        self.with_text = with_text
        self.captions = captions
        self.scan_report = scan_report
        self.epoch = 0
        self._durations: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.items) * self.num_windows

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | SkippedSample:
        index, epoch = (key if isinstance(key, tuple) else (key, self.epoch))
        item_index, window = divmod(int(index), self.num_windows)
        item = self.items[item_index]
        try:
            duration = self._duration(item_index, item)
            narrations, notes = self._narrations(item)
            generator = sample_generator(self.seed, epoch, int(index)) if self.train else None
            start = self._start(duration, window, generator)
            sample = self.builder.build(item.path, start, narrations, label=item.label, path=item.path,
                                        index=item_index, generator=generator)
        except data_error_types() as err:
            return SkippedSample(item.path, skip_reason(err), str(err))
        if notes:
            sample["notes"] = notes
        return sample

    def _duration(self, item_index: int, item: VideoItem) -> float:
        from mmv.data.media import MediaError, probe

        if item.duration is not None:
            return item.duration
        if item_index not in self._durations:
            info = probe(item.path)
            if not info.has_video:
                raise MediaError(item.path, "no_video", "the file has no video stream (audio only)")
            self._durations[item_index] = info.duration
        return self._durations[item_index]

    def _narrations(self, item: VideoItem) -> tuple[Sequence[Any] | None, list[SampleNote]]:
        if not self.with_text or self.builder.tokenizer is None:
            return None, []
        return narrations_and_notes(item, self.captions)

    def _start(self, duration: float, window: int, generator: torch.Generator | None) -> float:
        if self.clip_start is not None and not self.train:
            return self.clip_start
        return self.builder.window_start(duration, train=self.train, window=window, num_windows=self.num_windows,
                                         generator=generator)


class MixedDataset(torch.utils.data.Dataset):
    """Several datasets mixed with weights, e.g. HowTo100M (video + narrations) and AudioSet (video + audio).

    Sample ``i`` of epoch ``e`` comes from dataset ``j`` with probability ``weights[j]`` (normalised) and is item
    ``u`` of it, both drawn from ``(seed, e, i)``: sampling with replacement, so small datasets repeat and large ones
    are subsampled. Each sample keeps the modality masks its dataset gives it and gains ``source`` = ``j``.

    Args:
        datasets: Map-style datasets that accept ``(index, epoch)`` keys (as :class:`ClipDataset`).
        weights: Non-negative mixing weights, one per dataset.
        length: Samples per epoch; default the sum of the datasets' lengths.
        seed: Seed of the mixing choices.
    """

    def __init__(self, datasets: Sequence[torch.utils.data.Dataset], weights: Sequence[float], *,
                 length: int | None = None, seed: int = 0) -> None:
        if len(datasets) != len(weights) or not datasets:
            raise ValueError(f"need one weight per dataset, got {len(datasets)} datasets and {len(weights)} weights")
        probabilities = np.asarray(weights, dtype=np.float64)
        if (probabilities < 0).any() or probabilities.sum() <= 0 or not np.isfinite(probabilities).all():
            raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
        if any(len(d) == 0 for d, w in zip(datasets, weights) if w > 0):
            raise ValueError("a dataset with a positive weight is empty")
        self.datasets = list(datasets)
        self.cumulative = np.cumsum(probabilities / probabilities.sum())
        self.length = int(length if length is not None else sum(len(d) for d in datasets))
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    @property
    def scan_report(self) -> SkipReport | None:
        """The scan reports of the mixed datasets, merged (None when none has one)."""
        reports = [r for r in (getattr(d, "scan_report", None) for d in self.datasets) if r is not None]
        if not reports:
            return None
        merged = SkipReport()
        for report in reports:
            merged.merge(report)
        return merged

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for dataset in self.datasets:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    def choose(self, index: int, epoch: int) -> tuple[int, int]:
        """(dataset, item) that sample ``index`` of ``epoch`` reads."""
        rng = np.random.default_rng([self.seed, epoch, index, 0x6D6978])
        source = int(np.searchsorted(self.cumulative, rng.random(), side="right"))
        source = min(source, len(self.datasets) - 1)
        return source, int(rng.integers(len(self.datasets[source])))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | SkippedSample:
        index, epoch = (key if isinstance(key, tuple) else (key, self.epoch))
        source, inner = self.choose(int(index), epoch)
        sample = self.datasets[source][(inner, epoch)]
        if isinstance(sample, dict):
            sample["source"] = source
        return sample


# ----------------------------------------------------------------------------------------------------------------
# Batching and reporting.


def collate_clips(samples: Sequence[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
    """Stack sample dicts into a batch, dropping skipped samples and listing them under ``"skipped"``.

    Tensors are stacked, numbers become tensors, strings stay lists. The samples' notes (problems of inputs that
    were still used, e.g. an unreadable caption file) are gathered under ``"notes"``. A batch whose samples were all
    skipped holds only ``"skipped"`` and ``"notes"`` (see :func:`batch_size`).
    """
    good = [s for s in samples if isinstance(s, dict)]
    notes = [note for s in good for note in s.get("notes", ())]
    if any("notes" in s for s in good):  # only some samples carry notes: stack the keys all of them have
        good = [{k: v for k, v in s.items() if k != "notes"} for s in good]
    batch: dict[str, Any] = {"skipped": [s for s in samples if isinstance(s, SkippedSample)], "notes": notes}
    if not good:
        return batch
    for key in good[0]:
        values = [s[key] for s in good]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], bool):
            batch[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(values[0], int):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(values[0], float):
            batch[key] = torch.tensor(values, dtype=torch.float64)
        else:
            batch[key] = values
    return batch


def batch_size(batch: dict[str, Any]) -> int:
    """Number of (kept) samples in a collated batch; 0 when every sample was skipped."""
    return len(batch["path"]) if "path" in batch else 0
