"""benchmarks/bench_captions.py stays runnable: a tiny caption file, the three readers each in its own process."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_captions.py"


def test_bench_captions_small(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))  # as when run as a script: its folder's machine.py
    spec = importlib.util.spec_from_file_location("bench_captions", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--size-mb", "0.2", "--lookups", "30", "--dir", str(tmp_path), "--json",
                       str(tmp_path / "bench.json")]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    assert report["size_mb"] >= 0.2 and report["videos"] == 2000  # written in blocks of 2000 entries
    rows = {row["mode"]: row for row in report["results"]}
    assert set(rows) == {"whole", "build", "open"} and len({row["checksum"] for row in rows.values()}) == 1
    assert all(row["videos"] == 2000 and row["peak_mib"] > 0 for row in rows.values())
    assert rows["whole"]["peak_vs_whole"] == 1.0
    assert list(tmp_path.iterdir()) == [tmp_path / "bench.json"]  # the generated file is removed
