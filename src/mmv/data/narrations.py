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
read as cp1252, then latin-1, with a warning. The WebVTT and SRT readers are at least as tolerant as FFmpeg's: what
they have to guess (an empty line between a cue's timing and its text, a missing ``WEBVTT`` header, a cue number
that is not a number, a cue whose timing cannot be read and is left out, ...) is reported in one warning per kind
naming its first line, or handed to the caller (``read_narrations(path, guesses=[])``). A file from which no cue can
be read, binary data, and malformed CSV or JSON raise :class:`NarrationError` naming the file and line. Narrations
come back sorted by start time; lines whose text is empty are dropped.
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
from typing import Any, Iterable, Iterator, Mapping, Sequence

from mmv.atomic import atomic_write_text

logger = logging.getLogger(__name__)

# NOTE: MMV's count of MIL-NCE positives is unconfirmed (paper fact sheet §2). VATT, which follows MMV, uses the 5
# narrations nearest in time; we take that as the default and make it configurable.
DEFAULT_NUM_NARRATIONS = 5


# As tolerant as FFmpeg's readers: any number of digits in each field, a comma or a dot before the fraction, no
# fraction at all; values over 59 are read arithmetically (with a warning).
_TIMESTAMP = re.compile(r"^(?:(\d+):)?(\d+):(\d+)(?:[.,](\d+))?$")
_TIMING_LINE = re.compile(r"^\s*([^\s-]+)\s*(-->|->)\s*(\S+)(.*)$")
# A timing line written with '->' counts only when both sides are timestamps ('a -> b' in a cue's text does not).
_LOOSE_TIMING_LINE = re.compile(r"^\s*(?:\d+:)?\d+:\d+(?:[.,]\d+)?\s*->\s*(?:\d+:)?\d+:\d+(?:[.,]\d+)?(?:\s.*)?$")
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


def read_narrations(path: str | os.PathLike, *, guesses: list[str] | None = None) -> list[Narration]:
    """Reads the narrations of one video from a caption file, choosing the format by extension.

    Args:
        path: A ``.vtt``, ``.srt``, ``.csv`` or ``.json`` file (see the module docstring for the formats).
        guesses: When given, what the reader had to guess (``line N: ...``, one entry per kind, e.g. an empty line
            between a timing line and its text, a text encoding other than UTF-8) is appended here instead of being
            logged as a warning: datasets that read the same file every epoch count it in their report instead.

    Returns:
        The narrations sorted by start time (stable, so simultaneous lines keep file order).

    Raises:
        FileNotFoundError: The file does not exist.
        NarrationError: Unknown extension, binary or undecodable content, no readable cue, malformed CSV or JSON,
            or a ``.json`` file holding several videos (use :func:`read_howto100m_captions` for those).
    """
    suffix = Path(path).suffix.lower()
    readers = {".vtt": _parse_webvtt, ".srt": _parse_srt, ".csv": _parse_csv, ".json": _parse_json_one_video}
    if suffix not in readers:
        raise NarrationError(path, f"unknown caption format {suffix!r} (expected one of {', '.join(readers)})")
    found = _Guesses()
    text = _read_text(path, found)
    narrations = readers[suffix](text, path, found)
    if guesses is not None:
        guesses.extend(found.messages())
    else:
        for message in found.messages():
            logger.warning("%s: %s", os.fspath(path), message)
    return sorted(narrations, key=lambda n: n.start)


class _Guesses:
    """What a reader had to guess, one entry per kind: the message of its first occurrence (which names the line)
    and how many times it happened, so a file with the same quirk in every cue gives one line, not hundreds."""

    def __init__(self) -> None:
        self._kinds: dict[str, list[Any]] = {}  # kind -> [first message, count]

    def add(self, kind: str, message: str) -> None:
        entry = self._kinds.setdefault(kind, [message, 0])
        entry[1] += 1

    def first(self) -> str | None:
        return next((message for message, _ in self._kinds.values()), None)

    def messages(self) -> list[str]:
        return [message + (f" ({count} times in this file)" if count > 1 else "")
                for message, count in self._kinds.values()]


