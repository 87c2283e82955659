"""Narration readers (WebVTT, SRT, HowTo100M CSV/JSON), the WebVTT writer and the MIL-NCE positive selection."""
from __future__ import annotations

import itertools
import json
import logging
import os
import random

import pytest

from mmv.data.narrations import (
    Narration,
    NarrationError,
    format_timestamp,
    read_howto100m_captions,
    read_narrations,
    select_narrations,
    write_webvtt,
)


def _write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


# ----------------------------------------------------------------------------------------------------- WebVTT

WEBVTT_FULL = """WEBVTT - a title
Kind: captions
Language: en

NOTE
This note spans
two lines and is ignored.

STYLE
::cue { color: lime }

intro
00:00:01.000 --> 00:00:03.500 align:start position:10% line:0
First line,
<v Chef>second <b>line</b></v> &amp; more

NOTE single line note

00:03.500 --> 00:05.250
<i>Minutes</i> and   seconds only

01:02:03.004 --> 01:02:04.000 size:50%
An hour later &lt;3

01:02:05.000-->01:02:06.000
no spaces around the arrow
"""


def test_webvtt_cues_settings_multiline_tags_notes(tmp_path):
    narrations = read_narrations(_write(tmp_path / "a.vtt", WEBVTT_FULL))
    assert narrations == [
        Narration(1.0, 3.5, "First line, second line & more"),
        Narration(3.5, 5.25, "Minutes and seconds only"),
        Narration(3723.004, 3724.0, "An hour later <3"),
        Narration(3725.0, 3726.0, "no spaces around the arrow"),
    ]


# The rolling layout of YouTube automatic captions: every cue shows the previous line again (and the 10 ms cues in
# between show it alone); the line being spoken carries inline word timestamps. Payload lines holding a single
# space are part of the cue, not cue separators.
YOUTUBE_AUTO = """WEBVTT
Kind: captions
Language: en

00:00:00.030 --> 00:00:02.350 align:start position:0%
 
today<00:00:00.480><c> we</c><00:00:00.840><c> make</c><00:00:01.200><c> bread</c>

00:00:02.350 --> 00:00:02.360 align:start position:0%
today we make bread
 

00:00:02.360 --> 00:00:04.900 align:start position:0%
today we make bread
first<00:00:02.800><c> the</c><00:00:03.100><c> dough</c>

00:00:04.900 --> 00:00:04.910 align:start position:0%
first the dough
 

00:00:04.910 --> 00:00:07.000 align:start position:0%
first the dough
knead<00:00:05.300><c> it</c>
"""


def test_webvtt_youtube_rolling_captions_keep_each_line_once(tmp_path):
    narrations = read_narrations(_write(tmp_path / "auto.vtt", YOUTUBE_AUTO))
    assert narrations == [
        Narration(0.03, 2.35, "today we make bread"),
        Narration(2.36, 4.9, "first the dough"),
        Narration(4.91, 7.0, "knead it"),
    ]


def test_webvtt_without_inline_timestamps_keeps_repeated_lines(tmp_path):
    # A song repeating a line is not a rolling caption: both cues stay.
    text = "WEBVTT\n\n00:01.000 --> 00:02.000\nla la\n\n00:02.000 --> 00:03.000\nla la\n"
    assert [n.text for n in read_narrations(_write(tmp_path / "song.vtt", text))] == ["la la", "la la"]


def test_webvtt_crlf_bom_and_empty_cues(tmp_path):
    text = "\ufeffWEBVTT\r\n\r\n1\r\n00:00:00.500 --> 00:00:01.000\r\n\r\n2\r\n00:00:01.000 --> 00:00:02.000\r\nhi\r\n"
    assert read_narrations(_write(tmp_path / "crlf.vtt", text)) == [Narration(1.0, 2.0, "hi")]


