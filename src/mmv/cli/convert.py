"""``mmv convert``: a released MMV checkpoint (Haiku/JAX pickle) → an mmv model (safetensors + JSON config)."""
from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a released MMV checkpoint (.pkl) to an mmv model",
        description=(
            "Convert one of the released MMV checkpoints (mmv_s3d.pkl, mmv_tsm_resnet_x1.pkl, mmv_tsm_resnet_x2.pkl) "
            "into an mmv model: a directory with model.safetensors and config.json, or one .safetensors file. "
            "The pickle is read by a restricted unpickler (no JAX, Haiku or dill needed; a file that would run code "
            "is refused). Load the result with mmv.load(OUT) in Python."
        ),
        epilog="Example: mmv convert mmv_s3d.pkl models/mmv_s3d   (then: mmv info models/mmv_s3d)",
    )
    p.add_argument("checkpoint", help="the released .pkl file")
    p.add_argument("out", help="output directory, or a file name ending in .safetensors")
    p.add_argument("--arch", default=None,
                   help="registered architecture (default: from the file name, as the official code does; "
                        "one of mmv_fac_s3dg, mmv_fac_tsm_resnet50, mmv_fac_tsm_resnet50x2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..convert import convert_checkpoint
    from ..checkpoint import load

    out = convert_checkpoint(args.checkpoint, args.out, arch=args.arch)
    model = load(out)
    counts = model.parameter_counts()
    print(f"wrote {out} ({model.cfg.video_backbone}, graph {model.cfg.graph}, {counts['total']:,} parameters)")
    return 0
