"""``mmv train``: pre-train an MMV model from a YAML preset, on one CPU, one GPU or many through torchrun."""
from __future__ import annotations

import argparse
import json
import sys

from mmv.cli.common import UsageError

EXAMPLES = """\
examples:
  # a smoke run on synthetic clips (one CPU process, a minute)
  mmv train --config configs/synthetic_tiny.yaml --out runs/smoke

  # the CPU demo size on the demo corpus (after 'mmv demo-data --out data/demo' and 'mmv vocab')
  mmv train --config configs/demo_cpu.yaml

  # override any config key (key.sub=value, values in YAML syntax; list items by index)
  mmv train --config configs/demo_cpu.yaml run.steps=200 optim.lr=1e-3 data.datasets.0.path=data/demo/train

  # continue a run exactly where it stopped (its run directory's latest checkpoint), or from one checkpoint
  mmv train --config configs/demo_cpu.yaml --resume auto
  mmv train --resume runs/demo_cpu/ckpt_400

  # one node, 8 GPUs (global batch 4096 = 512 per GPU)
  torchrun --standalone --nproc_per_node 8 -m mmv.cli.main train --config configs/mmv_fac_s3dg_ht_as.yaml

  # several nodes: run on every node with its own --node_rank
  torchrun --nnodes 4 --nproc_per_node 8 --node_rank $NODE_RANK --master_addr $MASTER --master_port 29500 \\
      -m mmv.cli.main train --config configs/mmv_fac_s3dg_ht_as.yaml --resume auto

  # print the resolved config and exit
  mmv train --config configs/mmv_fac_s3dg_ht_as.yaml run.steps=1000 --print-config

Output (--out DIR, or the config's run.out_dir): config.yaml (the resolved config), ckpt_<step>/ (model.safetensors +
config.json, readable by mmv.load and 'mmv eval'; optimizer.safetensors; trainer_state.json), latest, metrics.jsonl,
tensorboard/. The config is validated (every key and value, the model's name) before the run folder is created.
SIGTERM/SIGINT finish the current step, write a checkpoint and exit with status 3; see docs/training.md for SLURM.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="pre-train an MMV model (NCE video-audio + MIL-NCE video-text)",
        description="Pre-train an MMV model with the paper's recipe from a YAML preset (configs/*.yaml), with "
                    "key.sub=value overrides. Runs as one process, or as every process of a torchrun launch.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="a YAML config (configs/*.yaml); optional with --resume CHECKPOINT")
    # NOTE: REMAINDER, so that options may follow the overrides ('... run.steps=9 --resume auto'); the options
    # caught in it are parsed again in _split_options.
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="config overrides, e.g. run.steps=1000 optim.lr=1e-3 model.overrides.graph=shared")
    p.add_argument("--resume", metavar="PATH|auto",
                   help="continue from a checkpoint directory (or a run directory's latest), or 'auto': the "
                        "latest checkpoint of run.out_dir if there is one, else start")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="the run folder (checkpoints, metrics): the same as run.out_dir=DIR (default: the config's)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the same as run.progress=false)")
    p.set_defaults(func=run)


def _split_options(args: argparse.Namespace) -> None:
    """Moves options that came after the first override out of ``args.overrides``; rejects anything else."""
    late = argparse.ArgumentParser(prog="mmv train", add_help=False)
    late.add_argument("--config")
    late.add_argument("--resume")
    late.add_argument("--out")
    late.add_argument("--print-config", action="store_true")
    late.add_argument("--no-progress", action="store_true")
    options, overrides = late.parse_known_args(args.overrides)
    for name in ("config", "resume", "out"):
        if getattr(options, name) is not None:
            if getattr(args, name) is not None:
                raise UsageError(f"--{name} given twice")
            setattr(args, name, getattr(options, name))
    args.print_config = args.print_config or options.print_config
    args.no_progress = args.no_progress or options.no_progress
    bad = [item for item in overrides if item.startswith("-") or "=" not in item]
    if bad:
        raise UsageError(f"unrecognized argument {bad[0]!r}: overrides are KEY=VALUE (see mmv train --help)")
    args.overrides = overrides


def _config(args: argparse.Namespace):  # -> TrainConfig
    from mmv.train.checkpoint import read_trainer_state, resolve_resume
    from mmv.train.config import apply_overrides, config_from_dict, load_config

    # The flags are overrides like the others, applied last.
    # NOTE: a JSON string is a YAML string too: a folder named 'yes' or '2024' stays a string.
    overrides = list(args.overrides) + [f"run.out_dir={json.dumps(args.out)}"] * (args.out is not None) + \
        ["run.progress=false"] * args.no_progress
    if args.config:
        cfg = load_config(args.config, overrides)
    elif args.resume and args.resume != "auto":
        # The checkpoint carries the config it was trained with.
        checkpoint = resolve_resume(args.resume, ".")
        cfg = apply_overrides(config_from_dict(read_trainer_state(checkpoint)["config"]), overrides)
    else:
        raise UsageError("give --config FILE (or --resume CHECKPOINT, whose stored config is then used)")
    if args.resume:
        cfg = apply_overrides(cfg, [f"run.resume={args.resume}"])
    return cfg


def run(args: argparse.Namespace) -> int:
    import yaml

    from mmv.distributed import world_info_from_env
    from mmv.train.config import config_to_dict
    from mmv.train.loop import train

    from mmv.cli.common import check_output_dir
    from mmv.train.config import ConfigError

    _split_options(args)
    try:
        cfg = _config(args)  # validated, the model's name included: nothing is created for a config that cannot run
    except ConfigError as err:
        raise UsageError(str(err)) from None
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False), end="")
        return 0
    check_output_dir(cfg.run.out_dir, "run.out_dir")
    summary = train(cfg)
    if world_info_from_env()[0] == 0:  # rank 0 reports (the process group is already gone)
        print(json.dumps(summary, indent=2))
        line = f"{summary['status']} at step {summary['step']}; latest checkpoint: {summary['checkpoint']}"
        if summary["loss"] is not None:
            line += f"; loss {summary['loss']:.4f}"
        print(line, file=sys.stderr)
    # Exit status 3: stopped by SIGTERM/SIGINT after writing a checkpoint (continue with --resume auto).
    return 0 if summary["status"] == "completed" else 3