@pytest.mark.parametrize("text, line, fragment", [
    ("WEBVTTX\n\n00:01.000 --> 00:02.000\nhi\n", 1, "WEBVTT"),
    ("hello\n\n00:01.000 --> 00:02.000\nhi\n", 1, "WEBVTT"),
    ("WEBVTT\n\n00:01.000 --> 00:02.000\nok\n\n00:0x.000 --> 00:03.000\nbad\n", 6, "invalid timestamp"),
    ("WEBVTT\n\n00:05.000 --> 00:02.000\nbackwards\n", 3, "before it starts"),
    ("WEBVTT\n\n00:01.000 --> 00:02.000\nok\n\nid\nno timing here\n", 6, "without a timing line"),
    ("WEBVTT\n\n00:01.000 -> 00:02.000\nwrong arrow\n", 3, "without a timing line"),
    ("WEBVTT\n\n00:61.000 --> 01:02.000\nbad seconds\n", 3, "over 59"),
])
def test_webvtt_malformed_names_file_and_line(tmp_path, text, line, fragment):
    path = _write(tmp_path / "bad.vtt", text)
    with pytest.raises(NarrationError) as info:
        read_narrations(path)
    assert info.value.path == os.fspath(path)
    assert info.value.reason.startswith(f"line {line}:")
    assert fragment in str(info.value) and os.fspath(path) in str(info.value)


def test_write_webvtt_round_trip(tmp_path):
    narrations = [Narration(0.0, 1.25, "salt & pepper <to taste>"), Narration(3599.9994, 3601.5, "an hour"),
                  Narration(2.0, 2.0, "  spaces\nand a newline  ")]
    path = tmp_path / "out.vtt"
    write_webvtt(narrations, path)
    assert path.read_text(encoding="utf-8").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\n")
    assert read_narrations(path) == [
        Narration(0.0, 1.25, "salt & pepper <to taste>"), Narration(2.0, 2.0, "spaces and a newline"),
        Narration(3599.999, 3601.5, "an hour")]
    assert [p.name for p in tmp_path.iterdir()] == ["out.vtt"]  # no temporary file left behind


def test_write_webvtt_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "keep.vtt"
    write_webvtt([Narration(0, 1, "old")], path)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_webvtt([Narration(0, 1, "new")], path)
    assert read_narrations(path) == [Narration(0, 1, "old")]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.vtt"]


def test_timestamps_are_the_nearest_float_to_the_written_decimal(tmp_path):
    text = "WEBVTT\n\n" + "".join(f"00:00:{ms // 1000:02d}.{ms % 1000:03d} --> 01:00:00.000\nx\n\n"
                                   for ms in range(0, 60000, 7))
    narrations = read_narrations(_write(tmp_path / "many.vtt", text))
    assert [n.start for n in narrations] == [float(f"{ms / 1000:.3f}") for ms in range(0, 60000, 7)]


def test_format_timestamp():
    assert format_timestamp(0) == "00:00:00.000"
    assert format_timestamp(61.5) == "00:01:01.500"
    assert format_timestamp(36000.0004) == "10:00:00.000"
    assert format_timestamp(59.9996) == "00:01:00.000"
    with pytest.raises(ValueError):
        format_timestamp(-1)


# ----------------------------------------------------------------------------------------------------- SRT


def test_srt_with_tags_and_multiline(tmp_path):
    text = ("1\n00:00:01,000 --> 00:00:02,500\n<i>Hello</i> {\\an8}there\nsecond line\n\n"
            "2\n00:00:03,000 --> 00:00:04,000 X1:40 X2:600 Y1:20 Y2:50\n<font color=\"red\">Red</font>\n\n\n"
            "3\n00:00:05,000 --> 00:00:06,000\n\n")
    assert read_narrations(_write(tmp_path / "a.srt", text)) == [
        Narration(1.0, 2.5, "Hello there second line"), Narration(3.0, 4.0, "Red")]


def test_srt_malformed(tmp_path):
    path = _write(tmp_path / "bad.srt", "1\n00:00:01,000 --> 00:00:02,000\nok\n\nabc\n00:00:03,000 --> 4\nbad\n")
    with pytest.raises(NarrationError, match=r"line 5: expected a cue number"):
        read_narrations(path)
    path = _write(tmp_path / "bad2.srt", "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03,000 --> 4\nbad\n")
    with pytest.raises(NarrationError, match=r"line 6: invalid timestamp '4'"):
        read_narrations(path)


# ----------------------------------------------------------------------------------------------------- encodings


