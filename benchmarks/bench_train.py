"""Training-step throughput of the S3D-G preset: clips/s and peak memory; bf16 autocast and channels_last vs fp32.

One training step is exactly the loop's (``mmv.train.loop``): forward with the preset's model and loss, backward,
gradient-norm clipping, Adam step. The batch is a fixed set of synthetic clips already on the device, so the
numbers measure the model and the optimizer, not data loading. Every variant is timed in the same process, on the
same device, and reported as a ratio to the first one (fp32).

    python benchmarks/bench_train.py                  # CUDA: batch 32, 32x200x200, 3.2 s of 48 kHz audio, K=5
    python benchmarks/bench_train.py --compile        # adds a torch.compile variant
    python benchmarks/bench_train.py --small          # CPU-sized: batch 4, 8x64x64, a few steps (also in the tests)

Prints a table and, last, one JSON line (``--json FILE`` also writes it to a file).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "mmv_fac_s3dg_ht_as.yaml"

# name -> config overrides (run.amp, run.channels_last, run.compile)
VARIANTS = {
    "fp32": ["run.amp=fp32"],
    "bf16": ["run.amp=bf16"],
    "bf16+channels_last": ["run.amp=bf16", "run.channels_last=true"],
    "fp32+channels_last": ["run.amp=fp32", "run.channels_last=true"],
    "bf16+compile": ["run.amp=bf16", "run.compile=true"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="CPU size: batch 4, 8x64x64 frames, 3 timed steps")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--model", help="registered model instead of the preset's (e.g. mmv_tiny_s3dg)")
    parser.add_argument("--batch-size", type=int, help="clips per step (default 32; 4 with --small)")
    parser.add_argument("--frames", type=int, help="frames per clip (default 32; 8 with --small)")
    parser.add_argument("--crop", type=int, help="frame side (default 200; 64 with --small)")
    parser.add_argument("--steps", type=int, help="timed steps per variant (default 20; 3 with --small)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 5; 1 with --small)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS),
                        help="default: fp32, bf16, bf16+channels_last on CUDA; fp32 on CPU")
    parser.add_argument("--compile", action="store_true", help="also time bf16+compile")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    small = {"batch_size": 4, "frames": 8, "crop": 64, "steps": 3, "warmup": 1}
    full = {"batch_size": 32, "frames": 32, "crop": 200, "steps": 20, "warmup": 5}
    for key, value in (small if args.small else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.variants is None:
        args.variants = ["fp32", "bf16", "bf16+channels_last"] if args.device == "cuda" else ["fp32"]
        if args.compile:
            args.variants.append("bf16+compile")
    return args


def make_config(args: argparse.Namespace, variant: str):
    from mmv.train.config import load_config

    overrides = [f"run.batch_size={args.batch_size}", f"data.num_frames={args.frames}", f"data.crop={args.crop}",
                 f"run.device={args.device}", *VARIANTS[variant]]
    if args.model:
        overrides.append(f"model.name={args.model}")
    return load_config(PRESET, overrides)


def make_batch(cfg, batch_size: int, device: torch.device) -> dict[str, Any]:
    """``batch_size`` synthetic clips shaped as the preset's data (all modalities present), on ``device``."""
    from mmv.train.data import num_audio_frames
    from mmv.train.synthetic import SyntheticClips

    data = cfg.data
    clips = SyntheticClips(batch_size, num_frames=data.num_frames, crop=data.crop, audio_frames=num_audio_frames(data),
                           mel_bins=data.num_mel_bins, num_narrations=data.num_narrations, max_words=data.max_words,
                           audio_missing=0.0, text_missing=0.0)
    batch = torch.utils.data.default_collate([clips[i] for i in range(batch_size)])
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def time_variant(args: argparse.Namespace, variant: str, batch: dict[str, Any]) -> dict[str, Any]:
    from mmv.distributed import DistInfo
    from mmv.losses import MMVLoss
    from mmv.train.loop import build_model, get_autocast, model_inputs

    cfg = make_config(args, variant)
    device = torch.device(args.device)
    torch.manual_seed(0)
    raw_model = build_model(cfg, DistInfo(rank=0, local_rank=0, world_size=1, device=device)).train()
    model = torch.compile(raw_model) if cfg.run.compile else raw_model
    loss_fn = MMVLoss(cfg.loss.lambda_va, cfg.loss.lambda_vt, cfg.loss.temperature, cfg.loss.direction)
    params = [p for p in raw_model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.optim.lr)
    autocast = get_autocast(cfg.run.amp, device)

    def step() -> float:
        with autocast():
            out = model(**model_inputs(batch, raw_model))
            losses = loss_fn(**out, audio_mask=batch["audio_mask"], text_mask=batch["text_mask"])
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return losses["loss"].detach()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    loss = float(loss)  # waits for the device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    result = {"variant": variant, "ms_per_step": 1000 * seconds, "clips_per_s": args.batch_size / seconds,
              "loss": loss}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:  # the process's peak resident memory so far (Linux reports KiB)
        result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result  # the model and optimizer are freed here, before the next variant


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    cfg = make_config(args, args.variants[0])
    batch = make_batch(cfg, args.batch_size, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"model {cfg.model.name}, batch {args.batch_size} x {args.frames}x{args.crop}x{args.crop}, audio "
          f"{tuple(batch['audio'].shape[1:])}, narrations {tuple(batch['word_ids'].shape[1:])}, on {name}")
    results = []
    for variant in args.variants:
        results.append(time_variant(args, variant, batch))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    memory_key = "peak_memory_gib" if device.type == "cuda" else "peak_rss_gib"
    base = results[0]
    print(f"{'variant':<22}{'ms/step':>10}{'clips/s':>10}{'speed-up':>10}{memory_key:>17}{'memory ratio':>14}")
    for r in results:
        r["speedup_vs_" + base["variant"]] = r["clips_per_s"] / base["clips_per_s"]
        r["memory_ratio_vs_" + base["variant"]] = r[memory_key] / base[memory_key]
        print(f"{r['variant']:<22}{r['ms_per_step']:>10.1f}{r['clips_per_s']:>10.1f}"
              f"{r['speedup_vs_' + base['variant']]:>10.2f}{r[memory_key]:>17.2f}"
              f"{r['memory_ratio_vs_' + base['variant']]:>14.2f}")
    report = {"device": name, "model": cfg.model.name, "batch_size": args.batch_size, "frames": args.frames,
              "crop": args.crop, "steps": args.steps, "results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
