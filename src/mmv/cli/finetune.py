"""``mmv finetune TASK --model M --data DIR``: fine-tune the video network and a linear classifier (Table 2 "FT")."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

TASKS = {
    "ucf101": "UCF101 (ucfTrainTestlist/, UCF-101/<Class>/*.avi), splits 1-3",
    "hmdb51": "HMDB51 (testTrainMulti_7030_splits/, <class>/*.avi), splits 1-3",
    "video-folder": "<data>/{train,test}/<class>/* or <data>/<class>/* (70/30 seeded split)",
    "manifest": "<data>/{train,test}/manifest.jsonl with a 'label' per video (e.g. the demo corpus)",
}

DESCRIPTION = """Fine-tune the whole visual network of a pre-trained MMV model plus a new linear classifier on a
video classification dataset, then score the test videos (the "FT" columns of the paper's Table 2).

Tasks:
""" + "\n".join(f"  {name:<13} {text}" for name, text in TASKS.items()) + """

The paper does not give its fine-tuning recipe; the defaults are the usual one of this family (docs/evaluation.md
section 8), each an option below: SGD with momentum 0.9 and weight decay 1e-4, learning rate 0.005 for the
backbone and 0.05 for the classifier, 1 warm-up epoch then a cosine to 0 over 20 epochs, dropout 0.5, the model's
own clips with random crop, flip, colour and scale jitter; at test time 10 windows x 3 crops per video, class
probabilities averaged. Clip flags override the model's clips as in 'mmv eval'.

Each split runs in OUT/finetune-<task>/<split>/ (video-folder: finetune-folder): checkpoints ckpt_<step>/
(written atomically; 'mmv.load' reads the fine-tuned network from them) every epoch, then result.json.
OUT/finetune-<task>.json and .md hold top-1 and top-5 per split and their mean. --resume auto continues an
interrupted run exactly where its last checkpoint was written (same step, batch and random state) and reads
finished splits back; SIGTERM/SIGINT finish the current step and write a checkpoint (exit status 3)."""

EXAMPLES = """examples:
  mmv finetune ucf101 --model models/mmv_s3d --data $UCF --out results/s3d --device cuda --batch-size 32 --workers 8
  mmv finetune ucf101 --model models/mmv_s3d --data $UCF --out results/s3d --resume auto       # after a stop
  torchrun --standalone --nproc_per_node 4 -m mmv.cli.main finetune hmdb51 --model models/mmv_s3d --data $HMDB \\
      --device cuda --batch-size 8                               # global batch 32
  mmv finetune manifest --model mmv_demo/model --data mmv_demo/corpus --no-flip --no-color-jitter --epochs 10"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("finetune", help="fine-tune the video network on UCF101/HMDB51 (Table 2 'FT')",
                              description=DESCRIPTION, epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=sorted(TASKS), metavar="TASK", help="one of: " + ", ".join(TASKS))
    p.add_argument("--model", required=True, help="saved model (directory or .safetensors) or a released name")
    p.add_argument("--data", required=True, help="dataset root in the task's layout")
    p.add_argument("--out", default="finetune_results", help="results and runs folder (default: finetune_results)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each process its local GPU)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per process and step (default: 8)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes per training process (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the classifier, clips, augmentation, dropout")
    p.add_argument("--splits", default="1,2,3", help="official splits to run (default: 1,2,3)")
    p.add_argument("--video-root", default=None, help="HMDB51 videos folder when not under --data")
    p.add_argument("--allow-partial", action="store_true",
                   help="fine-tune on a UCF101/HMDB51 copy that lacks listed videos (results marked partial)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    v = p.add_argument_group("clips (default: the model's own)")
    v.add_argument("--frames", type=int, default=None, help="frames per clip")
    v.add_argument("--fps", type=float, default=None, help="frame rate of a clip")
    v.add_argument("--min-resize", type=int, default=None, help="short side before cropping")
    v.add_argument("--crop", type=int, default=None, help="crop side")

    r = p.add_argument_group("recipe")
    r.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd", help="default: sgd")
    r.add_argument("--backbone-lr", type=float, default=0.005, help="peak learning rate of the backbone "
                   "(default: 0.005)")
    r.add_argument("--head-lr", type=float, default=0.05, help="peak learning rate of the classifier (default: 0.05)")
    r.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    r.add_argument("--weight-decay", type=float, default=1e-4, help="default: 1e-4")
    r.add_argument("--epochs", type=int, default=20, help="default: 20")
    r.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up, then cosine (default: 1)")
    r.add_argument("--dropout", type=float, default=0.5, help="dropout before the classifier (default: 0.5)")
    r.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    r.add_argument("--no-color-jitter", action="store_true", help="no colour augmentation")
    r.add_argument("--scale-jitter", default="0.8,1.2",
                   help="LOW,HIGH factor on the resized short side before the crop, or 'none' (default: 0.8,1.2)")
    r.add_argument("--freeze-bn", action="store_true", help="keep the pre-trained BatchNorm statistics")
    r.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (GPUs)")
    r.add_argument("--amp", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bfloat16 on CUDA, float32 on CPU (default)")

    t = p.add_argument_group("test")
    t.add_argument("--windows", type=int, default=10, help="evenly spaced windows per test video (default: 10)")
    t.add_argument("--crops", type=int, choices=(1, 3), default=3, help="spatial crops per window (default: 3)")
    t.add_argument("--eval-batch-size", type=int, default=8, help="clips per forward pass at test time")

    c = p.add_argument_group("checkpoints")
    c.add_argument("--resume", metavar="auto|PATH", default="",
                   help="auto: continue the runs under --out (finished splits are read back); or a checkpoint")
    c.add_argument("--save-every", type=int, default=0, help="steps between checkpoints (default: every epoch)")
    c.add_argument("--keep-last", type=int, default=2, help="checkpoints kept per split (default: 2)")
    c.add_argument("--stop-after", type=int, default=0,
                   help="stop with a checkpoint after this many steps (a time-limited job; continue with --resume)")
    # resolve_preprocess (shared with 'mmv eval') also reads the audio and image flags, which fine-tuning lacks.
    p.set_defaults(func=run, audio_seconds=None, sample_rate=None, image_size=None, image_crop=None,
                   on_interrupt="the checkpoints written so far are kept; continue with --resume auto")
    return p


def _scale_jitter(text: str) -> tuple[float, float] | None:
    from mmv.cli.common import UsageError

    if text.strip().lower() == "none":
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--scale-jitter must be LOW,HIGH or 'none', got {text!r}") from None
    if not 0 < low <= high:
        raise UsageError(f"--scale-jitter needs 0 < LOW <= HIGH, got {text!r}")
    return low, high


def _config(args: argparse.Namespace):  # -> FinetuneConfig
    """The recipe from the flags, checked before anything is read or written (a bad value exits 2)."""
    from mmv.cli.common import UsageError
    from mmv.eval.finetune import FinetuneConfig

    wrong = [flag for flag, value in (("--backbone-lr", args.backbone_lr), ("--head-lr", args.head_lr),
                                      ("--batch-size", args.batch_size), ("--windows", args.windows),
                                      ("--eval-batch-size", args.eval_batch_size), ("--keep-last", args.keep_last))
             if not value > 0]
    if wrong:
        raise UsageError(f"{', '.join(wrong)}: must be > 0")
    try:
        return FinetuneConfig(
            optimizer=args.optimizer, backbone_lr=args.backbone_lr, head_lr=args.head_lr, momentum=args.momentum,
            weight_decay=args.weight_decay, epochs=args.epochs, warmup_epochs=args.warmup_epochs,
            batch_size=args.batch_size, dropout=args.dropout, flip=not args.no_flip,
            color_jitter=not args.no_color_jitter, scale_jitter=_scale_jitter(args.scale_jitter),
            freeze_bn=args.freeze_bn, test_windows=args.windows, test_crops=args.crops, amp=args.amp,
            sync_bn=args.sync_bn, workers=args.workers, eval_batch_size=args.eval_batch_size,
            save_every=args.save_every, keep_last=args.keep_last, stop_after=args.stop_after, seed=args.seed,
            device=args.device)
    except ValueError as err:
        raise UsageError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from mmv.cli.common import check_output_dir
    from mmv.cli.eval import resolve_preprocess
    from mmv.distributed import world_info_from_env
    from mmv.eval.finetune import finetune, finetune_table
    from mmv.eval.io import resolve_model, write_report

    cfg = _config(args)
    check_output_dir(args.out)
    model = resolve_model(args.model, "cpu")  # each process moves its copy to its own device
    preprocess, settings = resolve_preprocess(args, model)
    cfg = dataclasses.replace(cfg, spec=preprocess.video)
    dataset = {"video-folder": "folder"}.get(args.task, args.task)
    splits = tuple(int(s) for s in args.splits.split(","))
    result = finetune(model, args.data, args.out, dataset=dataset, splits=splits, cfg=cfg, video_root=args.video_root,
                      resume=args.resume, progress=not args.no_progress, allow_partial=args.allow_partial)
    if world_info_from_env()[0] != 0:
        return 0 if result["status"] == "completed" else 3
    result["model"] = args.model
    result["preprocess"] = settings
    table = finetune_table(result)
    json_path, md_path = write_report(Path(args.out), f"finetune-{dataset}", result, table)
    print(table)
    print(f"\nwrote {json_path} and {md_path}")
    if result["status"] != "completed":
        print(f"mmv finetune: {result['status']}; continue with --resume auto", file=sys.stderr)
        return 3
    return 0
