"""Timed narrations: readers for WebVTT, SRT and HowTo100M captions, a WebVTT writer, and the MIL-NCE positives.

A narration is one line of speech with its time span, e.g. one line of YouTube's automatic captions, which is what
HowTo100M's captions are. MMV trains the video-text space with MIL-NCE, whose positives P(x) for a clip x are the
narrations closest to it in time (:func:`select_narrations`).

Formats (``read_narrations`` picks one from the file extension):

* ``.vtt``: WebVTT, including cue settings, multi-line cues, ``NOTE``/``STYLE``/``REGION`` blocks, markup tags and
  the inline timestamps (``<00:00:01.000><c> word</c>``) of YouTube automatic captions. Those captions roll: each cue
  repeats the line shown before it. When a file has inline timestamps, a cue's leading lines that repeat the previous
  cue's trailing lines are dropped, so every spoken line is kept once, with the time span of the cue that introduced it.
* ``.srt``: SubRip.
* ``.csv``: a HowTo100M per-video caption file with ``start``, ``end`` and ``text`` columns (other columns, such as a
  pandas index, are ignored).
* ``.json``: HowTo100M ``raw_caption.json`` style, ``{"start": [...], "end": [...], "text": [...]}`` for one video,
  or ``{video_id: {...}, ...}`` for many (:func:`read_howto100m_captions`); also a list of
  ``{"start", "end", "text"}`` objects.

Text is decoded as UTF-8 (with or without a byte-order mark, or UTF-16 with one); files in another encoding are
read as cp1252, then latin-1, with a warning. Malformed content raises :class:`NarrationError` naming the file and
line. Narrations come back sorted by start time; lines whose text is empty are dropped.
"""
from __future__ import annotations

import csv
import html
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from mmv.atomic import atomic_write_text

logger = logging.getLogger(__name__)

# NOTE: MMV's count of MIL-NCE positives is unconfirmed (paper fact sheet §2). VATT, which follows MMV, uses the 5
# narrations nearest in time; we take that as the default and make it configurable.
DEFAULT_NUM_NARRATIONS = 5


_TIMESTAMP = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})$")
_TIMING_LINE = re.compile(r"^\s*([^\s-]+)\s*-->\s*(\S+)(.*)$")
_TAG = re.compile(r"<[^>]*>")
_ASS_OVERRIDE = re.compile(r"\{\\[^}]*\}")  # SRT files converted from ASS keep {\an8}-style overrides
_INLINE_TIMESTAMP = re.compile(r"<\d+:\d{2}(?::\d{2})?[.,]\d{3}>")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Narration:
    """One line of narration.

    Attributes:
        start: Start time in seconds from the beginning of the video.
        end: End time in seconds (``end >= start``).
        text: What is said, as plain text on one line (no markup).
    """

    start: float
    end: float
    text: str


class NarrationError(ValueError):
    """A caption file that cannot be read, naming the file and what is wrong with it.

    Attributes:
        path: The offending file.
        reason: What is wrong, starting with ``line N:`` when a line is at fault.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keeps the attributes when the error crosses a DataLoader worker boundary
        return (type(self), (self.path, self.reason))


# ----------------------------------------------------------------------------------------------------- reading


def read_narrations(path: str | os.PathLike) -> list[Narration]:
    """Reads the narrations of one video from a caption file, choosing the format by extension.

    Args:
        path: A ``.vtt``, ``.srt``, ``.csv`` or ``.json`` file (see the module docstring for the formats).

    Returns:
        The narrations sorted by start time (stable, so simultaneous lines keep file order).

    Raises:
        FileNotFoundError: The file does not exist.
        NarrationError: Unknown extension, undecodable or malformed content, or a ``.json`` file holding several
            videos (use :func:`read_howto100m_captions` for those).
    """
    suffix = Path(path).suffix.lower()
    readers = {".vtt": _parse_webvtt, ".srt": _parse_srt, ".csv": _parse_csv, ".json": _parse_json_one_video}
    if suffix not in readers:
        raise NarrationError(path, f"unknown caption format {suffix!r} (expected one of {', '.join(readers)})")
    text = _read_text(path)
    narrations = readers[suffix](text, path)
    return sorted(narrations, key=lambda n: n.start)


def read_howto100m_captions(path: str | os.PathLike) -> dict[str, list[Narration]]:
    """Reads a HowTo100M ``raw_caption.json``-style file holding the captions of many videos.

    Args:
        path: JSON ``{video_id: {"start": [...], "end": [...], "text": [...]}, ...}``. A single-video file
            (``{"start": ..., "end": ..., "text": ...}``) is returned under the file's stem.

    Returns:
        ``{video_id: narrations sorted by start time}``.

    Raises:
        NarrationError: Invalid JSON or a video entry that is not in the expected form (the message names the video).
    """
    data = _load_json(path)
    if _is_column_dict(data):
        return {Path(path).stem: sorted(_columns_to_narrations(data, path, where=""), key=lambda n: n.start)}
    if not isinstance(data, dict):
        raise NarrationError(path, f"expected a JSON object of videos, got a JSON {type(data).__name__}")
    captions = {}
    for video_id, entry in data.items():
        if not _is_column_dict(entry):
            raise NarrationError(path, f"video {video_id!r}: expected an object with 'start', 'end' and 'text' lists")
        captions[video_id] = sorted(_columns_to_narrations(entry, path, where=f"video {video_id!r}: "),
                                    key=lambda n: n.start)
    return captions


def _read_text(path: str | os.PathLike) -> str:
    """Decodes a text file: UTF-8 (BOM optional) or BOM-marked UTF-16, else cp1252 then latin-1 with a warning."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = _decode(data, "utf-16", path)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            text = None
            for encoding in ("cp1252", "latin-1"):
                try:
                    text = data.decode(encoding)
                except UnicodeDecodeError:
                    continue
                logger.warning("%s is not UTF-8 (%s); read it as %s", os.fspath(path), err.reason, encoding)
                break
            assert text is not None  # latin-1 decodes any byte string
    if "\x00" in text:
        raise NarrationError(path, "binary content (NUL bytes): not a text caption file")
    return text


