"""``pip install mmv`` without extras: loading, saving, a forward pass, decoding and the log-mel spectrogram work
without the extras' packages, and a command that needs an extra says which one in one line.

Each case runs ``.ci/lean_check.py``'s checks in a fresh interpreter whose first import hook refuses the extras'
packages, as if they were not installed (CI also runs that script in a real lean venv).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CI_DIR = Path(__file__).resolve().parents[1] / ".ci"

# Packages of the extras (and of the test extra): importing any of them raises ModuleNotFoundError. The hook
# records each refused import, to name the importer in a failure message.
BLOCKER = """
import importlib.abc, json, sys
BLOCKED = {"sklearn", "scipy", "matplotlib", "tensorboard", "webdataset", "pyarrow", "gensim", "pocketsphinx",
           "librosa"}
REFUSED = []

class RefuseExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            REFUSED.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, RefuseExtras())
"""


def run_checks(tmp_path: Path, *checks: str) -> dict:
    """Runs ``lean_check.<check>(tmp_path)`` for each check behind the blocker; returns what the hook saw."""
    calls = "".join(f"lean_check.{check}(tmp)\n" for check in checks)
    code = (BLOCKER + f"sys.path.insert(0, {str(CI_DIR)!r})\n"
            "from pathlib import Path\nimport lean_check\n"
            f"tmp = Path({str(tmp_path)!r})\n" + calls +
            "print(json.dumps({'loaded': sorted(m for m in sys.modules if m.partition('.')[0] in BLOCKED),\n"
            "                  'refused': sorted(set(REFUSED))}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_works_without_extras(tmp_path: Path) -> None:
    seen = run_checks(tmp_path, "check_model", "check_media", "check_embed")
    assert seen["loaded"] == [], seen


def test_command_needing_an_extra_names_it(tmp_path: Path) -> None:
    """``mmv demo`` without matplotlib and scikit-learn: ``mmv demo: error: ... pip install 'mmv[demo]'``, one line
    on stderr (no traceback), exit status 1 (checked by lean_check)."""
    seen = run_checks(tmp_path, "check_cli_names_extra")
    assert seen["loaded"] == [] and seen["refused"], seen
