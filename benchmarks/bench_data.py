"""Clips per second from a long H.264 file: seek-based decoding (mmv) vs decoding from the start of the file.

Each clip is what MMV trains on: 32 frames at 10 fps (3.2 s), short side resized to 224 while decoding and centre
cropped to 224x224 (float32 in [0, 1]), plus 3.2 s of mono 48 kHz audio and its log-mel spectrogram. Clip starts are
drawn (seeded) from the second half of a 5-minute, 360p, 30 fps H.264 + AAC file.

Loaders:

* ``seek``   ``mmv.data.decode_clip``: seeks to the keyframe before the clip and decodes forward.
* ``start``  the same frame selection, resize and audio code, but decoding from the first frame of the file up to
             the clip (what a reader without seeking does).

Both run single-threaded decoders inside a ``torch.utils.data.DataLoader`` with 0, 1 and 2 workers (batch size 1),
timed from the loader's creation to its last clip, so worker start-up is included. The test file is generated once
(libx264, x264's default keyframe interval of 250 frames = 8.3 s; native AAC) and cached.

Examples::

    python benchmarks/bench_data.py                      # full run, prints a table and the seek/start ratios
    python benchmarks/bench_data.py --quick              # a short run (fewer clips)
    python benchmarks/bench_data.py --dir /data/bench --json results/bench_data.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS, DURATION_S = 640, 360, 30, 300
AUDIO_RATE = 48000
NUM_FRAMES, CLIP_FPS, SIZE = 32, 10.0, 224
FILE_NAME = f"bench_{HEIGHT}p{FPS}_{DURATION_S}s_h264_aac.mp4"


# ----------------------------------------------------------------------------------------------------------------
# The test file
# ----------------------------------------------------------------------------------------------------------------

def ensure_test_file(directory: Path) -> Path:
    """Writes the 5-minute 360p30 H.264+AAC file once (atomically) and returns its path."""
    path = directory / FILE_NAME
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".mp4", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        _encode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def _encode(path: Path) -> None:
    import av
    from tqdm import tqdm

    rng = np.random.default_rng(0)
    # A textured scene panned across the frame, with a moving bright square: real motion for the encoder, so that
    # decoding costs what camera footage costs (a static or flat picture would decode unrealistically fast).
    scene = (rng.integers(0, 256, (HEIGHT // 8 + 1, 2 * WIDTH // 8 + 1, 3), dtype=np.uint8)
             .repeat(8, axis=0).repeat(8, axis=1)[:HEIGHT])
    scene = ((scene.astype(np.uint16) + np.roll(scene, 3, axis=1)) // 2).astype(np.uint8)
    container = av.open(str(path), mode="w", format="mp4")
    video = container.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "23"})
    video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    audio = container.add_stream("aac", rate=AUDIO_RATE)
    audio.layout = "stereo"
    num_frames = DURATION_S * FPS
    for i in tqdm(range(num_frames), desc=f"writing the test file {FILE_NAME}", unit="frame", mininterval=2.0):
        offset = (i * 3) % WIDTH
        image = np.ascontiguousarray(scene[:, offset:offset + WIDTH])
        x, y = (i * 5) % (WIDTH - 60), int((HEIGHT - 60) * (0.5 + 0.4 * np.sin(i / 40)))
        image[y:y + 60, x:x + 60] = 255
        for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    chunk, total = 1024, DURATION_S * AUDIO_RATE
    for begin in range(0, total, chunk):
        t = (begin + np.arange(chunk)) / AUDIO_RATE
        tone = 0.3 * np.sin(2 * np.pi * (220 + 50 * np.sin(t)) * t) + 0.05 * rng.standard_normal(chunk)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]).astype(np.float32), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = AUDIO_RATE, begin
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)
    container.close()


# ----------------------------------------------------------------------------------------------------------------
# The two loaders
# ----------------------------------------------------------------------------------------------------------------

def decode_from_start(path: str, start: float):
    """Baseline: ``decode_clip``'s frame selection and audio code, decoding from the start of the file."""
    import av

    from mmv.data import media

    container = av.open(path)
    try:
        video = container.streams.video[0]
        media._configure_decoder(video, 1)
        targets = [start + i / CLIP_FPS for i in range(NUM_FRAMES)]
        size = media._output_size(video.codec_context.width, video.codec_context.height, SIZE)
        selector = media._select_frames(container, video, targets, size, seek_time=0.0)  # 0: no seek
        frames = np.stack(selector.selected)
        stream = container.streams.audio[0]
        media._configure_decoder(stream, 1)
        num_samples = round(NUM_FRAMES / CLIP_FPS * AUDIO_RATE)
        first_time, samples = media._decode_audio_from(container, stream, 0.0, start + num_samples / AUDIO_RATE,
                                                       AUDIO_RATE)
        offset = round((start - first_time) * AUDIO_RATE)
        audio = np.zeros(num_samples, np.float32)
        piece = samples[offset:offset + num_samples]
        audio[:len(piece)] = piece
        return frames, audio
    finally:
        container.close()