def _read_text(path: str | os.PathLike, guesses: _Guesses | None = None) -> str:
    """Decodes a text file: UTF-8 (BOM optional) or BOM-marked UTF-16, else cp1252 then latin-1 (a guess)."""
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
                message = f"not UTF-8 ({err.reason} at byte {err.start}); read it as {encoding}"
                if guesses is not None:
                    guesses.add("encoding", message)
                else:
                    logger.warning("%s: %s", os.fspath(path), message)
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


def _timestamp_seconds(value: str, line_number: int, guesses: _Guesses) -> float | None:
    """``[hh:]mm:ss[.ttt]`` (a comma is accepted for the dot, as SRT writes it) to seconds; None if unreadable."""
    match = _TIMESTAMP.match(value)
    if not match:
        return None
    hours, minutes, seconds, fraction = match.groups()
    if int(minutes) >= 60 or int(seconds) >= 60:
        guesses.add("over59", f"line {line_number}: minutes or seconds over 59 in {value!r}; read arithmetically "
                              f"(as FFmpeg does)")
    fraction = fraction or "0"
    scale = 10 ** len(fraction)
    # Whole milliseconds first, one division last: 1.273 rather than 1 + 0.273 = 1.2730000000000001.
    millis = ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000
    millis += (int(fraction) * 1000 + scale // 2) // scale
    return millis / 1000


def _is_timing_line(line: str) -> bool:
    return "-->" in line or bool(_LOOSE_TIMING_LINE.match(line))


def _read_timing(line: str, line_number: int, guesses: _Guesses) -> tuple[float, float] | None:
    """``(start, end)`` of a cue timing line; None, with the reason recorded, when it cannot be read."""
    match = _TIMING_LINE.match(line)
    if not match:
        guesses.add("timing", f"line {line_number}: unreadable cue timing {line.strip()!r}; the cue is left out")
        return None
    if match.group(2) != "-->":
        guesses.add("arrow", f"line {line_number}: {match.group(2)!r} in the timing line read as '-->'")
    times = []
    for value in (match.group(1), match.group(3)):
        seconds = _timestamp_seconds(value, line_number, guesses)
        if seconds is None:
            guesses.add("timestamp", f"line {line_number}: invalid timestamp {value!r} (expected [hh:]mm:ss.ttt); "
                                     f"the cue is left out")
            return None
        times.append(seconds)
    start, end = times
    if end < start:
        guesses.add("backwards", f"line {line_number}: the cue ends ({match.group(3)}) before it starts "
                                 f"({match.group(1)}); its end is taken as its start")
        end = start
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


def _no_cue(path: str | os.PathLike, guesses: _Guesses, what: str) -> NarrationError:
    """The error of a non-empty file from which no cue could be read."""
    first = guesses.first()
    return NarrationError(path, f"no readable cue ({first})" if first else f"no cue found: {what}")


def _parse_webvtt(text: str, path: str | os.PathLike, guesses: _Guesses) -> list[Narration]:
    text = text.lstrip("\ufeff")
    if not text.strip():
        return []
    first_line = text.split("\n", 1)[0].rstrip("\r")
    has_header = bool(re.match(r"^WEBVTT(?:[ \t].*)?$", first_line))
    rolling = bool(_INLINE_TIMESTAMP.search(text))
    narrations = []
    num_cues = num_rejected = 0
    previous_lines: list[str] = []
    textless: tuple[float, float, int] | None = None  # (start, end, timing line) of a cue ended by an empty line
    for index, (first, block) in enumerate(_blocks(text, whitespace_is_blank=False)):
        pending, textless = textless, None
        # The header block, as FFmpeg takes it: a first block starting with 'WEBVTT' (even 'WEBVTTX'); tolerate a
        # first cue not set off from it by a blank line.
        if index == 0 and block[0].startswith("WEBVTT"):
            cue_lines = [i for i, line in enumerate(block) if _is_timing_line(line)]
            if not cue_lines:
                continue
            first, block = first + cue_lines[0], block[cue_lines[0]:]
        if re.match(r"^(NOTE|STYLE|REGION)(?:[ \t]|$)", block[0]):
            continue
        timing_indices = [i for i, line in enumerate(block) if _is_timing_line(line)]
        # An optional cue identifier comes first. A timing line always starts a new cue, as in the WebVTT parsing
        # rules, so cues separated by whitespace-only lines (not blank in WebVTT) are still split.
        if not timing_indices:
            cue_text = " ".join(filter(None, map(_clean_cue_text, block)))
            if pending is not None and cue_text:
                # An empty line between a cue's timing and its text (converted files): FFmpeg loses the text.
                guesses.add("blank_after_timing", f"line {pending[2] + 1}: an empty line between the timing line and "
                                                  f"the text; the text after it is read as the cue's")
                narrations.append(Narration(pending[0], pending[1], cue_text))
                continue
            guesses.add("no_timing", f"line {first}: a block without a timing line ('start --> end'); left out")
            num_rejected += 1
            continue
        if timing_indices[0] > 1:
            guesses.add("before_timing", f"line {first}: {timing_indices[0]} lines before the timing line of a cue "
                                         f"(at most one, its identifier, is allowed); left out")
        for timing_index, next_index in zip(timing_indices, timing_indices[1:] + [len(block)]):
            timing = _read_timing(block[timing_index], first + timing_index, guesses)
            lines = [_clean_cue_text(line) for line in block[timing_index + 1:next_index]]
            lines = [line for line in lines if line]
            if timing is None:
                num_rejected += 1
                previous_lines = []  # what the unreadable cue showed is unknown: repeat nothing against it
                continue
            num_cues += 1
            if rolling:
                # The documented rule: only lines repeating the previous cue (empty or not) are dropped, so a line
                # spoken again after a pause (an empty cue) is kept.
                lines, previous_lines = _new_rolling_lines(lines, previous_lines), lines
            if lines:
                narrations.append(Narration(timing[0], timing[1], " ".join(lines)))
            elif next_index == timing_index + 1 and not rolling:
                textless = (timing[0], timing[1], first + timing_index)
    if not has_header:
        if not num_cues:
            raise NarrationError(path, "line 1: a WebVTT file must start with 'WEBVTT' (and no cue was found)")
        guesses.add("header", f"line 1: {first_line.strip()[:40]!r} is not a WebVTT header ('WEBVTT'); read as "
                              f"WebVTT anyway")
    if not num_cues and num_rejected:
        raise _no_cue(path, guesses, "no 'start --> end' timing line")
    return narrations


def _new_rolling_lines(lines: list[str], previous_lines: list[str]) -> list[str]:
    """Drops the leading lines of a rolling caption cue that repeat the trailing lines of the previous cue."""
    for overlap in range(min(len(lines), len(previous_lines)), 0, -1):
        if lines[:overlap] == previous_lines[-overlap:]:
            return lines[overlap:]
    return lines


def _parse_srt(text: str, path: str | os.PathLike, guesses: _Guesses) -> list[Narration]:
    """SubRip, read as FFmpeg reads it: every timing line starts a cue, and the lines up to the next timing line
    (less the next cue's number) are its text, so empty lines inside a cue, or between its timing and its text,
    do not lose the text. What had to be guessed is recorded in ``guesses``."""
    lines = text.lstrip("\ufeff").splitlines()
    preamble: list[tuple[int, str]] = []
    cues: list[tuple[int, tuple[float, float] | None, list[tuple[int, str]]]] = []  # (line, timing, body)
    for number, line in enumerate(lines, start=1):
        if _is_timing_line(line):
            cues.append((number, _read_timing(line, number, guesses), []))
        else:
            (cues[-1][2] if cues else preamble).append((number, line))
    if not cues:
        if any(line.strip() for line in lines):
            raise NarrationError(path, "no cue found: no 'start --> end' timing line")
        return []
    _drop_cue_number(preamble, guesses, first_cue=True)
    stray = [number for number, line in preamble if line.strip()]
    if stray:
        guesses.add("preamble", f"line {stray[0]}: text before the first cue; left out")
    narrations = []
    for position, (number, timing, body) in enumerate(cues):
        if position + 1 < len(cues):
            _drop_cue_number(body, guesses, first_cue=False)
        while body and not body[-1][1].strip():
            body.pop()
        if timing is None:
            continue
        if body and not body[0][1].strip() and any(line.strip() for _, line in body):
            guesses.add("blank_after_timing", f"line {body[0][0]}: an empty line between the timing line (line "
                                              f"{number}) and the text; the text after it is read as the cue's")
            while not body[0][1].strip():
                body.pop(0)
        inner = [n for n, line in body if not line.strip()]
        if inner:
            guesses.add("blank_in_cue", f"line {inner[0]}: an empty line inside a cue (no cue number and timing "
                                        f"after it); the text after it is read as the same cue's")
        cue_text = _clean_cue_text(" ".join(line for _, line in body if line.strip()))
        if cue_text:
            narrations.append(Narration(timing[0], timing[1], cue_text))
    if all(timing is None for _, timing, _ in cues):
        raise _no_cue(path, guesses, "no readable timing line")
    return narrations


def _drop_cue_number(body: list[tuple[int, str]], guesses: _Guesses, first_cue: bool) -> None:
    """Removes from the end of ``body`` the line that numbers the next cue (it comes right before its timing line).

    A number is dropped silently. Another single line set off by an empty line from text before it (or, before the
    first cue, alone) is taken for a cue identifier that is not a number: dropped, and recorded as a guess.
    """
    if not body or not body[-1][1].strip():
        return
    number, line = body[-1]
    if line.strip().isdigit():
        body.pop()
        return
    earlier = [text for _, text in body[:-1]]
    if first_cue:
        looks_like_identifier = not any(text.strip() for text in earlier)
    else:
        looks_like_identifier = (len(earlier) >= 2 and not earlier[-1].strip()
                                 and any(text.strip() for text in earlier))
    if looks_like_identifier:
        guesses.add("identifier", f"line {number}: {line.strip()[:40]!r} where a cue number was expected; left out")
        body.pop()


def _parse_csv(text: str, path: str | os.PathLike, guesses: _Guesses) -> list[Narration]:
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


def _parse_json_one_video(text: str, path: str | os.PathLike, guesses: _Guesses) -> list[Narration]:
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


# ----------------------------------------------------------------------------------------------------- many videos


def read_howto100m_captions(path: str | os.PathLike, *,
                            index_path: str | os.PathLike | None = None) -> "HowTo100MCaptions":
    """Opens a HowTo100M ``raw_caption.json``-style file holding the captions of many videos, in bounded memory.

    Args:
        path: JSON ``{video_id: {"start": [...], "end": [...], "text": [...]}, ...}``. A single-video file
            (``{"start": ..., "end": ..., "text": ...}``) is returned under the file's stem.
        index_path: Where the index of the file is kept (default: beside it, ``<name>.index.npz``); see
            :class:`HowTo100MCaptions`.

    Returns:
        A read-only mapping ``{video_id: narrations sorted by start time}`` that parses a video's entry when it is
        looked up, iterating in file order.

    Raises:
        NarrationError: Invalid JSON, or a video entry that is not an object with ``start``, ``end`` and ``text``
            (the message names the video). Malformed values inside an entry (lists of different lengths, a time
            that is not a number) are reported when that video is looked up.
    """
    return HowTo100MCaptions(path, index_path=index_path)


class HowTo100MCaptions(Mapping[str, list[Narration]]):
    """The captions of many videos in one JSON file, looked up one video at a time.

    HowTo100M's ``raw_caption.json`` holds 1.2M videos in several GB; parsed whole, it takes several times that in
    memory, in every DataLoader worker. Instead the file is scanned once (with the standard library's JSON
    scanner, a window of the file at a time) for the byte range of every video's entry, and that index (ids and
    offsets: about 30 bytes per video) is saved to ``index_path`` and reused while the file keeps its size and
    modification time. A lookup reads and parses that entry only. Memory: the index plus one entry, whatever the
    size of the file (benchmarks/bench_captions.py measures it).

    Args:
        path: The JSON file.
        index_path: The saved index (default ``<path>.index.npz``). When it cannot be written (a read-only dataset
            folder) the index is kept in memory and rebuilt next time.
        window_bytes: How much of the file the scan holds at a time (an entry larger than 64 MB is an error).
    """

    MAX_ENTRY_BYTES = 64 << 20

    def __init__(self, path: str | os.PathLike, *, index_path: str | os.PathLike | None = None,
                 window_bytes: int = 4 << 20) -> None:
        import numpy as np

        self.path = Path(path)
        self.index_path = Path(index_path) if index_path is not None else self.path.with_name(
            self.path.name + ".index.npz")
        self._single: dict[str, list[Narration]] | None = None
        self._handle: Any = None
        self._handle_pid = -1
        stat = os.stat(self.path)
        signature = np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)
        loaded = self._load_index(signature)
        if loaded is None:
            try:
                ids, offsets, lengths = _index_entries(self.path, window_bytes, self.MAX_ENTRY_BYTES)
            except _SingleVideo:
                data = _load_json(self.path)
                if not _is_column_dict(data):
                    raise NarrationError(self.path, "expected {video_id: {'start': [...], 'end': [...], 'text': "
                                                    "[...]}, ...} or one video's {'start', 'end', 'text'}") from None
                self._single = {self.path.stem: sorted(_columns_to_narrations(data, self.path, where=""),
                                                       key=lambda n: n.start)}
                return
            loaded = (ids, offsets, lengths)
            self._save_index(signature, *loaded)
        self._ids, self._offsets, self._lengths = loaded  # ids sorted (bytes), for binary search

    def _load_index(self, signature: Any) -> tuple[Any, Any, Any] | None:
        import numpy as np

        if not self.index_path.is_file():
            return None
        try:
            with np.load(self.index_path, allow_pickle=False) as data:
                if not np.array_equal(data["signature"], signature):
                    return None  # the caption file changed since the index was built
                return data["ids"], data["offsets"], data["lengths"]
        except (OSError, ValueError, KeyError) as err:  # a damaged index is rebuilt
            logger.info("rebuilding the caption index %s (%s)", self.index_path, err)
            return None

    def _save_index(self, signature: Any, ids: Any, offsets: Any, lengths: Any) -> None:
        from mmv.atomic import atomic_save_npz

        try:
            atomic_save_npz(self.index_path, signature=signature, ids=ids, offsets=offsets, lengths=lengths)
        except OSError as err:
            logger.info("could not save the caption index %s (%s); it is rebuilt next time", self.index_path, err)

    def _position(self, video_id: str) -> int:
        import numpy as np

        if not isinstance(video_id, str):
            return -1
        key = video_id.encode("utf-8")
        position = int(np.searchsorted(self._ids, key))
        return position if position < len(self._ids) and self._ids[position] == key else -1

    def __getitem__(self, video_id: str) -> list[Narration]:
        if self._single is not None:
            return self._single[video_id]
        position = self._position(video_id)
        if position < 0:
            raise KeyError(video_id)
        raw = self._read(int(self._offsets[position]), int(self._lengths[position]))
        where = f"video {video_id!r}: "
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise NarrationError(self.path, f"{where}unreadable entry ({err})") from err
        return sorted(_columns_to_narrations(entry, self.path, where=where), key=lambda n: n.start)

    def _read(self, offset: int, length: int) -> bytes:
        # One handle per process: DataLoader workers inherit the object, not a usable file position.
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle, self._handle_pid = open(self.path, "rb"), os.getpid()
        if hasattr(os, "pread"):
            return os.pread(self._handle.fileno(), length, offset)
        self._handle.seek(offset)
        return self._handle.read(length)

    def __contains__(self, video_id: object) -> bool:
        if self._single is not None:
            return video_id in self._single
        return isinstance(video_id, str) and self._position(video_id) >= 0

    def __len__(self) -> int:
        return len(self._single) if self._single is not None else len(self._ids)

    def __iter__(self) -> Iterator[str]:
        if self._single is not None:
            yield from self._single
            return
        import numpy as np

        for position in np.argsort(self._offsets, kind="stable"):  # file order
            yield self._ids[position].decode("utf-8")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_handle_pid": -1}

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and self._handle_pid == os.getpid():
            handle.close()


