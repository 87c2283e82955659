"""``mmv index``: cut media files into segments and store their embeddings in a library, incrementally.

A run walks the sources, compares every file's identity (resolved path, size, modification time) with the library,
and only decodes what is new or changed; files that disappeared are dropped. Each file to do is probed in the main
process (headers only: its segments are known before decoding, so the progress bar has an honest ETA), then
decoded in DataLoader worker processes chunk by chunk while the main process runs the model on the chunks already
decoded. A file's segments and vectors are committed in one transaction when its last chunk is embedded, so an
interrupted run loses at most the files in flight and the next run picks up from there.

Segments are the model's own clips (``model.preprocess``: frames, rate, resize, crop; the audio of the same span
as its spectrogram), starting every ``stride`` seconds (default: one segment length, i.e. no overlap). Every
space the model's graph offers is stored for both sides: video (``vid_embd_toaud`` in S_va, ``vid_embd_totxt`` in
S_vat) and audio (``aud_embd_tovid`` in S_va, ``aud_embd_totxt`` in S_vat where the graph gives audio a meaningful
place there: FAC and Shared).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmv.data.files import MEDIA_EXTENSIONS, scan_files
from mmv.data.skips import SkippedSample, SkipReport
from mmv.search.library import Library, file_identity

__all__ = ["IndexOptions", "index_sources", "library_description", "model_spaces", "parse_shard"]

log = logging.getLogger(__name__)

# Segments decoded together in a worker: a chunk of 8 released-size clips is about 40 MB of uint8 frames.
SEGMENTS_PER_CHUNK = 8
# A segment whose sound is quieter than this RMS (about -80 dBFS) counts as silent: it has no audio-side vectors.
SILENCE_RMS = 1e-4


@dataclass
class IndexOptions:
    """How ``mmv index`` runs.

    Attributes:
        stride: Seconds between segment starts (None: the segment length, no overlap).
        batch_size: Clips per forward pass.
        num_workers: Decoding processes (0: decode in the main process; None: :func:`default_workers`).
        shard: ``(index, count)``: index only the files whose position in the sorted file list is ``index``
            modulo ``count`` (split a collection across processes or machines, then merge the libraries).
        progress: A progress bar with ETA.
    """

    stride: float | None = None
    batch_size: int = 16
    num_workers: int | None = None
    shard: tuple[int, int] = (0, 1)
    progress: bool = True


@dataclass
class _Planned:
    """A file to index: its identity and the segment starts known from its headers."""

    identity: tuple[str, int, int]
    duration: float
    has_video: bool
    has_sound: bool
    starts: list[float] = field(default_factory=list)


def default_workers(device: torch.device, cores: int | None = None, torch_threads: int | None = None) -> int:
    """Decoding processes when none are asked for.

    Two when they have a core to themselves: the model runs on an accelerator, or the machine has cores beyond the
    model's torch threads. None (decoding between batches in the main process) when the model already keeps every
    core busy: a worker then takes its time from the model's threads, and measured slower than decoding in-process
    (docs/search.md: 0.88 against 0.92-0.94 of the model-only throughput on 2 cores).
    """
    from mmv.runtime import usable_cores

    if device.type != "cpu":
        return 2
    cores = usable_cores() if cores is None else cores
    torch_threads = torch.get_num_threads() if torch_threads is None else torch_threads
    return max(0, min(2, cores - torch_threads))


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` -> (I, N); ``"auto"``: the launcher's rank and world size (torchrun ``RANK``/``WORLD_SIZE``, SLURM
    ``SLURM_PROCID``/``SLURM_NTASKS``); None: the whole collection."""
    if text is None:
        return 0, 1
    if text == "auto":
        from mmv.distributed import world_info_from_env

        rank, _, world = world_info_from_env()
        return rank, world
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be I/N (e.g. 0/4) or auto, got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return index, count


def model_spaces(model: torch.nn.Module) -> dict[str, list[str]]:
    """The spaces each side of a segment is stored in, from the model's graph and branches."""
    cfg = model.cfg
    has_audio, has_text = "audio" in cfg.modalities, "text" in cfg.modalities
    video = (["va"] if has_audio else []) + (["vt"] if has_text else [])
    audio: list[str] = []
    if has_audio:
        audio.append("va")
        # In FAC, audio reaches S_vat through the video's head (trained on video); in Shared it is one space. The
        # audio-text heads of a Disjoint model get no loss from MMV's objective, so their output is not searchable.
        if has_text and cfg.graph in ("fac", "shared"):
            audio.append("vt")
    return {"video": video, "audio": audio}


