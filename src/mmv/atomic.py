"""Atomic file writes: every file the library writes goes through here.

A file is written under a temporary name in its destination folder and renamed over the final name when it is
complete, so a crash or Ctrl-C never leaves half a file under a final name (the old file, if any, stays intact).
``os.replace`` is atomic within one file system, which the shared folder guarantees.

Temporary files from :func:`tempfile.mkstemp` are created with mode 0600; the final file gets the mode an ordinary
``open()`` would have given it (0666 less the process's umask), so teammates on a shared machine can read models,
embeddings and results as they read any other file.

>>> atomic_write_text("out/report.md", "# results\\n")
>>> with atomic_path("out/figure.png", suffix=".png") as tmp:
...     fig.savefig(tmp)          # any writer that takes a path
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = [
    "atomic_path",
    "atomic_save_npy",
    "atomic_save_npz",
    "atomic_save_safetensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "make_folder",
    "to_json",
    "writable_folder_problem",
]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask."""
    # NOTE: the umask can only be read by setting it; the lock keeps two threads from seeing each other's 0.
    with _UMASK_LOCK:
        umask = os.umask(0)
        os.umask(umask)
    return umask


def _file_mode() -> int:
    """0666 less the process's umask: the mode ``open(path, "w")`` gives a new file."""
    return 0o666 & ~current_umask()


def writable_folder_problem(folder: str | os.PathLike, target: str | os.PathLike | None = None) -> OSError | None:
    """Why files cannot be created in ``folder``, or None when they can: an error about ``target`` (default: the
    folder) that names the path in the way.

    A folder that does not exist yet is fine when its nearest existing parent is a writable folder (it will be
    created); a file in its place or on its way, or a folder without write permission, is a problem. Permissions are
    checked with :func:`os.access`, so they do not stop root (who can write anyway).
    """
    folder = Path(folder)
    target = Path(target if target is not None else folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    named = "" if existing == target else f"{existing} "
    if not existing.is_dir():
        return NotADirectoryError(errno.ENOTDIR, f"{named}is a file, not a folder", str(target))
    if not os.access(existing, os.W_OK | os.X_OK):
        return PermissionError(errno.EACCES, f"no permission to write in {named or 'it'}".rstrip(), str(target))
    return None


def make_folder(folder: str | os.PathLike) -> None:
    """``mkdir -p``, with an error that names the file in the way or the folder without permission."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        problem = writable_folder_problem(folder)
        if problem is None:
            raise
        raise problem from err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp", *, fsync: bool = False) -> Iterator[str]:
    """Yields a temporary path beside ``path``; on success it is renamed to ``path``, on any error removed.

    Args:
        path: The final file. Its folder is created if needed.
        suffix: Ending of the temporary name; some writers pick a format from it (``.npz``, ``.png``, ``.tar``).
        fsync: Flush the file to disk before the rename (weights and checkpoints: the rename must never expose a
            file whose content is still only in the page cache when the machine loses power).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except PermissionError:
        # mkstemp's own error names its random temporary name, which means nothing to the user.
        raise PermissionError(errno.EACCES, f"no permission to write in the folder {path.parent}", str(path)) from None
    os.close(fd)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Writes ``data`` to ``path`` atomically (flushed to disk before the rename by default)."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 text with ``\\n`` line ends to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def to_json(obj: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """JSON text of results: numpy scalars and arrays become numbers and lists, paths strings, NaN and inf null
    (JSON has neither; most readers refuse the ``NaN`` that ``json.dumps`` writes by default)."""
    return json.dumps(_jsonable(obj), indent=indent, sort_keys=sort_keys, allow_nan=False, ensure_ascii=False)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy (and torch) scalars and arrays
        return _jsonable(obj.tolist())
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Writes ``obj`` as JSON (see :func:`to_json`) to ``path`` atomically."""
    atomic_write_text(path, to_json(obj, indent) + "\n")


def atomic_save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """``numpy.savez`` atomically; the ``.npz`` suffix keeps numpy from appending its own."""
    import numpy as np

    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def atomic_save_npy(path: str | os.PathLike, array: Any) -> None:
    """``numpy.save`` of one array atomically (never pickled)."""
    import numpy as np

    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def atomic_save_safetensors(tensors: Mapping[str, Any], path: str | os.PathLike,
                            metadata: dict[str, str] | None = None) -> None:
    """Writes torch tensors as a safetensors file atomically (contiguous CPU copies; flushed before the rename)."""
    from safetensors.torch import save_file

    with atomic_path(path, fsync=True) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
