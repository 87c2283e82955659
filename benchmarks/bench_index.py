"""Search benchmarks: indexing against model-only throughput, and query latency and recall at 10k-1M vectors.

1. **Indexing** (``mmv.search.index_sources``) against the model alone on the same clips: the model-only baseline
   runs the network on clips decoded beforehand, in the same run; the ratio says how much of the decoding the
   worker processes hide behind the model's computation (the target: >= 0.9 with two workers).
2. **Queries**: synthetic clustered unit vectors (the shape of real embeddings: a few hundred dimensions, groups of
   similar segments), at 10k, 100k and 1M rows: exact search (one matrix product) against the approximate FAISS IVF
   index the library uses above ``EXACT_LIMIT``, its build time, its latency and its recall@10 against exact.

    python benchmarks/bench_index.py                       # both, released S3D-G architecture (random weights)
    python benchmarks/bench_index.py --skip-indexing --sizes 10000 100000
    python benchmarks/bench_index.py --quick               # seconds: tiny model, small sizes (smoke test)
"""
from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from machine import cpu_model  # benchmarks/machine.py (scripts run from their folder)

import mmv

mmv.runtime.use_fast_cpu_settings()  # the mmv command's settings, as `mmv index` runs

import torch  # noqa: E402


def write_videos(folder: Path, count: int, seconds: float, size: tuple[int, int], fps: int = 25) -> list[Path]:
    """H.264 + AAC files with moving noise (so that decoding costs what real footage costs)."""
    import av

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"video{index:03d}.mp4"
        with av.open(str(path), "w") as container:
            video = container.add_stream("libx264", rate=Fraction(fps))
            video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
            audio = container.add_stream("aac", rate=48000)
            audio.layout = "mono"
            base = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
            for frame_index in range(int(seconds * fps)):
                image = np.roll(np.kron(base, np.ones((8, 8, 1), np.uint8)), frame_index, axis=1)
                container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(video.encode())
            tone = (0.3 * np.sin(np.arange(int(seconds * 48000)) * 0.05)).astype(np.float32)
            for begin in range(0, len(tone), 1024):
                frame = av.AudioFrame.from_ndarray(tone[None, begin:begin + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 48000, begin
                container.mux(audio.encode(frame))
            container.mux(audio.encode())
        paths.append(path)
    return paths


def bench_indexing(model_name: str, count: int, seconds: float, size: tuple[int, int], workers: list[int],
                   batch: int) -> None:
    from mmv.data.windows import MediaItem, video_windows
    from mmv.eval.features import model_pixels
    from mmv.search import IndexOptions, index_sources
    from mmv.search.indexer import _plan, default_workers, model_spaces

    model = mmv.create_model(model_name).eval()
    pre = model.preprocess
    segment = pre.video.seconds
    print(f"\n== indexing: {count} videos of {seconds:g} s at {size[0]}x{size[1]}, {model_name}, segments of "
          f"{segment:g} s, batch {batch}, {torch.get_num_threads()} torch threads; mmv index's default here: "
          f"{default_workers(torch.device('cpu'))} decoding workers ==")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        paths = write_videos(folder, count, seconds, size)
        # Baseline, same run: the model alone on the same clips and sound, decoded beforehand.
        plans = [_plan(p, segment, segment) for p in paths]
        clips = np.concatenate([video_windows(MediaItem(p), pre.video, None, starts=plan.starts)[0]
                                for p, plan in zip(paths, plans)])
        mel_frames = int(np.ceil(segment * pre.audio.sample_rate / pre.audio.mel.hop_length))
        mels = torch.randn(len(clips), mel_frames, pre.audio.mel.n_mels)
        spaces = model_spaces(model)

        def model_only() -> float:
            began = time.perf_counter()
            with torch.inference_mode():
                for first in range(0, len(clips), batch):
                    model(video=model_pixels(torch.from_numpy(clips[first:first + batch]), pre.video.pixel_range))
                    if spaces["audio"]:
                        model(audio=mels[first:first + batch])
            return len(clips) / (time.perf_counter() - began)

        # The baseline runs before and after each indexing run, so that a slow spell of a shared machine slows
        # both sides; each ratio is against the faster of the two baselines around it. A first pass warms up
        # (oneDNN builds its kernels on the first calls of each shape).
        model_only()
        baseline = model_only()
        print(f"{'model only (clips decoded beforehand)':<44}{baseline:>9.2f} segments/s")
        for count_workers in workers:
            began = time.perf_counter()
            report = index_sources(model, [folder], Path(tmp) / f"lib{count_workers}", model_source=model_name,
                                   options=IndexOptions(batch_size=batch, num_workers=count_workers, progress=False))
            rate = report["segments_added"] / (time.perf_counter() - began)
            after = model_only()
            print(f"{f'mmv index, {count_workers} decoding workers':<44}{rate:>9.2f} segments/s   "
                  f"ratio to model only {rate / max(baseline, after):.2f} (model only around it: {baseline:.2f}, "
                  f"{after:.2f})")
            baseline = after


def clustered_unit_vectors(count: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    vectors = np.empty((count, dim), dtype=np.float32)
    for first in range(0, count, 100_000):  # in blocks: 1M x 256 float32 is 1 GB, the noise would double it
        n = min(100_000, count - first)
        block = centres[rng.integers(clusters, size=n)] + 0.9 * rng.normal(size=(n, dim)).astype(np.float32)
        vectors[first:first + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors


def bench_queries(sizes: list[int], dim: int, queries: int) -> None:
    from mmv.search.vector_index import build_approximate, exact_top_k

    print(f"\n== queries: clustered unit vectors, {dim} dimensions, {queries} queries, top 10 ==")
    print(f"{'vectors':>10}{'exact ms':>10}{'ivf build s':>13}{'ivf ms':>9}{'speed-up':>10}{'recall@10':>11}")
    rng = np.random.default_rng(0)
    for size in sizes:
        vectors = clustered_unit_vectors(size, dim, max(10, size // 500), rng)
        probes = vectors[rng.choice(size, queries, replace=False)] + 0.2 * rng.normal(size=(queries, dim))
        probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
        began = time.perf_counter()
        exact = [exact_top_k(vectors, q, 10)[0] for q in probes]
        exact_ms = 1000 * (time.perf_counter() - began) / queries
        began = time.perf_counter()
        index = build_approximate(vectors)
        build_s = time.perf_counter() - began
        began = time.perf_counter()
        approximate = [index.search(q[None], 10)[1][0] for q in probes]
        ivf_ms = 1000 * (time.perf_counter() - began) / queries
        recall = np.mean([len(set(a.tolist()) & set(e.tolist())) / 10 for a, e in zip(approximate, exact)])
        print(f"{size:>10}{exact_ms:>10.2f}{build_s:>13.1f}{ivf_ms:>9.2f}{exact_ms / ivf_ms:>10.1f}{recall:>11.3f}")
        del vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mmv_fac_s3dg", help="architecture (random weights; default: the "
                        "released S3D-G)")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.24)
    parser.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--skip-indexing", action="store_true")
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds (numbers mean nothing)")
    args = parser.parse_args()
    if args.quick:
        args.model, args.videos, args.seconds, args.size, args.workers = "mmv_tiny_s3dg", 2, 2.0, (64, 48), [0, 1]
        args.sizes, args.queries = [2_000], 5
    print(f"{cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    if not args.skip_indexing:
        bench_indexing(args.model, args.videos, args.seconds, tuple(args.size), args.workers, args.batch)
    if not args.skip_queries:
        bench_queries(args.sizes, args.dim, args.queries)


if __name__ == "__main__":
    main()
