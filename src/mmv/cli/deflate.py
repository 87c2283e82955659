"""``mmv deflate``: turn a video model into an image model, with BN γ/β trained to match the video network."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Deflate a video model into an image model (paper section 3.4): S3D-G kernels are summed over time, TSM's shift is
switched off. Naive deflation differs from the video network on a static clip (zero temporal padding), so this
command also trains the BN scale and shift (gamma, beta) of the deflated visual backbone, and nothing else, with an
L1 loss between its output on each image and the video network's output on a static clip of that image.

The result is a normal saved model (model.safetensors + config.json, marked deflated) whose encode_video accepts
images [B, H, W, 3]; use it with 'mmv eval image-folder|voc2007 --deflated OUT' or 'mmv embed --modality image'."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("deflate", help="video model -> image model with trained BN (paper's deflation)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Example: mmv deflate --model models/mmv_s3d --images imagenet/train "
                                     "--out models/mmv_s3d_deflated")
    p.add_argument("--model", required=True, help="the video model (saved directory/.safetensors)")
    p.add_argument("--images", required=True, help="folder of images (searched recursively) to train gamma/beta on")
    p.add_argument("--out", required=True, help="output model directory (or .safetensors file)")
    p.add_argument("--naive", action="store_true", help="only deflate, no BN training (the paper's 'n-def')")
    p.add_argument("--max-images", type=int, default=None, help="use at most this many images (first, sorted)")
    p.add_argument("--frames", type=int, default=32, help="frames of the static clip (default: 32)")
    p.add_argument("--image-size", type=int, default=256, help="short side before cropping (default: 256)")
    p.add_argument("--crop", type=int, default=224, help="crop side (default: 224)")
    p.add_argument("--epochs", type=int, default=5, help="passes over the images (default: 5)")
    p.add_argument("--batch-size", type=int, default=16, help="images per step (default: 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch order")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import copy

    import mmv
    from mmv.eval.deflation import DeflationConfig, image_paths, train_deflated_bn

    model = mmv.load(args.model, map_location=args.device)
    if args.naive:
        mmv.save(mmv.deflate(copy.deepcopy(model)), args.out, extra={"deflation": {"source": args.model,
                                                                                    "bn_trained": False}})
        print(f"wrote the naively deflated model to {args.out}")
        return 0
    paths = image_paths(args.images)[: args.max_images]
    cfg = DeflationConfig(num_frames=args.frames, size=args.image_size, crop=args.crop, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    result = train_deflated_bn(model, paths, cfg, progress=not args.no_progress)
    info = {"source": args.model, "bn_trained": True, "images": str(args.images), "num_images": len(paths),
            "l1_naive": result.l1_naive, "l1_trained": result.l1_trained, "config": vars(cfg),
            "skipped": result.skipped.as_dict()}
    mmv.save(result.model, args.out, extra={"deflation": info})
    print(f"mean L1 to the video network on {len(paths)} images: naive {result.l1_naive:.4f} -> trained BN "
          f"{result.l1_trained:.4f}; {result.skipped.summary()}")
    print(f"wrote {args.out}")
    return 0
