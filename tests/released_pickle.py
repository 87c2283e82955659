"""Write checkpoints in the format of the released MMV files, without dill, Haiku or JAX installed.

The released files are ``dill.dump({'params': params, 'state': state}, f)`` of Haiku trees (late 2020). dill
pickles with the pure-Python ``pickle._Pickler`` plus its own ``save_*`` hooks, so this writer subclasses the same
``pickle._Pickler`` and reproduces what those hooks write for such a tree:

* a Haiku container (``FlatMapping``/``frozendict``) is reduced, as by its ``__reduce__``, to a call of the class
  ``haiku._src.data_structures.<name>`` on a plain dict (at both levels of the tree);
* an array is numpy's reduction ``(_reconstruct, (ndarray, (0,), b'b'), (1, shape, dtype, False, raw_bytes))``.
  dill saves the builtin ``_reconstruct`` through ``save_builtin_method`` as
  ``dill._dill._get_attr(<module>, '_reconstruct')`` and the module through ``save_module`` as
  ``dill._dill._import_module('numpy.core._multiarray_umath')``; both are memoised, so later arrays refer back to
  them. ``numpy.ndarray`` and ``numpy.dtype`` are ordinary globals and ``dtype('f4', False, True)`` is followed by
  its BUILD state.

The globals are written by name (no import), so the pickle names ``dill._dill``, ``haiku._src.data_structures`` and
``numpy.core._multiarray_umath`` even though none of them is importable here.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

Tree = dict[str, dict[str, np.ndarray]]
Container = Literal["FlatMapping", "frozendict", "dict"]

DILL_MODULE = "dill._dill"
HAIKU_MODULE = "haiku._src.data_structures"
NUMPY_2020_MODULE = "numpy.core._multiarray_umath"  # where `_reconstruct` lived in numpy 1.16-1.26


class _Callable:
    """Base of the placeholders that stand for functions: ``save_reduce()`` insists that they be callable."""

    def __call__(self, *args: Any) -> Any:
        raise TypeError(f"{self!r} is a placeholder for writing pickles")


class Global(_Callable):
    """A global written by module and name, without importing it (pickle's own ``save_global`` would)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class DillModule:
    """A module as dill's ``save_module`` writes it: ``_import_module(name)``."""

    def __init__(self, name: str) -> None:
        self.name = name


class DillAttr(_Callable):
    """A builtin function as dill's ``save_builtin_method`` writes it: ``_get_attr(module, name)``."""

    def __init__(self, module: DillModule, name: str) -> None:
        self.module, self.name = module, name


class Call:
    """An object whose ``__reduce__`` is ``(function, args[, state])``, e.g. a Haiku ``FlatMapping``:
    ``(cls, (mapping,))``. A ``state`` is written as BUILD after the call."""

    def __init__(self, function: Any, *args: Any, state: Any = None) -> None:
        self.function, self.args, self.state = function, args, state


_NDARRAY = Global("numpy", "ndarray")
_DTYPE = Global("numpy", "dtype")
_IMPORT_MODULE = Global(DILL_MODULE, "_import_module")
_GET_ATTR = Global(DILL_MODULE, "_get_attr")
_PLAIN_RECONSTRUCT = Global("numpy.core.multiarray", "_reconstruct")  # what a plain numpy 1.x pickle names
# Module-level, like the classes they stand for, so that a second use is a memo reference as in dill's output.
_HAIKU_CONTAINERS = {name: Global(HAIKU_MODULE, name) for name in ("FlatMapping", "frozendict")}


class _ReleasedPickler(pickle._Pickler):  # type: ignore[misc]  # dill's base class too
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file: Any, protocol: int, dill_style: bool) -> None:
        super().__init__(file, protocol)
        # One object per file, so that the memo makes later arrays refer back to it, as in dill's output.
        self._reconstruct = DillAttr(DillModule(NUMPY_2020_MODULE), "_reconstruct") if dill_style else (
            _PLAIN_RECONSTRUCT)

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            # NOTE: not np.ascontiguousarray, which turns 0-d arrays (the EMA counters) into shape (1,).
            _, args, state = (obj if obj.flags.c_contiguous else obj.copy(order="C")).__reduce__()
            return self._reconstruct, (_NDARRAY, *args[1:]), state
        if isinstance(obj, np.dtype):
            _, args, state = obj.__reduce__()
            return _DTYPE, args, state
        if isinstance(obj, DillAttr):
            return _GET_ATTR, (obj.module, obj.name)
        if isinstance(obj, DillModule):
            return _IMPORT_MODULE, (obj.name,)
        if isinstance(obj, Call):
            return (obj.function, obj.args) if obj.state is None else (obj.function, obj.args, obj.state)
        return NotImplemented

    def save_named_global(self, obj: Global) -> None:
        """Like ``pickle._Pickler.save_global`` for protocols 3 and 4, minus the import check."""
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)

    dispatch[Global] = save_named_global


