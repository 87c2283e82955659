"""``mmv demo``: MMV end to end on a generated corpus, on a CPU, in minutes.

``--compare`` redoes the paper's Table 1."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Run MMV end to end with nothing downloaded: generate the demo corpus (narrated videos of handwritten digits with
a class-specific sound and a motion/pitch attribute shared by vision and audio only), train a tiny MMV model
with the FAC graph using the real training code, evaluate it on held-out videos with the real evaluation code,
and write a report.

Default run (about 7 minutes and 670 CPU seconds on 2 idle CPU cores; later runs with the same --out reuse the
corpus and a finished training run):
  OUT/report.md               results, each metric beside its chance level and the margin
  OUT/results.json            every number (summary, evaluation details, loss curve, timings, settings)
  OUT/loss_curves.png         the loss terms (NCE video-audio, MIL-NCE video-text) during training
  OUT/retrieval_grid.png      text queries and the frames of the videos they retrieve (green: correct digit)
  OUT/similarity_matrix.png   text x video similarities of held-out clips, ordered by class
  OUT/model/                  the trained model (mmv.load("OUT/model"): weights, preprocessing, vocabulary)
  OUT/corpus/ OUT/runs/ OUT/cache/   the corpus, the training run (checkpoint, metrics.jsonl), feature caches

--compare trains Shared, Disjoint and FAC (video+audio+text) and the two-modality VT and VA models, each with
--seeds seeds (default 3: 15 models), and writes OUT/comparison.md and OUT/comparison.json: the paper's Table 1
in miniature (mean +- std over seeds) and whether its qualitative findings hold here. It takes about 15 times
as long as the default run (roughly 2 hours on 2 idle CPU cores); --steps lowers it.
On a busy machine, --threads 1 avoids torch threads waiting for each other.

Examples:
  mmv demo                               # the default FAC run into ./mmv_demo
  mmv demo --out /tmp/demo --quick       # a smoke run of a few seconds (the numbers mean nothing)
  mmv demo --compare --seeds 3 --out runs/compare"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="train and evaluate MMV end to end on a generated corpus (CPU, minutes)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="mmv_demo", metavar="DIR", help="output folder (default: ./mmv_demo)")
    parser.add_argument("--compare", action="store_true",
                        help="train FAC, Shared, Disjoint, VT-only and VA-only and print the Table-1 comparison")
    parser.add_argument("--seeds", type=int, default=3, metavar="N",
                        help="seeds per model with --compare (default: 3; mean and std are over them)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny corpus and a few steps: checks the pipeline in seconds (numbers are meaningless)")
    parser.add_argument("--steps", type=int, default=None, metavar="N", help="training steps per model "
                        "(default: 600; fewer steps give lower numbers)")
    parser.add_argument("--model", choices=("mmv_tiny_s3dg_x2", "mmv_tiny_s3dg", "mmv_tiny_tsm"), default=None,
                        help="the tiny model (default: mmv_tiny_s3dg_x2, S3D-G at 1/4 width)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads (default: one per core, less one per training data "
                        "worker, i.e. 1 on a 2-core machine)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.set_defaults(func=run, on_interrupt="what was finished (the corpus, the training run's checkpoints) is "
                        "kept; run the same command again to continue")
    return parser


def default_threads(cores: int, torch_threads: int, data_workers: int) -> int:
    """Torch threads for the demo: the cores the data workers leave free, never more than torch would use, at least 1.

    The training data workers decode on cores of their own; torch threads on those cores would only wait for them
    (on 2 cores, 2 threads + 1 decoding worker ran 0.9 s per step, 1 thread + 1 worker about 0.5).
    """
    return max(1, min(torch_threads, cores - data_workers))


def run(args: argparse.Namespace) -> int:
    from mmv.cli.common import UsageError, check_output_dir

    for flag, value in (("--threads", args.threads), ("--steps", args.steps), ("--seeds", args.seeds)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    check_output_dir(args.out)
    import torch

    from mmv.demo.config import DemoConfig
    from mmv.demo.run import run_compare, run_demo

    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    else:
        from mmv.runtime import usable_cores

        torch.set_num_threads(default_threads(usable_cores(), torch.get_num_threads(), cfg.data_workers))
    if args.steps is not None:
        cfg = cfg.replace(steps=args.steps, warmup_steps=min(cfg.warmup_steps, max(1, args.steps // 10)))
    if args.model is not None:
        cfg = cfg.replace(model=args.model)
    progress = not args.no_progress
    if args.compare:
        run_compare(cfg, args.out, seeds=args.seeds, progress=progress)
    else:
        run_demo(cfg, args.out, progress=progress)
    return 0
