"""WebDataset tar shards: write them from a folder or manifest (``mmv prepare``), stream clips from them.

One sample per video. Its tar members share a key: ``KEY.<ext>`` holds the encoded video bytes as they were on disk
(``mp4``, ``webm``, ...; nothing is re-encoded) and ``KEY.json`` the metadata::

    {"path": "relative/source.mp4", "label": 3, "duration": 12.4, "video_ext": "mp4",
     "caption": "relative/source.en.vtt",                                # the caption file read, or null
     "narrations": [{"start": 0.5, "end": 2.0, "text": "..."}, ...]}     # null: no captions (or unreadable ones)

Shards are written to a temporary name and renamed when complete, so a crash never leaves a half shard under a
final name. ``DIR/shards.json`` lists the shards and their sample counts, and accounts for every input: the videos
left out (by reason), the caption files that could not be read (their videos are packed without narrations), the
files of the source folder that are not videos (by extension) and the videos without captions.

:class:`ShardDataset` streams samples from local files or any URL webdataset opens (``pipe:curl -s URL``,
``http://``, ...), splits shards across ranks and DataLoader workers, shuffles deterministically from the seed and
epoch, and decodes clips from the bytes. It yields the same sample dicts and :class:`SkippedSample` markers as
:class:`mmv.data.datasets.ClipDataset`, so :func:`mmv.data.datasets.collate_clips` and
:class:`mmv.data.datasets.SkipReport` work unchanged.
"""
from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from mmv.atomic import atomic_path, atomic_write_json
from mmv.data.audio import MelConfig
from mmv.data.skips import SkippedSample, SkipReport
from mmv.data.datasets import ClipBuilder, VideoItem, data_error_types, narrations_and_notes, skip_reason
from mmv.data.windows import sample_generator
from mmv.extras import require

# Imported with this module, not where shards are read: that happens in DataLoader workers, where a missing package
# would surface wrapped in a worker traceback after the loader has started; here it stops training at once.
webdataset = require("webdataset", "shards", "reading and writing shards")

log = logging.getLogger(__name__)

INDEX_NAME = "shards.json"


# ----------------------------------------------------------------------------------------------------------------
# Writing.


def _narrations_json(item: VideoItem, captions: Mapping[str, Sequence[Any]] | None,
                     report: SkipReport) -> tuple[list[dict[str, Any]] | None, bool]:
    """The narrations as JSON, and whether a caption source was found; a caption file that cannot be read is
    noted in ``report`` (the video is packed without narrations)."""
    narrations, notes = narrations_and_notes(item, captions)
    for note in notes:
        report.note(note)
    found = narrations is not None or any(note.reason in ("bad_caption", "missing_caption") for note in notes)
    if narrations is None:
        return None, found
    return [{"start": n.start, "end": n.end, "text": n.text} for n in narrations], found


def _check_video(path: str) -> float:
    """Probe ``path``; return its duration. Raises MediaError when it is not usable video."""
    from mmv.data.media import MediaError, probe

    info = probe(path)
    if not info.has_video:
        raise MediaError(path, "no_video", "the file has no video stream (audio only)")
    return info.duration


