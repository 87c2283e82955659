"""``mmv embed``: embeddings of your own videos, audio files, text lines or images."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Embed files with a frozen MMV model and write the embeddings with an index (file, line, window start, end).

  --modality video   video files: windows of the model's frames and rate, resized and centre-cropped as it was
                     trained (or as --frames, --fps, --min-resize, --crop say)
  --modality audio   audio files or the audio track of videos: windows of the model's audio clip length (or
                     --audio-seconds; 0: the whole file), as the model's log-mel spectrogram
  --modality text    .txt files, one query per line, tokenised with the model's vocabulary (or --vocab)
  --modality image   image files (Pillow), resized and cropped as --image-size and --image-crop say (default: the
                     model's): through a deflated model ('mmv deflate'), or, with --static-frames T, through the
                     video network on a static clip of T copies

--space picks the representation: repr (backbone output, for linear probes), va (the video-audio space S_va),
vt (the video-text space S_vat, where text lives). --windows: 'one' centred window, an integer N of evenly spaced
windows, or 'sliding' with --stride seconds. Folders are searched recursively for files of the modality
(--no-recursive: only the files directly in them).

Every setting comes from the model (mmv.load gives model.preprocess: what it was trained on); a flag that
contradicts it is used, announced, and recorded in meta.json under "overrides".

Output (--out DIR): part-NNNNN.npy + part-NNNNN.index.csv (or part-NNNNN.parquet), meta.json, report.json.
Parts are written atomically as the run goes; rerunning the same command skips files already embedded, so an
interrupted run resumes. Unreadable files are skipped, counted by reason and listed in report.json.
Read the result with mmv.eval.embed.read_embeddings(DIR) -> (index rows, array)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("embed", help="embed your own videos, audio, text lines or images",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Example: mmv embed clips/ --model models/mmv_s3d --modality video --space vt "
                                     "--windows 4 --out emb/")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("--model", required=True, help="saved model (directory or .safetensors) or an architecture name")
    p.add_argument("--modality", choices=("video", "audio", "text", "image"), required=True)
    p.add_argument("--space", choices=("repr", "va", "vt"), default="repr", help="representation (default: repr)")
    p.add_argument("--windows", default="one", help="one | N | sliding (default: one)")
    p.add_argument("--stride", type=float, default=None, help="seconds between sliding windows")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=("npy", "parquet"), default="npy", help="output format (default: npy)")
    p.add_argument("--vocab", default=None, help="vocabulary file for --modality text (default: the model's own)")
    p.add_argument("--frames", type=int, default=None, help="frames per video window (default: the model's)")
    p.add_argument("--fps", type=float, default=None, help="frame rate of a video window (default: the model's)")
    p.add_argument("--min-resize", type=int, default=None, help="short side before cropping (default: the model's)")
    p.add_argument("--crop", type=int, default=None, help="video crop side (default: the model's)")
    p.add_argument("--audio-seconds", type=float, default=None,
                   help="audio window length (default: the model's; 0: the whole file as one window)")
    p.add_argument("--sample-rate", type=int, default=None, help="audio sample rate (default: the model's)")
    p.add_argument("--image-size", type=int, default=None, help="image short side before cropping (default: the "
                   "model's)")
    p.add_argument("--image-crop", type=int, default=None, help="image crop side (default: the model's)")
    p.add_argument("--static-frames", type=int, default=None,
                   help="images through the video network as static clips of this many frames")
    p.add_argument("--files-per-part", type=int, default=64, help="files per written part (default: 64)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: 8)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-recursive", action="store_true", help="do not look into sub-folders of the given folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run, on_interrupt="the parts written so far are kept; run the same command again to continue")
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from mmv.cli.common import UsageError, check_input_file, check_output_dir, nothing_produced, warn
    from mmv.data.windows import Windowing

    # The command line is checked before the model is loaded and before anything is written.
    if args.modality == "image" and args.crop is not None:
        if args.image_crop is not None:
            raise UsageError("--crop is the video crop; give the image crop once, as --image-crop")
        warn("embed", "--crop with --modality image is deprecated; use --image-crop (--crop is the video crop)")
        args.image_crop, args.crop = args.crop, None
    if args.files_per_part < 1 or args.batch_size < 1 or args.workers < 0:
        raise UsageError("--files-per-part and --batch-size must be >= 1, --workers >= 0")
    try:
        windowing = Windowing.parse(args.windows, args.stride)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.vocab:
        check_input_file(args.vocab, "--vocab")
    check_output_dir(args.out)
    from mmv.eval.embed import EmbedOptions, embed_files
    from mmv.eval.io import load_tokenizer, resolve_model

    model = resolve_model(args.model, args.device)
    preprocess, overrides = model.preprocess.override(**{
        "video.num_frames": args.frames, "video.fps": args.fps, "video.min_resize": args.min_resize,
        "video.crop": args.crop, "audio.clip_seconds": args.audio_seconds or None,
        "audio.mel.sample_rate": args.sample_rate, "image.min_resize": args.image_size, "image.crop": args.image_crop})
    for key, change in overrides.items():
        print(f"{key}: {change['used']} instead of the model's {change['model']} (flag)")
    opts = EmbedOptions(modality=args.modality, space=args.space, windowing=windowing,
                        preprocess=preprocess, overrides=overrides, whole_audio=args.audio_seconds == 0,
                        static_frames=args.static_frames, vocab=args.vocab)
    if args.modality == "image" and args.static_frames is None and not getattr(model, "deflated", False):
        raise UsageError("images need a deflated model ('mmv deflate') or --static-frames T for the video network")
    tokenizer = load_tokenizer(args.vocab, max_words=preprocess.text.max_words) if args.vocab else None
    report = embed_files(model, args.paths, args.out, opts, tokenizer=tokenizer, fmt=args.format,
                         files_per_part=args.files_per_part, batch_size=args.batch_size, num_workers=args.workers,
                         progress=not args.no_progress, recursive=not args.no_recursive)
    print(json.dumps({k: v for k, v in report.items() if k != "skipped"} | {"skipped": report["skipped"]["by_reason"]},
                     indent=2))
    if report["files"] and not report["embedded"] and not report["already_embedded"]:
        return nothing_produced("embed", f"none of the {report['files']} files could be embedded (see "
                                         f"{args.out}/report.json)")
    return 0
