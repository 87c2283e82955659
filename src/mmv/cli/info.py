"""``mmv info``: architecture summary and parameter counts per part."""
from __future__ import annotations

import argparse
import json

# The paper's Table 2 counts (millions) for comparison.
PAPER_COUNTS_M = {("s3dg", 1.0): 9.1, ("tsm_resnet", 1): 23.5, ("tsm_resnet", 2): 93.9}
PAPER_AUDIO_RESNET50_M = 23.5


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="print an architecture's parameter counts per part",
        description="Print the parameter counts per part (backbones, heads) of a registered architecture or of a "
                    "saved model, beside the paper's numbers where it gives them, and the preprocessing the model "
                    "expects (frames, rate, crop, audio features, vocabulary).",
        epilog="Examples: mmv info --arch mmv_fac_s3dg ; mmv info --model models/mmv_s3d ; mmv info --list",
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="the same as --model MODEL")
    p.add_argument("--model", dest="model_flag", metavar="MODEL", default=None,
                   help="a saved model (folder or .safetensors) or a released model's name")
    p.add_argument("--arch", help="a registered architecture name instead of a saved model")
    p.add_argument("--list", action="store_true", help="list the registered architectures")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import mmv

    if args.list:
        for name in mmv.list_models():
            print(name)
        return 0
    from mmv.cli.common import UsageError

    if args.model and args.model_flag:
        raise UsageError(f"the model given twice: {args.model} and --model {args.model_flag}")
    args.model = args.model or args.model_flag
    if bool(args.model) == bool(args.arch):
        raise UsageError("give either a saved model (--model MODEL) or --arch NAME (see --list)")
    if args.arch and args.arch not in mmv.list_models():
        raise UsageError(f"--arch {args.arch}: unknown architecture (see mmv info --list)")
    model = mmv.load(args.model) if args.model else mmv.create_model(args.arch)
    counts = model.parameter_counts()
    cfg = model.cfg
    if args.json:
        print(json.dumps({"config": cfg.to_dict(), "parameters": counts,
                          "preprocess": model.preprocess.to_dict()}, indent=2))
        return 0
    video_key = (cfg.video_backbone, cfg.video_backbone_args.get("width_mult", 1.0))
    paper = {"video_backbone": PAPER_COUNTS_M.get(video_key)}
    if cfg.audio_backbone_args.get("depth") == 50 and not cfg.audio_backbone_args.get("blocks"):
        paper["audio_backbone"] = PAPER_AUDIO_RESNET50_M
    text = model.text_backbone
    print(f"{args.model or args.arch}: graph {cfg.graph} ({cfg.fac_activation}), modalities {', '.join(cfg.modalities)}")
    print(f"{'part':<24}{'parameters':>14}{'millions':>10}{'paper':>8}")
    for part, n in counts.items():
        ref = paper.get(part)
        print(f"{part:<24}{n:>14,}{n / 1e6:>10.2f}{(f'{ref:.1f}' if ref else ''):>8}")
    if text is not None:
        frozen = text.embed.weight.numel()
        print(f"(the text backbone includes {frozen:,} frozen word-embedding values)")
    print("\npreprocessing (model.preprocess):")
    print("\n".join("  " + line for line in model.preprocess.describe().splitlines()))
    return 0
