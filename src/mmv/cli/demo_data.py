"""``mmv demo-data --out DIR``: generate the built-in demo corpus (narrated MP4 videos of handwritten digits)."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Generate the demo corpus that 'mmv demo' trains and evaluates on: small H.264/AAC MP4 videos of real handwritten
digits (scikit-learn's digits) moving over cluttered backgrounds, each with a DTMF-like tone pair per digit and
ASR-like WebVTT narrations that say the digit. The digit's motion direction is mirrored by the pitch glide of the
beeps (a detail audio and video share and the narration never mentions). Some videos have no audio track, no
narrations, or only off-topic narrations. Test videos use handwriting that training videos never show.

Everything is a function of --seed: the same seed gives byte-identical files. A folder that already holds the
same corpus is reused as is.

Output (--out DIR): DIR/corpus.json, DIR/{train,test}/manifest.jsonl, DIR/{train,test}/*.mp4 and *.vtt

Example: mmv demo-data --out data/demo --num-train 600"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo-data", help="generate the demo corpus (narrated digit videos)", description=DESCRIPTION,
        usage="mmv demo-data [-h] --out DIR [--seed SEED] [--num-train N] [--num-test N]\n"
              "                     [--workers N] [--overwrite] [--no-progress]",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder, created if needed (required)")
    # NOTE: the output folder was a positional before --out; it still works, with a warning.
    parser.add_argument("old_out", nargs="?", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--num-train", type=int, default=400, help="training videos (default: 400)")
    parser.add_argument("--num-test", type=int, default=200, help="held-out videos (default: 200)")
    parser.add_argument("--workers", type=int, default=None,
                        help="encoding processes (default: up to 2; the output does not depend on it)")
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus made with other parameters")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time

    from mmv.cli.common import UsageError, check_output_dir, output_from_old_positional

    args.out = output_from_old_positional(args, "demo-data", "output folder", "give the output folder: --out DIR")
    if min(args.num_train, args.num_test, args.workers or 0) < 0:
        raise UsageError("--num-train, --num-test and --workers must be >= 0")
    check_output_dir(args.out)
    from mmv.demo.corpus import generate_demo_corpus

    began = time.perf_counter()
    try:
        corpus = generate_demo_corpus(args.out, num_train=args.num_train, num_test=args.num_test, seed=args.seed,
                                      workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress)
    except FileExistsError as err:
        print(f"mmv demo-data: error: {err}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - began
    for split, counts in corpus["counts"].items():
        print(f"{split:5s}: {counts['videos']} videos, {counts['with_audio']} with audio, "
              f"{counts['with_text']} with narrations ({counts['text_off_topic']} off-topic only)")
    print(f"classes: {', '.join(corpus['class_names'])}; attribute: {', '.join(corpus['attribute_names'])}")
    print(f"written to {corpus['root']} in {seconds:.1f} s; description: {corpus['root']}/corpus.json")
    print(json.dumps({"root": corpus["root"], "counts": corpus["counts"], "seconds": round(seconds, 2)}))
    return 0
