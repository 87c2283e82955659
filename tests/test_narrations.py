"""Narration readers (WebVTT, SRT, HowTo100M CSV/JSON), the WebVTT writer and the MIL-NCE positive selection."""
from __future__ import annotations

import itertools
import json
import logging
import os
import random
import re

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


def test_webvtt_repeat_after_an_empty_cue_is_kept(tmp_path):
    # Rolling captions where the speaker says "yes chef" twice with a pause between: the screen clears (an empty
    # cue) and the line comes again. Only repeats of the previous cue are dropped (the documented rule).
    text = """WEBVTT
Kind: captions

00:00:00.030 --> 00:00:02.000 align:start position:0%
 
yes<00:00:00.500><c> chef</c>

00:00:02.000 --> 00:00:02.010 align:start position:0%
yes chef
 

00:00:02.010 --> 00:00:04.000 align:start position:0%
 
 

00:00:04.000 --> 00:00:06.000 align:start position:0%
 
yes<00:00:04.500><c> chef</c>

00:00:06.000 --> 00:00:06.010 align:start position:0%
yes chef
 

00:00:06.010 --> 00:00:08.000 align:start position:0%
yes chef
right<00:00:06.500><c> away</c>
"""
    assert read_narrations(_write(tmp_path / "pause.vtt", text)) == [
        Narration(0.03, 2.0, "yes chef"), Narration(4.0, 6.0, "yes chef"), Narration(6.01, 8.0, "right away")]


# Files FFmpeg's readers accept; each is read with a warning naming the line of what had to be guessed.
TOLERATED = [
    ("blank_after_timing.srt",  # film subtitles and converted captions: an empty line between timing and text
     "1\r\n00:00:01,000 --> 00:00:02,500\r\n\r\nHello there\r\n\r\n2\r\n00:00:03,000 --> 00:00:04,000\r\n\r\n"
     "<i>General</i> Kenobi\r\nsecond line\r\n\r\n3\r\n00:00:05,000 --> 00:00:06,000\r\nplain\r\n",
     [Narration(1.0, 2.5, "Hello there"), Narration(3.0, 4.0, "General Kenobi second line"),
      Narration(5.0, 6.0, "plain")],
     ["line 3: an empty line between the timing line (line 2) and the text; the text after it is read as the "
      "cue's (2 times in this file)"]),
    ("blank_inside_cue.srt",
     "1\n00:00:01,000 --> 00:00:02,000\nfirst part\n\nsecond part\n\n2\n00:00:03,000 --> 00:00:04,000\nnext\n",
     [Narration(1.0, 2.0, "first part second part"), Narration(3.0, 4.0, "next")],
     ["line 4: an empty line inside a cue"]),
    ("no_numbers.srt", "00:00:01,000 --> 00:00:02,000\nno counter\n\n00:00:03,000 --> 00:00:04,000\nsecond\n",
     [Narration(1.0, 2.0, "no counter"), Narration(3.0, 4.0, "second")], []),
    ("identifier.srt", "1\n00:00:01,000 --> 00:00:02,000\nok\n\nabc\n00:00:03,000 --> 00:00:04,000\nthen\n",
     [Narration(1.0, 2.0, "ok"), Narration(3.0, 4.0, "then")],
     ["line 5: 'abc' where a cue number was expected; left out"]),
    ("bad_timing.srt", "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03,000 --> 4\nbad\n\n3\n"
                       "00:00:05,000 --> 00:00:06,000\nthird\n",
     [Narration(1.0, 2.0, "ok"), Narration(5.0, 6.0, "third")],
     ["line 6: invalid timestamp '4' (expected [hh:]mm:ss.ttt); the cue is left out"]),
    ("backwards.srt", "1\n00:00:05,000 --> 00:00:02,000\nbackwards\n", [Narration(5.0, 5.0, "backwards")],
     ["line 2: the cue ends (00:00:02,000) before it starts (00:00:05,000); its end is taken as its start"]),
    ("over59.srt", "1\n00:00:61,000 --> 00:01:02,5\nover\n", [Narration(61.0, 62.5, "over")],
     ["line 2: minutes or seconds over 59 in '00:00:61,000'; read arithmetically (as FFmpeg does)"]),
    ("bad_header.vtt", "WEBVTTX\n\n00:01.000 --> 00:02.000\nhi\n", [Narration(1.0, 2.0, "hi")],
     ["line 1: 'WEBVTTX' is not a WebVTT header ('WEBVTT'); read as WebVTT anyway"]),
    ("no_header.vtt", "hello\n\n00:01.000 --> 00:02.000\nhi\n", [Narration(1.0, 2.0, "hi")],
     ["line 1: a block without a timing line ('start --> end'); left out",
      "line 1: 'hello' is not a WebVTT header ('WEBVTT'); read as WebVTT anyway"]),
    ("bad_timestamp.vtt", "WEBVTT\n\n00:01.000 --> 00:02.000\nok\n\n00:0x.000 --> 00:03.000\nbad\n\n"
                          "00:04.000 --> 00:05.000\nafter\n",
     [Narration(1.0, 2.0, "ok"), Narration(4.0, 5.0, "after")],
     ["line 6: invalid timestamp '00:0x.000' (expected [hh:]mm:ss.ttt); the cue is left out"]),
    ("no_timing.vtt", "WEBVTT\n\n00:01.000 --> 00:02.000\nok\n\nid\nno timing here\n\n00:04.000 --> 00:05.000\n"
                      "after\n",
     [Narration(1.0, 2.0, "ok"), Narration(4.0, 5.0, "after")],
     ["line 6: a block without a timing line ('start --> end'); left out"]),
    ("arrow.vtt", "WEBVTT\n\n00:01.000 -> 00:02.000\nshort arrow\n", [Narration(1.0, 2.0, "short arrow")],
     ["line 3: '->' in the timing line read as '-->'"]),
    ("blank_after_timing.vtt", "WEBVTT\n\n00:01.000 --> 00:02.000\n\nhi\n", [Narration(1.0, 2.0, "hi")],
     ["line 4: an empty line between the timing line and the text; the text after it is read as the cue's"]),
]