def _decode(data: bytes, encoding: str, path: str | os.PathLike) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise NarrationError(path, f"invalid {encoding} text at byte {err.start}") from err


def _parse_timestamp(value: str, path: str | os.PathLike, line_number: int) -> float:
    """``[hh:]mm:ss.ttt`` (a comma is accepted for the dot, as SRT writes it) to seconds."""
    match = _TIMESTAMP.match(value)
    if not match:
        raise NarrationError(path, f"line {line_number}: invalid timestamp {value!r} (expected [hh:]mm:ss.ttt)")
    hours, minutes, seconds, fraction = match.groups()
    if int(minutes) >= 60 or int(seconds) >= 60:
        raise NarrationError(path, f"line {line_number}: invalid timestamp {value!r} (minutes/seconds over 59)")
    # Whole milliseconds first, one division last: 1.273 rather than 1 + 0.273 = 1.2730000000000001.
    millis = ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(fraction.ljust(3, "0"))
    return millis / 1000


def _parse_timing_line(line: str, path: str | os.PathLike, line_number: int) -> tuple[float, float]:
    match = _TIMING_LINE.match(line)
    if not match:
        raise NarrationError(path, f"line {line_number}: invalid cue timing {line.strip()!r}")
    start = _parse_timestamp(match.group(1), path, line_number)
    end = _parse_timestamp(match.group(2), path, line_number)
    if end < start:
        raise NarrationError(path, f"line {line_number}: cue ends ({match.group(2)}) before it starts "
                                   f"({match.group(1)})")
    return start, end


def _clean_cue_text(text: str) -> str:
    """Markup removed, entities decoded, whitespace collapsed to single spaces."""
    text = _ASS_OVERRIDE.sub("", _TAG.sub("", text))
    return _WHITESPACE.sub(" ", html.unescape(text)).strip()


def _blocks(text: str, whitespace_is_blank: bool) -> Iterable[tuple[int, list[str]]]:
    """Splits text into blocks separated by blank lines; yields (1-based number of the first line, lines).

    In WebVTT only an empty line ends a cue: YouTube's automatic captions put a line holding one space inside cues.
    """
    block: list[str] = []
    first = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if (line.strip() if whitespace_is_blank else line):
            if not block:
                first = number
            block.append(line)
        elif block:
            yield first, block
            block = []
    if block:
        yield first, block