def library_description(model: torch.nn.Module, model_source: str, stride: float | None) -> dict[str, Any]:
    """What a library made by ``model`` with these settings records (and what a later run must match)."""
    from mmv.eval.features import preprocess_of
    from mmv.eval.io import model_checksum

    preprocess = preprocess_of(model)
    seconds = preprocess.video.seconds
    return {
        "model": {"source": model_source, "checksum": model_checksum(model), "graph": model.cfg.graph,
                  "modalities": list(model.cfg.modalities)},
        "preprocess": preprocess.to_dict(include_vocabulary=False),
        "segment_seconds": seconds,
        "stride": float(stride or seconds),
        "spaces": model_spaces(model),
    }


# --------------------------------------------------------------------------------------------------------------------
# Decoding in workers.


class _SegmentChunks(IterableDataset):
    """Yields the decoded chunks of the planned files; worker ``w`` of ``n`` takes files ``w, w + n, ...``."""

    def __init__(self, planned: list[_Planned], preprocess: Any, seconds: float) -> None:
        self.planned, self.preprocess, self.seconds = planned, preprocess, seconds

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in range(worker, len(self.planned), workers):
            yield from self._file(index, self.planned[index])

    def _file(self, index: int, plan: _Planned) -> Iterator[dict[str, Any]]:
        from mmv.data.media import MediaError

        chunks = [plan.starts[i:i + SEGMENTS_PER_CHUNK] for i in range(0, len(plan.starts), SEGMENTS_PER_CHUNK)]
        for number, starts in enumerate(chunks):
            try:
                chunk = self._decode(plan, starts)
            except (MediaError, OSError, ValueError) as err:
                yield {"index": index, "error": SkippedSample.from_error(plan.identity[0], err)}
                return
            yield {"index": index, "last": number == len(chunks) - 1, "starts": starts, **chunk}

    def _decode(self, plan: _Planned, starts: list[float]) -> dict[str, Any]:
        from mmv.data.media import decode_audio
        from mmv.data.windows import MediaItem, Windowing, video_windows, waveform_windows

        path, seconds, pre = plan.identity[0], self.seconds, self.preprocess
        out: dict[str, Any] = {"video": None, "audio": None, "sound": np.zeros(len(starts), dtype=bool)}
        if plan.has_video:
            # As a tensor: a worker hands tensors to the indexing process through shared memory, where numpy
            # arrays would be pickled through a pipe and unpickled by the process that runs the model.
            out["video"] = torch.from_numpy(video_windows(MediaItem(Path(path)), pre.video, None, starts=starts)[0])
        if plan.has_sound:
            rate = pre.audio.sample_rate
            wave = decode_audio(path, starts[0], starts[-1] + seconds, sample_rate=rate)
            audio = dataclasses.replace(pre.audio, clip_seconds=seconds)  # audio windows span the video segments
            pieces = [wave[round((s - starts[0]) * rate):round((s - starts[0] + seconds) * rate)] for s in starts]
            out["sound"] = np.array([p.size > 0 and float(np.sqrt(np.mean(p ** 2))) > SILENCE_RMS for p in pieces])
            out["audio"] = torch.from_numpy(np.concatenate([waveform_windows(p, audio, Windowing("one"), whole=False)[0]
                                                            for p in pieces]))
        return out


def _plan(path: Path, seconds: float, stride: float) -> _Planned:
    """A file's identity and segment starts from its headers (raises MediaError for an unusable file)."""
    from mmv.data.media import MediaError, probe, sliding_starts

    identity = file_identity(path)
    info = probe(path)
    if info.duration <= 0:
        raise MediaError(path, "empty", "the file has no duration")
    starts = [round(s, 6) for s in sliding_starts(info.duration, seconds, stride)]
    return _Planned(identity, info.duration, info.has_video, info.has_audio, starts)


# --------------------------------------------------------------------------------------------------------------------
# The run.


