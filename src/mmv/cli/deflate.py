"""``mmv deflate``: turn a video model into an image model, with BN γ/β trained to match the video network."""
from __future__ import annotations

import argparse

from mmv.cli.common import DeprecatedFlag

DESCRIPTION = """\
Deflate a video model into an image model (paper section 3.4): S3D-G kernels are summed over time, TSM's shift is
switched off. Naive deflation differs from the video network on a static clip (zero temporal padding), so this
command also trains the BN scale and shift (gamma, beta) of the deflated visual backbone, and nothing else, with an
L1 loss between its output on each image and the video network's output on a static clip of that image.

Images are resized to --image-size and centre-cropped to --image-crop, and the static clip has --static-frames
frames (default: the model's own settings, model.preprocess).

The result is a normal saved model (model.safetensors + config.json, marked deflated) whose encode_video accepts
images [B, H, W, 3]; use it with 'mmv eval image-folder|voc2007 --deflated OUT' or 'mmv embed --modality image'.

If the training does not bring the mean L1 below the naive deflation's, nothing is written and the command exits
with status 1: --naive saves the naive deflation, --force saves the trained one anyway."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("deflate", help="video model -> image model with trained BN (paper's deflation)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Example: mmv deflate --model models/mmv_s3d --images imagenet/train "
                                     "--out models/mmv_s3d_deflated")
    p.add_argument("--model", required=True, help="the video model (saved folder, .safetensors or released name)")
    p.add_argument("--images", required=True, help="folder of images (searched recursively) to train gamma/beta on")
    p.add_argument("--out", required=True, help="output model directory (or .safetensors file)")
    p.add_argument("--naive", action="store_true", help="only deflate, no BN training (the paper's 'n-def')")
    p.add_argument("--max-images", type=int, default=None, help="use at most this many images (first, sorted)")
    p.add_argument("--static-frames", type=int, default=None,
                   help="frames of the static clip given to the video network (default: the model's frames)")
    p.add_argument("--image-size", type=int, default=None, help="short side before cropping (default: the model's)")
    p.add_argument("--image-crop", type=int, default=None, help="image crop side (default: the model's)")
    # NOTE: old spellings, from before one vocabulary of flags across commands (docs/cli.md).
    p.add_argument("--frames", dest="static_frames", type=int, action=DeprecatedFlag, new="--static-frames")
    p.add_argument("--crop", dest="image_crop", type=int, action=DeprecatedFlag, new="--image-crop")
    p.add_argument("--epochs", type=int, default=5, help="passes over the images (default: 5)")
    p.add_argument("--batch-size", type=int, default=16, help="images per step (default: 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch order")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--force", action="store_true",
                   help="save the trained model even if its L1 to the video network is not below the naive one's")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import copy

    from mmv.cli.common import UsageError, check_output_dir, check_output_file

    # The command line is checked before the model is loaded and the images are read.
    positive = {"--max-images": args.max_images, "--static-frames": args.static_frames,
                "--image-size": args.image_size, "--image-crop": args.image_crop, "--epochs": args.epochs,
                "--batch-size": args.batch_size}
    wrong = [flag for flag, value in positive.items() if value is not None and value < 1]
    if wrong or not args.lr > 0:
        raise UsageError(f"{', '.join(wrong) or '--lr'}: must be > 0")
    if args.out.endswith(".safetensors"):
        check_output_file(args.out)
    else:
        check_output_dir(args.out)
    import mmv
    from mmv.eval.deflation import DeflationConfig, image_paths, train_deflated_bn

    model = mmv.load(args.model, map_location=args.device)
    if args.naive:
        mmv.save(mmv.deflate(copy.deepcopy(model)), args.out, extra={"deflation": {"source": args.model,
                                                                                    "bn_trained": False}})
        print(f"wrote the naively deflated model to {args.out}")
        return 0
    paths = image_paths(args.images)[: args.max_images]
    cfg = DeflationConfig(num_frames=args.static_frames, size=args.image_size, crop=args.image_crop,
                          epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    result = train_deflated_bn(model, paths, cfg, progress=not args.no_progress)
    print(f"mean L1 to the video network on {result.num_images} images: naive {result.l1_naive:.4f} -> trained BN "
          f"{result.l1_trained:.4f}; {result.skipped.summary()}")
    if not result.l1_trained < result.l1_naive:
        # Training made the deflated network further from the video network than no training: such a model is
        # worse than the naive deflation at the one thing it is for, so it is not written unless asked.
        message = (f"the trained BN parameters do not lower the mean L1 to the video network (naive "
                   f"{result.l1_naive:.6f}, trained {result.l1_trained:.6f})")
        if not args.force:
            raise RuntimeError(f"{message}: nothing written; --naive saves the naive deflation, --force the trained "
                               "one (or try a lower --lr, more images)")
        from mmv.cli.common import warn

        warn("deflate", f"{message}; saved anyway (--force)")
    info = {"source": args.model, "bn_trained": True, "images": str(args.images), "num_images": result.num_images,
            "l1_naive": result.l1_naive, "l1_trained": result.l1_trained, "config": vars(result.config),
            "skipped": result.skipped.as_dict()}
    mmv.save(result.model, args.out, extra={"deflation": info})
    print(f"wrote {args.out}")
    return 0