def test_cp1252_file_is_read_with_a_warning(tmp_path, caplog):
    text = "1\n00:00:01,000 --> 00:00:02,000\nCrème brûlée \u2013 “fancy” dessert\n"
    path = _write(tmp_path / "cp1252.srt", text, encoding="cp1252")
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")  # the fixture really is not UTF-8
    with caplog.at_level(logging.WARNING, logger="mmv.data.narrations"):
        narrations = read_narrations(path)
    assert narrations == [Narration(1.0, 2.0, "Crème brûlée \u2013 “fancy” dessert")]
    assert any("cp1252" in record.getMessage() and "cp1252.srt" in record.getMessage() for record in caplog.records)


def test_latin1_fallback_and_utf16(tmp_path, caplog):
    # 0x81 is undefined in cp1252, so only latin-1 can read this file.
    path = tmp_path / "latin1.vtt"
    path.write_bytes(b"WEBVTT\n\n00:01.000 --> 00:02.000\ncaf\xe9 \x81\n")
    with caplog.at_level(logging.WARNING, logger="mmv.data.narrations"):
        assert read_narrations(path)[0].text == "café \x81"
    assert any("latin-1" in record.getMessage() for record in caplog.records)
    path = _write(tmp_path / "utf16.vtt", "\ufeffWEBVTT\n\n00:01.000 --> 00:02.000\nnaïve\n", encoding="utf-16-le")
    assert read_narrations(path) == [Narration(1.0, 2.0, "naïve")]


def test_binary_file_is_rejected(tmp_path):
    path = tmp_path / "binary.srt"
    path.write_bytes(b"\x00\x01\x02 not text \x00")
    with pytest.raises(NarrationError, match="binary"):
        read_narrations(path)


# ----------------------------------------------------------------------------------------------------- HowTo100M


def test_howto100m_csv(tmp_path):
    # As pandas writes them: an unnamed index column, quoted text with commas, a NaN text.
    text = (",start,end,text\n0,0.0,3.5,\"first, we cut\"\n1,3.5,7.25,then fry\n2,7.25,9.0,\n"
            "3,9.0,12.0,nan\n4,12,13.5,\"a \"\"quoted\"\" word\"\n")
    assert read_narrations(_write(tmp_path / "v.csv", text)) == [
        Narration(0.0, 3.5, "first, we cut"), Narration(3.5, 7.25, "then fry"),
        Narration(12.0, 13.5, 'a "quoted" word')]


@pytest.mark.parametrize("text, fragment", [
    ("start,stop,text\n0,1,a\n", "line 1: missing column(s) end"),
    ("start,end,text\n0,1,a\nzero,2,b\n", "line 3: start is not a number"),
    ("start,end,text\n0,1,a\n5,2,b\n", "line 3: end (2.0) before start (5.0)"),
    ("start,end,text\n0,1,a\n-1,2,b\n", "line 3: start must be a finite time"),
    ("start,end,text\n0,1\n", "line 2: 2 fields"),
])
def test_howto100m_csv_malformed(tmp_path, text, fragment):
    with pytest.raises(NarrationError) as info:
        read_narrations(_write(tmp_path / "v.csv", text))
    assert fragment in str(info.value)


def test_howto100m_json_one_and_many_videos(tmp_path):
    one = {"start": [0.0, 4.0, 2.0], "end": [2.0, 6.0, 4.0], "text": ["a", "c", "b"]}
    assert read_narrations(_write(tmp_path / "one.json", json.dumps(one))) == [
        Narration(0.0, 2.0, "a"), Narration(2.0, 4.0, "b"), Narration(4.0, 6.0, "c")]
    many = {"vid1": one, "vid2": {"start": [1], "end": [2], "text": [None]}, "vid3": {"start": [], "end": [],
                                                                                       "text": []}}
    path = _write(tmp_path / "raw_caption.json", json.dumps(many))
    captions = read_howto100m_captions(path)
    assert list(captions) == ["vid1", "vid2", "vid3"]
    assert [n.text for n in captions["vid1"]] == ["a", "b", "c"]
    assert captions["vid2"] == [] and captions["vid3"] == []
    with pytest.raises(NarrationError, match="read_howto100m_captions"):
        read_narrations(path)
    assert read_howto100m_captions(tmp_path / "one.json") == {"one": read_narrations(tmp_path / "one.json")}
    listed = [{"start": 1, "end": 2, "text": "x"}]
    assert read_narrations(_write(tmp_path / "list.json", json.dumps(listed))) == [Narration(1.0, 2.0, "x")]


