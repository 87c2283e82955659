"""Datasets: folders and manifests, the sample dict, determinism, bad files, resuming, memory, mixing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from mmv.data.audio import MelConfig
from mmv.data.skips import SkippedSample, SkipReport
from mmv.data.datasets import (ClipDataset, MixedDataset, VideoItem, batch_size,
                               collate_clips, read_items, read_manifest, scan_folder)
from mmv.demo.corpus import encode_mp4
from mmv.data.media import evenly_spaced_starts, probe
from mmv.data.narrations import Narration, select_narrations, write_webvtt
from mmv.data.sampling import ResumableSampler
from mmv.data.tokenizer import Tokenizer, build_vocabulary

FPS = 10
RATE = 16000
MEL = MelConfig(sample_rate=RATE, n_fft=512, hop_length=160, n_mels=32, fmin=50.0, fmax=7800.0)
TONE_HZ = 1000.0


def gray_ramp_video(num_frames: int = 30, size: int = 32) -> np.ndarray:
    """Frame i is uniformly gray with level 8 * i: a clip's pixels say which frames it took."""
    levels = (8 * np.arange(num_frames)).clip(0, 255).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, size, size, 3)).copy()


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one video+audio file with narrations and one silent video without, both 3 s."""
    root = tmp_path_factory.mktemp("media")
    encode_mp4(root / "talk.mp4", gray_ramp_video(), tone(3.0), FPS, RATE)
    write_webvtt([Narration(0.0, 0.8, "first we cut the wood"), Narration(0.9, 1.6, "then glue the pieces"),
                  Narration(1.7, 2.4, "sand the edges"), Narration(2.5, 3.0, "paint it blue")], root / "talk.vtt")
    encode_mp4(root / "silent.mp4", gray_ramp_video(), None, FPS, RATE)
    return root


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    texts = ["first we cut the wood", "then glue the pieces", "sand the edges", "paint it blue"]
    return Tokenizer(build_vocabulary(texts), max_words=16)


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[VideoItem], dict[str, str]]:
    """50 videos, 5 of them (10%) unusable: truncated, not media, zero length, audio only, malformed captions."""
    root = tmp_path_factory.mktemp("messy")
    template = root / "template.mp4"
    encode_mp4(template, gray_ramp_video(20, 16), tone(2.0), FPS, RATE)
    items = []
    for i in range(45):
        path = root / f"good_{i:02d}.mp4"
        shutil.copyfile(template, path)
        items.append(VideoItem(str(path), label=i % 3))
    data = template.read_bytes()
    bad = {"truncated.mp4": "truncated", "notes.mp4": "not_media", "zero.mp4": "empty", "speech.mp4": "no_video",
           "badcaption.mp4": "bad_caption"}
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "notes.mp4").write_bytes(b"these are my notes, not a video\n" * 20)
    (root / "zero.mp4").write_bytes(b"")
    _write_audio_only(root / "speech.mp4")
    shutil.copyfile(template, root / "badcaption.mp4")
    (root / "badcaption.vtt").write_text("WEBVTT\n\n00:00:01.000 --> banana\nhello\n")
    for name in bad:
        caption = str(root / "badcaption.vtt") if name == "badcaption.mp4" else None
        items.append(VideoItem(str(root / name), caption=caption))
    order = np.random.default_rng(0).permutation(len(items))
    return [items[i] for i in order], {str(root / name): reason for name, reason in bad.items()}


def _write_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=RATE)
        stream.layout = "mono"
        audio = tone(1.0)
        for offset in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(audio[None, offset:offset + 1024].copy(), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = RATE, offset
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


# ---------------------------------------------------------------------------------------------------------------
# Finding videos.


def test_scan_folder_pairs_captions_and_labels_from_subfolders(tmp_path: Path) -> None:
    for name in ("cats/a.mp4", "cats/a.srt", "dogs/b.webm", "dogs/c.MKV", "dogs/c.vtt", "dogs/readme.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = scan_folder(tmp_path, labels_from_subfolders=True)
    assert [(Path(i.path).name, i.caption and Path(i.caption).name, i.label) for i in items] == [
        ("a.mp4", "a.srt", 0), ("b.webm", None, 1), ("c.MKV", "c.vtt", 1)]
    assert [i.label for i in scan_folder(tmp_path)] == [-1, -1, -1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no video files"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        scan_folder(tmp_path / "absent")


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


# What yt-dlp and youtube-dl leave beside downloaded videos: captions with language tags, and other sidecars.
YTDLP_FOLDER = (
    "talk.mp4", "talk.en.vtt", "talk.de.vtt", "talk.en-orig.vtt", "talk.info.json", "talk.live_chat.json",
    "auto.mp4", "auto.en-orig.vtt", "auto.fr.vtt",
    "regional.webm", "regional.en-US.vtt", "regional.en-GB.srt",
    "mine.mp4", "mine.vtt", "mine.en.vtt",
    "german.mkv", "german.de.vtt", "german.de.srt",
    "my.talk.v2.mp4", "my.talk.v2.en.srt",
    "bare.mp4",
    "clips/short.mp4", "clips/short.pt-BR.vtt", "clips/short.en.vtt",
)


def test_scan_folder_pairs_ytdlp_captions_by_language(tmp_path: Path) -> None:
    _touch(tmp_path, *YTDLP_FOLDER)

    def pairs(**options):
        return {Path(i.path).relative_to(tmp_path).as_posix(): i.caption and Path(i.caption).relative_to(tmp_path)
                .as_posix() for i in scan_folder(tmp_path, **options)}

    assert pairs() == {  # default: English
        "auto.mp4": "auto.en-orig.vtt",  # YouTube's automatic captions in the language spoken
        "bare.mp4": None,
        "clips/short.mp4": "clips/short.en.vtt",
        "german.mkv": None,  # only German captions: not used for an English vocabulary
        "mine.mp4": "mine.vtt",  # named exactly after the video: the user's own pairing wins
        "my.talk.v2.mp4": "my.talk.v2.en.srt",  # dots in the name are not language tags
        "regional.webm": "regional.en-GB.srt",  # regional variants in sorted order
        "talk.mp4": "talk.en.vtt",  # the exact tag before en-orig; never talk.info.json or talk.live_chat.json
    }
    german = pairs(caption_lang="de")
    assert german["german.mkv"] == "german.de.vtt" and german["talk.mp4"] == "talk.de.vtt"  # .vtt before .srt
    assert german["auto.mp4"] is None and german["mine.mp4"] == "mine.vtt"
    assert pairs(caption_lang="PT-br")["clips/short.mp4"] == "clips/short.pt-BR.vtt"  # tags ignore case


def test_scan_folder_accounts_for_every_file(tmp_path: Path) -> None:
    _touch(tmp_path, *YTDLP_FOLDER, "README.txt", "cover.JPG", "theme.mp3", "talk.mp4.part", ".DS_Store",
           "clips/._short.mp4", "LICENSE")
    report = SkipReport()
    items = scan_folder(tmp_path, report=report)
    ignored = report.as_dict()["ignored"]
    assert ignored["by_extension"] == {"(hidden)": 2, "(no extension)": 1, ".jpg": 1, ".json": 2, ".mp3": 1,
                                       ".part": 1, ".srt": 1, ".txt": 1, ".vtt": 7}  # german.de.srt
    assert sorted(Path(p).name for p in ignored["files"][".vtt"]) == [
        "auto.fr.vtt", "german.de.vtt", "mine.en.vtt", "regional.en-US.vtt", "short.pt-BR.vtt", "talk.de.vtt",
        "talk.en-orig.vtt"]
    # Every file is a video, the caption of one, or ignored: none is left unaccounted for, none counted twice.
    used = [i.path for i in items] + [i.caption for i in items if i.caption]
    everything = sorted(str(p) for p in tmp_path.rglob("*") if p.is_file())
    assert sorted(used + list(report.ignored)) == everything
    assert report.total == 0 and "17 files ignored as not media" in report.summary()


def test_scan_folder_with_no_video_says_what_it_found(tmp_path: Path) -> None:
    _touch(tmp_path, "a.wav", "b.wav", "notes.txt")
    with pytest.raises(ValueError, match=r"no video files found .*; found 3 other files \(\.txt: 1, \.wav: 2\)"):
        scan_folder(tmp_path)


def test_ytdlp_captions_reach_the_samples(media: Path, tokenizer: Tokenizer, tmp_path: Path) -> None:
    shutil.copyfile(media / "talk.mp4", tmp_path / "talk.mp4")
    (tmp_path / "talk.en.vtt").write_text((media / "talk.vtt").read_text())
    (tmp_path / "talk.de.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:03.000\nzuerst schneiden wir das holz\n")
    dataset = ClipDataset(scan_folder(tmp_path), num_frames=4, fps=5, mel_config=MEL, tokenizer=tokenizer,
                          num_narrations=2, train=False)
    assert dataset[0]["text_mask"].tolist() == [True, True]
    assert "notes" not in dataset[0]


def test_a_repaired_caption_is_noted_and_its_text_used(media: Path, tokenizer: Tokenizer, tmp_path: Path) -> None:
    shutil.copyfile(media / "talk.mp4", tmp_path / "talk.mp4")
    (tmp_path / "talk.srt").write_text("1\n00:00:00,000 --> 00:00:03,000\n\npaint it blue\n")
    batch = collate_clips([ClipDataset(scan_folder(tmp_path), num_frames=4, fps=5, mel_config=MEL,
                                       tokenizer=tokenizer, num_narrations=1, train=False)[0]])
    assert batch["text_mask"].tolist() == [[True]] and "notes" in batch and set(batch) >= {"video", "skipped"}
    report = SkipReport()
    list(report.track([batch]))
    reason, detail = report.noted_files[str(tmp_path / "talk.srt")]
    assert reason == "repaired_caption" and detail.startswith("line 3: an empty line between the timing line")
    assert report.total == 0 and report.samples_seen == 1


def test_training_stream_report_holds_the_scan(media: Path, tmp_path: Path) -> None:
    from mmv.train.data import BatchStream

    shutil.copyfile(media / "silent.mp4", tmp_path / "a.mp4")
    _touch(tmp_path, "README.txt", "a.de.vtt")
    scan = SkipReport()
    dataset = ClipDataset(scan_folder(tmp_path, report=scan), num_frames=2, fps=5, mel_config=MEL, with_audio=False,
                          scan_report=scan)
    stream = BatchStream(dataset, batch_size=1)
    next(stream)
    assert sorted(Path(p).name for p in stream.report.ignored) == ["README.txt", "a.de.vtt"]
    mixed = MixedDataset([dataset, dataset], [1.0, 1.0], length=2)
    assert sorted(Path(p).name for p in mixed.scan_report.ignored) == ["README.txt", "a.de.vtt"]


def test_manifests_jsonl_and_csv_resolve_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"video": "v/a.mp4", "caption": "v/a.vtt", "label": 2}) + "\n\n" +
        json.dumps({"path": "/abs/b.mp4", "caption": None, "duration": 4.5}) + "\n")
    (tmp_path / "m.csv").write_text("video,caption,label\nv/a.mp4,v/a.vtt,2\n/abs/b.mp4,,\n")
    (tmp_path / "m.json").write_text(json.dumps([{"video": "v/a.mp4", "caption": "v/a.vtt", "label": 2},
                                                 {"video": "/abs/b.mp4"}]))
    for name in ("m.jsonl", "m.csv", "m.json"):
        items = read_manifest(tmp_path / name)
        assert items[0] == VideoItem(str(tmp_path / "v/a.mp4"), str(tmp_path / "v/a.vtt"), 2)
        assert items[1].path == "/abs/b.mp4" and items[1].caption is None and items[1].label == -1
    assert read_manifest(tmp_path / "m.jsonl")[1].duration == 4.5
    (tmp_path / "demo.jsonl").write_text(json.dumps({"video": "a.mp4", "label": 7, "attribute": 2}) + "\n")
    assert read_manifest(tmp_path / "demo.jsonl")[0].extra == {"attribute": 2}
    by_attribute = read_manifest(tmp_path / "demo.jsonl", label_field="attribute")[0]
    assert by_attribute.label == 2 and by_attribute.extra == {"label": 7}
    assert read_items(tmp_path / "m.csv") == read_manifest(tmp_path / "m.csv")


@pytest.mark.parametrize("content, message", [
    ('{"video": "a.mp4"}\n{"video": \n', "line 2: invalid JSON"),
    ('{"caption": "a.vtt"}\n', "line 1: no video path"),
    ('{"video": "a.mp4", "label": "cat"}\n', "line 1: label must be an integer"),
])
def test_malformed_manifest_names_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_manifest(tmp_path / "bad.jsonl")
    assert "bad.jsonl" in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# The sample dict.


def test_eval_sample_matches_the_file(media: Path, tokenizer: Tokenizer) -> None:
    items = scan_folder(media)
    dataset = ClipDataset(items, num_frames=8, fps=5, mel_config=MEL, tokenizer=tokenizer, num_narrations=3,
                          train=False, clip_start=0.6)
    sample = dataset[[Path(i.path).name for i in items].index("talk.mp4")]
    assert sample["video"].shape == (8, 32, 32, 3) and sample["video"].dtype == torch.float32
    # At 5 fps from 0.6 s the clip shows source frames 6, 8, ..., 20 (10 fps): gray levels 8 * index.
    expected = torch.tensor([8.0 * (6 + 2 * i) / 255 for i in range(8)])
    assert torch.allclose(sample["video"].mean(dim=(1, 2, 3)), expected, atol=3 / 255)
    assert (sample["start"], sample["end"]) == pytest.approx((0.6, 2.2))
    # 1.6 s at 16 kHz with a 160-sample hop: 160 frames; the tone's energy sits in the mel bin around 1 kHz.
    assert sample["audio"].shape == (160, 32) and bool(sample["audio_mask"])
    mel_centres = np.linspace(_mel(MEL.fmin), _mel(MEL.fmax), MEL.n_mels + 2)[1:-1]
    assert int(sample["audio"][20:140].mean(0).argmax()) == int(np.argmin(np.abs(mel_centres - _mel(TONE_HZ))))
    # Narrations: the 3 nearest to [0.6, 2.2], nearest first, each encoded by the tokenizer.
    narrations = [Narration(0.0, 0.8, "first we cut the wood"), Narration(0.9, 1.6, "then glue the pieces"),
                  Narration(1.7, 2.4, "sand the edges"), Narration(2.5, 3.0, "paint it blue")]
    nearest = select_narrations(narrations, 0.6, 2.2, k=3)
    assert torch.equal(sample["word_ids"], torch.as_tensor(np.stack([tokenizer.encode(n.text) for n in nearest])))
    assert sample["text_mask"].tolist() == [True, True, True]
    assert sample["label"] == -1 and sample["path"].endswith("talk.mp4")


def _mel(hz: float) -> float:
    return 1127.0 * np.log1p(hz / 700.0)


def test_missing_modalities_are_masked(media: Path, tokenizer: Tokenizer) -> None:
    dataset = ClipDataset([VideoItem(str(media / "silent.mp4"))], num_frames=4, fps=5, mel_config=MEL,
                          tokenizer=tokenizer, train=False)
    sample = dataset[0]
    assert not bool(sample["audio_mask"]) and torch.count_nonzero(sample["audio"]) == 0
    assert sample["audio"].shape == (80, 32)
    assert sample["word_ids"].shape == (5, 16) and not sample["text_mask"].any() and not sample["word_ids"].any()
    from_json = ClipDataset([VideoItem(str(media / "silent.mp4"))], num_frames=4, fps=5, mel_config=MEL,
                            tokenizer=tokenizer, train=False, captions={"silent": [Narration(0, 3, "paint it")]})[0]
    assert from_json["text_mask"].tolist() == [True, False, False, False, False]
    assert torch.equal(from_json["word_ids"][0], torch.as_tensor(tokenizer.encode("paint it")))
    no_text = ClipDataset([VideoItem(str(media / "talk.mp4"), str(media / "talk.vtt"))], num_frames=4, fps=5,
                          mel_config=MEL, tokenizer=tokenizer, with_text=False, with_audio=False, train=False)[0]
    assert not no_text["text_mask"].any() and not bool(no_text["audio_mask"])


def test_eval_windows_are_evenly_spaced(media: Path) -> None:
    dataset = ClipDataset([VideoItem(str(media / "silent.mp4"), label=4)] * 2, num_frames=5, fps=10, mel_config=MEL,
                          train=False, num_windows=3)
    assert len(dataset) == 6
    starts = [dataset[i]["start"] for i in range(3)]
    assert starts == pytest.approx(evenly_spaced_starts(probe(media / "silent.mp4").duration, 0.5, 3))
    assert [dataset[i]["index"] for i in range(6)] == [0, 0, 0, 1, 1, 1]


def test_training_clips_depend_only_on_seed_epoch_and_index(media: Path) -> None:
    items = [VideoItem(str(media / "silent.mp4"))] * 6
    dataset = ClipDataset(items, num_frames=4, fps=10, mel_config=MEL, seed=5)

    def starts(num_workers: int, epoch: int) -> list[float]:
        sampler = ResumableSampler(len(dataset), seed=1, yield_epoch=True)
        sampler.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=num_workers, collate_fn=collate_clips)
        pairs = [(int(i), float(s)) for b in loader for i, s in zip(b["index"], b["start"])]
        return [s for _, s in sorted(pairs)]

    in_process = starts(0, epoch=0)
    assert starts(2, epoch=0) == in_process
    assert starts(0, epoch=1) != in_process
    assert len(set(in_process)) == 6


# ---------------------------------------------------------------------------------------------------------------
# Bad data, resuming, memory.


def test_corrupt_files_are_skipped_and_reported_exactly(messy: tuple[list[VideoItem], dict[str, str]],
                                                       tokenizer: Tokenizer) -> None:
    items, bad = messy
    # A broken caption file does not drop its video: the sample is kept with its text masked and the caption file
    # is reported under its own reason.
    skipped = {path: reason for path, reason in bad.items() if reason != "bad_caption"}
    broken_caption = next(i.caption for i in items if i.caption is not None)
    dataset = ClipDataset(items, num_frames=4, fps=5, mel_config=MEL, tokenizer=tokenizer, seed=0)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_clips, timeout=120)
    report = SkipReport()
    seen, text_masks = [], {}
    for batch in report.track(loader):
        seen += batch["path"]
        text_masks.update(zip(batch["path"], batch["text_mask"].tolist()))
    assert sorted(seen) == sorted(i.path for i in items if i.path not in skipped)
    assert {path: reason for path, (reason, _) in report.files.items()} == skipped
    assert {path: reason for path, (reason, _) in report.noted_files.items()} == {broken_caption: "bad_caption"}
    assert "line 3: invalid timestamp 'banana'" in report.noted_files[broken_caption][1]
    assert text_masks[broken_caption.replace(".vtt", ".mp4")] == [False] * 5
    assert report.samples_seen == 46 and report.total == 4
    summary = report.details()
    assert "46 samples, 4 skipped" in summary and all(reason in summary for reason in bad.values())
    assert report.as_dict()["by_reason"] == {reason: 1 for reason in skipped.values()}
    assert report.as_dict()["kept_with_problems"]["by_reason"] == {"bad_caption": 1}


def test_collate_of_only_skipped_samples_is_an_empty_batch() -> None:
    batch = collate_clips([SkippedSample("a.mp4", "empty"), SkippedSample("b.mp4", "truncated")])
    assert batch_size(batch) == 0 and [s.path for s in batch["skipped"]] == ["a.mp4", "b.mp4"]
    report = SkipReport()
    assert list(report.track([batch])) == [] and report.counts == {"empty": 1, "truncated": 1}


def test_resume_mid_epoch_yields_exactly_the_rest_in_order(messy: tuple[list[VideoItem], dict[str, str]]) -> None:
    items, _ = messy
    dataset = ClipDataset(items[:24], num_frames=2, fps=5, mel_config=MEL, seed=3, with_audio=False)

    def run(sampler: ResumableSampler, max_batches: int | None = None) -> list[tuple[str, float]]:
        loader = DataLoader(dataset, batch_size=3, sampler=sampler, num_workers=2, collate_fn=collate_clips)
        seen = []
        for step, batch in enumerate(loader):
            if max_batches is not None and step == max_batches:
                break
            # Skipped files hold their place in the order through the report, not the batch: record both.
            seen += [(p, round(float(s), 6)) for p, s in zip(batch.get("path", []), batch.get("start", []))]
            seen += [(s.path, -1.0) for s in batch["skipped"]]
        return seen

    full = ResumableSampler(len(dataset), seed=9)
    full.set_epoch(2)
    whole_epoch = run(full)
    interrupted = ResumableSampler(len(dataset), seed=9)
    interrupted.set_epoch(2)
    first_part = run(interrupted, max_batches=3)
    state = interrupted.state_dict(consumed=3 * 3)
    resumed = ResumableSampler(len(dataset), seed=9)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # a checkpoint stores it as JSON
    resumed.set_epoch(2)
    rest = run(resumed)
    assert sorted(first_part) == sorted(whole_epoch[:9])
    assert rest == whole_epoch[9:]
    # The epoch after a resumed one is whole again.
    resumed.set_epoch(3)
    assert len(list(resumed)) == len(dataset)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.slow
def test_memory_does_not_grow_over_epochs(messy: tuple[list[VideoItem], dict[str, str]],
                                          tokenizer: Tokenizer) -> None:
    items, _ = messy
    dataset = ClipDataset(items, num_frames=4, fps=5, mel_config=MEL, tokenizer=tokenizer)
    loader = DataLoader(dataset, batch_size=5, num_workers=0, collate_fn=collate_clips)
    usage = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker; the tensors are tiny
    try:
        for epoch in range(4):
            dataset.set_epoch(epoch)
            for _ in SkipReport().track(loader):
                pass
            usage.append(_rss_mb())
    finally:
        torch.set_num_threads(threads)
    # Epoch 0 warms caches (codecs, durations); later epochs must not keep adding (50 decodes per epoch).
    assert usage[3] - usage[1] < 10, usage


# ---------------------------------------------------------------------------------------------------------------
# Sampler and mixing.


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_matches_distributed_sampler_and_partitions(drop_last: bool) -> None:
    dataset = list(range(23))
    for epoch in (0, 4):
        orders = []
        for rank in range(3):
            ours = ResumableSampler(23, seed=7, rank=rank, world_size=3, drop_last=drop_last)
            ours.set_epoch(epoch)
            reference = DistributedSampler(dataset, num_replicas=3, rank=rank, seed=7, drop_last=drop_last)
            reference.set_epoch(epoch)
            assert list(ours) == list(reference)
            assert len(ours) == len(reference)
            orders.append(list(ours))
        covered = [i for order in orders for i in order]
        assert set(covered) == (set(range(23)) if not drop_last else set(covered)) and len(covered) == (
            21 if drop_last else 24)


def test_sampler_state_is_checked_and_epoch_keys_are_yielded() -> None:
    sampler = ResumableSampler(10, seed=1, yield_epoch=True)
    sampler.set_epoch(3)
    keys = list(sampler)
    assert all(epoch == 3 for _, epoch in keys) and sorted(i for i, _ in keys) == list(range(10))
    with pytest.raises(ValueError, match="num_samples"):
        ResumableSampler(11, seed=1).load_state_dict(sampler.state_dict(4))
    with pytest.raises(ValueError, match="outside"):
        sampler.state_dict(11)


def test_mixed_dataset_follows_weights_and_keeps_masks(media: Path, tokenizer: Tokenizer) -> None:
    narrated = ClipDataset([VideoItem(str(media / "talk.mp4"), str(media / "talk.vtt"))], num_frames=2, fps=5,
                           mel_config=MEL, tokenizer=tokenizer, with_audio=False)
    sounding = ClipDataset([VideoItem(str(media / "talk.mp4"))], num_frames=2, fps=5, mel_config=MEL,
                           with_text=False)
    mixed = MixedDataset([narrated, sounding], [3.0, 1.0], length=400, seed=2)
    sources = np.array([mixed.choose(i, 0)[0] for i in range(400)])
    assert abs(sources.mean() - 0.25) < 0.06
    assert [mixed.choose(i, 0) for i in range(20)] == [mixed.choose(i, 0) for i in range(20)]
    assert [mixed.choose(i, 1) for i in range(20)] != [mixed.choose(i, 0) for i in range(20)]
    for index in (int(np.argmin(sources)), int(np.argmax(sources))):
        sample = mixed[index]
        if sample["source"] == 0:
            assert sample["text_mask"].any() and not bool(sample["audio_mask"])
        else:
            assert not sample["text_mask"].any() and bool(sample["audio_mask"])
    with pytest.raises(ValueError, match="one weight per dataset"):
        MixedDataset([narrated], [1.0, 2.0])