class _ShardFile:
    """One shard being written under a temporary name, renamed into place by :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._atomic = atomic_path(path, suffix=".tar")
        self.stream = open(self._atomic.__enter__(), "wb")
        # mtime fixed so that the same input gives the same bytes.
        self.writer = webdataset.TarWriter(self.stream, encoder=False, mtime=0.0)
        self.count = 0

    def write(self, sample: dict[str, Any]) -> None:
        self.writer.write(sample)
        self.count += 1

    def close(self) -> None:
        self.writer.close()
        self.stream.close()
        self._atomic.__exit__(None, None, None)  # renames the complete shard into place

    def abort(self, error: BaseException) -> None:
        """Removes the unfinished shard."""
        self.stream.close()
        self._atomic.__exit__(type(error), error, error.__traceback__)


def write_shards(items: Sequence[VideoItem], out_dir: str | os.PathLike, *, shard_size: int = 1000,
                 root: str | os.PathLike | None = None, check_videos: bool = True,
                 captions: Mapping[str, Sequence[Any]] | None = None, progress: bool = True,
                 report: SkipReport | None = None) -> dict[str, Any]:
    """Pack videos and their narrations into WebDataset tar shards.

    Unusable videos (unreadable, audio-only, empty) are left out, counted by reason and listed in the returned
    index. A video whose caption file cannot be read is packed without narrations, and the caption file is listed
    with the reason (``kept_with_problems``).

    Args:
        items: The videos (e.g. from :func:`mmv.data.datasets.read_items`).
        out_dir: Destination folder (created).
        shard_size: Videos per shard.
        root: Paths in the metadata are stored relative to this folder (default: as given).
        check_videos: Probe each video's headers first (cheap; catches empty, truncated and non-media files).
        captions: Narrations by video id (file stem), e.g. from HowTo100M's caption JSON; they take precedence
            over the items' caption files.
        progress: Show a progress bar.
        report: What the scan of the source found besides videos (``scan_folder(..., report=report)``); the
            packing adds to it, and all of it goes to ``shards.json``.

    Returns:
        The content of ``shards.json``: shard names and sizes, number of samples, ``skipped`` (the report: videos
        left out by reason, caption files that could not be read, ignored files by extension) and
        ``without_captions`` (the packed videos that have no captions, as stored paths).
    """
    from tqdm import tqdm

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    skipped = report if report is not None else SkipReport()
    current: _ShardFile | None = None
    written = 0
    without_captions: list[str] = []
    try:
        for item in tqdm(items, desc="writing shards", unit="video", disable=not progress):
            try:
                sample, stored_path, has_captions = _shard_sample(item, written, root, check_videos, captions,
                                                                  skipped)
            except data_error_types() as err:
                skipped.add(skip_reason(err), item.path, str(err))
                continue
            if not has_captions:
                without_captions.append(stored_path)
            if current is None:
                current = _ShardFile(out / f"shard-{len(shards):06d}.tar")
            current.write(sample)
            written += 1
            if current.count == shard_size:
                current.close()
                shards.append({"name": current.path.name, "num_samples": current.count})
                current = None
    except BaseException as err:  # Ctrl-C or a failure: the shards written so far stay, the open one goes
        if current is not None:
            current.abort(err)
        raise
    if current is not None:
        current.close()
        shards.append({"name": current.path.name, "num_samples": current.count})
    skipped.samples_seen = written
    index = {"shards": shards, "num_samples": written, "skipped": skipped.as_dict(),
             "without_captions": without_captions}
    atomic_write_json(out / INDEX_NAME, index)
    return index


def _shard_sample(item: VideoItem, number: int, root: str | os.PathLike | None, check_video: bool,
                  captions: Mapping[str, Sequence[Any]] | None,
                  report: SkipReport) -> tuple[dict[str, Any], str, bool]:
    """The tar members of one video, its stored path, and whether it has a caption source (readable or not)."""
    from mmv.data.media import MediaError

    duration = _check_video(item.path) if check_video else item.duration
    data = Path(item.path).read_bytes()
    if not data:
        raise MediaError(item.path, "empty", "the file is empty (0 bytes)")
    # After the video checks, so that a video left out notes nothing about its captions.
    narrations, has_captions = _narrations_json(item, captions, report)
    extension = Path(item.path).suffix.lower().lstrip(".") or "mp4"
    stored_path = os.path.relpath(item.path, root) if root is not None else item.path
    caption = os.path.relpath(item.caption, root) if root is not None and item.caption else item.caption
    meta = {"path": stored_path, "label": item.label, "duration": duration, "video_ext": extension,
            "caption": caption, "narrations": narrations}
    sample = {"__key__": f"{number:09d}", extension: data, "json": json.dumps(meta).encode("utf-8")}
    return sample, stored_path, has_captions


# ----------------------------------------------------------------------------------------------------------------
# Reading.


def expand_urls(urls: str | os.PathLike | Sequence[str]) -> list[str]:
    """Shard URLs from a list, a brace pattern (``shard-{000000..000009}.tar``), a folder, or a ``shards.json``."""
    if isinstance(urls, (list, tuple)):
        return [os.fspath(u) for u in urls]
    text = os.fspath(urls)
    path = Path(text)
    if path.is_dir():
        path = path / INDEX_NAME if (path / INDEX_NAME).is_file() else path
        if path.is_dir():
            found = sorted(str(p) for p in path.glob("*.tar"))
            if not found:
                raise FileNotFoundError(f"{text}: no .tar shards in this folder")
            return found
    if path.name == INDEX_NAME and path.is_file():
        index = json.loads(path.read_text(encoding="utf-8"))
        return [str(path.parent / shard["name"]) for shard in index["shards"]]
    braceexpand = require("braceexpand", "shards", "reading and writing shards")
    return list(braceexpand.braceexpand(text))


class ShardDataset(torch.utils.data.IterableDataset):
    """Clips streamed from WebDataset shards written by :func:`write_shards`.

    Each rank takes every ``world_size``-th shard of the epoch's shard order, and each DataLoader worker every
    ``num_workers``-th shard of its rank's. Training shuffles the shard order (from ``seed`` and the epoch) and the
    samples through a buffer (from ``seed``, epoch, rank and worker): the stream is reproducible for a given seed,
    epoch and worker layout. A clip's start and augmentation depend only on ``(seed, epoch, shard, key)``.

    Call :meth:`set_epoch` before each epoch (DataLoader workers are re-created per epoch unless persistent).

    Args:
        urls: Shards (see :func:`expand_urls`).
        num_frames, fps, transform, mel_config, tokenizer, num_narrations, max_narration_distance, with_audio,
            short_side: as in :class:`mmv.data.datasets.ClipDataset`.
        train: Random clips and shuffling (True), or evaluation windows in shard order (False).
        seed: Seed of every random choice.
        shuffle_buffer: Samples held for shuffling (training).
        rank: This process's rank.
        world_size: Number of ranks.
        num_windows: Evaluation windows per video.
        with_text: Use the narrations.
        tmp_dir: Where encoded videos are spilled for decoding (default: ``/dev/shm`` when writable).
    """

    def __init__(self, urls: str | os.PathLike | Sequence[str], *, num_frames: int = 32, fps: float = 10.0,
                 transform: Callable[..., torch.Tensor] | None = None, mel_config: MelConfig | None = None,
                 tokenizer: Any = None, num_narrations: int = 5, max_narration_distance: float | None = None,
                 train: bool = True, seed: int = 0, shuffle_buffer: int = 64, rank: int = 0, world_size: int = 1,
                 num_windows: int = 1, with_audio: bool = True, with_text: bool = True,
                 short_side: int | None = None, tmp_dir: str | None = None) -> None:
        super().__init__()
        self.urls = expand_urls(urls)
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.builder = ClipBuilder(num_frames, fps, transform, mel_config or MelConfig(), tokenizer, num_narrations,
                                   max_narration_distance, with_audio, short_side)
        self.train = train
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.rank = rank
        self.world_size = world_size
        self.num_windows = 1 if train else num_windows
        self.with_text = with_text
        self.tmp_dir = tmp_dir if tmp_dir is not None else _default_tmp_dir()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shards_for(self, worker_id: int, num_workers: int) -> list[str]:
        """The shards one worker of this rank reads this epoch, in order."""
        order = list(self.urls)
        if self.train:
            permutation = np.random.default_rng([self.seed, self.epoch, 0x5348]).permutation(len(order))
            order = [order[i] for i in permutation]
        return order[self.rank::self.world_size][worker_id::num_workers]

    def __iter__(self) -> Iterator[dict[str, Any] | SkippedSample]:
        info = torch.utils.data.get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = self.shards_for(worker_id, num_workers)
        raw = self._raw_samples(shards)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker_id, 0x5348])
            raw = _shuffled(raw, self.shuffle_buffer, rng)
        for shard_sample in raw:
            yield from self._clips(shard_sample)

    def _raw_samples(self, shards: list[str]) -> Iterator[dict[str, Any]]:
        """Tar members grouped by key; a damaged shard ends with a marker sample instead of an exception."""
        for url in shards:
            errors: list[BaseException] = []

            def keep_going(error: BaseException) -> bool:
                errors.append(error)
                return True

            for sample in webdataset.tarfile_samples([{"url": url}], handler=keep_going):
                yield sample
            for error in errors:
                yield {"__url__": url, "__key__": "", "__error__": error}

    def _clips(self, raw: dict[str, Any]) -> Iterator[dict[str, Any] | SkippedSample]:
        url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
        name = f"{url}#{key}" if key else url
        if "__error__" in raw:
            yield SkippedSample(name, "bad_shard", str(raw["__error__"]))
            return
        try:
            meta = json.loads(raw["json"]) if "json" in raw else None
            if not isinstance(meta, dict):
                raise ValueError("no valid json metadata member")
            data = raw[meta.get("video_ext") or "mp4"]
        except (KeyError, ValueError, UnicodeDecodeError) as err:
            yield SkippedSample(name, "bad_sample", f"malformed shard sample: {err!r}")
            return
        label = int(meta.get("label", -1))
        narrations = self._narrations(meta)
        display = meta.get("path") or name
        identity = zlib.crc32(f"{Path(url).name}#{key}".encode())
        with _spilled(data, meta.get("video_ext") or "mp4", self.tmp_dir) as media_path:
            for window in range(self.num_windows):
                yield self._clip(media_path, display, meta, narrations, label, identity, window)

    def _clip(self, media_path: str, display: str, meta: dict[str, Any], narrations: list[Any] | None, label: int,
              identity: int, window: int) -> dict[str, Any] | SkippedSample:
        try:
            duration = meta.get("duration") or _check_video(media_path)
            generator = sample_generator(self.seed, self.epoch, identity) if self.train else None
            start = self.builder.window_start(duration, train=self.train, window=window,
                                              num_windows=self.num_windows, generator=generator)
            return self.builder.build(media_path, start, narrations, label=label, path=display, index=identity,
                                      generator=generator)
        except data_error_types() as err:
            detail = str(err).replace(media_path, display)
            return SkippedSample(display, skip_reason(err), detail)

    def _narrations(self, meta: dict[str, Any]) -> list[Any] | None:
        from mmv.data.narrations import Narration

        if not self.with_text or not meta.get("narrations"):
            return None
        return [Narration(float(n["start"]), float(n["end"]), str(n["text"])) for n in meta["narrations"]]


def _shuffled(samples: Iterator[dict[str, Any]], size: int, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    """Buffer shuffle: hold ``size`` samples, emit a random one as each new one arrives."""
    buffer: list[dict[str, Any]] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        position = int(rng.integers(len(buffer)))
        buffer[position], sample = sample, buffer[position]
        yield sample
    order = rng.permutation(len(buffer))
    for position in order:
        yield buffer[position]


def _default_tmp_dir() -> str | None:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


class _spilled:
    """Context manager: the encoded bytes in a temporary file, for the path-based decoder; removed on exit.

    NOTE: the decoder seeks by path (see mmv.data.media); a temporary file in memory-backed /dev/shm costs one copy
    of a compressed video, far less than decoding it.
    """

    def __init__(self, data: bytes, extension: str, directory: str | None) -> None:
        self.data, self.extension, self.directory = data, extension, directory
        self.path = ""

    def __enter__(self) -> str:
        fd, self.path = tempfile.mkstemp(prefix="mmv-shard-", suffix=f".{self.extension}", dir=self.directory)
        with io.FileIO(fd, "wb") as f:
            f.write(self.data)
        return self.path

    def __exit__(self, *exc: Any) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
