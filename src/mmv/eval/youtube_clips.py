"""Local copies of YouTube-segment datasets (AudioSet, Kinetics): finding the file of a listed segment.

The official lists give a YouTube id and the segment's start and end (seconds); the videos are not distributed, so
every copy is downloaded by some script and named by it. :class:`ClipIndex` indexes every media file under a folder
(any depth, any sub-folder: ``train/<label>/``, ``eval_segments/``, flat) by its name without extension, and finds a
segment by the names the common download scripts write, in this order:

1. a trimmed clip named by id and times: ``<id>_<start>_<end>`` (Kinetics' official crawler writes the times as
   ``%06d``: ``abc_000030_000040``; any of the forms below is accepted too) or ``<id>_<start>`` (AudioSet
   downloaders: ``abc_30.000``, ``abc_30.0``, ``abc_30``); the whole file is the segment;
2. a file named by the id alone, ``<id>.*`` or ``Y<id>.*`` (PANNs' AudioSet naming): when it is longer than the
   segment by more than a second it is the whole YouTube video and is cut at the listed times, otherwise it is the
   segment itself (:func:`resolve_segment`, decided while embedding, from the file's duration).

Which name was found does not change the label: labels always come from the lists.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from mmv.data.files import MEDIA_EXTENSIONS, scan_files
from mmv.data.windows import MediaItem

logger = logging.getLogger(__name__)

# A file named by the id alone longer than its segment by more than this (seconds) is the whole YouTube video.
WHOLE_VIDEO_MARGIN = 1.0


def time_forms(text: str) -> list[str]:
    """The ways download scripts write a time in file names: as listed (``30.000``), ``30.0``, ``30``, ``000030``."""
    value = float(text)
    forms = [text.strip(), f"{value:.3f}", f"{value:.1f}"]
    if value == int(value):
        forms += [str(int(value)), f"{int(value):06d}"]
    return list(dict.fromkeys(forms))


def segment_stems(video_id: str, start: str, end: str) -> list[str]:
    """Names (without extension) of a trimmed clip of the segment, most specific first."""
    starts, ends = time_forms(start), time_forms(end)
    paired = [f"{video_id}_{s}_{e}" for s in starts for e in ends]
    return list(dict.fromkeys(paired + [f"{video_id}_{s}" for s in starts]))


class ClipIndex:
    """Every media file under a folder by its name without extension (the first, in path order, of equal names).

    Args:
        root: The folder searched (recursively).
        extensions: Which files count (default: video and audio containers).
    """

    def __init__(self, root: str | Path, extensions: Iterable[str] = MEDIA_EXTENSIONS) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such folder")
        self.files: dict[str, Path] = {}
        for path in scan_files(self.root, tuple(extensions)):
            self.files.setdefault(path.stem, path)
        logger.info("indexed %d media files under %s", len(self.files), self.root)

    def find(self, video_id: str, start: str, end: str) -> MediaItem | None:
        """The segment's file: a trimmed clip (the whole file), or a file named by the id (cut at the listed times
        unless :func:`resolve_segment` finds it is the segment itself); None when there is neither."""
        for stem in segment_stems(video_id, start, end):
            if stem in self.files:
                return MediaItem(str(self.files[stem]))
        for stem in (video_id, f"Y{video_id}"):
            if stem in self.files:
                return MediaItem(str(self.files[stem]), float(start), float(end))
        return None

    def expected(self, video_id: str, start: str) -> str:
        """The name reported for a missing segment (a pattern: any extension, any sub-folder)."""
        return str(self.root / f"{video_id}_{start.strip()}.*")


def resolve_segment(item: MediaItem) -> MediaItem:
    """A file found by id alone: the whole video cut at the segment's times if it is longer than the segment by
    more than :data:`WHOLE_VIDEO_MARGIN`, else the file itself (already trimmed). Other items are returned as is; a
    file that cannot be probed too (the embedder then skips it with its reason)."""
    if item.start is None or item.end is None:
        return item
    from mmv.data.media import MediaError, probe

    try:
        duration = probe(item.path).duration
    except MediaError:
        return item
    return item if duration > (item.end - item.start) + WHOLE_VIDEO_MARGIN else MediaItem(item.path)
