"""Reading released MMV checkpoints: the dill/Haiku file format, plain numpy pickles, and hostile or broken files."""
from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mmv.convert import CheckpointFormatError, UnsafePickleError, load_released_checkpoint, pickle_io
from official_params import MODEL_NAMES, make_official_params, tree_path
from released_pickle import (
    NUMPY_2020_MODULE,
    Call,
    DillAttr,
    DillModule,
    Global,
    dumps,
    pickle_globals,
    write_released_checkpoint,
)

Tree = dict[str, dict[str, np.ndarray]]
FLATMAPPING = Global("haiku._src.data_structures", "FlatMapping")
RECONSTRUCT = DillAttr(DillModule(NUMPY_2020_MODULE), "_reconstruct")


def assert_same_tree(loaded: Tree, expected: Tree) -> None:
    """Same modules, same leaf names, and every leaf bit-identical (dtype, shape and bytes)."""
    assert loaded.keys() == expected.keys()
    for module, leaves in expected.items():
        assert loaded[module].keys() == leaves.keys(), module
        for name, array in leaves.items():
            got = loaded[module][name]
            assert type(got) is np.ndarray, (module, name)
            assert got.dtype == array.dtype and got.shape == array.shape, (module, name)
            # Bit identity without copying: compare the raw words (a float compare would equate 0.0 and -0.0).
            words = f"u{array.itemsize}" if array.itemsize <= 8 else None
            same = np.array_equal(got.view(words), array.view(words)) if words else got.tobytes() == array.tobytes()
            assert same, (module, name)


def small_leaves(model: str, max_size: int = 4096) -> tuple[Tree, Tree]:
    """The official tree restricted to its small leaves: every leaf kind and layout, a fraction of the bytes."""
    params, state = make_official_params(tree_path(model))
    keep = lambda tree: {m: {n: a for n, a in ls.items() if a.size <= max_size} for m, ls in tree.items()}  # noqa: E731
    prune = lambda tree: {m: ls for m, ls in tree.items() if ls}  # noqa: E731
    return prune(keep(params)), prune(keep(state))


# ----------------------------------------------------------------------------------------------------------------
# The released format.


@pytest.mark.slow
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_full_official_tree_round_trip(model, tmp_path):
    """The whole official tree, written as the released files are (dill, FlatMapping, protocol 4), reads back."""
    params, state = make_official_params(tree_path(model))
    path = write_released_checkpoint(params, state, tmp_path / f"mmv_{model}.pkl")
    checkpoint = load_released_checkpoint(path)
    assert set(checkpoint) == {"params", "state"}
    assert_same_tree(checkpoint["params"], params)
    assert_same_tree(checkpoint["state"], state)


@pytest.mark.parametrize("protocol", [3, 4])
@pytest.mark.parametrize("container", ["FlatMapping", "frozendict", "dict"])
@pytest.mark.parametrize("dill_style", [True, False])
def test_format_variants_round_trip(protocol, container, dill_style, tmp_path):
    """Every format variant on the S3D tree's leaves of up to 4096 values (1,085 of its 1,243 leaves)."""
    params, state = small_leaves("s3d")
    path = write_released_checkpoint(
        params, state, tmp_path / "ckpt.pkl", protocol=protocol, container=container, dill_style=dill_style
    )
    checkpoint = load_released_checkpoint(path)
    assert_same_tree(checkpoint["params"], params)
    assert_same_tree(checkpoint["state"], state)
    counter = next(leaves["counter"] for leaves in checkpoint["state"].values() if "counter" in leaves)
    assert counter.shape == () and counter.dtype == np.int32 and int(counter) == 100000