@pytest.mark.parametrize("data, fragment", [
    ('{"start": [0, 1], "end": [1], "text": ["a", "b"]}', "different lengths"),
    ('{"start": [0], "end": [1], "text": [3]}', "entry 0: text is not a string"),
    ('{"v": {"start": [0], "end": [1]}}', "expected {'start'"),
    ('{"start": [0],\n "end": [1], "text": ["a"]', "line 2: invalid JSON"),
])
def test_howto100m_json_malformed(tmp_path, data, fragment):
    with pytest.raises(NarrationError) as info:
        read_narrations(_write(tmp_path / "bad.json", data))
    assert fragment in str(info.value)


def test_many_videos_malformed_entry_names_the_video(tmp_path):
    path = _write(tmp_path / "raw.json", json.dumps({"ok": {"start": [0], "end": [1], "text": ["a"]}, "bad": [1]}))
    with pytest.raises(NarrationError, match="video 'bad'"):
        read_howto100m_captions(path)


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(NarrationError, match="unknown caption format"):
        read_narrations(_write(tmp_path / "a.ass", "[Script Info]"))
    with pytest.raises(FileNotFoundError):
        read_narrations(tmp_path / "missing.vtt")


# ----------------------------------------------------------------------------------------------------- selection


def _brute_force(narrations, clip_start, clip_end, k, max_distance):
    """Reference: among all subsets of min(k, eligible) narrations, the one whose sorted (distance, start) keys are
    smallest; the gap between two intervals written as max(0, latest start - earliest end)."""
    def distance(n):
        return max(0.0, max(n.start, clip_start) - min(n.end, clip_end))

    def keys(subset):
        return sorted((distance(n), n.start) for n in subset)

    eligible = [n for n in narrations if max_distance is None or distance(n) <= max_distance]
    best = min(itertools.combinations(eligible, min(k, len(eligible))), key=keys)
    return sorted(best, key=lambda n: (distance(n), n.start))


def test_select_narrations_matches_brute_force():
    rng = random.Random(0)
    for trial in range(200):
        narrations = []
        for i in range(rng.randint(0, 8)):
            start = rng.choice([rng.uniform(0, 30), float(rng.randint(0, 30))])  # integers make ties common
            narrations.append(Narration(start, start + rng.choice([0.0, 1.0, rng.uniform(0, 5)]), f"n{i}"))
        clip_start = float(rng.randint(0, 25))
        clip_end = clip_start + rng.choice([0.0, 3.2, 1.6])
        k = rng.randint(0, 6)
        max_distance = rng.choice([None, 0.0, 2.0, 5.0])
        got = select_narrations(narrations, clip_start, clip_end, k=k, max_distance=max_distance)
        expected = _brute_force(narrations, clip_start, clip_end, k, max_distance)
        def keys(selected):
            return [(max(0.0, max(n.start, clip_start) - min(n.end, clip_end)), n.start) for n in selected]

        # Narrations equal in (distance, start) are interchangeable for the contract; beyond it the order is by end.
        assert keys(got) == keys(expected), (trial, narrations, clip_start, clip_end, k, max_distance)
        ranked = [(key, n.end) for key, n in zip(keys(got), got)]
        assert ranked == sorted(ranked)
        assert len(got) == len(set(map(id, got)))


def test_select_narrations_examples_and_order_independence():
    narrations = [Narration(0, 2, "a"), Narration(3, 5, "b"), Narration(10, 12, "c"), Narration(20, 22, "d"),
                  Narration(6, 6.5, "e"), Narration(30, 31, "f")]
    # Clip [4, 7]: b and e overlap (distance 0, b starts first), then a (2), c (3), d (13).
    assert [n.text for n in select_narrations(narrations, 4, 7, k=4)] == ["b", "e", "a", "c"]
    assert [n.text for n in select_narrations(narrations, 4, 7, k=10, max_distance=2.0)] == ["b", "e", "a"]
    assert [n.text for n in select_narrations(narrations, 4, 7)] == ["b", "e", "a", "c", "d"]  # default k = 5
    assert select_narrations(narrations[::-1], 4, 7) == select_narrations(narrations, 4, 7)
    assert select_narrations([], 0, 1) == []
    with pytest.raises(ValueError):
        select_narrations(narrations, 5, 4)
