"""Read the released MMV checkpoints (dill pickles of Haiku trees) without JAX, Haiku or dill.

The three released files (``mmv_s3d.pkl``, ``mmv_tsm_resnet_x1.pkl``, ``mmv_tsm_resnet_x2.pkl``) were written in
late 2020 with ``dill.dump({'params': params, 'state': state}, f)``. Their content is:

* plain ``dict``/``str``/``tuple`` pickle opcodes (protocol 3 or 4: dill's default protocol of the day);
* Haiku containers (``haiku._src.data_structures.FlatMapping`` or ``frozendict``), each pickled by its
  ``__reduce__`` as a *call of the class on a plain dict*;
* numpy arrays. ``ndarray.__reduce__`` gives ``(_reconstruct, (ndarray, (0,), b'b'), state)``; dill writes the
  builtin ``_reconstruct`` through its own helpers as
  ``dill._dill._get_attr(dill._dill._import_module('numpy.core._multiarray_umath'), '_reconstruct')``, followed by
  the ``numpy.ndarray`` and ``numpy.dtype`` globals and the raw bytes of the array. JAX's ``DeviceArray`` of that
  era (jax 0.1/0.2, ``interpreters/xla.py``) defines ``__reduce__`` as the ``__reduce__`` of its numpy value, so
  device arrays are stored exactly like numpy arrays.

Unpickling runs whatever callables a file names, so a plain ``pickle.load`` of a downloaded file can execute
arbitrary code. :class:`RestrictedUnpickler` instead maps the few globals above to local stand-ins and refuses every
other global *before anything is called*, with an :class:`UnsafePickleError` naming the file and the global:

* containers become plain dicts (``FlatMapping``, ``FlatMap``, ``frozendict`` under ``haiku._src.data_structures``
  or ``haiku.data_structures``, and ``collections.OrderedDict``), built from exactly one mapping;
* ``_import_module`` returns an inert token, and only for numpy's multiarray/numeric modules; ``_get_attr`` only
  resolves ``_reconstruct``, ``scalar`` and ``_frombuffer`` on such a token. dill's fallback to builtins in
  ``_get_attr`` (``_get_attr(module, 'eval')``) therefore does not exist here;
* numpy's ``_reconstruct``/``scalar``/``_frombuffer`` are wrapped so that they only build plain numeric arrays
  (dtype kinds ``b i u f c``; no object arrays, no ``ndarray`` subclasses);
* for completeness it also reads plain numpy pickles of protocols 2 to 5 (``numpy.core.multiarray._reconstruct``,
  ``numpy._core.multiarray._reconstruct``, ``numpy.core.numeric._frombuffer``, ``_codecs.encode`` with latin-1),
  dill's ``_create_array`` (used for arrays once dill has seen an ndarray subclass) and the
  ``reconstruct_device_array`` of later JAX versions, all reduced to numpy without importing dill or JAX.

Only pickles with a protocol header (protocols 2 to 5) are read; protocols 0 and 1 were never used for these files.
"""
from __future__ import annotations

import math
import os
import pickle
import pickletools
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "CheckpointFormatError",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "load_released_checkpoint",
]

_NUMERIC_KINDS = frozenset("biufc")  # bool, signed/unsigned int, float, complex


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asks for something a released checkpoint never contains; nothing of it was executed."""


class CheckpointFormatError(ValueError):
    """A file is not a readable released checkpoint (not a pickle, truncated, or an unexpected structure)."""


class _Refused(Exception):
    """Raised inside the stand-ins; re-raised by the loader as :class:`UnsafePickleError` with the file name."""


# ----------------------------------------------------------------------------------------------------------------
# Local stand-ins for the globals a released checkpoint names.
#
# NOTE: ``find_class`` never hands out a real class or function. Each allowed global becomes a ``_StandIn``: it can
# be called (REDUCE) but has no ``__dict__`` and refuses BUILD, so a pickle cannot use BUILD's ``setattr`` to alter
# the loader's own objects. BUILD therefore only ever reaches numpy arrays and dtypes (numpy's own ``__setstate__``).


class _StandIn:
    """A callable that a pickle may name; it runs one vetted function and cannot be modified by the pickle."""

    __slots__ = ("_name", "_function")

    def __init__(self, name: str, function: Callable[..., Any]) -> None:
        self._name = name
        self._function = function

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"BUILD (attribute assignment) on {self._name}")

    def __repr__(self) -> str:
        return f"<stand-in for {self._name}>"


class _HaikuMapping(dict):
    """What Haiku's ``FlatMapping``/``FlatMap``/``frozendict`` (and ``OrderedDict``) become: a dict."""

    def __setstate__(self, state: Any) -> None:
        raise _Refused("BUILD (attribute assignment) on a container")