def _parse_webvtt(text: str, path: str | os.PathLike) -> list[Narration]:
    text = text.lstrip("\ufeff")
    first_line = text.split("\n", 1)[0].rstrip("\r")
    if not re.match(r"^WEBVTT(?:[ \t].*)?$", first_line):
        raise NarrationError(path, "line 1: a WebVTT file must start with 'WEBVTT'")
    rolling = bool(_INLINE_TIMESTAMP.search(text))
    narrations = []
    previous_lines: list[str] = []
    for index, (first, block) in enumerate(_blocks(text, whitespace_is_blank=False)):
        if index == 0:  # the header: 'WEBVTT' and metadata lines; tolerate a first cue not set off by a blank line
            cue_lines = [i for i, line in enumerate(block) if "-->" in line]
            if not cue_lines:
                continue
            first, block = first + cue_lines[0], block[cue_lines[0]:]
        if re.match(r"^(NOTE|STYLE|REGION)(?:[ \t]|$)", block[0]):
            continue
        timing_indices = [i for i, line in enumerate(block) if "-->" in line]
        # An optional cue identifier comes first. A line holding '-->' always starts a new cue, as in the WebVTT
        # parsing rules, so cues separated by whitespace-only lines (not blank in WebVTT) are still split.
        if not timing_indices or timing_indices[0] > 1:
            raise NarrationError(path, f"line {first}: a cue without a timing line ('start --> end')")
        for timing_index, next_index in zip(timing_indices, timing_indices[1:] + [len(block)]):
            start, end = _parse_timing_line(block[timing_index], path, first + timing_index)
            lines = [_clean_cue_text(line) for line in block[timing_index + 1:next_index]]
            lines = [line for line in lines if line]
            if rolling:
                lines, previous_lines = _new_rolling_lines(lines, previous_lines), lines or previous_lines
            if lines:
                narrations.append(Narration(start, end, " ".join(lines)))
    return narrations


def _new_rolling_lines(lines: list[str], previous_lines: list[str]) -> list[str]:
    """Drops the leading lines of a rolling caption cue that repeat the trailing lines of the previous cue."""
    for overlap in range(min(len(lines), len(previous_lines)), 0, -1):
        if lines[:overlap] == previous_lines[-overlap:]:
            return lines[overlap:]
    return lines


def _parse_srt(text: str, path: str | os.PathLike) -> list[Narration]:
    narrations = []
    for first, block in _blocks(text.lstrip("\ufeff"), whitespace_is_blank=True):
        if "-->" in block[0]:
            timing_index = 0  # tolerated: a cue without its counter line
        elif len(block) > 1 and "-->" in block[1]:
            if not block[0].strip().isdigit():
                raise NarrationError(path, f"line {first}: expected a cue number, got {block[0].strip()!r}")
            timing_index = 1
        else:
            raise NarrationError(path, f"line {first}: a cue without a timing line ('start --> end')")
        start, end = _parse_timing_line(block[timing_index], path, first + timing_index)
        cue_text = _clean_cue_text(" ".join(block[timing_index + 1:]))
        if cue_text:
            narrations.append(Narration(start, end, cue_text))
    return narrations


def _parse_csv(text: str, path: str | os.PathLike) -> list[Narration]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as err:
        raise NarrationError(path, f"line 1: invalid CSV: {err}") from err
    columns = {name.strip().lower(): index for index, name in enumerate(header)}
    missing = [name for name in ("start", "end", "text") if name not in columns]
    if missing:
        raise NarrationError(path, f"line 1: missing column(s) {', '.join(missing)} (header: {header})")
    narrations = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) < len(header):
                raise NarrationError(path, f"line {line}: {len(row)} fields, the header has {len(header)}")
            values = {name: row[columns[name]] for name in ("start", "end", "text")}
            narration = _make_narration(values, path, where=f"line {line}: ")
            if narration is not None:
                narrations.append(narration)
    except csv.Error as err:
        raise NarrationError(path, f"line {reader.line_num}: invalid CSV: {err}") from err
    return narrations


def _make_narration(values: dict[str, Any], path: str | os.PathLike, where: str) -> Narration | None:
    """A narration from raw start/end/text values; None when the text is empty (HowTo100M has NaN texts)."""
    text = values["text"]
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    if not isinstance(text, str):
        raise NarrationError(path, f"{where}text is not a string: {text!r}")
    text = _WHITESPACE.sub(" ", text).strip()
    if not text or text.lower() == "nan":
        return None
    times = []
    for name in ("start", "end"):
        try:
            value = float(values[name])
        except (TypeError, ValueError):
            raise NarrationError(path, f"{where}{name} is not a number: {values[name]!r}") from None
        if not math.isfinite(value) or value < 0:
            raise NarrationError(path, f"{where}{name} must be a finite time >= 0, got {values[name]!r}")
        times.append(value)
    if times[1] < times[0]:
        raise NarrationError(path, f"{where}end ({times[1]}) before start ({times[0]})")
    return Narration(times[0], times[1], text)


def _load_json(path: str | os.PathLike) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise NarrationError(path, f"line {err.lineno}: invalid JSON: {err.msg}") from err


def _is_column_dict(data: Any) -> bool:
    return isinstance(data, dict) and {"start", "end", "text"} <= set(data)


