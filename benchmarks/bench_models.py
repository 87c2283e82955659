"""CPU (or GPU) inference throughput of the visual backbones, and the execution options torch offers.

For each backbone (weights drawn at the scale of the official reference rule, so that activations are O(1) as
with trained weights), clips/s at batch 1 (default 32x224x224, the released models' input) for:

* ``baseline``: ``model.eval()`` + ``torch.no_grad()`` on the model as ``mmv`` builds it (channels-last weights,
  BN folded into the convolutions, in-place shift/ReLU/gating at inference);
* ``inference_mode``: ``torch.inference_mode()`` instead of ``no_grad``;
* ``channels_first``: the same model with its weights made contiguous (channels-first), plus inference_mode: what
  the channels-last default gains;
* ``no_hugepages``: inference_mode in a fresh process with ``THP_MEM_ALLOC_ENABLE=0``, i.e. without the
  transparent huge pages that the ``mmv`` command (and this script) turn on for large CPU tensors: what they gain;
* ``default_malloc``: inference_mode in a fresh process without :func:`mmv.runtime.reuse_freed_memory` (which this
  script, like the ``mmv`` command, calls at start): what keeping freed memory in the heap gains;
* ``no_winograd``: inference_mode with the Winograd F(4x4, 3x3) path of the wide 3x3 convolutions turned off
  (:mod:`mmv.models.winograd`; oneDNN's direct convolution instead): what that default gains;
* ``compile``: ``torch.compile(model, dynamic=False)`` plus inference_mode (first calls not timed);
* ``xla``: the same backbone as an XLA program (``benchmarks/xla_backbones.py``: written op for op like the
  official Haiku modules, BN with its statistics passed in, one ``jax.jit``; the weights are copied from the
  ``mmv`` model, so the error column checks that it computes the same function). Needs JAX
  (``pip install -e ".[xla]"``); it is timed interleaved with ``inference_mode`` (one pass of each in turn), so
  both see the same machine, and its row also prints ``mmv ÷ XLA`` speed.

Each option's output is checked against the baseline (max abs error / max |baseline|), and the ratio to the
baseline is printed. The official JAX/XLA models on the same 2-core CPU were measured once at about 0.83 s (S3D-G),
2.05 s (TSM-50) and 7.6 s (TSM-50x2) per clip (batch 1, float32, 32x224x224); the table prints our time per clip
beside these fixed numbers, and the ``xla`` row measures XLA again in this run.

    python benchmarks/bench_models.py                      # the three released backbones at 32x224x224
    python benchmarks/bench_models.py --tiny               # the tiny demo backbones at the demo size
    python benchmarks/bench_models.py --models s3dg --frames 16 --size 112 --repeats 2
    python benchmarks/bench_models.py --models tsm50 --options inference_mode xla --repeats 5   # mmv vs XLA
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import mmv

# The mmv command's settings (what the speed tables report): huge pages must be requested before torch is imported.
mmv.runtime.use_fast_cpu_settings()

import torch  # noqa: E402
from mmv.models import winograd  # noqa: E402
from mmv.runtime import reuse_freed_memory  # noqa: E402

JAX_SECONDS_PER_CLIP = {"mmv_fac_s3dg": 0.83, "mmv_fac_tsm_resnet50": 2.05, "mmv_fac_tsm_resnet50x2": 7.6}
RELEASED = {"s3dg": "mmv_fac_s3dg", "tsm50": "mmv_fac_tsm_resnet50", "tsm50x2": "mmv_fac_tsm_resnet50x2"}
TINY = {"tiny_s3dg": "mmv_tiny_s3dg", "tiny_tsm": "mmv_tiny_tsm"}
OPTIONS = ("baseline", "inference_mode", "channels_first", "no_hugepages", "default_malloc", "no_winograd", "compile",
           "xla")
DEFAULT_OPTIONS = OPTIONS[:-1]  # xla needs jax, which mmv does not depend on: ask for it


def _time(fn, x: torch.Tensor, repeats: int, warmup: int, sync) -> float:
    """Best-of-``repeats`` seconds of ``fn(x)``, ``sync()`` included (the device's pending work)."""
    def call() -> None:
        fn(x)
        sync()

    return _time_interleaved([call], repeats, warmup)[0]


def _time_interleaved(fns: list, repeats: int, warmup: int) -> list[float]:
    """Best-of-``repeats`` seconds of each argument-free ``fn``, calling them in turn (one call of each per round),
    so that a slow spell of the machine slows every one of them alike. Best of N: the least disturbed by other
    processes."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def _time_xla(backbone: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float, torch.Tensor]:
    """(XLA seconds, mmv inference_mode seconds, XLA output) for ``backbone``, timed interleaved on the CPU."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jax  # ImportError when JAX is missing: reported in the row
    import xla_backbones

    program = xla_backbones.program_for(backbone)
    x_host = jax.device_put(x.cpu().numpy())
    xla_seconds, mmv_seconds = _time_interleaved(
        [lambda: program(x_host).block_until_ready(), lambda: _run_inference_mode(backbone, x)], repeats, warmup=1)
    return xla_seconds, mmv_seconds, torch.from_numpy(np.array(program(x_host)))


def _run_inference_mode(model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        model(x)


def _time_in_fresh_process(name: str, args: argparse.Namespace, env: dict[str, str]) -> float:
    """Seconds per batch of the inference_mode option, measured by this script in a new process with ``env``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        command = [sys.executable, __file__, "--models", name, "--options", "inference_mode", "--frames",
                   str(args.frames), "--size", str(args.size), "--batch", str(args.batch), "--repeats",
                   str(args.repeats), "--device", args.device, "--json", out, "--quiet"]
        if args.threads:
            command += ["--threads", str(args.threads)]
        subprocess.run(command, check=True, env={**os.environ, **env})
        with open(out) as f:
            return json.load(f)[0]["seconds_per_batch"]


@torch.no_grad()
def draw_reference_scale_weights_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights at the scale of the official reference rule (``tests/official_params.py``): kernels
    ``N * gain / sqrt(fan_in)`` (gain 1.75 for 3D kernels, 1 otherwise), biases ``0.1 N``, BN scale ``1 + 0.1 N``,
    offset and mean ``0.1 N``, variance ``exp(0.2 N)``. Activations then stay O(1) through every layer as with
    trained weights, whereas PyTorch's default initialisation makes S3D-G's output the same for every clip (and its
    activations tiny), which would hide a wrong result and could time denormal arithmetic."""
    g = torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g, dtype=torch.float64)

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
            w = module.weight
            gain = 1.75 if w.ndim == 5 else 1.0
            w.copy_(normal(w) * gain / math.sqrt(w[0].numel()))
            if module.bias is not None:
                module.bias.copy_(0.1 * normal(module.bias))
        elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.weight.copy_(1 + 0.1 * normal(module.weight))
            module.bias.copy_(0.1 * normal(module.bias))
            module.running_mean.copy_(0.1 * normal(module.running_mean))
            module.running_var.copy_(torch.exp(0.2 * normal(module.running_var)))
    return model


def bench_backbone(name: str, arch: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    backbone = draw_reference_scale_weights_(mmv.create_model(arch).video_backbone).to(device).eval()
    x = torch.rand(args.batch, args.frames, args.size, args.size, 3, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    with torch.no_grad():
        reference = backbone(x)
    base_time = None
    winograd_default = winograd.is_enabled()  # MMV_WINOGRAD=0 turns it off for every row
    for option in args.options:
        model, out = backbone, None
        ctx = torch.no_grad if option == "baseline" else torch.inference_mode
        if option == "channels_first":
            model = backbone.to(memory_format=torch.contiguous_format)
        elif option == "compile":
            # Static shapes: the same block code runs at several sizes, and the dynamic-shape recompilation that
            # triggers fails inside inductor on S3D-G (torch 2.13: "ValueRangeError: Invalid ranges").
            model = torch.compile(backbone, dynamic=False)
        winograd.set_enabled(winograd_default and option != "no_winograd")
        try:
            if option == "xla":
                if device.type != "cpu":
                    continue
                seconds, mmv_seconds, out = _time_xla(backbone, x, args.repeats)
            elif option in ("no_hugepages", "default_malloc"):
                if device.type != "cpu":
                    continue
                env = {"THP_MEM_ALLOC_ENABLE": "0"} if option == "no_hugepages" else {"MMV_REUSE_FREED_MEMORY": "0"}
                seconds = _time_in_fresh_process(name, args, env)
            else:
                with ctx():
                    seconds = _time(model, x, args.repeats, 1 if option != "compile" else 2, sync)
                    out = model(x)
        except Exception as err:  # e.g. no C compiler for torch.compile, jax not installed
            if isinstance(err, ImportError) and option == "xla":
                err = ImportError('jax is not installed (pip install -e ".[xla]")')
            rows.append({"backbone": name, "option": option, "error": f"{type(err).__name__}: {err}"[:200]})
            if not args.quiet:
                print(_format_row(rows[-1]), flush=True)
            continue
        finally:
            winograd.set_enabled(winograd_default)
            fmt = torch.channels_last_3d if arch.endswith("s3dg") else torch.channels_last
            backbone = backbone.to(memory_format=fmt)  # back to the default layout
        err = float((out.float() - reference.float()).abs().max() / reference.abs().max()) if out is not None \
            else float("nan")
        base_time = base_time or seconds
        rows.append({
            "backbone": name, "option": option, "seconds_per_batch": seconds,
            "clips_per_s": args.batch / seconds, "speedup_vs_baseline": base_time / seconds, "rel_error": err,
            "jax_seconds_per_clip": JAX_SECONDS_PER_CLIP.get(arch) if args.size == 224 and args.frames == 32 else None,
        })
        if option == "xla":  # mmv's own time from the interleaved rounds, and mmv's speed over XLA's
            rows[-1].update(mmv_seconds_per_batch=mmv_seconds, mmv_speed_over_xla=seconds / mmv_seconds)
        if not args.quiet:
            print(_format_row(rows[-1]), flush=True)
    return rows


def _format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['backbone']:<10} {r['option']:<15} failed: {r['error']}"
    jax = r.get("jax_seconds_per_clip") if r["option"] != "xla" else None
    vs_jax = f"  JAX (reference) {jax:.2f} s/clip -> x{jax / r['seconds_per_batch']:.2f}" if jax else ""
    line = (f"{r['backbone']:<10} {r['option']:<15} {r['seconds_per_batch']:8.3f} s/batch "
            f"{r['clips_per_s']:8.2f} clips/s  x{r['speedup_vs_baseline']:.2f} vs baseline  err {r['rel_error']:.1e}"
            f"{vs_jax}")
    if "mmv_speed_over_xla" in r:
        line += (f"\n{'':<26} mmv (inference_mode, interleaved with XLA) {r['mmv_seconds_per_batch']:.3f} s/batch:"
                 f" mmv ÷ XLA speed x{r['mmv_speed_over_xla']:.2f}")
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, help=f"subset of {list(RELEASED) + list(TINY)}")
    p.add_argument("--tiny", action="store_true", help="the tiny demo backbones at the demo size (16x64x64)")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--options", nargs="+", default=list(DEFAULT_OPTIONS), choices=OPTIONS,
                   help="execution options to time (default: all but xla, which needs jax)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)  # used by the no_hugepages subprocess
    args = p.parse_args()
    reuse_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = TINY if args.tiny else RELEASED
    args.frames = args.frames or (16 if args.tiny else 32)
    args.size = args.size or (64 if args.tiny else 224)
    names = args.models or list(table)
    device = torch.device(args.device)
    if not args.quiet:
        print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, huge pages "
              f"{os.environ.get('THP_MEM_ALLOC_ENABLE', '0')}, "
              f"input {args.batch}x{args.frames}x{args.size}x{args.size}x3")
    rows = []
    for name in names:
        rows += bench_backbone(name, {**RELEASED, **TINY}[name], args, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