class _NdarrayMarker:
    """The ``numpy.ndarray`` global: an inert marker that only ``_reconstruct`` accepts; it cannot be called."""

    __slots__ = ()

    def __call__(self, *args: Any) -> Any:
        raise _Refused("a call of numpy.ndarray (arrays are only rebuilt through _reconstruct)")

    def __setstate__(self, state: Any) -> None:
        raise _Refused("BUILD (attribute assignment) on numpy.ndarray")

    def __repr__(self) -> str:
        return "<numpy.ndarray marker>"


_NDARRAY = _NdarrayMarker()


class _ModuleToken:
    """What ``dill._dill._import_module`` returns here: a module *name*; nothing is imported."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __setstate__(self, state: Any) -> None:
        # dill pickles a module it takes for user code together with its whole ``__dict__`` as BUILD state ("M1").
        raise _Refused(f"module state for {self.name!r} (a pickled module dictionary)")


def _make_mapping(*args: Any) -> _HaikuMapping:
    """``FlatMapping(d)`` / ``frozendict(d)`` / ``OrderedDict()`` (the latter is then filled by SETITEMS)."""
    if len(args) > 1 or (args and not isinstance(args[0], Mapping)):
        raise _Refused("a container built from something other than one mapping")
    return _HaikuMapping(*args)


def _check_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise _Refused(f"array dtype {dtype!r} (only plain numeric arrays are accepted)")
    return dtype


def _safe_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype(spec, align, copy)`` for numeric type codes such as ``'f4'`` only."""
    if not isinstance(spec, str):
        raise _Refused(f"numpy.dtype of {type(spec).__name__} (only type codes such as 'f4' are accepted)")
    try:
        dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    except TypeError as exc:
        raise _Refused(f"numpy.dtype({spec!r})") from exc
    return _check_dtype(dtype)


_NUMPY_RECONSTRUCT: Callable[..., np.ndarray] = np.empty(0).__reduce__()[0]  # the installed numpy's _reconstruct


def _safe_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """numpy's ``_reconstruct(ndarray, (0,), b'b')``: an empty array that the following BUILD fills in."""
    if subtype is not _NDARRAY:
        raise _Refused(f"_reconstruct of {subtype!r} (only numpy.ndarray is accepted)")
    if not isinstance(shape, tuple) or shape != (0,) or typecode not in (b"b", "b"):
        raise _Refused(f"_reconstruct with shape {shape!r} and type code {typecode!r}")
    return _NUMPY_RECONSTRUCT(np.ndarray, (0,), b"b")