@pytest.mark.parametrize("name, text, expected, guessed", TOLERATED, ids=[case[0] for case in TOLERATED])
def test_quirky_captions_are_read_with_a_warning_naming_the_line(tmp_path, caplog, name, text, expected, guessed):
    path = _write(tmp_path / name, text)
    with caplog.at_level(logging.WARNING, logger="mmv.data.narrations"):
        assert read_narrations(path) == expected
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == len(guessed) and all(got.startswith(f"{path}: {message}")
                                               for got, message in zip(logged, guessed)), logged
    guesses: list[str] = []
    caplog.clear()
    assert read_narrations(path, guesses=guesses) == expected  # a dataset collects them instead of logging
    assert not caplog.records and len(guesses) == len(guessed)
    assert all(got.startswith(message) for got, message in zip(guesses, guessed))


def _ffmpeg_cues(path):
    """(start, end) and text of every cue FFmpeg's own reader gives (format forced, as our extension choice is)."""
    import av

    with av.open(str(path), format="srt" if path.suffix == ".srt" else "webvtt") as container:
        stream = container.streams[0]
        return [(packet.pts / 1000, bytes(packet).decode()) for packet in container.demux(stream) if packet.size]


@pytest.mark.parametrize("name, text", [(case[0], case[1]) for case in TOLERATED], ids=[c[0] for c in TOLERATED])
def test_at_least_as_tolerant_as_ffmpeg(tmp_path, name, text):
    path = _write(tmp_path / name, text)
    ours = {n.start: n.text for n in read_narrations(path, guesses=[])}
    for start, ffmpeg_text in _ffmpeg_cues(path):
        assert start in ours, (name, start, ffmpeg_text)  # every cue FFmpeg reads, we read (at the same time)
        words = " ".join(re.sub(r"<[^>]*>", "", ffmpeg_text).split())
        # Where we guessed differently (a line FFmpeg glues to the cue before), its text holds ours.
        assert ours[start] in words, (name, ours[start], words)


@pytest.mark.parametrize("text, fragment", [
    ("hello world\n", "line 1: a WebVTT file must start with 'WEBVTT'"),
    ("WEBVTT\n\n00:0x.000 --> 00:03.000\nbad\n", "no readable cue (line 3: invalid timestamp '00:0x.000'"),
    ("WEBVTT\n\nid\nno timing here\n", "no readable cue (line 3: a block without a timing line"),
])
def test_webvtt_without_any_readable_cue_names_file_and_line(tmp_path, text, fragment):
    path = _write(tmp_path / "bad.vtt", text)
    with pytest.raises(NarrationError) as info:
        read_narrations(path)
    assert info.value.path == os.fspath(path)
    assert fragment in str(info.value) and os.fspath(path) in str(info.value)
    assert read_narrations(_write(tmp_path / "empty.vtt", "")) == []
    assert read_narrations(_write(tmp_path / "header_only.vtt", "WEBVTT\n\nNOTE nothing yet\n")) == []


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


def test_srt_without_any_readable_cue(tmp_path):
    path = _write(tmp_path / "page.srt", "<html><body>404 Not Found</body></html>\n")
    with pytest.raises(NarrationError, match=r"no cue found: no 'start --> end' timing line"):
        read_narrations(path)
    path = _write(tmp_path / "bad.srt", "1\n00:00:01,000 --> soon\nbad\n")
    with pytest.raises(NarrationError, match=r"no readable cue \(line 2: invalid timestamp 'soon'"):
        read_narrations(path)
    assert read_narrations(_write(tmp_path / "blank.srt", "\n\n")) == []


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