class _SingleVideo(Exception):
    """The file holds one video's columns ({"start": [...], ...}), not videos: read it whole (it is small)."""


_JSON_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*', re.S)
_JSON_SPACE = re.compile(r"[ \t\r\n]*")


def _index_entries(path: Path, window_bytes: int, max_entry_bytes: int) -> tuple[Any, Any, Any]:
    """Scans ``{video_id: entry, ...}`` once: ``(ids sorted as UTF-8 bytes, byte offsets, byte lengths)`` of the
    entries (a repeated id keeps its last entry, as ``json.load`` would).

    The file is decoded as latin-1, one byte per character, so string positions are byte offsets (JSON's structure
    is ASCII; the text inside strings is decoded for real only when an entry is read).
    """
    from array import array

    import numpy as np

    decoder = json.JSONDecoder()
    ids: list[bytes] = []
    offsets, lengths = array("q"), array("q")  # 8 bytes a video, not a Python int each
    with open(path, "rb") as f:
        window, base, at_end = "", 0, False

        def read_more(position: int) -> int:
            """Drops the scanned part of the window, appends the next part of the file; the new position."""
            nonlocal window, base, at_end
            data = f.read(window_bytes)
            at_end = not data
            window, base = window[position:] + data.decode("latin-1"), base + position
            return 0

        read_more(0)
        position = 3 if window.startswith("\xef\xbb\xbf") else 0  # a UTF-8 byte-order mark, as latin-1
        position = _JSON_SPACE.match(window, position).end()
        if window[position:position + 1] != "{":
            kind = "empty file" if not window[position:].strip() else f"{window[position:position + 1]!r}"
            raise NarrationError(path, f"expected a JSON object of videos, got {kind}")
        position += 1
        expect_key = True
        while True:
            position = _JSON_SPACE.match(window, position).end()
            if position >= len(window):
                if at_end:
                    raise NarrationError(path, f"byte {base + position}: the JSON object is not closed")
                position = read_more(position)
                continue
            char = window[position]
            if char == "}":
                break
            if char == "," and not expect_key:
                position, expect_key = position + 1, True
                continue
            key = _JSON_KEY.match(window, position)
            if key is None or key.end() >= len(window):
                if not at_end and len(window) - position < max_entry_bytes:
                    position = read_more(position)
                    continue
                raise NarrationError(path, f"byte {base + position}: expected a video id (a JSON string)")
            try:
                value, end = decoder.raw_decode(window, key.end())
            except json.JSONDecodeError as err:
                # An entry cut by the end of the window reads as an error near that end: read on and retry.
                if not at_end and len(window) - err.pos < (1 << 20) and len(window) - position < max_entry_bytes:
                    position = read_more(position)
                    continue
                raise NarrationError(path, f"byte {base + err.pos}: invalid JSON: {err.msg}") from None
            video_id = _json_string(key.group(1), path, base + position)
            if not ids and not isinstance(value, dict):
                raise _SingleVideo()  # {"start": [...], ...}: one video's columns, not videos
            if not _is_column_dict(value):
                raise NarrationError(path, f"video {video_id!r}: expected an object with 'start', 'end' and 'text' "
                                           f"lists")
            ids.append(video_id.encode("utf-8"))
            offsets.append(base + key.end())
            lengths.append(end - key.end())
            position, expect_key = end, False
    ids_array = np.array(ids, dtype=f"S{max(map(len, ids), default=1) or 1}")
    del ids
    order = np.argsort(ids_array, kind="stable")
    sorted_ids = ids_array[order]
    # After a stable sort the last of equal ids is the last in the file: keep it, as json.load does.
    last = np.ones(len(sorted_ids), dtype=bool)
    last[:-1] = sorted_ids[:-1] != sorted_ids[1:]
    keep = order[last]
    return (sorted_ids[last], np.frombuffer(offsets, dtype=np.int64)[keep].copy(),
            np.frombuffer(lengths, dtype=np.int64)[keep].copy())


def _json_string(raw: str, path: Path, offset: int) -> str:
    """The value of a JSON string's contents as scanned (latin-1 characters standing for UTF-8 bytes)."""
    if raw.isascii() and "\\" not in raw:
        return raw
    try:
        return json.loads('"' + raw.encode("latin-1").decode("utf-8") + '"')
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NarrationError(path, f"byte {offset}: invalid video id ({err})") from None


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