def index_sources(model: torch.nn.Module, sources: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                  model_source: str, options: IndexOptions | None = None) -> dict[str, Any]:
    """Indexes the media files under ``sources`` into the library at ``out`` (created, or updated in place).

    Args:
        model: The MMV model (its preprocessing says what a segment is).
        sources: Files and folders (searched recursively for video and audio files).
        out: The library folder.
        model_source: How to load the model again (a path or a released name), recorded for ``mmv search``.
        options: See :class:`IndexOptions`.

    Returns:
        The run's report (also ``LIB/index_report.json``).

    Raises:
        LibraryError: ``out`` holds a library made with another model or settings.
    """
    from tqdm import tqdm

    from mmv.atomic import atomic_write_json
    from mmv.data.media import MediaError
    from mmv.eval.features import preprocess_of

    options = options or IndexOptions()
    began = time.perf_counter()
    preprocess = preprocess_of(model)
    seconds = preprocess.video.seconds
    stride = float(options.stride or seconds)
    if not stride > 0:
        raise ValueError(f"--stride must be > 0, got {stride}")
    shard_index, shard_count = options.shard
    found = sorted({Path(p).resolve() for p in scan_files(sources, MEDIA_EXTENSIONS)})
    found = found[shard_index::shard_count]
    library = Library.create(out, library_description(model, model_source, stride))
    report = SkipReport()
    try:
        known, skipped_before = library.files(), library.skipped()
        gone = [path for path in known if not os.path.exists(path)]
        removed = library.remove_files(gone)
        planned, unchanged, updated = [], 0, 0
        for path in found:
            try:
                identity = file_identity(path)
            except OSError:
                continue  # vanished since the scan
            record, skip = known.get(identity[0]), skipped_before.get(identity[0])
            if (record is not None and (record.size, record.mtime_ns) == identity[1:]) or \
                    (skip is not None and skip[:2] == identity[1:]):
                unchanged += 1
                continue
            updated += record is not None
            try:
                planned.append(_plan(path, seconds, stride))
            except (MediaError, OSError) as err:
                skipped = SkippedSample.from_error(identity[0], err)
                report.add(skipped)
                library.record_skip(identity, skipped.reason, skipped.detail)
        log.info("%d files: %d unchanged, %d to index (%d changed), %d removed", len(found), unchanged,
                 len(planned), updated, removed)
        total = sum(len(p.starts) for p in planned)
        bar = tqdm(total=total, desc="indexing", unit="segment", disable=not options.progress)
        indexed, added_segments = _embed_planned(model, planned, preprocess, seconds, options, library, report, bar)
        bar.close()
    finally:
        library.write_description()
        library.close()
    result = {"library": str(out), "files_found": len(found), "unchanged": unchanged, "indexed": indexed,
              "changed": updated, "removed": removed, "segments_added": added_segments, "skipped": report.as_dict(),
              "seconds": round(time.perf_counter() - began, 2), "shard": f"{shard_index}/{shard_count}"}
    atomic_write_json(Path(out) / "index_report.json", result)
    if report.total:
        log.warning("indexing: %s", report.summary())
    return result


def _embed_planned(model: torch.nn.Module, planned: list[_Planned], preprocess: Any, seconds: float,
                   options: IndexOptions, library: Library, report: SkipReport, bar: Any) -> tuple[int, int]:
    """Decodes (in workers) and embeds every planned file, committing each file when its last chunk is done.

    Decoded chunks wait in a buffer until ``options.batch_size`` segments are there, so the model runs on full
    batches even when files are shorter than a batch (a 10 s file gives 4 released-size segments).

    Returns:
        (files indexed, segments added).
    """
    if not planned:
        return 0, 0
    model.eval()
    from mmv.eval.features import device_of

    workers = default_workers(device_of(model)) if options.num_workers is None else options.num_workers
    log.info("decoding in %s", f"{workers} worker processes" if workers else "the main process")
    loader = DataLoader(_SegmentChunks(planned, preprocess, seconds), batch_size=None, collate_fn=_as_is,
                        num_workers=workers, prefetch_factor=2 if workers else None,
                        worker_init_fn=_worker_init)
    parts: dict[int, dict[tuple[str, str], list[np.ndarray]]] = {}
    sound: dict[int, list[np.ndarray]] = {}
    buffer: list[dict[str, Any]] = []
    totals = {"files": 0, "segments": 0}

    def flush() -> None:
        _embed_chunks(model, buffer, preprocess, options.batch_size)
        for chunk in buffer:
            index = chunk["index"]
            for key, rows in chunk["vectors"].items():
                parts.setdefault(index, {}).setdefault(key, []).append(rows)
            sound.setdefault(index, []).append(chunk["sound"])
            bar.update(len(chunk["starts"]))
            if chunk["last"]:
                plan = planned[index]
                has_sound = np.concatenate(sound.pop(index))
                segments = [(s, s + seconds, bool(h)) for s, h in zip(plan.starts, has_sound)]
                vectors = {key: np.concatenate(value) for key, value in parts.pop(index, {}).items()}
                library.add_file(plan.identity, plan.duration, plan.has_video, plan.has_sound, segments, vectors)
                totals["files"] += 1
                totals["segments"] += len(segments)
        buffer.clear()

    for chunk in loader:
        if "error" in chunk:
            index, skipped = chunk["index"], chunk["error"]
            report.add(skipped)
            library.record_skip(planned[index].identity, skipped.reason, skipped.detail)
            buffer[:] = [c for c in buffer if c["index"] != index]
            parts.pop(index, None)
            sound.pop(index, None)
            continue
        buffer.append(chunk)
        if sum(len(c["starts"]) for c in buffer) >= options.batch_size:
            flush()
    if buffer:
        flush()
    return totals["files"], totals["segments"]