def decode_with_seek(path: str, start: float):
    from mmv.data import decode_clip

    clip = decode_clip(path, start, NUM_FRAMES, CLIP_FPS, audio_rate=AUDIO_RATE, short_side=SIZE)
    return clip.frames, clip.audio


LOADERS = {"seek": decode_with_seek, "start": decode_from_start}


class ClipDataset:
    """A map-style dataset of training-ready clips: ``(video [32, 224, 224, 3], log-mel [150, 80], waveform)``."""

    def __init__(self, path: str, starts: list[float], loader: str) -> None:
        from mmv.data import VideoTransform

        self.path, self.starts, self.loader = path, starts, loader
        self.transform = VideoTransform(train=False, crop_size=SIZE, min_resize=SIZE)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int):
        from mmv.data import log_mel_spectrogram

        frames, audio = LOADERS[self.loader](self.path, self.starts[index])
        return self.transform(frames), log_mel_spectrogram(audio), audio


def time_loader(path: Path, starts: list[float], loader: str, workers: int) -> float:
    """Seconds to produce every clip through a DataLoader (worker start-up included)."""
    import torch

    dataset = ClipDataset(str(path), starts, loader)
    began = time.perf_counter()
    data = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers, timeout=600 if workers else 0)
    for video, mel, _ in data:
        assert video.shape == (1, NUM_FRAMES, SIZE, SIZE, 3) and mel.shape == (1, 150, 80)
    return time.perf_counter() - began


def check_same_output(path: Path, start: float) -> None:
    """Both loaders must produce the same clip, or the comparison means nothing."""
    seek_frames, seek_audio = decode_with_seek(str(path), start)
    start_frames, start_audio = decode_from_start(str(path), start)
    if not np.array_equal(seek_frames, start_frames):
        raise SystemExit(f"the loaders disagree on the frames of the clip at {start:.2f} s")
    if np.abs(seek_audio - start_audio).max() > 1e-4:
        raise SystemExit(f"the loaders disagree on the audio of the clip at {start:.2f} s")


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Writes the test file once into --dir (a few minutes on 2 cores), then times both loaders.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "mmv_bench",
                        help="where the test file is cached (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a short run: 4 seek clips and 1 start clip per setting")
    parser.add_argument("--clips", type=int, default=24, help="clips per setting for the seek loader (default: 24)")
    parser.add_argument("--baseline-clips", type=int, default=6,
                        help="clips per setting for the decode-from-start loader, which is slow (default: 6)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clip starts")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)  # one core per process, as in a DataLoader worker; keeps the comparison fair
    if args.quick:
        args.clips, args.baseline_clips = 4, 1
    path = ensure_test_file(args.dir)
    rng = np.random.default_rng(args.seed)
    clip_seconds = NUM_FRAMES / CLIP_FPS
    starts = [float(s) for s in rng.uniform(DURATION_S / 2, DURATION_S - clip_seconds, args.clips)]
    check_same_output(path, starts[0])

    results = []
    for workers in args.workers:
        for loader, count in (("seek", args.clips), ("start", args.baseline_clips)):
            seconds = time_loader(path, starts[:count], loader, workers)
            results.append({"loader": loader, "workers": workers, "clips": count, "seconds": seconds,
                            "clips_per_s": count / seconds})
            print(f"  {loader:>5} loader, {workers} workers: {count} clips in {seconds:.1f} s", file=sys.stderr)

    rate = {(r["loader"], r["workers"]): r["clips_per_s"] for r in results}
    ratios = {w: rate[("seek", w)] / rate[("start", w)] for w in args.workers}
    print(f"\n{path.name}: clips of {NUM_FRAMES} frames at {CLIP_FPS:g} fps, {SIZE}x{SIZE}, + {clip_seconds:g} s of "
          f"{AUDIO_RATE} Hz audio and its log-mel; starts in [{DURATION_S / 2:g}, {DURATION_S - clip_seconds:g}] s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print(f"{'workers':>7} | {'seek clips/s':>12} | {'start clips/s':>13} | {'seek / start':>12}")
    print("-" * 54)
    for w in args.workers:
        print(f"{w:>7} | {rate[('seek', w)]:>12.2f} | {rate[('start', w)]:>13.3f} | {ratios[w]:>11.1f}x")
    target_met = all(ratio >= 5 for ratio in ratios.values())
    print(f"\ntarget (seek at least 5x faster than decoding from the start): {'met' if target_met else 'NOT met'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"file": str(path), "results": results, "ratios": {str(w): r for w, r in ratios.items()},
                   "target_met": target_met, "load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
