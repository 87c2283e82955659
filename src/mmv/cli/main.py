"""The ``mmv`` command line: one sub-command per module in :mod:`mmv.cli`.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which registers the parser and
sets ``func``) so that ``mmv --help`` lists them all while each ``mmv CMD --help`` shows only its own options.
Sub-command modules import heavy dependencies inside their ``run`` function, so ``mmv --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mmv.extras import MissingDependencyError

# Order here is the order shown by ``mmv --help``.
SUBCOMMAND_MODULES = (
    "demo",
    "demo_data",
    "convert",
    "info",
    "embed",
    "train",
    "eval",
    "deflate",
    "prepare",
    "vocab",
    "transcribe",
    "index",
    "search",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmv",
        description="MMV: self-supervised multimodal versatile networks (video, audio, text) in PyTorch.",
        epilog="Run 'mmv COMMAND --help' for the options of one command. Start with 'mmv demo'.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"mmv.cli.{name}")
        except ModuleNotFoundError as err:  # a sub-command whose module is not part of this build
            if err.name == f"mmv.cli.{name}":
                continue
            raise
        module.add_parser(subparsers)
    return parser


def entry() -> int:
    """The ``mmv`` console script: :func:`main` in a process tuned for fast CPU forward passes (``mmv.runtime``)."""
    from mmv.runtime import use_fast_cpu_settings

    # Process-wide, so only here, where the process is ours, and not in main(). It must come before torch is
    # imported (huge pages), which is why neither this module nor the sub-command modules import torch at the top.
    use_fast_cpu_settings()
    return main()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError, MissingDependencyError) as err:
        # User errors (bad path, bad file, bad option, an extra not installed) end with one readable line, not a
        # traceback.
        if args.verbose:
            raise
        print(f"mmv {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(entry())
