"""Process-wide CPU settings (mmv.runtime): freed memory is reused without page faults; the switch turns it off.

Each case runs in a fresh interpreter, since the setting lasts for the whole process.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

# Allocates, touches and frees a 64 MiB tensor, like a forward pass its activations: four rounds to reach a steady
# state (the heap settles after two or three), then reports the minor page faults of each of the next seven rounds.
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
for _ in range(4):
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


def run_cli(function: str) -> bool:
    """Runs ``mmv info --help`` through ``mmv.cli.main.<function>`` in a fresh interpreter; returns whether the
    heap setting is in effect afterwards."""
    code = ("import sys, mmv.runtime as runtime, mmv.cli.main as cli\n"
            f"sys.argv = ['mmv', 'info', '--help']\n"
            f"try:\n    cli.{function}(['info', '--help']) if '{function}' == 'main' else cli.{function}()\n"
            "except SystemExit:\n    pass\n"
            "print(runtime._applied)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_console_script_applies_it_and_main_does_not() -> None:
    """The setting is process-wide, so only the ``mmv`` entry point applies it, not ``main()`` (which tests and
    other programs call in their own process)."""
    assert run_cli("entry")
    assert not run_cli("main")
