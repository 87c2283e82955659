"""What the sub-commands share: checks of the paths a command line names, run before any work or any write, and old
spellings of flags that keep working with a warning (docs/cli.md).

Like every module of :mod:`mmv.cli` imported by ``mmv --help``, it imports nothing heavy (no torch, no numpy).
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from mmv.atomic import writable_folder_problem

__all__ = ["DeprecatedFlag", "UsageError", "check_input_file", "check_output_dir", "check_output_file",
           "nothing_produced", "output_from_old_positional", "warn"]


class UsageError(ValueError):
    """Options a command cannot run with (exit status 2): raised before anything is written."""


def warn(command: str, message: str) -> None:
    """One warning line on stderr, in the form of the entry point's error lines."""
    print(f"mmv {command}: warning: {message}", file=sys.stderr)


def nothing_produced(command: str, message: str) -> int:
    """The error line of a run that produced nothing from a non-empty input, after its report; returns exit status
    1, so that a script can tell."""
    print(f"mmv {command}: error: {message}", file=sys.stderr)
    return 1


def output_from_old_positional(args: argparse.Namespace, command: str, what: str, missing: str) -> str:
    """``--out``, or the output given the old way, as a positional (``args.old_out``), with a warning.

    Args:
        what: The output in the warning ("output", "output folder").
        missing: The usage error's text when neither is given.

    Raises:
        UsageError: Both spellings given, or neither.
    """
    if args.old_out is not None:
        if args.out is not None:
            raise UsageError(f"the output given twice: {args.old_out} and --out {args.out}")
        warn(command, f"the positional {what} is deprecated; use --out {args.old_out}")
        return args.old_out
    if args.out is None:
        raise UsageError(missing)
    return args.out


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuses an output folder that cannot be made or written: a file in its place or on its way, or no permission.

    Raises:
        OSError: Naming the path and the problem (exit status 1).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"is a file; {flag} needs a folder", str(path))
    problem = writable_folder_problem(path)
    if problem is not None:
        raise problem
    return path


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuses an output file that cannot be written: a folder of that name, a file on its way, or no permission to
    write in its folder (files are written beside their final name, then renamed: mmv.atomic).

    Raises:
        OSError: Naming the path and the problem (exit status 1).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"is a folder; {flag} needs a file name", str(path))
    problem = writable_folder_problem(path.parent, path)
    if problem is not None:
        raise problem
    return path


def check_input_file(path: str | os.PathLike, flag: str) -> Path:
    """Refuses an input that is not a readable file (missing, or a folder where a file is expected).

    Raises:
        OSError: Naming the path and the problem (exit status 1).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"is a folder; {flag} needs a file", str(path))
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    return path


class DeprecatedFlag(argparse.Action):
    """An old spelling of an option: stores its value where the new spelling does and warns once, naming the new one.

    Left out of ``--help`` (``help=argparse.SUPPRESS``); docs/cli.md lists the old spellings.
    """

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: object) -> None:
        self.new = new
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)
