"""Forward+backward time and peak memory of the video-text MIL-NCE: mmv.losses vs two plain PyTorch versions.

Implementations (all compute the same loss: MIL-NCE, "joint" denominator, masked narrations):

* ``mmv``        ``mmv.losses.mil_nce_loss``: a custom autograd function for the log-sum-exp over each bag that
                 works on chunks of rows of the ``[B, B, K]`` scores (bounded memory) and writes its own backward.
* ``vectorised`` scores ``[B, B, K]`` by one einsum, masked ``logsumexp`` over K, then over the row and column.
* ``naive``      the formula as written: ``exp`` of the full ``[B, B, K]`` score tensor, multiplied by the mask and
                 summed; ``-log(positives / denominator)``.

Each (implementation, size) runs in its own subprocess so that peak memory is measured cleanly: on CUDA with
``torch.cuda.max_memory_allocated``; on CPU as the rise of the process's peak resident set size (VmHWM, reset
through ``/proc/self/clear_refs`` once the inputs exist and a tiny warm-up pass has initialised the libraries)
during the first forward+backward at full size. Times are the median
and minimum of ``--repeats`` forward+backward passes, measured in one process per size with the implementations
taking turns (so that other load on the machine hits all of them alike); ratios use the minimum.

Examples::

    python benchmarks/bench_loss.py                       # both paper sizes on CPU
    python benchmarks/bench_loss.py --device cuda --json results/bench_loss.json
    python benchmarks/bench_loss.py --sizes 512x5x256 --threads 1 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMPLEMENTATIONS = ("mmv", "vectorised", "naive")
DEFAULT_SIZES = ("512x5x256", "4096x5x256")
TEMPERATURE = 0.07


# ----------------------------------------------------------------------------------------------------------------
# The baselines
# ----------------------------------------------------------------------------------------------------------------

def naive_mil_nce(video, text, text_mask, temperature):
    """exp() of every video-narration score, masked and summed: the formula typed in directly."""
    import torch
    import torch.nn.functional as F

    video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    similarity = torch.exp(torch.einsum("id,jkd->ijk", video, text) / temperature) * text_mask[None]  # [B, B, K]
    bag_sums = similarity.sum(dim=2)  # [B, B]: sum over the narrations of sample j, for video i
    positives = bag_sums.diagonal()
    denominator = bag_sums.sum(dim=1) + bag_sums.sum(dim=0) - positives  # rows + columns, positives once
    has_text = text_mask.any(dim=1)
    return -(torch.log(positives[has_text]) - torch.log(denominator[has_text])).mean()


def vectorised_mil_nce(video, text, text_mask, temperature):
    """One [B, B, K] score tensor, masked log-sum-exp over the narrations, then over row and column."""
    import torch
    import torch.nn.functional as F

    video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    scores = torch.einsum("id,jkd->ijk", video, text) / temperature  # [B, B, K]
    bags = torch.logsumexp(scores.masked_fill(~text_mask[None], -math.inf), dim=2)  # [B, B]
    eye = torch.eye(bags.shape[0], dtype=torch.bool, device=bags.device)
    denominator = torch.logsumexp(torch.cat([bags, bags.T.masked_fill(eye, -math.inf)], dim=1), dim=1)
    has_text = text_mask.any(dim=1)
    return (denominator - bags.diagonal())[has_text].mean()


def mmv_mil_nce(video, text, text_mask, temperature):
    from mmv.losses import mil_nce_loss

    return mil_nce_loss(video, text, text_mask, temperature=temperature, direction="joint")


# ----------------------------------------------------------------------------------------------------------------
# One measurement (runs in a subprocess)
# ----------------------------------------------------------------------------------------------------------------

def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    # NOTE: writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _make_inputs(batch: int, num_texts: int, dim: int, device: str):
    import torch

    gen = torch.Generator().manual_seed(0)
    video = torch.randn(batch, dim, generator=gen).to(device).requires_grad_(True)
    text = torch.randn(batch, num_texts, dim, generator=gen).to(device).requires_grad_(True)
    counts = torch.randint(0, num_texts + 1, (batch,), generator=gen)  # 0 to K narrations per clip
    text_mask = (torch.arange(num_texts)[None, :] < counts[:, None]).to(device)
    return video, text, text_mask


def _step(implementation: str, video, text, text_mask) -> float:
    loss_fn = {"mmv": mmv_mil_nce, "vectorised": vectorised_mil_nce, "naive": naive_mil_nce}[implementation]
    video.grad = text.grad = None
    loss = loss_fn(video, text, text_mask, TEMPERATURE)
    loss.backward()
    return loss.item()  # .item() synchronises CUDA too


def measure_memory(implementation: str, batch: int, num_texts: int, dim: int, device: str) -> dict:
    """Peak memory above the inputs during one forward+backward (fresh process: nothing cached)."""
    import torch

    _step(implementation, *_make_inputs(8, num_texts, dim, device))  # one-time allocations of torch and BLAS
    video, text, text_mask = _make_inputs(batch, num_texts, dim, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        value = _step(implementation, video, text, text_mask)
        peak_bytes = torch.cuda.max_memory_allocated() - before
    else:
        _reset_peak_rss()
        before = _rss_kib("VmRSS")
        value = _step(implementation, video, text, text_mask)
        peak_bytes = (_rss_kib("VmHWM") - before) * 1024
    grad_norm = float(torch.cat([video.grad.flatten(), text.grad.flatten()]).norm())
    return {"implementation": implementation, "loss": value, "grad_norm": grad_norm, "peak_bytes": peak_bytes}


def measure_time(implementations: list[str], batch: int, num_texts: int, dim: int, device: str,
                 repeats: int) -> dict[str, list[float]]:
    """Seconds per forward+backward, the implementations taking turns so that load on the machine hits all alike."""
    video, text, text_mask = _make_inputs(batch, num_texts, dim, device)
    for implementation in implementations:  # warm-up
        _step(implementation, video, text, text_mask)
    seconds: dict[str, list[float]] = {implementation: [] for implementation in implementations}
    for _ in range(repeats):
        for implementation in implementations:
            start = time.perf_counter()
            _step(implementation, video, text, text_mask)
            seconds[implementation].append(time.perf_counter() - start)
    return seconds


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------

def _parse_size(text: str) -> tuple[int, int, int]:
    try:
        batch, num_texts, dim = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not BxKxD, e.g. 512x5x256") from None
    return batch, num_texts, dim


def _run_worker(args: argparse.Namespace, task: str, implementations: list[str], size: tuple[int, int, int]):
    command = [sys.executable, __file__, "--worker", task, "--implementations", *implementations,
               "--sizes", "x".join(map(str, size)), "--device", args.device, "--repeats", str(args.repeats),
               "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{task} of {implementations} at {size} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _benchmark_size(args: argparse.Namespace, size: tuple[int, int, int]) -> list[dict]:
    seconds = _run_worker(args, "time", args.implementations, size)
    results = []
    for implementation in args.implementations:
        result = _run_worker(args, "memory", [implementation], size)
        batch, num_texts, dim = size
        result.update(batch=batch, num_texts=num_texts, dim=dim, device=args.device,
                      seconds_min=min(seconds[implementation]),
                      seconds_median=statistics.median(seconds[implementation]))
        results.append(result)
    return results


def _summary(results: list[dict]) -> str:
    lines = [f"{'B':>5} {'K':>2} {'D':>4}  {'implementation':<11} {'min s':>8} {'median s':>9} {'peak MiB':>9} "
             f"{'time/mmv':>9} {'mem/mmv':>8}  loss"]
    for result in results:
        ours = next(r for r in results if r["implementation"] == "mmv" and r["batch"] == result["batch"]
                    and r["num_texts"] == result["num_texts"] and r["dim"] == result["dim"])
        lines.append(
            f"{result['batch']:>5} {result['num_texts']:>2} {result['dim']:>4}  {result['implementation']:<11} "
            f"{result['seconds_min']:>8.4f} {result['seconds_median']:>9.4f} {result['peak_bytes'] / 2**20:>9.1f} "
            f"{result['seconds_min'] / ours['seconds_min']:>8.2f}x "
            f"{result['peak_bytes'] / max(ours['peak_bytes'], 1):>7.2f}x  {result['loss']:.6f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time and peak memory of MIL-NCE forward+backward: mmv.losses vs plain PyTorch versions. "
                    "Ratios are baseline / mmv (above 1: mmv is faster or smaller).")
    parser.add_argument("--sizes", nargs="+", type=_parse_size, default=[_parse_size(s) for s in DEFAULT_SIZES],
                        help=f"BxKxD: global batch, narrations per clip, embedding size (default: "
                             f"{' '.join(DEFAULT_SIZES)})")
    parser.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes after a warm-up (default: 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--json", type=Path, help="also write the results here (JSON)")
    parser.add_argument("--worker", choices=("time", "memory"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        if args.worker == "time":
            print(json.dumps(measure_time(args.implementations, *args.sizes[0], args.device, args.repeats)))
        else:
            print(json.dumps(measure_memory(args.implementations[0], *args.sizes[0], args.device)))
        return 0

    if "mmv" not in args.implementations:
        args.implementations.insert(0, "mmv")  # the ratios are against it
    results = [result for size in args.sizes for result in _benchmark_size(args, size)]
    print(_summary(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.json.with_suffix(args.json.suffix + ".tmp")
        temporary.write_text(json.dumps({"results": results, "argv": sys.argv[1:]}, indent=2))
        os.replace(temporary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