@pytest.mark.parametrize("protocol", [3, 4])
def test_written_file_names_the_released_globals(protocol, tmp_path):
    """The opcode stream holds exactly the globals of a dill-written Haiku checkpoint, each written once."""
    params, state = small_leaves("s3d")
    data = write_released_checkpoint(params, state, tmp_path / "ckpt.pkl", protocol=protocol).read_bytes()
    text = io.StringIO()
    pickletools.dis(data, out=text)  # also validates the stream: memo and stack bookkeeping
    assert f"highest protocol among opcodes = {protocol}" in text.getvalue()
    assert sorted(pickle_globals(data)) == sorted([
        ("haiku._src.data_structures", "FlatMapping"),
        ("dill._dill", "_get_attr"),
        ("dill._dill", "_import_module"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    ])
    strings = [arg for op, arg, _ in pickletools.genops(data) if "UNICODE" in op.name]
    assert strings.count("numpy.core._multiarray_umath") == 1 and strings.count("_reconstruct") == 1


def test_plain_dict_without_dill_names_only_numpy(tmp_path):
    params, state = small_leaves("s3d", max_size=64)
    data = write_released_checkpoint(
        params, state, tmp_path / "c.pkl", container="dict", dill_style=False
    ).read_bytes()
    assert set(pickle_globals(data)) == {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
                                         ("numpy", "dtype")}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_numpy_pickles_from_the_standard_pickler(protocol, tmp_path):
    """Files written by ``pickle`` itself with the installed numpy (OrderedDict containers, a numpy scalar leaf)."""
    params = collections.OrderedDict(
        mod={"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1.5, -2.0], dtype=np.float64)}
    )
    state = {"mod/~/mean_ema": {"counter": np.int32(7), "average": np.zeros((1, 2), np.float32),
                                "flag": np.array([True, False]), "z": np.array([1 + 2j], np.complex64)}}
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"params": params, "state": state, "step": 3}, protocol=protocol))
    checkpoint = load_released_checkpoint(path)
    assert checkpoint["step"] == 3
    assert type(checkpoint["params"]) is dict
    assert_same_tree(checkpoint["params"], dict(params))
    expected_state = {"mod/~/mean_ema": {**state["mod/~/mean_ema"], "counter": np.array(7, np.int32)}}
    assert_same_tree(checkpoint["state"], expected_state)


def test_loaded_arrays_are_writable(tmp_path):
    params, state = small_leaves("s3d", max_size=64)
    checkpoint = load_released_checkpoint(write_released_checkpoint(params, state, tmp_path / "c.pkl"))
    leaf = next(iter(next(iter(checkpoint["params"].values())).values()))
    assert leaf.flags.writeable


def _array_state(array: np.ndarray) -> tuple:
    dtype_state = (3, "<", None, None, None, -1, -1, 0)
    dtype = Call(Global("numpy", "dtype"), array.dtype.str[1:], False, True, state=dtype_state)
    return 1, array.shape, dtype, False, array.tobytes()


@pytest.mark.parametrize("wrapper", [
    Global("dill._dill", "_create_array"),  # dill, once it has seen an ndarray subclass in the process
    Global("jax._src.device_array", "reconstruct_device_array"),  # jax >= 0.2.20 DeviceArray
])
def test_array_wrappers_reduce_to_numpy(wrapper, tmp_path):
    array = np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)
    extra = None if wrapper.module.startswith("dill") else {"weak_type": False, "named_shape": {}}
    leaf = Call(wrapper, RECONSTRUCT, (Global("numpy", "ndarray"), (0,), b"b"), _array_state(array), extra)
    path = tmp_path / "c.pkl"
    path.write_bytes(dumps({"params": Call(FLATMAPPING, {"m": Call(FLATMAPPING, {"w": leaf})}), "state": {}}))
    checkpoint = load_released_checkpoint(path)
    assert_same_tree(checkpoint["params"], {"m": {"w": array}})


# ----------------------------------------------------------------------------------------------------------------
# Hostile pickles: refused before anything runs.


