"""``mmv index SRC... --model MODEL --out LIB``: segments of your videos and sounds, embedded into a search library."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Cut every video and audio file under SRC (files and folders, searched recursively) into segments of the model's
clip length (its frames at its frame rate: 2.56 s for the released models) every --stride seconds, and store each
segment's embeddings, for its pictures and for its sound, in every space the model offers: a library folder LIB
that 'mmv search' and 'mmv serve' query, with no server to run.

Incremental: run it again on the same sources and only new or changed files are indexed (a file is known by its
resolved path, size and modification time); deleted files are dropped. An interrupted run keeps every file it
finished and the next run continues. Broken files are skipped, counted and reported (LIB/index_report.json);
decoding runs in --workers processes while the model computes (on a GPU, or on spare cores).

Large collections: index parts in parallel, on several machines or under torchrun/SLURM, with --shard I/N (or
--shard auto to take the launcher's rank and world size), each into its own folder; then merge them:
  mmv index --merge LIB_PART0 LIB_PART1 ... --out LIB"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("index", help="index your videos and sounds for search (mmv search, mmv serve)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Example: mmv index ~/videos --model mmv_demo/model --out ~/videos.mmvlib")
    p.add_argument("sources", nargs="*", metavar="SRC", help="video and audio files or folders")
    p.add_argument("--model", help="saved model (folder or .safetensors) the library is made with")
    p.add_argument("--out", required=True, metavar="LIB", help="the library folder (created or updated)")
    p.add_argument("--stride", type=float, default=None,
                   help="seconds between segment starts (default: one segment length, no overlap)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: 2 when the model runs on a GPU or cores are left beside its "
                        "torch threads, else 0: decoding between batches, faster when the model fills every core)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward pass (default: 16)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="index only part I of N of the files (or 'auto': torchrun/SLURM rank and world size)")
    p.add_argument("--merge", nargs="+", metavar="LIB_PART", default=None,
                   help="merge libraries indexed in parts (same model and settings) into --out")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, on_interrupt="every file indexed so far is kept; run the same command again to continue")
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from mmv.cli.common import UsageError, check_output_dir, nothing_produced
    from mmv.search.indexer import IndexOptions, index_sources, merge_libraries, parse_shard

    if args.merge:
        if args.sources or args.model:
            raise UsageError("--merge takes libraries only (no SRC, no --model)")
        check_output_dir(args.out)
        print(json.dumps(merge_libraries(args.merge, args.out), indent=2))
        return 0
    if not args.sources or not args.model:
        raise UsageError("give the files or folders to index (SRC) and --model")
    if (args.workers or 0) < 0 or args.batch_size < 1 or (args.stride is not None and not args.stride > 0):
        raise UsageError("--workers must be >= 0, --batch-size >= 1 and --stride > 0")
    try:
        shard = parse_shard(args.shard)
    except ValueError as err:
        raise UsageError(str(err)) from None
    check_output_dir(args.out)
    options = IndexOptions(stride=args.stride, batch_size=args.batch_size, num_workers=args.workers,
                           shard=shard, progress=not args.no_progress)
    from pathlib import Path

    import mmv

    model = mmv.load(args.model, map_location=args.device)
    source = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    report = index_sources(model, args.sources, args.out, model_source=source, options=options)
    skipped = report["skipped"]
    print(f"{report['indexed']} files indexed ({report['segments_added']} segments), {report['unchanged']} "
          f"unchanged, {report['removed']} removed, {skipped['total']} skipped in {report['seconds']:.1f} s "
          f"-> {args.out}")
    for reason, count in skipped["by_reason"].items():
        print(f"  skipped ({reason}): {count}, e.g. {skipped['files'][reason][0]}")
    if report["files_found"] and not report["indexed"] and not report["unchanged"]:
        return nothing_produced("index", f"none of the {report['files_found']} files could be indexed")
    return 0