def _columns_to_narrations(data: dict[str, Any], path: str | os.PathLike, where: str) -> list[Narration]:
    columns = [data["start"], data["end"], data["text"]]
    if not all(isinstance(column, list) for column in columns):
        raise NarrationError(path, f"{where}'start', 'end' and 'text' must be lists")
    if len({len(column) for column in columns}) != 1:
        raise NarrationError(path, f"{where}'start', 'end' and 'text' have different lengths "
                                   f"({', '.join(str(len(c)) for c in columns)})")
    narrations = []
    for index, (start, end, text) in enumerate(zip(*columns)):
        narration = _make_narration({"start": start, "end": end, "text": text}, path, f"{where}entry {index}: ")
        if narration is not None:
            narrations.append(narration)
    return narrations


def _parse_json_one_video(text: str, path: str | os.PathLike) -> list[Narration]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise NarrationError(path, f"line {err.lineno}: invalid JSON: {err.msg}") from err
    if _is_column_dict(data):
        return _columns_to_narrations(data, path, where="")
    if isinstance(data, list):
        narrations = []
        for index, entry in enumerate(data):
            if not (isinstance(entry, dict) and {"start", "end", "text"} <= set(entry)):
                raise NarrationError(path, f"entry {index}: expected an object with 'start', 'end' and 'text'")
            narration = _make_narration(entry, path, f"entry {index}: ")
            if narration is not None:
                narrations.append(narration)
        return narrations
    if isinstance(data, dict) and len(data) == 1 and _is_column_dict(next(iter(data.values()))):
        return _columns_to_narrations(next(iter(data.values())), path, where="")
    if isinstance(data, dict) and data and all(_is_column_dict(v) for v in data.values()):
        raise NarrationError(path, f"holds the captions of {len(data)} videos; read it with read_howto100m_captions")
    raise NarrationError(path, "expected {'start': [...], 'end': [...], 'text': [...]} or a list of "
                               "{'start', 'end', 'text'} objects")


# ----------------------------------------------------------------------------------------------------- writing


def format_timestamp(seconds: float) -> str:
    """Seconds to a WebVTT timestamp ``hh:mm:ss.ttt`` (rounded to the millisecond)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a timestamp must be a finite time >= 0, got {seconds}")
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}.{millis % 1000:03d}"


def write_webvtt(narrations: Sequence[Narration], path: str | os.PathLike) -> None:
    """Writes narrations as a WebVTT file, atomically (a temporary file renamed over ``path``).

    Text is written on one line with ``&``, ``<`` and ``>`` escaped, so that :func:`read_narrations` gives the same
    narrations back (times rounded to the millisecond).

    Args:
        narrations: The lines to write, in the order given.
        path: Destination ``.vtt`` file; its folder must exist.
    """
    parts = ["WEBVTT", ""]
    for narration in narrations:
        if narration.end < narration.start:
            raise ValueError(f"narration ends before it starts: {narration}")
        text = _WHITESPACE.sub(" ", narration.text).strip()
        if not text:
            continue  # an empty payload would end the cue and be read back as nothing anyway
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts += [f"{format_timestamp(narration.start)} --> {format_timestamp(narration.end)}", text, ""]
    atomic_write_text(path, "\n".join(parts))


# ----------------------------------------------------------------------------------------------------- selection


def interval_distance(start_a: float, end_a: float, start_b: float, end_b: float) -> float:
    """Seconds between two time intervals; 0 when they overlap or touch."""
    return max(0.0, start_b - end_a, start_a - end_b)


def select_narrations(narrations: Sequence[Narration], clip_start: float, clip_end: float,
                      k: int = DEFAULT_NUM_NARRATIONS, max_distance: float | None = None) -> list[Narration]:
    """The MIL-NCE positives P(x) of a clip: the ``k`` narrations nearest to it in time.

    The distance between a narration and the clip is the gap between their intervals (0 when they overlap). Ties are
    broken by start time, then end time, then text, so the choice never depends on input order.

    Args:
        narrations: All narrations of the clip's video.
        clip_start: Clip start in seconds.
        clip_end: Clip end in seconds (``>= clip_start``).
        k: How many narrations to keep (default 5, as VATT's "5 nearest"; unconfirmed for MMV).
        max_distance: When given, only narrations at most this many seconds from the clip qualify, so fewer than
            ``k`` (possibly none) may be returned.

    Returns:
        Up to ``k`` narrations, nearest first.
    """
    if clip_end < clip_start:
        raise ValueError(f"clip_end ({clip_end}) is before clip_start ({clip_start})")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if max_distance is not None and max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    ranked = []
    for narration in narrations:
        distance = interval_distance(clip_start, clip_end, narration.start, narration.end)
        if max_distance is None or distance <= max_distance:
            ranked.append((distance, narration.start, narration.end, narration.text, narration))
    ranked.sort(key=lambda item: item[:4])
    return [item[-1] for item in ranked[:k]]