class _Reduces:
    """Pickles as ``function(*args)`` through the standard pickler (the classic malicious pickle)."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _wrapped(payload) -> dict:
    """A checkpoint whose one leaf is the payload, so that the attack sits where an array belongs."""
    return {"params": Call(FLATMAPPING, {"module": Call(FLATMAPPING, {"w": payload})}), "state": {}}


def _hostile_pickles(marker: Path) -> dict[str, bytes]:
    """Each payload would create ``marker`` if it ran."""
    touch = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": pickle.dumps(_Reduces(os.system, touch), protocol=4),
        "builtins.eval": pickle.dumps(_Reduces(eval, code), protocol=3),
        "builtins.exec in a leaf": dumps(_wrapped(Call(Global("builtins", "exec"), code))),
        "subprocess.Popen": pickle.dumps(_Reduces(subprocess.Popen, ["touch", str(marker)]), protocol=2),
        "os.system in a leaf": dumps(_wrapped(Call(Global("os", "system"), touch)), protocol=3),
        "_get_attr(_import_module('os'), 'system')": dumps(_wrapped(Call(DillAttr(DillModule("os"), "system"), touch))),
        "_get_attr(numpy module, 'eval') (dill falls back to builtins)": dumps(
            _wrapped(Call(DillAttr(DillModule(NUMPY_2020_MODULE), "eval"), code))
        ),
        "_get_attr(numpy module, 'fromfile')": dumps(
            _wrapped(Call(DillAttr(DillModule(NUMPY_2020_MODULE), "fromfile"), str(marker)))
        ),
        "dill _create_function": dumps(_wrapped(Call(Global("dill._dill", "_create_function"), code))),
        "module state (dill 'M1')": dumps(
            _wrapped(Call(Global("dill._dill", "_import_module"), NUMPY_2020_MODULE, state={"system": "x"}))
        ),
        "object array": dumps(_wrapped(Call(
            RECONSTRUCT, Global("numpy", "ndarray"), (0,), b"b",
            state=(1, (1,), Call(Global("numpy", "dtype"), "O8", False, True), False, [code]),
        ))),
        "ndarray subclass": dumps(_wrapped(Call(RECONSTRUCT, Global("numpy", "matrix"), (0,), b"b"))),
        "calling numpy.ndarray": dumps(_wrapped(Call(Global("numpy", "ndarray"), (10**12,)))),
    }


def test_hostile_pickles_are_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    for name, data in _hostile_pickles(marker).items():
        path = tmp_path / "mmv_evil.pkl"
        path.write_bytes(data)
        with pytest.raises(UnsafePickleError) as excinfo:
            load_released_checkpoint(path)
        assert str(path) in str(excinfo.value), name
        assert not marker.exists(), f"{name}: the payload ran"
    # The payloads are live: the standard unpickler does run one of them (a control for the test above).
    pickle.loads(_hostile_pickles(marker)["builtins.eval"])
    assert marker.exists()


# Payloads whose refusal is a global name: the opcode scan alone refuses them, before the unpickler starts.
GLOBAL_PAYLOADS = ["os.system", "builtins.eval", "builtins.exec in a leaf", "subprocess.Popen", "os.system in a leaf",
                   "dill _create_function", "ndarray subclass"]


@pytest.mark.parametrize("name", GLOBAL_PAYLOADS)
def test_opcode_scan_refuses_globals_on_its_own(name, tmp_path):
    data = _hostile_pickles(tmp_path / "pwned")[name]
    with pytest.raises(UnsafePickleError, match="refused to load global"):
        pickle_io._scan_opcodes(io.BytesIO(data), "mmv_evil.pkl")


def test_opcode_scan_follows_memoised_names():
    """STACK_GLOBAL names fetched back from the memo are resolved, so reusing a name cannot hide a global."""
    data = dumps([Global("numpy", "ndarray"), Global("numpy", "load")], protocol=4)
    assert [op.name for op, _, _ in pickletools.genops(data)].count("BINGET") >= 1  # 'numpy' comes from the memo
    with pytest.raises(UnsafePickleError, match=r"'numpy\.load'"):
        pickle_io._scan_opcodes(io.BytesIO(data), "x.pkl")


def test_huge_memo_index_is_refused(tmp_path):
    """LONG_BINPUT 2**31-1 would make the unpickler allocate a memo of 2**32 entries."""
    path = tmp_path / "mmv_evil.pkl"
    path.write_bytes(b"\x80\x02K\x01r\xff\xff\xff\x7f.")
    with pytest.raises(UnsafePickleError, match="memo index"):
        load_released_checkpoint(path)


def test_refusal_names_the_global(tmp_path):
    path = tmp_path / "mmv_evil.pkl"
    path.write_bytes(pickle.dumps(_Reduces(os.system, "true"), protocol=4))
    with pytest.raises(UnsafePickleError, match=r"refused to load global '(posix|nt|os)\.system'"):
        load_released_checkpoint(path)
    path.write_bytes(dumps(_wrapped(Call(DillAttr(DillModule("os"), "system"), "true"))))
    with pytest.raises(UnsafePickleError, match=r"_import_module\('os'\)"):
        load_released_checkpoint(path)


def test_dill_import_module_imports_nothing(tmp_path):
    """``_import_module`` is refused before any import: a module with import side effects stays unimported."""
    if "this" in sys.modules:
        pytest.skip("module 'this' already imported")
    path = tmp_path / "mmv_evil.pkl"
    path.write_bytes(dumps(_wrapped(DillModule("this"))))
    with pytest.raises(UnsafePickleError, match="this"):
        load_released_checkpoint(path)
    assert "this" not in sys.modules


@pytest.mark.parametrize("opcodes,match", [
    # BUILD (setattr) on the container stand-in: GLOBAL, EMPTY_DICT, key, value, SETITEM, BUILD.
    (b"chaiku._src.data_structures\nFlatMapping\n}X\x04\x00\x00\x00keysK\x01sb.", "BUILD"),
    # BUILD on the numpy.ndarray marker.
    (b"cnumpy\nndarray\n}X\x07\x00\x00\x00__new__K\x01sb.", "BUILD"),
    # A persistent id.
    (b"X\x03\x00\x00\x00abcQ.", "persistent id"),
])
def test_handcrafted_opcodes_are_refused(opcodes, match, tmp_path):
    path = tmp_path / "mmv_evil.pkl"
    path.write_bytes(b"\x80\x02" + opcodes)
    with pytest.raises(UnsafePickleError, match=match):
        load_released_checkpoint(path)


# ----------------------------------------------------------------------------------------------------------------
# Files that are not released checkpoints.


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"params: 1\nstate: 2\n", "not a pickle protocol"),
    (b"\x93NUMPY\x01\x00", r"\.npy"),
    (b"(dp0\nS'params'\np1\n(dp2\ns.", "not a pickle protocol"),  # protocol 0, never used for these files
])
def test_not_a_pickle(content, match, tmp_path):
    path = tmp_path / "mmv_s3d.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match=match) as excinfo:
        load_released_checkpoint(path)
    assert str(path) in str(excinfo.value)


def test_zip_file_is_named(tmp_path):
    path = tmp_path / "mmv_s3d.pkl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", b"x")
    with pytest.raises(CheckpointFormatError, match="zip"):
        load_released_checkpoint(path)


def test_truncated_pickles(tmp_path):
    params, state = small_leaves("s3d", max_size=64)
    data = write_released_checkpoint(params, state, tmp_path / "full.pkl").read_bytes()
    path = tmp_path / "mmv_s3d.pkl"
    for end in np.linspace(2, len(data) - 1, 25).astype(int):
        path.write_bytes(data[:end])
        with pytest.raises(CheckpointFormatError) as excinfo:
            load_released_checkpoint(path)
        assert str(path) in str(excinfo.value), end


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        load_released_checkpoint("/nonexistent/mmv_s3d.pkl")


@pytest.mark.parametrize("payload,match", [
    ({"params": {}}, r"missing top-level key\(s\) \['state'\]; found \['params'\]"),
    ([1, 2], "holds a list"),
    ({"params": {"m": {"w": [1.0, 2.0]}}, "state": {}}, r"'params/m/w' is a list, expected a numpy array"),
    ({"params": {"m": {"w": {"deeper": np.zeros(2)}}}, "state": {}}, r"'params/m/w' is a dict"),
    ({"params": {"m": np.zeros(2)}, "state": {}}, r"'params/m' is not a mapping"),
    ({"params": {}, "state": 3}, r"'state' is a int"),
])
def test_unexpected_structure(payload, match, tmp_path):
    path = tmp_path / "mmv_s3d.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(CheckpointFormatError, match=match):
        load_released_checkpoint(path)