def _safe_scalar(dtype: Any, data: Any) -> np.ndarray:
    """numpy's ``scalar(dtype, raw_bytes)``, returned as a 0-d array."""
    if not isinstance(dtype, np.dtype):
        raise _Refused(f"numpy scalar of {dtype!r}")
    _check_dtype(dtype)
    if isinstance(data, str):  # protocol 0-2 pickles store the raw bytes as a latin-1 string
        data = data.encode("latin-1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Refused("numpy scalar with malformed data")
    return np.frombuffer(data, dtype=dtype).reshape(()).copy()


def _safe_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's protocol-5 ``_frombuffer(buffer, dtype, shape, order)`` with an in-band buffer."""
    if not isinstance(buffer, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or not isinstance(shape, tuple):
        raise _Refused("_frombuffer without an in-band buffer, a dtype and a shape")
    _check_dtype(dtype)
    if order not in ("C", "F") or math.prod(shape) * dtype.itemsize != len(buffer):
        raise _Refused(f"_frombuffer with shape {shape} and order {order!r} for {len(buffer)} bytes")
    return np.frombuffer(bytearray(buffer), dtype=dtype).reshape(shape, order=order)


def _safe_create_array(fun: Any, args: Any, state: Any, extra: Any = None) -> np.ndarray:
    """dill's ``_create_array(f, args, state, npdict)`` and JAX's ``reconstruct_device_array(...)``: plain numpy."""
    if fun is not _RECONSTRUCT or not isinstance(args, tuple) or len(args) != 3:
        raise _Refused(f"array reconstruction through {fun!r}")
    if extra is not None and not isinstance(extra, dict):
        raise _Refused("array reconstruction with non-dict attributes")
    array = _safe_reconstruct(*args)
    array.__setstate__(state)
    return array


def _safe_codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode(str, 'latin1')``: how protocol 2 stores ``bytes``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


_RECONSTRUCT = _StandIn("numpy _reconstruct", _safe_reconstruct)
_SCALAR = _StandIn("numpy scalar", _safe_scalar)
_FROMBUFFER = _StandIn("numpy _frombuffer", _safe_frombuffer)

# Modules that ``dill._dill._import_module`` may name, and what ``_get_attr`` may fetch from each.
_MULTIARRAY_MODULES = (
    "numpy.core._multiarray_umath",
    "numpy.core.multiarray",
    "numpy._core._multiarray_umath",
    "numpy._core.multiarray",
)
_NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")
_MODULE_ATTRIBUTES: dict[str, dict[str, _StandIn]] = {
    **{name: {"_reconstruct": _RECONSTRUCT, "scalar": _SCALAR} for name in _MULTIARRAY_MODULES},
    **{name: {"_frombuffer": _FROMBUFFER} for name in _NUMERIC_MODULES},
}


def _safe_import_module(import_name: Any, safe: Any = False) -> _ModuleToken:
    """dill's ``_import_module(name)``: a token for an allowed numpy module; nothing is imported."""
    if not isinstance(import_name, str) or import_name not in _MODULE_ATTRIBUTES:
        raise _Refused(f"dill._dill._import_module({import_name!r})")
    return _ModuleToken(import_name)


def _safe_get_attr(obj: Any, name: Any) -> _StandIn:
    """dill's ``_get_attr(module, name)`` restricted to the numpy functions listed in ``_MODULE_ATTRIBUTES``.

    dill's own version falls back to ``getattr(builtins, name)``; this one has no fallback.
    """
    if not isinstance(obj, _ModuleToken):
        raise _Refused(f"dill._dill._get_attr({obj!r}, {name!r}) on something that is not an allowed module")
    allowed = _MODULE_ATTRIBUTES[obj.name]
    if not isinstance(name, str) or name not in allowed:
        raise _Refused(f"dill._dill._get_attr({obj.name}, {name!r})")
    return allowed[name]


def _build_allowed_globals() -> dict[tuple[str, str], Any]:
    mapping = _StandIn("a Haiku container", _make_mapping)
    allowed: dict[tuple[str, str], Any] = {("collections", "OrderedDict"): mapping}
    for module in ("haiku._src.data_structures", "haiku.data_structures"):
        for name in ("FlatMapping", "FlatMap", "frozendict"):
            allowed[(module, name)] = mapping
    for module in ("dill._dill", "dill.dill"):  # dill < 0.3 lived in ``dill.dill``
        allowed[(module, "_import_module")] = _StandIn("dill._dill._import_module", _safe_import_module)
        allowed[(module, "_get_attr")] = _StandIn("dill._dill._get_attr", _safe_get_attr)
        allowed[(module, "_create_array")] = _StandIn("dill._dill._create_array", _safe_create_array)
    allowed[("jax._src.device_array", "reconstruct_device_array")] = _StandIn(
        "jax reconstruct_device_array", _safe_create_array
    )
    allowed[("numpy", "ndarray")] = _NDARRAY
    allowed[("numpy", "dtype")] = _StandIn("numpy.dtype", _safe_dtype)
    for module, functions in _MODULE_ATTRIBUTES.items():
        for name, function in functions.items():
            allowed[(module, name)] = function
    allowed[("_codecs", "encode")] = _StandIn("_codecs.encode", _safe_codecs_encode)
    return allowed


_ALLOWED_GLOBALS = _build_allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of a released MMV checkpoint (see the module docstring)."""

    def __init__(self, file: BinaryIO, *, source: str = "<stream>") -> None:
        # NOTE: latin-1 decodes Python 2 ``str`` payloads byte for byte, as numpy recommends for old pickles.
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        _refuse_global(self.source, module, name)
        return _ALLOWED_GLOBALS[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refused persistent id {pid!r} (not used by released checkpoints)")


# ----------------------------------------------------------------------------------------------------------------
# Loading and validation.


_MAX_DEPTH = 8  # a released checkpoint nests 3 deep: file -> params/state -> module -> leaf


def _to_plain(value: Any, source: str, depth: int = 0) -> Any:
    """Containers to plain dicts, recursively; everything else unchanged."""
    if not isinstance(value, Mapping):
        return value
    if depth >= _MAX_DEPTH:  # also stops at a dict that contains itself
        raise CheckpointFormatError(f"{source}: containers nested more than {_MAX_DEPTH} deep")
    return {key: _to_plain(item, source, depth + 1) for key, item in value.items()}


def _validate_tree(source: str, collection: str, tree: Any) -> None:
    """Check the two-level ``{module_path: {leaf_name: numeric ndarray}}`` layout of ``params``/``state``."""
    if not isinstance(tree, dict):
        raise CheckpointFormatError(f"{source}: '{collection}' is a {type(tree).__name__}, expected a mapping")
    for module, leaves in tree.items():
        if not isinstance(module, str) or not isinstance(leaves, dict):
            raise CheckpointFormatError(f"{source}: '{collection}/{module}' is not a mapping of named leaves")
        for name, leaf in leaves.items():
            where = f"{source}: '{collection}/{module}/{name}'"
            if type(leaf) is not np.ndarray:
                raise CheckpointFormatError(f"{where} is a {type(leaf).__name__}, expected a numpy array")
            if leaf.dtype.kind not in _NUMERIC_KINDS:
                raise CheckpointFormatError(f"{where} has dtype {leaf.dtype}, expected a numeric array")


def _check_header(source: str, head: bytes) -> None:
    """Refuse files that do not start like a binary pickle, naming what they look like where we can tell."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return
    hints = {b"PK\x03\x04": "a zip archive (e.g. a torch.save or .npz file)", b"\x93NUMPY": "a .npy file",
             b"\x1f\x8b": "a gzip file", b"\x89HDF": "an HDF5 file"}
    hint = next((what for magic, what in hints.items() if head.startswith(magic)), None)
    if not head:
        problem = "the file is empty"
    elif hint:
        problem = f"it looks like {hint}"
    else:
        problem = f"it starts with {head[:8]!r}, not a pickle protocol 2-5 header"
    raise CheckpointFormatError(f"{source}: not a released MMV checkpoint (a dill/pickle file): {problem}")


_STRING_OPCODES = frozenset(
    {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
)
_MARK = pickletools.markobject


def _refuse_global(source: str, module: Any, name: Any) -> None:
    if (module, name) not in _ALLOWED_GLOBALS:
        raise UnsafePickleError(
            f"{source}: refused to load global '{module}.{name}': a released MMV checkpoint contains only numpy "
            "arrays in Haiku/dict containers, so this file may run code when unpickled"
        )


def _scan_opcodes(file: BinaryIO, source: str) -> None:
    """Check the whole opcode stream before anything is unpickled.

    Every global the file names must be allowed (``STACK_GLOBAL`` operands are followed through the stack and the
    memo, as ``pickletools.dis`` does), memo indices must be sequential as every pickler writes them (a huge index
    would make the unpickler allocate a huge memo), and persistent ids and extension codes are refused. The
    unpickler's ``find_class`` checks the globals a second time.
    """
    stack: list[Any] = []  # a str for string pushes, the mark sentinel for MARK, None for anything else
    memo: dict[int, Any] = {}
    for opcode, arg, _ in pickletools.genops(file):
        name = opcode.name
        if name in ("PERSID", "BINPERSID") or name.startswith("EXT"):
            what = "a persistent id" if name.endswith("PERSID") else "an extension code"
            raise UnsafePickleError(f"{source}: refused opcode {name}, {what} (not used by released checkpoints)")
        if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            index = len(memo) if name == "MEMOIZE" else arg
            if index > len(memo):
                raise UnsafePickleError(f"{source}: refused memo index {index} (out of sequence at {len(memo)})")
            memo[index] = stack[-1]
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
            continue
        if name == "DUP":
            stack.append(stack[-1])
            continue
        if name in ("GLOBAL", "INST"):
            _refuse_global(source, *arg.split(" ", 1))
        elif name == "STACK_GLOBAL":
            if not (isinstance(stack[-2], str) and isinstance(stack[-1], str)):
                raise UnsafePickleError(f"{source}: refused STACK_GLOBAL whose names are not plain strings")
            _refuse_global(source, stack[-2], stack[-1])
        before, after = opcode.stack_before, opcode.stack_after
        popped = len(before)
        if _MARK in before or (name == "POP" and stack[-1] is _MARK):
            del stack[len(stack) - 1 - stack[::-1].index(_MARK):]  # everything from the topmost mark on
            popped = before.index(_MARK) if _MARK in before else 0
        if popped > len(stack):
            raise ValueError(f"stack underflow at {name}")
        del stack[len(stack) - popped:]
        value = arg if name in _STRING_OPCODES else None
        stack.extend(_MARK if item is _MARK else value for item in after)


def _unpickle(file: BinaryIO, source: str) -> Any:
    try:
        _scan_opcodes(file, source)
        file.seek(0)
        return RestrictedUnpickler(file, source=source).load()
    except UnsafePickleError:
        raise
    except _Refused as exc:
        raise UnsafePickleError(f"{source}: refused {exc}; released MMV checkpoints never contain this") from None
    except (EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointFormatError(f"{source}: corrupt or truncated pickle ({exc or type(exc).__name__})") from exc
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, MemoryError) as exc:
        raise CheckpointFormatError(f"{source}: malformed pickle ({type(exc).__name__}: {exc})") from exc


def load_released_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a released MMV checkpoint (``mmv_*.pkl``) into plain nested dicts of numpy arrays.

    Neither JAX, Haiku nor dill is needed or imported, and the file is read with :class:`RestrictedUnpickler`, so a
    file that would run code when unpickled is refused before any of it runs.

    Args:
        path: the ``.pkl`` file.

    Returns:
        ``{"params": {module_path: {leaf_name: np.ndarray}}, "state": {...}}`` in Haiku's naming (for example
        ``params["text_audio_video/text_module/~/text_conv1"]["w"]``), plus any other top-level entries of the
        file, with their containers turned into plain dicts.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the file names a global that a released checkpoint never contains.
        CheckpointFormatError: the file is not a pickle, is truncated, or lacks the ``params``/``state`` layout.
    """
    source = os.fspath(path)
    with open(source, "rb") as f:
        _check_header(source, f.read(8))
        f.seek(0)
        raw = _unpickle(f, source)
    checkpoint = _to_plain(raw, source)
    if not isinstance(checkpoint, dict):
        raise CheckpointFormatError(f"{source}: the pickle holds a {type(raw).__name__}, expected a dict")
    missing = [key for key in ("params", "state") if key not in checkpoint]
    if missing:
        raise CheckpointFormatError(
            f"{source}: missing top-level key(s) {missing}; found {sorted(map(str, checkpoint))}"
        )
    for collection in ("params", "state"):
        _validate_tree(source, collection, checkpoint[collection])
    return checkpoint
