"""Zero-shot retrieval end to end on MSR-VTT and YouCook2 layouts; ranks checked against an independent pipeline."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from eval_fixtures import make_msrvtt, make_youcook2, single_thread, tiny_model  # noqa: F401
from mmv.eval.datasets import msrvtt_1ka, youcook2
from mmv.data.audio import MelConfig
from mmv.data.windows import MediaItem, Windowing
from mmv.eval.features import embed_videos
from mmv.preprocess import AudioPreprocess, VideoPreprocess
from mmv.data.skips import SkipReport
from mmv.eval.retrieval import RetrievalConfig, evaluate_msrvtt, evaluate_youcook2

SPEC = VideoPreprocess(num_frames=8, fps=10, min_resize=32, crop=32)
AUDIO = AudioPreprocess(0.8, MelConfig(sample_rate=16000, n_fft=683, hop_length=341))


def word_ids(sentences: list[str]) -> np.ndarray:
    """A fixed toy tokenizer: ``word<k>`` -> id k + 1, padded to 4 tokens."""
    ids = np.zeros((len(sentences), 4), dtype=np.int64)
    for row, sentence in enumerate(sentences):
        for col, word in enumerate(sentence.split()[:4]):
            ids[row, col] = int(word.removeprefix("word").removeprefix("step")) + 1 if word[-1].isdigit() else 99
    return ids


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory):
    root = make_msrvtt(tmp_path_factory.mktemp("msrvtt"), num_videos=4)
    # A fifth entry whose video is byte-identical to video0: its scores tie exactly with video0's.
    shutil.copy(root / "videos" / "all" / "video0.mp4", root / "videos" / "all" / "video4.mp4")
    with open(root / "MSRVTT_JSFUSION_test.csv", "a") as handle:
        handle.write("ret4,msr4,video4,word9 word8\n")
        handle.write("ret5,msr5,video_missing,word7\n")
    return root


def _reference_video_embeddings(model, paths, windows: int) -> np.ndarray:
    """Independent pipeline: decode each window with mmv.data, centre crop by hand, normalise, average."""
    from mmv.data.media import decode_clip, evenly_spaced_starts, probe

    rows = []
    for path in paths:
        starts = evenly_spaced_starts(probe(path).duration, SPEC.seconds, windows)
        clips = []
        for s in starts:
            frames = decode_clip(path, s, SPEC.num_frames, SPEC.fps, with_audio=False, short_side=32).frames
            top, left = (frames.shape[1] - 32) // 2, (frames.shape[2] - 32) // 2
            clips.append(frames[:, top:top + 32, left:left + 32])
        with torch.no_grad():
            emb = model.encode_video(torch.from_numpy(np.stack(clips)).float() / 255, space="vt").numpy()
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        mean = emb.mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows)


def test_msrvtt_text_to_video_ranks_match_brute_force(msrvtt, tiny_model, tmp_path, single_thread):
    # batch_size=1: each window runs alone, so the duplicated video's embedding is bit-identical to video0's.
    cfg = RetrievalConfig(spec=SPEC, windows=2, audio=AUDIO, ties="pessimistic", batch_size=1)
    result = evaluate_msrvtt(tiny_model, msrvtt, word_ids, cfg=cfg, directions=["text->video"], cache_dir=tmp_path,
                             progress=False, allow_partial=True)  # the fixture lists a video it does not have
    assert result["num_clips"] == 5 and result["missing_videos"]["total"] == 1
    r = result["directions"]["text->video"]
    clips = msrvtt_1ka(msrvtt)
    videos = _reference_video_embeddings(tiny_model, [c.path for c in clips], windows=2)
    with torch.no_grad():
        texts = tiny_model.encode_text(torch.from_numpy(word_ids([c.caption for c in clips])), space="vt").numpy()
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    sim = texts @ videos.T
    # Brute force, pessimistic: 1 + number of other videos scoring >= the right one (video4 duplicates video0).
    expected = [1 + sum(sim[q, c] >= sim[q, q] - 1e-5 for c in range(5) if c != q) for q in range(5)]
    assert r["ranks"] == expected
    assert r["R@1"] == pytest.approx(100 * np.mean(np.array(expected) <= 1))
    assert r["median_rank"] == np.median(expected)
    assert r["chance"]["R@1"] == pytest.approx(20.0)


def test_identical_videos_tie_and_tie_rule_is_applied(msrvtt, tiny_model, tmp_path, single_thread):
    ranks = {}
    for ties in ("optimistic", "pessimistic", "average"):
        cfg = RetrievalConfig(spec=SPEC, windows=2, ties=ties, batch_size=1)
        result = evaluate_msrvtt(tiny_model, msrvtt, word_ids, cfg=cfg, directions=["text->video"],
                                 cache_dir=tmp_path, progress=False, allow_partial=True)
        ranks[ties] = np.array(result["directions"]["text->video"]["ranks"])
    # Queries 0 and 4 each tie with the other's (identical) video: exactly one tied negative.
    np.testing.assert_array_equal(ranks["pessimistic"] - ranks["optimistic"], [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(ranks["average"], (ranks["pessimistic"] + ranks["optimistic"]) / 2)


def test_msrvtt_audio_directions(msrvtt, tiny_model, tmp_path, single_thread):
    cfg = RetrievalConfig(spec=SPEC, windows=2, audio=AUDIO, batch_size=1)
    result = evaluate_msrvtt(tiny_model, msrvtt, word_ids, cfg=cfg, directions=["text->audio", "audio->video"],
                             cache_dir=tmp_path, progress=False, allow_partial=True)
    for direction in ("text->audio", "audio->video"):
        r = result["directions"][direction]
        assert r["num_queries"] == 5 and r["num_candidates"] == 5
        assert len(r["ranks"]) == 5 and all(1 <= x <= 5 for x in r["ranks"])
        # The duplicated file has identical audio too: its audio->video query ties with video0.
    av = result["directions"]["audio->video"]["ranks"]
    assert av[0] >= 2 and av[4] >= 2


def test_youcook2_segments(tmp_path, tiny_model, single_thread):
    root = make_youcook2(tmp_path / "yc2")
    skipped = SkipReport()
    clips = youcook2(root, "validation", skipped)
    assert [(c.key, c.start, c.end) for c in clips] == [("vid0_0", 0, 2), ("vid0_1", 2, 4), ("vid1_0", 0, 2),
                                                        ("vid1_1", 2, 4)]
    assert skipped.total == 1  # the validation video that is not on disk; the training video is not listed
    # Windows stay inside their segment.
    emb = embed_videos(tiny_model, [MediaItem(c.path, c.start, c.end) for c in clips], space="vt", spec=SPEC,
                       windowing=Windowing("even", 2), progress=False)
    for clip, windows in zip(clips, emb.windows):
        assert windows[0][0] == pytest.approx(clip.start, abs=1e-6)
        assert windows[-1][1] == pytest.approx(clip.end, abs=1e-6)
    # The two segments of a video show different colours, so their embeddings differ.
    assert not np.allclose(emb.features[0], emb.features[1])
    result = evaluate_youcook2(tiny_model, root, word_ids, cfg=RetrievalConfig(spec=SPEC, windows=2),
                               directions=["text->video"], progress=False, allow_partial=True)
    assert result["directions"]["text->video"]["num_queries"] == 4