_KEYS = {"va": ("vid_embd_toaud", "aud_embd_tovid"), "vt": ("vid_embd_totxt", "aud_embd_totxt")}


def _embed_chunks(model: torch.nn.Module, chunks: list[dict[str, Any]], preprocess: Any, batch_size: int) -> None:
    """Runs the model over the pictures and the sound of every buffered chunk, in batches across chunks, and puts
    each chunk's L2-normalised vectors in ``chunk["vectors"]`` (``{(side, space): [segments, D]}``)."""
    from mmv.eval.features import device_of, model_pixels

    spaces, device = model_spaces(model), device_of(model)
    for chunk in chunks:
        chunk["vectors"] = {}
    for side, key, prepare in (
            ("video", "video", lambda x: model_pixels(x.to(device), preprocess.video.pixel_range)),
            ("audio", "audio", lambda x: x.to(device))):
        owners = [c for c in chunks if c[key] is not None]
        if not owners or not spaces[side]:
            continue
        inputs = torch.cat([c[key] for c in owners])
        with torch.inference_mode():
            outputs = [model(**{key: prepare(inputs[i:i + batch_size])}) for i in range(0, len(inputs), batch_size)]
        sizes = [len(c["starts"]) for c in owners]
        for space in spaces[side]:
            rows = _normalized(torch.cat([o[_KEYS[space][0 if side == "video" else 1]] for o in outputs]))
            for chunk, part in zip(owners, np.split(rows, np.cumsum(sizes)[:-1])):
                if side == "audio":
                    part = part.copy()
                    part[~chunk["sound"]] = np.nan  # no audio-side vector for a silent segment
                chunk["vectors"][(side, space)] = part


def _worker_init(worker_id: int) -> None:
    """Decoding workers yield the CPU to the model (on a machine with few cores they decode in the time the model
    leaves free; docs/search.md measures it), and die with the indexing process: a worker whose parent was killed
    would otherwise wait forever to hand over a chunk nobody reads, holding its memory."""
    try:
        os.nice(10)
    except (AttributeError, OSError):  # not POSIX, or not allowed
        pass
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux): SIGKILL this worker when its parent dies
        if os.getppid() == 1:  # the parent died before the call took effect
            os._exit(1)
    except (AttributeError, OSError):  # not Linux
        pass


def _as_is(chunk: dict[str, Any]) -> dict[str, Any]:
    """The chunk as the worker made it (numpy arrays stay arrays)."""
    return chunk


def _normalized(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=-1).cpu().numpy().astype(np.float32)


def merge_libraries(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict[str, Any]:
    """Merges libraries indexed in parts (``--shard``) with the same model and settings into ``out``."""
    from mmv.search.library import LibraryError

    if not parts:
        raise ValueError("give the libraries to merge")
    libraries = [Library.open(p) for p in parts]
    try:
        first = libraries[0].description
        target = Library.create(out, {k: first[k] for k in ("model", "preprocess", "segment_seconds", "stride",
                                                             "spaces")})
        files = 0
        for library in libraries:
            try:
                target.check_compatible(library.description)
            except LibraryError as err:
                raise LibraryError(f"{library.root}: cannot be merged into {out}: {err}") from None
            for record, segments, vectors in library.iter_file_rows():
                target.add_file((record.path, record.size, record.mtime_ns), record.duration, record.has_video,
                                record.has_sound, [(s.start, s.end, s.has_sound) for s in segments], vectors)
                files += 1
            for path, (size, mtime_ns, reason, detail) in library.skipped().items():
                target.record_skip((path, size, mtime_ns), reason, detail)
        target.write_description()
        counts = target.counts()
        target.close()
    finally:
        for library in libraries:
            library.close()
    return {"library": str(out), "parts": [str(p) for p in parts], "files": files, **counts}
