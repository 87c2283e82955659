"""WebDataset shards: writing (mmv prepare), streaming, splitting across ranks and workers, bad data."""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmv.cli.main import main
from mmv.data.audio import MelConfig
from mmv.data.datasets import ClipDataset, VideoItem, collate_clips, scan_folder
from mmv.data.skips import SkipReport
from mmv.demo.corpus import encode_mp4
from mmv.data.narrations import Narration, write_webvtt
from mmv.data.shards import ShardDataset, expand_urls, write_shards

FPS = 10
RATE = 16000
MEL = MelConfig(sample_rate=RATE, n_fft=512, hop_length=160, n_mels=32, fmin=50.0, fmax=7800.0)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 distinct 2 s videos (brightness = 10 * number) with narrations, plus 2 unusable files."""
    root = tmp_path_factory.mktemp("source")
    t = np.arange(2 * RATE) / RATE
    for number in range(12):
        frames = np.full((20, 16, 16, 3), 10 * number + 20, np.uint8)
        audio = (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32) if number % 4 else None
        encode_mp4(root / f"video_{number:02d}.mp4", frames, audio, FPS, RATE)
        if number % 3:
            write_webvtt([Narration(0.0, 1.0, f"step {number} begins"), Narration(1.0, 2.0, "and it ends")],
                         root / f"video_{number:02d}.vtt")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 50)
    (root / "empty.mp4").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def shards(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(scan_folder(source), out, shard_size=3, root=source, progress=False)
    return out


def paths_of(dataset: ShardDataset, num_workers: int = 0) -> tuple[list[str], SkipReport]:
    loader = DataLoader(dataset, batch_size=2, num_workers=num_workers, collate_fn=collate_clips, timeout=120 if
                        num_workers else 0)
    report = SkipReport()
    return [p for batch in report.track(loader) for p in batch["path"]], report


def test_shards_hold_the_original_bytes_and_narrations(source: Path, shards: Path) -> None:
    index = json.loads((shards / "shards.json").read_text())
    assert index["num_samples"] == 12
    assert [s["num_samples"] for s in index["shards"]] == [3, 3, 3, 3]
    assert index["skipped"]["by_reason"] == {"truncated": 1, "empty": 1}
    assert not list(shards.glob("*.tmp"))
    members = {}
    for shard in sorted(shards.glob("*.tar")):
        with tarfile.open(shard) as tar:  # read back with the standard library, not webdataset
            for member in tar.getmembers():
                members[member.name] = tar.extractfile(member).read()
    metas = {k: json.loads(v) for k, v in members.items() if k.endswith(".json")}
    assert len(metas) == 12
    for name, meta in metas.items():
        video = members[name[:-5] + ".mp4"]
        assert video == (source / meta["path"]).read_bytes()
        assert meta["duration"] == pytest.approx(2.0, abs=0.1)
        number = int(meta["path"][6:8])
        if number % 3:
            assert [n["text"] for n in meta["narrations"]] == [f"step {number} begins", "and it ends"]
        else:
            assert meta["narrations"] is None


def test_writing_is_deterministic(source: Path, shards: Path, tmp_path: Path) -> None:
    write_shards(scan_folder(source), tmp_path, shard_size=3, root=source, progress=False)
    for shard in sorted(shards.glob("*.tar")):
        assert (tmp_path / shard.name).read_bytes() == shard.read_bytes()


def test_streamed_clips_equal_clips_decoded_from_the_files(source: Path, shards: Path) -> None:
    options = dict(num_frames=4, fps=5, mel_config=MEL, train=False, num_windows=2)
    from_shards = {(s["path"], round(s["start"], 6)): s for s in ShardDataset(shards, **options)}
    items = [VideoItem(str(source / f"video_{n:02d}.mp4")) for n in range(12)]
    from_files = ClipDataset(items, **options)
    assert len(from_shards) == len(from_files) == 24
    for i in range(len(from_files)):
        expected = from_files[i]
        got = from_shards[(Path(expected["path"]).name, round(expected["start"], 6))]
        assert torch.equal(got["video"], expected["video"])
        assert torch.equal(got["audio"], expected["audio"]) and bool(got["audio_mask"]) == bool(expected["audio_mask"])


def test_every_sample_once_across_ranks_and_workers(shards: Path) -> None:
    everything = []
    for rank in range(2):
        dataset = ShardDataset(shards, num_frames=2, fps=5, mel_config=MEL, with_audio=False, seed=4, rank=rank,
                               world_size=2)
        dataset.set_epoch(1)
        paths, report = paths_of(dataset, num_workers=2)
        assert report.total == 0
        everything += paths
    assert sorted(everything) == [f"video_{n:02d}.mp4" for n in range(12)]


def test_shuffling_is_deterministic_per_seed_and_epoch(shards: Path) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        dataset = ShardDataset(shards, num_frames=2, fps=5, mel_config=MEL, with_audio=False, seed=seed,
                               shuffle_buffer=4)
        dataset.set_epoch(epoch)
        return paths_of(dataset)[0]

    first = order(0, 0)
    assert order(0, 0) == first
    assert order(0, 1) != first and sorted(order(0, 1)) == sorted(first)
    assert sorted(first) == [f"video_{n:02d}.mp4" for n in range(12)]


def test_narrations_come_through(shards: Path) -> None:
    from mmv.data.tokenizer import Tokenizer, build_vocabulary

    tokenizer = Tokenizer(build_vocabulary(["step begins and it ends"] + [str(n) for n in range(12)]), max_words=16)
    samples = {s["path"]: s for s in ShardDataset(shards, num_frames=2, fps=5, mel_config=MEL, tokenizer=tokenizer,
                                                  train=False)}
    assert samples["video_01.mp4"]["text_mask"].tolist() == [True, True, False, False, False]
    assert not samples["video_03.mp4"]["text_mask"].any()
    assert samples["video_01.mp4"]["word_ids"][0].tolist()[:3] == tokenizer.encode("step 1 begins").tolist()[:3]
    assert not bool(samples["video_04.mp4"]["audio_mask"]) and bool(samples["video_01.mp4"]["audio_mask"])


def test_pipe_urls_and_brace_patterns(shards: Path) -> None:
    pattern = str(shards / "shard-{000000..000003}.tar")
    assert expand_urls(pattern) == expand_urls(shards) == expand_urls(shards / "shards.json")
    piped = [f"pipe:cat {url}" for url in expand_urls(shards)]
    paths, report = paths_of(ShardDataset(piped, num_frames=2, fps=5, mel_config=MEL, with_audio=False))
    assert sorted(paths) == [f"video_{n:02d}.mp4" for n in range(12)] and report.total == 0


def test_damaged_shards_and_samples_are_skipped_and_reported(shards: Path, tmp_path: Path) -> None:
    for shard in sorted(shards.glob("*.tar")):
        shutil.copyfile(shard, tmp_path / shard.name)
    # Cut the last shard in the middle of its second video, and corrupt a video inside another shard.
    last = tmp_path / "shard-000003.tar"
    data = last.read_bytes()
    with tarfile.open(last) as tar:
        second_video = [m for m in tar.getmembers() if m.name.endswith(".mp4")][1]
    last.write_bytes(data[: second_video.offset_data + 100])
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        first_video = [m for m in tar.getmembers() if m.name.endswith(".mp4")][0]
    damaged = bytearray((tmp_path / "shard-000000.tar").read_bytes())
    damaged[first_video.offset_data: first_video.offset_data + first_video.size] = b"\x00" * first_video.size
    (tmp_path / "shard-000000.tar").write_bytes(bytes(damaged))
    dataset = ShardDataset(sorted(str(p) for p in tmp_path.glob("*.tar")), num_frames=2, fps=5, mel_config=MEL,
                           with_audio=False)
    paths, report = paths_of(dataset, num_workers=2)
    assert len(paths) == 12 - 1 - 2  # the zeroed video, and the cut shard's last two
    reasons = report.as_dict()["by_reason"]
    assert reasons.get("bad_shard", 0) >= 1 and reasons.get("not_media", 0) + reasons.get("truncated", 0) == 1


def test_prepare_cli(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("".join(json.dumps({"video": str(source / f"video_{n:02d}.mp4"), "label": n}) + "\n"
                                for n in range(5)))
    assert main(["prepare", str(manifest), "--out", str(tmp_path / "out"), "--shard-size", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_samples"] == 5 and summary["num_shards"] == 3
    labels = sorted(s["label"] for s in ShardDataset(tmp_path / "out", num_frames=1, fps=5, mel_config=MEL,
                                                      train=False, with_audio=False))
    assert labels == [0, 1, 2, 3, 4]
    assert main(["prepare", str(tmp_path / "absent"), "--out", str(tmp_path / "x")]) == 1


def test_prepare_with_howto100m_caption_json(source: Path, tmp_path: Path) -> None:
    captions = {"video_00": {"start": [0.2, 1.1], "end": [1.0, 1.9], "text": ["mix the flour", "add water"]},
                "video_01": {"start": [0.0], "end": [1.0], "text": ["replaces the vtt"]}}
    (tmp_path / "raw_caption.json").write_text(json.dumps(captions))
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("".join(json.dumps({"video": str(source / f"video_{n:02d}.mp4"),
                                            "caption": str(source / f"video_{n:02d}.vtt") if n % 3 else None}) + "\n"
                                for n in range(3)))
    assert main(["prepare", str(manifest), "--out", str(tmp_path / "out"), "--captions",
                 str(tmp_path / "raw_caption.json")]) == 0
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as tar:
        metas = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    texts = {Path(m["path"]).stem: [n["text"] for n in m["narrations"]] for m in metas}
    assert texts == {"video_00": ["mix the flour", "add water"], "video_01": ["replaces the vtt"],
                     "video_02": ["step 2 begins", "and it ends"]}


def test_prepare_accounts_for_every_file_of_a_messy_folder(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           synthetic_media) -> None:
    import wave

    src = tmp_path / "src"
    src.mkdir()
    t = np.arange(2 * RATE) / RATE
    for number, name in enumerate(("good_a", "good_b", "good_c", "good_d")):
        audio = (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
        encode_mp4(src / f"{name}.mp4", np.full((20, 16, 16, 3), 40 * number + 20, np.uint8), audio, FPS, RATE)
    write_webvtt([Narration(0.0, 1.0, "mix the flour")], src / "good_a.en.vtt")  # as yt-dlp names them
    write_webvtt([Narration(0.0, 1.0, "mehl mischen")], src / "good_a.de.vtt")
    (src / "good_c.vtt").write_text("WEBVTT\n\n00:00:01.000 --> banana\nhello\n")  # broken beside a good video
    (src / "good_d.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\n\npaint it blue\n")  # read by guessing
    data = (src / "good_a.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (src / "notes.mp4").write_bytes(b"these are my notes, not a video\n" * 20)
    (src / "empty.mp4").write_bytes(b"")
    synthetic_media.write_audio_only(src / "speech.mp4", duration=1.0)
    with wave.open(str(src / "song.wav"), "wb") as handle:  # stray audio files
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(RATE)
        handle.writeframes(b"\x00\x00" * RATE)
    (src / "voice.m4a").write_bytes((src / "speech.mp4").read_bytes())
    (src / "README.txt").write_text("downloaded with yt-dlp\n")
    (src / ".DS_Store").write_bytes(b"\x00\x01")

    out = tmp_path / "out"
    assert main(["prepare", str(src), "--out", str(out), "--shard-size", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    index = json.loads((out / "shards.json").read_text())
    metas = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            metas.update((m["path"], m) for m in (json.loads(tar.extractfile(member).read())
                                                  for member in tar.getmembers() if member.name.endswith(".json")))
    # Every good video is packed, the one with the broken caption too (without narrations).
    assert index["num_samples"] == 4 and sorted(metas) == ["good_a.mp4", "good_b.mp4", "good_c.mp4", "good_d.mp4"]
    assert {path: meta["caption"] for path, meta in metas.items()} == {
        "good_a.mp4": "good_a.en.vtt", "good_b.mp4": None, "good_c.mp4": "good_c.vtt", "good_d.mp4": "good_d.srt"}
    assert {path: meta["narrations"] and [n["text"] for n in meta["narrations"]] for path, meta in metas.items()} == {
        "good_a.mp4": ["mix the flour"], "good_b.mp4": None, "good_c.mp4": None, "good_d.mp4": ["paint it blue"]}
    # Every other file is named in shards.json with its reason.
    report = index["skipped"]
    assert report["files"] == {"empty": [str(src / "empty.mp4")], "no_video": [str(src / "speech.mp4")],
                               "not_media": [str(src / "notes.mp4")], "truncated": [str(src / "truncated.mp4")]}
    noted = {reason: [entry["path"] for entry in entries]
             for reason, entries in report["kept_with_problems"]["files"].items()}
    assert noted == {"bad_caption": [str(src / "good_c.vtt")], "repaired_caption": [str(src / "good_d.srt")]}
    assert "line 3: invalid timestamp 'banana'" in report["kept_with_problems"]["files"]["bad_caption"][0]["detail"]
    assert report["ignored"]["files"] == {"(hidden)": [str(src / ".DS_Store")], ".m4a": [str(src / "voice.m4a")],
                                          ".txt": [str(src / "README.txt")], ".vtt": [str(src / "good_a.de.vtt")],
                                          ".wav": [str(src / "song.wav")]}
    assert index["without_captions"] == ["good_b.mp4"]
    named = [str(src / path) for path in metas] + [str(src / m["caption"]) for m in metas.values() if m["caption"]]
    named += [path for files in report["files"].values() for path in files]
    named += [path for files in report["ignored"]["files"].values() for path in files]
    assert sorted(named) == sorted(str(p) for p in src.iterdir())  # each file once, none forgotten
    # The summary: one line per reason, then the videos without captions.
    assert printed[0].startswith("4 videos in 2 shard(s)")
    assert "1 skipped [truncated]: " + str(src / "truncated.mp4") in printed
    assert any(line.startswith("1 used despite a problem [bad_caption]: " + str(src / "good_c.vtt")) for line in printed)
    assert any(line.startswith("5 files ignored as not media ((hidden): 1, .m4a: 1, .txt: 1, .vtt: 1, .wav: 1)")
               for line in printed)
    assert "1 of 4 packed videos have no captions in language 'en'" in printed
    summary = json.loads(printed[-1])
    assert summary["skipped"] == {"empty": 1, "no_video": 1, "not_media": 1, "truncated": 1}
    assert summary["kept_with_problems"] == {"bad_caption": 1, "repaired_caption": 1}
    assert summary["ignored"] == {"(hidden)": 1, ".m4a": 1, ".txt": 1, ".vtt": 1, ".wav": 1}
    assert summary["without_captions"] == 1
