"""``mmv convert``: a released MMV checkpoint (Haiku/JAX pickle) → an mmv model (safetensors + JSON config)."""
from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        usage="mmv convert [-h] PKL --out OUT [--arch ARCH]",  # --out is required: argparse only lets old calls in
        help="convert a released MMV checkpoint (.pkl) to an mmv model",
        description=(
            "Convert one of the released MMV checkpoints (mmv_s3d.pkl, mmv_tsm_resnet_x1.pkl, mmv_tsm_resnet_x2.pkl) "
            "into an mmv model: a directory with model.safetensors and config.json, or one .safetensors file. "
            "The pickle is read by a restricted unpickler (no JAX, Haiku or dill needed; a file that would run code "
            "is refused). Load the result with mmv.load(OUT) in Python."
        ),
        epilog="Example: mmv convert mmv_s3d.pkl --out models/mmv_s3d   (then: mmv info models/mmv_s3d)",
    )
    p.add_argument("checkpoint", metavar="PKL", help="the released .pkl file")
    # NOTE: the output was a second positional before --out; it still works, with a warning.
    p.add_argument("old_out", nargs="?", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", metavar="OUT", default=None,
                   help="output model folder, or a file name ending in .safetensors (required)")
    p.add_argument("--arch", default=None,
                   help="registered architecture (default: from the file name, as the official code does; "
                        "one of mmv_fac_s3dg, mmv_fac_tsm_resnet50, mmv_fac_tsm_resnet50x2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .common import (UsageError, check_input_file, check_output_dir, check_output_file,
                         output_from_old_positional)

    args.out = output_from_old_positional(args, "convert", "output",
                                          "give the output: --out DIR (or --out FILE.safetensors)")
    # Everything the command line says is checked before the pickle (up to 1.5 GB) is read.
    from ..convert.released import arch_from_filename
    from ..models import list_models

    if args.arch is not None and args.arch not in list_models():
        raise UsageError(f"--arch {args.arch}: unknown architecture; released ones: mmv_fac_s3dg, "
                         "mmv_fac_tsm_resnet50, mmv_fac_tsm_resnet50x2 (all: mmv info --list)")
    check_input_file(args.checkpoint, "PKL")
    try:
        arch = args.arch or arch_from_filename(args.checkpoint)
    except ValueError as err:  # the name does not say: --arch must
        raise UsageError(str(err)) from None
    if str(args.out).endswith(".safetensors"):
        check_output_file(args.out)
    else:
        check_output_dir(args.out)
    from ..checkpoint import load
    from ..convert import convert_checkpoint

    out = convert_checkpoint(args.checkpoint, args.out, arch=arch)
    model = load(out)
    counts = model.parameter_counts()
    print(f"wrote {out} ({model.cfg.video_backbone}, graph {model.cfg.graph}, {counts['total']:,} parameters)")
    return 0
