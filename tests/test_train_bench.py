"""benchmarks/bench_train.py stays runnable: its CPU size, on a tiny model, in-process."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def test_bench_train_small_runs_on_cpu(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = bench.main(["--small", "--device", "cpu", "--model", "mmv_tiny_s3dg", "--frames", "4", "--crop", "32",
                           "--steps", "1", "--warmup", "0", "--variants", "fp32", "fp32+channels_last",
                           "--json", str(tmp_path / "bench.json")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    assert [r["variant"] for r in report["results"]] == ["fp32", "fp32+channels_last"]
    for result in report["results"]:
        assert result["clips_per_s"] > 0 and result["peak_rss_gib"] > 0
        assert abs(result["loss"]) < 1e3  # a finite training loss
    assert report["results"][0]["speedup_vs_fp32"] == 1.0
