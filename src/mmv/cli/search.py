"""``mmv search LIB QUERY``: find moments in an indexed library by a sentence, a sound, an image or a video."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Search a library made by 'mmv index'. The query is a sentence, or --audio FILE (a sound, or a video's soundtrack;
--start/--end pick a time range of it), --image FILE or --video FILE. --target chooses which side of the segments
is matched: their pictures (video, default) or their sound (audio):

  sentence -> pictures   in the space where text lives (S_vat)
  sentence -> sound      the same space, reached by audio through the video's head (FAC, Shared): MMV never
                         paired text and audio in training, yet they compare there
  sound    -> pictures or sound, image/video -> pictures or sound: in the fine video-audio space (S_va)

A pair the model cannot compare is refused with the reason. Neighbouring segments of one file merge into one
moment. Results: rank, score, file, time range; --json prints [{"path", "start", "end", "score", ...}], best
first. The model is the one the library was made with (recorded in it; --model if it moved)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("search", help="search an indexed library by sentence, sound, image or video",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog='Examples: mmv search lib "someone chops onions" ; '
                                     "mmv search lib --audio bird.wav --target audio --json")
    p.add_argument("library", metavar="LIB", help="a library folder ('mmv index')")
    p.add_argument("text", nargs="?", metavar="QUERY", help="a sentence")
    query = p.add_mutually_exclusive_group()
    query.add_argument("--audio", metavar="FILE", help="search by a sound (an audio file or a video's soundtrack)")
    query.add_argument("--image", metavar="FILE", help="search by an image")
    query.add_argument("--video", metavar="FILE", help="search by a video")
    p.add_argument("--start", type=float, default=None, help="start (s) of the query file's part to use")
    p.add_argument("--end", type=float, default=None, help="end (s) of the query file's part to use")
    p.add_argument("--target", choices=("video", "audio"), default="video",
                   help="match the segments' pictures (video, default) or their sound (audio)")
    p.add_argument("--top-k", type=int, default=10, help="moments to return (default: 10)")
    p.add_argument("--json", action="store_true", help="print JSON: a list of moments, best first")
    p.add_argument("--model", default=None, help="the library's model, if it is not where the library says")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run)
    return p


def query_from_args(args: argparse.Namespace):
    from mmv.cli.common import UsageError, check_input_file
    from mmv.search.query import Query

    files = [(kind, getattr(args, kind)) for kind in ("audio", "image", "video") if getattr(args, kind)]
    if bool(args.text) == bool(files):
        raise UsageError("give either a sentence or one of --audio/--image/--video")
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if args.text:
        if args.start is not None or args.end is not None:
            raise UsageError("--start/--end apply to a query file, not to a sentence")
        return Query("text", text=args.text)
    kind, path = files[0]
    check_input_file(path, f"--{kind}")
    return Query(kind, path=path, start=args.start, end=args.end)


def run(args: argparse.Namespace) -> int:
    import json
    import os

    query = query_from_args(args)
    import mmv
    from mmv.search.query import Searcher

    model = mmv.load(args.model, map_location=args.device) if args.model else None
    searcher = Searcher(args.library, model=model, device=args.device)
    try:
        moments = searcher.search(query, target=args.target, top_k=args.top_k)
    finally:
        searcher.close()
    if args.json:
        print(json.dumps([m.as_dict() for m in moments], indent=2))
        return 0
    if not moments:
        print("nothing found (is the library empty?)")
    for rank, m in enumerate(moments, 1):
        print(f"{rank:>3}  {m.score:6.3f}  {os.path.basename(m.path)}  {m.start:7.2f}-{m.end:7.2f} s  ({m.path})")
    return 0
