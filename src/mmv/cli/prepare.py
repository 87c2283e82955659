"""``mmv prepare SRC --out DIR``: pack videos and their narrations into WebDataset tar shards."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Pack a folder of videos (with same-stem caption files: .vtt, .srt, HowTo100M .csv/.json) or a manifest
(.jsonl/.csv with 'video', optional 'caption' and 'label' fields) into WebDataset tar shards, one sample per video:
the encoded video bytes as they are (no re-encoding) and a JSON member with the narrations, label and duration.

Shards stream from local disk or any URL webdataset opens ('pipe:curl -s https://.../shard-{000000..000099}.tar'),
for data that outgrows one disk; train on them with mmv.data.shards.ShardDataset.

Unusable inputs (empty, truncated, not media, audio-only, malformed captions) are left out and reported by reason.

Output: DIR/shard-000000.tar, ... and DIR/shards.json (shard list, sample counts, files left out)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prepare", help="write WebDataset shards from a folder or manifest of videos", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", metavar="SRC", help="a folder of videos or a manifest (.jsonl / .csv)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the shards")
    parser.add_argument("--shard-size", type=int, default=1000, metavar="N", help="videos per shard (default: 1000)")
    parser.add_argument("--labels-from-subfolders", action="store_true",
                        help="folder input: label videos by their class subfolder (SRC/CLASS/video.mp4)")
    parser.add_argument("--captions", metavar="JSON",
                        help="HowTo100M-style caption file for many videos ({video_id: {start, end, text}}), "
                             "matched to videos by file stem; takes precedence over caption files")
    parser.add_argument("--no-check", action="store_true",
                        help="do not probe videos before packing (faster; bad files then surface at training)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import time

    from mmv.data.datasets import read_items
    from mmv.data.shards import INDEX_NAME, write_shards

    began = time.perf_counter()
    options = {"labels_from_subfolders": True} if args.labels_from_subfolders else {}
    if options and not os.path.isdir(args.src):
        raise ValueError("--labels-from-subfolders applies to a folder, not a manifest")
    items = read_items(args.src, **options)
    root = args.src if os.path.isdir(args.src) else os.path.dirname(os.path.abspath(args.src))
    captions = None
    if args.captions:
        from mmv.data.narrations import read_howto100m_captions

        captions = read_howto100m_captions(args.captions)
        matched = sum(os.path.splitext(os.path.basename(i.path))[0] in captions for i in items)
        print(f"captions for {matched} of {len(items)} videos in {args.captions}")
    index = write_shards(items, args.out, shard_size=args.shard_size, root=root, check_videos=not args.no_check,
                         captions=captions)
    seconds = time.perf_counter() - began
    skipped = index["skipped"]["by_reason"]
    print(f"{index['num_samples']} videos in {len(index['shards'])} shard(s) under {args.out} ({seconds:.1f} s)")
    if skipped:
        print(f"left out {sum(skipped.values())}: " + ", ".join(f"{r}: {n}" for r, n in sorted(skipped.items())))
    print(f"index: {os.path.join(args.out, INDEX_NAME)}")
    print(json.dumps({"num_samples": index["num_samples"], "num_shards": len(index["shards"]), "skipped": skipped,
                      "seconds": round(seconds, 2)}))
    return 0
