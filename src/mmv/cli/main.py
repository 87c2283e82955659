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

from mmv.cli.common import UsageError
from mmv.extras import MissingDependencyError

# Order here is the order shown by ``mmv --help``.
SUBCOMMAND_MODULES = (
    "demo",
    "demo_data",
    "convert",
    "download",
    "info",
    "embed",
    "train",
    "eval",
    "finetune",
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


# Exit statuses (docs/cli.md): 0 success, 1 failure (a file, the data or the run), 2 usage (the command line),
# 130 interrupted (Ctrl-C).
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that are the user's situation (a path, a file, an option, a missing extra), not a bug: one line."""
    import pickle

    from mmv.data.media import MediaError

    return OSError, ValueError, RuntimeError, MissingDependencyError, MediaError, pickle.UnpicklingError, EOFError


def one_line(err: BaseException) -> str:
    """The error as one line naming the file and the problem."""
    if isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    import os

    parser = build_parser()
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (or MMV_DEBUG=1)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    debug = args.debug or args.verbose or os.environ.get("MMV_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        kept = getattr(args, "on_interrupt", "nothing half-written was kept")
        print(f"mmv {args.command}: interrupted; {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except user_error_types() as err:
        # User errors (bad path, bad file, bad option, an extra not installed) end with one readable line, not a
        # traceback; --debug or MMV_DEBUG=1 shows it.
        if debug:
            raise
        print(f"mmv {args.command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, UsageError) else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(entry())
