"""Process-wide CPU settings (mmv.runtime): freed memory is reused without page faults; the switch turns it off;
huge pages are requested by the ``mmv`` command and by ``use_fast_cpu_settings()``, never by ``import mmv``.

Each case runs in a fresh interpreter, since the settings last for the whole process.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

# Allocates, touches and frees a 64 MiB tensor, like a forward pass its activations: twelve rounds to reach a steady
# state, then reports the minor page faults of each of the next seven rounds. The heap settles after up to ten: torch's
# own first small allocations land right after a block and keep it from merging back into the heap top (after a model
# is built, as in real use, it settles in two or three).
PROBE = """
import json, resource, sys
from mmv.runtime import reuse_freed_memory
applied = reuse_freed_memory()
import torch
def round_trip():
    t = torch.empty(16 * 2**20)  # 64 MiB of float32
    t.fill_(1.0)
    del t
def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):
    round_trip()
faults = []
for _ in range(7):
    before = minor_faults()
    round_trip()
    faults.append(minor_faults() - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def probe(**env: str) -> dict:
    # Huge pages off: 4 KiB pages make the fault count of a fresh 64 MiB block large (16384) and unambiguous.
    full_env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "0", **env}
    out = subprocess.run([sys.executable, "-c", PROBE], env=full_env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults() -> None:
    tuned = probe()
    default = probe(MMV_REUSE_FREED_MEMORY="0")
    assert tuned["applied"] and not default["applied"]
    # The median round, not the total: the kernel may unmap a process's pages for a moment on its own (NUMA
    # balancing marks them to sample accesses), and the round that touches them then faults in full although the
    # memory was reused. That happened once in CI (one round of 16384 faults); it cannot happen to most rounds.
    # Without the setting the block goes back to the system on free, and every round faults again (16384).
    assert statistics.median(default["faults"]) > 8000, default
    assert statistics.median(tuned["faults"]) < 1000, tuned


def run_python(code: str) -> str:
    """Runs ``code`` in a fresh interpreter without THP_MEM_ALLOC_ENABLE in its environment; returns its last line."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_import_mmv_changes_no_process_state() -> None:
    """``import mmv`` neither imports torch nor sets THP_MEM_ALLOC_ENABLE; its public names still load on use."""
    code = ("import json, os, sys\n"
            "import mmv\n"
            "state = {'torch': 'torch' in sys.modules, 'thp': os.environ.get('THP_MEM_ALLOC_ENABLE')}\n"
            "from mmv import load\n"
            "names = [callable(load), callable(mmv.create_model), 'mmv_tiny_s3dg' in mmv.list_models(),\n"
            "         callable(mmv.runtime.use_fast_cpu_settings), mmv.__version__ == '0.1.0']\n"
            "print(json.dumps({**state, 'names': names, 'listed': 'create_model' in dir(mmv),\n"
            "                  'thp_after': os.environ.get('THP_MEM_ALLOC_ENABLE')}))")
    assert json.loads(run_python(code)) == {"torch": False, "thp": None, "names": [True] * 5, "listed": True,
                                            "thp_after": None}


def run_cli(function: str) -> dict:
    """Runs ``mmv info --help`` through ``mmv.cli.main.<function>`` in a fresh interpreter; returns whether the
    heap setting is in effect afterwards and the THP_MEM_ALLOC_ENABLE it left."""
    code = ("import json, os, sys, mmv.runtime as runtime, mmv.cli.main as cli\n"
            f"sys.argv = ['mmv', 'info', '--help']\n"
            f"try:\n    cli.{function}(['info', '--help']) if '{function}' == 'main' else cli.{function}()\n"
            "except SystemExit:\n    pass\n"
            "print(json.dumps({'applied': runtime._applied, 'thp': os.environ.get('THP_MEM_ALLOC_ENABLE')}))")
    return json.loads(run_python(code))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_console_script_applies_it_and_main_does_not() -> None:
    """The settings are process-wide, so only the ``mmv`` entry point applies them, not ``main()`` (which tests and
    other programs call in their own process)."""
    assert run_cli("entry") == {"applied": True, "thp": "1"}
    assert run_cli("main") == {"applied": False, "thp": None}


# use_fast_cpu_settings() before or after torch is imported; what torch's import then finds in the environment.
FAST_SETTINGS = """
import json, os, sys
import mmv
{torch_first}
settings = mmv.runtime.use_fast_cpu_settings()
import torch
print(json.dumps({{"settings": settings, "thp_at_torch_import": os.environ.get("THP_MEM_ALLOC_ENABLE")}}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_use_fast_cpu_settings_before_torch() -> None:
    result = json.loads(run_python(FAST_SETTINGS.format(torch_first="")))
    assert result == {"settings": {"huge_pages": True, "reuse_freed_memory": True}, "thp_at_torch_import": "1"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_use_fast_cpu_settings_after_torch_warns() -> None:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    code = FAST_SETTINGS.format(torch_first="import torch")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Too late for huge pages (torch read the environment at import), not for the heap setting.
    assert result["settings"] == {"huge_pages": False, "reuse_freed_memory": True}
    assert "before 'import torch'" in out.stderr