def _wrap(tree: Tree, container: Container) -> Any:
    if container == "dict":
        return {module: dict(sorted(leaves.items())) for module, leaves in sorted(tree.items())}
    cls = _HAIKU_CONTAINERS[container]
    # Haiku returns keys sorted (jax flattens dicts in key order) and nests the container at both levels.
    return Call(cls, {module: Call(cls, dict(sorted(leaves.items()))) for module, leaves in sorted(tree.items())})


def write_released_checkpoint(
    params: Tree,
    state: Tree,
    path: str | os.PathLike[str],
    *,
    protocol: int = 4,
    container: Container = "FlatMapping",
    dill_style: bool = True,
) -> Path:
    """Write ``{'params': params, 'state': state}`` as the released MMV ``.pkl`` files store it.

    Args:
        params: ``{module_path: {leaf_name: np.ndarray}}``.
        state: the same layout for the BN moving statistics.
        path: the file to write (atomically: a temporary file in the same folder, then renamed).
        protocol: pickle protocol, 3 or 4 (dill's default protocol on Python 3.7 and 3.8+ respectively).
        container: the Haiku container to emit (``"FlatMapping"``, ``"frozendict"``) or plain ``"dict"``.
        dill_style: write arrays through ``dill._dill._get_attr``/``_import_module`` as dill does; if False,
            through the plain global ``numpy.core.multiarray._reconstruct`` as ``pickle`` with numpy 1.x does.

    Returns:
        The path written.
    """
    if protocol not in (3, 4):
        raise ValueError(f"protocol must be 3 or 4 (what dill wrote in 2020), got {protocol}")
    if container not in ("FlatMapping", "frozendict", "dict"):
        raise ValueError(f"unknown container {container!r}")
    path = Path(path)
    payload = {"params": _wrap(params, container), "state": _wrap(state, container)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _ReleasedPickler(f, protocol, dill_style).dump(payload)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def dumps(obj: Any, protocol: int = 4) -> bytes:
    """Pickle ``obj`` with the writer above; ``Global``/``DillModule``/``DillAttr``/``Call`` placeholders inside
    become the globals and dill helper calls they name (used to build hostile pickles in tests)."""
    buffer = io.BytesIO()
    _ReleasedPickler(buffer, protocol, dill_style=True).dump(obj)
    return buffer.getvalue()


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every global a pickle names, in order, read from its opcode stream (``pickletools.genops``).

    ``GLOBAL`` carries its names inline; ``STACK_GLOBAL`` takes the two strings pushed before it, which may come
    back from the memo (``BINGET``) when they were written before, so the memo of strings is tracked.
    """
    found: list[tuple[str, str]] = []
    memo: dict[int, Any] = {}
    pushed: list[Any] = []  # the value of each push; None for anything that is not a string or a memo fetch
    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        if name in ("PROTO", "FRAME", "STOP"):
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(int(arg)))
        elif name == "GLOBAL":
            module, attr = arg.split(" ", 1)
            found.append((module, attr))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            found.append((pushed[-2], pushed[-1]))
            pushed.append(None)
        else:
            pushed.append(arg if isinstance(arg, str) and "UNICODE" in name else None)
    return found