def _howto100m_reference(text: str) -> dict:
    """What the former whole-file reader gave: json.loads, then each video's narrations sorted by start."""
    return {video: sorted([Narration(float(a), float(b), " ".join(t.split())) for a, b, t in
                           zip(entry["start"], entry["end"], entry["text"]) if t and t.strip()],
                          key=lambda n: n.start)
            for video, entry in json.loads(text).items()}


def test_howto100m_captions_are_indexed_once_and_read_one_video_at_a_time(tmp_path, monkeypatch):
    from mmv.data import narrations
    from mmv.data.narrations import HowTo100MCaptions

    entries = [f'"vid{i:03d}": ' + json.dumps({"start": [i + 0.5, float(i)], "end": [i + 1.0, i + 0.5],
                                                "text": [f"caf\u00e9 {{{i}}} \"q\" \\ ,]", f"first {i}"]},
                                               ensure_ascii=i % 2 == 0) for i in range(40)]
    entries.insert(7, '"\u00fcn\u00efcode": {"start": [1], "end": [2], "text": ["\u00fc"]}')
    entries.append('"vid003": {"start": [9], "end": [10], "text": ["the last vid003 wins"]}')  # as json.load does
    text = "\ufeff{\n  " + ",\n  ".join(entries) + "\n}\n"
    path = _write(tmp_path / "raw_caption.json", text)
    reference = _howto100m_reference(text.lstrip("\ufeff"))
    # A 64-byte window: every entry crosses window ends, so the scan's refills are exercised.
    captions = HowTo100MCaptions(path, window_bytes=64)
    assert len(captions) == 41 and sorted(captions) == sorted(reference)
    assert {video: captions[video] for video in captions} == reference
    assert captions["vid003"] == [Narration(9.0, 10.0, "the last vid003 wins")]
    assert captions["ünïcode"] == [Narration(1.0, 2.0, "ü")] and "vid999" not in captions
    with pytest.raises(KeyError):
        captions["vid999"]
    assert (tmp_path / "raw_caption.json.index.npz").is_file()

    def no_scan(*args, **kwargs):
        raise AssertionError("the index should have been reused")

    monkeypatch.setattr(narrations, "_index_entries", no_scan)
    reopened = read_howto100m_captions(path)
    assert reopened["vid012"] == reference["vid012"]
    import pickle

    in_worker = pickle.loads(pickle.dumps(reopened))  # what a DataLoader worker gets
    assert in_worker["vid039"] == reference["vid039"] and list(in_worker)[:2] == ["vid000", "vid001"]
    monkeypatch.undo()
    path.write_text('{"new": {"start": [0], "end": [1], "text": ["changed file"]}}')  # another size: rebuilt
    assert dict(read_howto100m_captions(path)) == {"new": [Narration(0.0, 1.0, "changed file")]}


def test_howto100m_index_that_cannot_be_saved_stays_in_memory(tmp_path):
    path = _write(tmp_path / "raw.json", json.dumps({"a": {"start": [0], "end": [1], "text": ["x"]}}))
    (tmp_path / "not_a_folder").write_text("")
    captions = read_howto100m_captions(path, index_path=tmp_path / "not_a_folder" / "index.npz")
    assert captions["a"] == [Narration(0.0, 1.0, "x")]
    assert dict(read_howto100m_captions(_write(tmp_path / "none.json", " {} "))) == {}


@pytest.mark.parametrize("text, fragment", [
    # The '}' after '1,' is byte 67 (0-based): where a value was expected.
    ('{"a": {"start": [1], "end": [2], "text": ["x"]}, "b": {"start": [1,}, "c": {}}', "byte 67: invalid JSON"),
    ('{"a": {"start": [1], "end": [2], "text": ["x"]}', "is not closed"),
    ('[1, 2]', "expected a JSON object of videos"),
])
def test_howto100m_malformed_file_names_the_byte(tmp_path, text, fragment):
    with pytest.raises(NarrationError, match=re.escape(fragment)):
        read_howto100m_captions(_write(tmp_path / "raw.json", text))


def test_howto100m_malformed_values_are_reported_when_the_video_is_read(tmp_path):
    text = json.dumps({"ok": {"start": [0], "end": [1], "text": ["x"]}, "bad": {"start": [0, 1], "end": [1],
                                                                               "text": ["a", "b"]}})
    captions = read_howto100m_captions(_write(tmp_path / "raw.json", text))
    assert captions["ok"] == [Narration(0.0, 1.0, "x")]
    with pytest.raises(NarrationError, match="video 'bad': 'start', 'end' and 'text' have different lengths"):
        captions["bad"]


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
