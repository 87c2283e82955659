"""The skip report: per-file lines at DEBUG, one summary line per reason at the end of a run."""
from __future__ import annotations

import logging
import shutil

import numpy as np

from mmv.data.skips import SampleNote, SkippedSample, SkipReport
from mmv.demo.corpus import encode_mp4


def test_files_are_logged_at_debug_and_summarised_once_per_reason(caplog):
    report = SkipReport()
    with caplog.at_level(logging.DEBUG, logger="mmv.data.skips"):
        for i in range(30):
            report.add(SkippedSample(f"v{i:02d}.mp4", "no_audio", "the file has no audio track"))
        report.add("truncated", "cut.mp4")
        report.note(SampleNote("talk.vtt", "bad_caption", "line 3: invalid timestamp 'x'"))
        report.ignore("notes.txt")
        report.ignore(".DS_Store")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] * 34  # every file, once, at DEBUG
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="mmv.data.skips"):
        report.log_summary(context="demo")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "demo: 30 skipped [no_audio]: v00.mp4, v01.mp4, v02.mp4 and 27 more"),
        (logging.WARNING, "demo: 1 skipped [truncated]: cut.mp4"),
        (logging.WARNING, "demo: 1 used despite a problem [bad_caption]: talk.vtt (line 3: invalid timestamp 'x')"),
        (logging.INFO, "demo: 2 files ignored as not media ((hidden): 1, .txt: 1): .DS_Store, notes.txt"),
    ]
    data = report.as_dict()
    assert data["total"] == 31 and len(data["files"]["no_audio"]) == 30  # the full list is in the JSON report
    assert data["kept_with_problems"] == {"total": 1, "by_reason": {"bad_caption": 1}, "files": {
        "bad_caption": [{"path": "talk.vtt", "detail": "line 3: invalid timestamp 'x'"}]}}
    assert data["ignored"] == {"total": 2, "by_extension": {"(hidden)": 1, ".txt": 1},
                               "files": {"(hidden)": [".DS_Store"], ".txt": ["notes.txt"]}}
    merged = SkipReport()
    merged.merge(report)
    merged.merge(report)
    assert merged.counts["no_audio"] == 60 and merged.note_counts["bad_caption"] == 2 and len(merged.ignored) == 2
    assert SkipReport().empty and not report.empty


def test_thirty_videos_without_sound_give_one_warning_line(tmp_path, caplog):
    # The demo corpus has videos without a soundtrack by design; embedding their audio skips each one.
    import mmv
    from mmv.data.audio import MelConfig
    from mmv.eval.features import embed_audio
    from mmv.preprocess import AudioPreprocess

    frames = np.zeros((10, 16, 16, 3), np.uint8)
    encode_mp4(tmp_path / "silent_00.mp4", frames, None, 10, 16000)
    for i in range(1, 30):
        shutil.copyfile(tmp_path / "silent_00.mp4", tmp_path / f"silent_{i:02d}.mp4")
    model = mmv.create_model("mmv_tiny_s3dg")
    spec = AudioPreprocess(0.5, MelConfig(sample_rate=16000, n_fft=512, hop_length=160, n_mels=32))
    with caplog.at_level(logging.INFO):
        result = embed_audio(model, sorted(tmp_path.glob("*.mp4")), space="va", spec=spec, progress=False,
                             desc="demo audio")
    assert result.skipped.counts == {"no_audio": 30} and len(result.skipped.files) == 30
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"demo audio: 30 skipped [no_audio]: {tmp_path / 'silent_00.mp4'}, "
                        f"{tmp_path / 'silent_01.mp4'}, {tmp_path / 'silent_02.mp4'} and 27 more"]
