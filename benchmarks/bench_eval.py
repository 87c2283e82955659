"""Evaluation benchmarks: feature-extraction throughput and linear-classifier fit time at UCF101 scale.

1. Feature extraction (clips/s) through :func:`mmv.eval.features.embed_videos` (decode + crop + forward) and the
   forward pass alone, for the tiny model and the released architectures (random weights) at a small input.
2. Classifier fit at UCF101 scale: 9.5k training rows x 2048 features (the TSM-50 ``vid_repr`` width), 101 classes,
   random features with class structure; StandardScaler + LinearSVC (the paper's) vs sklearn LogisticRegression vs
   softmax regression in torch (full-batch L-BFGS), printed as time ratios with their test accuracies.

Run: ``python benchmarks/bench_eval.py`` (``--quick`` for a smaller classifier problem, ``--skip-extraction``).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _write_clips(folder: Path, count: int, size: int, num_frames: int) -> list[Path]:
    import av

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"clip{i}.mp4"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for _ in range(num_frames):
                image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths


def bench_extraction(models: list[str], frames: int, size: int, clips: int, batch: int) -> None:
    import mmv
    from mmv.data.windows import Windowing
    from mmv.eval.features import embed_videos
    from mmv.preprocess import VideoPreprocess

    threads = torch.get_num_threads()
    print(f"\n== feature extraction: {frames} frames x {size}x{size}, batch {batch}, {threads} threads ==")
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_clips(Path(tmp), clips, size, frames * 2)
        spec = VideoPreprocess(num_frames=frames, fps=25, min_resize=size, crop=size)
        print(f"{'model':<26}{'forward clips/s':>16}{'pipeline clips/s':>18}{'decode share':>14}")
        for name in models:
            model = mmv.create_model(name).eval()
            x = torch.rand(batch, frames, size, size, 3)
            with torch.inference_mode():
                model.encode_video(x, space="repr")  # warm-up
                start = time.perf_counter()
                reps = max(1, clips // batch)
                for _ in range(reps):
                    model.encode_video(x, space="repr")
                forward = reps * batch / (time.perf_counter() - start)
            start = time.perf_counter()
            embed_videos(model, paths, space="repr", spec=spec, windowing=Windowing("one"), batch_size=batch,
                         progress=False)
            pipeline = len(paths) / (time.perf_counter() - start)
            print(f"{name:<26}{forward:>16.1f}{pipeline:>18.1f}{1 - pipeline / forward:>14.0%}")


def class_structured_features(rows: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ReLU'd features: class means on a 64-d subspace plus noise, tuned so that no classifier saturates (a
    nearest-centroid rule gets about 60% at UCF101 scale)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(64, dim)) / 8
    centres = rng.normal(size=(classes, 64)) * 0.4
    labels = rng.integers(0, classes, size=rows)
    latent = centres[labels] + rng.normal(size=(rows, 64))
    features = np.maximum(latent @ basis + rng.normal(size=(rows, dim)), 0.0)
    return features.astype(np.float32), labels


def bench_classifiers(train_rows: int, test_rows: int, dim: int, classes: int) -> None:
    from mmv.eval.classifiers import LinearProbe

    x, y = class_structured_features(train_rows + test_rows, dim, classes)
    train_x, train_y, test_x, test_y = x[:train_rows], y[:train_rows], x[train_rows:], y[train_rows:]
    print(f"\n== classifier fit: {train_rows} x {dim} features, {classes} classes, {test_rows} test rows, "
          f"{torch.get_num_threads()} torch threads ==")
    runs = [("LinearSVC C=1e-3 (paper)", "svm", 1e-3, 1000), ("LogisticRegression C=1e-3", "logreg", 1e-3, 300),
            ("torch softmax L-BFGS C=1e-3", "torch", 1e-3, 300)]
    print(f"{'classifier':<30}{'fit s':>9}{'x LinearSVC':>13}{'test top-1 %':>14}", flush=True)
    base = None
    for label, kind, c, iters in runs:
        probe = LinearProbe(kind=kind, C=c, max_iter=iters).fit(train_x, train_y)
        accuracy = 100.0 * np.mean(probe.predict(test_x) == test_y)
        base = base or probe.fit_seconds
        print(f"{label:<30}{probe.fit_seconds:>9.2f}{probe.fit_seconds / base:>13.2f}{accuracy:>14.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller classifier problem (2k rows, 20 classes)")
    parser.add_argument("--skip-extraction", action="store_true")
    parser.add_argument("--skip-classifiers", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_extraction:
        bench_extraction(["mmv_tiny_s3dg"], frames=16, size=64, clips=32, batch=8)
        bench_extraction(["mmv_tiny_s3dg", "mmv_fac_s3dg", "mmv_fac_tsm_resnet50"], frames=8, size=112, clips=8,
                         batch=4)
    if not args.skip_classifiers:
        if args.quick:
            bench_classifiers(2000, 1000, 2048, 20)
        else:
            bench_classifiers(9500, 3700, 2048, 101)


if __name__ == "__main__":
    main()
