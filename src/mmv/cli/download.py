"""``mmv download NAME``: a released model, downloaded, converted and cached; prints the cached folder."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Download a released MMV model (DeepMind's Haiku checkpoint), convert it with the safe reader and cache the converted
model, so that mmv.load(NAME) and every --model NAME work offline afterwards. Prints the cached folder.

NAME is one of mmv_s3d (S3D-G), mmv_tsm_resnet_x1 (TSM-ResNet50), mmv_tsm_resnet_x2 (TSM-ResNet50x2).

Environment:
  MMV_HOME         the cache folder (default: the platform's cache folder, e.g. ~/.cache/mmv or $XDG_CACHE_HOME/mmv)
  MMV_RELEASE_URL  where the .pkl files are (default: https://storage.googleapis.com/deepmind-research-mmv); a
                   mirror's URL, or a local folder

An interrupted download resumes where it stopped; the weights are CC BY-NC 4.0 (printed on first download).

Examples:
  mmv download mmv_s3d
  mmv download mmv_s3d --from ~/Downloads/mmv_s3d.pkl     # a file fetched by hand"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("download", help="download, convert and cache a released model by name",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help="mmv_s3d, mmv_tsm_resnet_x1 or mmv_tsm_resnet_x2")
    p.add_argument("--force", action="store_true",
                   help="download and convert again even if cached (the file must match the first download)")
    p.add_argument("--from", dest="source", metavar="FILE", default=None,
                   help="convert this .pkl instead of downloading it (a file placed by hand)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, on_interrupt="the part downloaded so far is kept; run the same command again to resume")


def run(args: argparse.Namespace) -> int:
    from mmv.pretrained import fetch

    print(fetch(args.name, force=args.force, source=args.source, progress=not args.no_progress))
    return 0
