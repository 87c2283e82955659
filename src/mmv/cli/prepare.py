"""``mmv prepare SRC --out DIR``: pack videos and their narrations into WebDataset tar shards."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Pack a folder of videos (with same-stem caption files: .vtt, .srt, HowTo100M .csv/.json, also with a language tag
as yt-dlp saves them: talk.en.vtt, talk.en-orig.vtt) or a manifest (.jsonl/.csv with 'video', optional 'caption'
and 'label' fields) into WebDataset tar shards, one sample per video: the encoded video bytes as they are (no
re-encoding) and a JSON member with the narrations, label and duration.

Shards stream from local disk or any URL webdataset opens ('pipe:curl -s https://.../shard-{000000..000099}.tar'),
for data that outgrows one disk; train on them with mmv.data.shards.ShardDataset.

Every file of a source folder is accounted for: packed; left out with a reason (empty, truncated, not media,
audio-only); a caption file that cannot be read (its video is packed without narrations); or ignored as not a
video (counted by extension). The summary gives one line per reason; shards.json names every file. A run that packs
no video from a source that had some exits with status 1 after its summary.

Output: DIR/shard-000000.tar, ... and DIR/shards.json (shard list, sample counts, the full accounting)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prepare", help="write WebDataset shards from a folder or manifest of videos", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", metavar="SRC", help="a folder of videos or a manifest (.jsonl / .csv)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the shards")
    parser.add_argument("--shard-size", type=int, default=1000, metavar="N", help="videos per shard (default: 1000)")
    parser.add_argument("--labels-from-subfolders", action="store_true",
                        help="folder input: label videos by their class subfolder (SRC/CLASS/video.mp4)")
    parser.add_argument("--caption-lang", default="en", metavar="LANG",
                        help="folder input: preferred language of caption files named <video>.<lang>.vtt/.srt "
                             "(yt-dlp, youtube-dl); captions only in other languages are not used (default: en)")
    parser.add_argument("--captions", metavar="JSON",
                        help="HowTo100M-style caption file for many videos ({video_id: {start, end, text}}), "
                             "matched to videos by file stem; takes precedence over caption files")
    parser.add_argument("--no-check", action="store_true",
                        help="do not probe videos before packing (faster; bad files then surface at training)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import time

    from mmv.data.datasets import read_items
    from mmv.data.shards import INDEX_NAME, write_shards
    from mmv.data.skips import SkipReport

    from mmv.cli.common import UsageError, check_input_file, check_output_dir, nothing_produced

    began = time.perf_counter()
    report = SkipReport()
    is_folder = os.path.isdir(args.src)
    if args.labels_from_subfolders and not is_folder:
        raise UsageError("--labels-from-subfolders applies to a folder, not a manifest")
    if args.shard_size < 1:
        raise UsageError(f"--shard-size must be >= 1, got {args.shard_size}")
    if args.captions:
        check_input_file(args.captions, "--captions")
    check_output_dir(args.out)
    options = {"labels_from_subfolders": args.labels_from_subfolders, "caption_lang": args.caption_lang,
               "report": report} if is_folder else {}
    items = read_items(args.src, **options)
    root = args.src if is_folder else os.path.dirname(os.path.abspath(args.src))
    captions = None
    if args.captions:
        from mmv.data.narrations import read_howto100m_captions

        captions = read_howto100m_captions(args.captions)
        matched = sum(os.path.splitext(os.path.basename(i.path))[0] in captions for i in items)
        print(f"captions for {matched} of {len(items)} videos in {args.captions}")
    index = write_shards(items, args.out, shard_size=args.shard_size, root=root, check_videos=not args.no_check,
                         captions=captions, report=report, progress=not args.no_progress)
    seconds = time.perf_counter() - began
    print(f"{index['num_samples']} videos in {len(index['shards'])} shard(s) under {args.out} ({seconds:.1f} s)")
    for line in report.lines(max_files=5):
        print(line)
    if index["without_captions"]:
        language = f" in language {args.caption_lang!r}" if is_folder else ""
        print(f"{len(index['without_captions'])} of {index['num_samples']} packed videos have no captions{language}")
    print(f"index (every file named): {os.path.join(args.out, INDEX_NAME)}")
    accounting = index["skipped"]
    print(json.dumps({"num_samples": index["num_samples"], "num_shards": len(index["shards"]),
                      "skipped": accounting["by_reason"],
                      "kept_with_problems": accounting["kept_with_problems"]["by_reason"],
                      "ignored": accounting["ignored"]["by_extension"],
                      "without_captions": len(index["without_captions"]), "seconds": round(seconds, 2)}))
    ignored = accounting["ignored"]["total"]
    if not index["num_samples"] and (items or ignored):
        found = f"none of the {len(items)} videos could be packed" if items else f"no video among the {ignored} files"
        return nothing_produced("prepare", f"{found} (see the summary above)")
    return 0
