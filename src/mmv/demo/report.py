"""The demo's results: ``results.json`` / ``report.md`` of one run, and the Table-1 comparison of ``--compare``.

Every metric is shown beside its chance level and the margin between them. The comparison table has one row per
graph/modality variant and one column per task, each cell the mean ± sample standard deviation (n - 1) over
seeds; a task a variant cannot do (text→audio with Disjoint, audio tasks without audio) reads "n/a".
"""
from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmv.atomic import atomic_write_json, atomic_write_text

__all__ = ["SUMMARY_TASKS", "TABLE_TASKS", "comparison_results", "comparison_table", "comparison_terminal",
           "demo_results", "findings", "mean_std", "run_record", "summary_rows", "terminal_summary",
           "write_comparison_report", "write_demo_report"]

# Task key of mmv.demo.evaluate -> label in the summary, in the order of issue 6's "Must show".
SUMMARY_TASKS: dict[str, str] = {
    "video_probe": "video linear probe (class)",
    "audio_probe": "audio linear probe (class)",
    "attribute_video_va": "fine attribute from S_va, video (probe)",
    "attribute_audio_va": "fine attribute from S_va, audio (probe)",
    "text_to_video": "zero-shot text→video (R@1)",
    "text_to_audio": "zero-shot text→audio (R@1)",
    "image_deflated": "images through deflation (probe)",
    "image_naive": "images, naive deflation (probe)",
    "image_video": "images as static clips (probe)",
}
# Columns of the comparison, as in the paper's Table 1 (downstream task per column).
TABLE_TASKS: dict[str, str] = {
    "video_probe": "Video probe",
    "audio_probe": "Audio probe",
    "attribute_video_va": "Attr. S_va (V)",
    "attribute_audio_va": "Attr. S_va (A)",
    "text_to_video": "T→V R@1",
    "text_to_audio": "T→A R@1",
    "image_deflated": "Image (deflated)",
}
SATURATED = 99.5  # a value at or above this (percent) counts as saturated


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------------------------

def summary_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task of the evaluation: label, metric, value, chance, margin and a verdict."""
    tasks = evaluation["tasks"]
    rows = []
    for key in list(SUMMARY_TASKS) + [k for k in tasks if k not in SUMMARY_TASKS]:
        if key not in tasks:
            continue
        task = tasks[key]
        value, chance = float(task["value"]), float(task["chance"])
        rows.append({"task": key, "what": SUMMARY_TASKS.get(key, task.get("what", key)), "metric": task["metric"],
                     "value": value, "chance": chance, "margin": value - chance,
                     "verdict": _verdict(value, chance)})
    return rows


def _verdict(value: float, chance: float) -> str:
    if not (math.isfinite(value) and math.isfinite(chance)):
        return "not available"
    if value >= SATURATED:
        return "saturated"
    if value >= 2 * chance and value - chance >= 15:
        return "far above chance"
    # NOTE: a few points either side of chance is what an untrained model scores on 200 test clips.
    return "above chance" if value - chance >= 5 else "near chance"


def demo_results(cfg: Any, corpus: dict[str, Any], training: dict[str, Any], evaluation: dict[str, Any],
                 figures: dict[str, str], timings: dict[str, Any]) -> dict[str, Any]:
    """The content of ``results.json`` for the default demo."""
    import torch

    import mmv

    losses = training.get("metrics", [])
    return {
        "summary": summary_rows(evaluation),
        "config": cfg.to_dict(),
        "corpus": {"root": corpus.get("root"), "counts": corpus.get("counts"), "parameters": corpus.get("parameters")},
        "training": {k: v for k, v in training.items() if k != "metrics"} | {
            "first_loss": losses[0].get("loss") if losses else None,
            "last_loss": losses[-1].get("loss") if losses else None},
        "loss_curve": losses,
        "evaluation": evaluation,
        "figures": figures,
        "timings": timings,
        "environment": {"mmv": mmv.__version__, "torch": torch.__version__, "python": platform.python_version(),
                        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
    }


def markdown_summary(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| task | metric | value | chance | margin | |", "|---|---|---:|---:|---:|---|"]
    for row in rows:
        margin = "n/a" if not math.isfinite(row["margin"]) else f"{row['margin']:+.1f}"
        lines.append(f"| {row['what']} | {row['metric']} | {_fmt(row['value'])} | {_fmt(row['chance'])} | "
                     f"{margin} | {row['verdict']} |")
    return "\n".join(lines)


def terminal_summary(results: dict[str, Any]) -> str:
    """The table printed at the end of ``mmv demo``: each metric beside its chance level and the margin."""
    rows = results["summary"]
    width = max(len(r["what"]) for r in rows)
    head = f"{'FAC on held-out videos':<{width}}  {'metric':<8} {'value':>6} {'chance':>6} {'margin':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        margin = "n/a" if not math.isfinite(r["margin"]) else f"{r['margin']:+.1f}"
        lines.append(f"{r['what']:<{width}}  {r['metric']:<8} {_fmt(r['value']):>6} {_fmt(r['chance']):>6} "
                     f"{margin:>7}  {r['verdict']}")
    total = results["timings"].get("total", {}).get("wall_s")
    if total is not None:
        lines.append(f"total {total / 60:.1f} min; report in {Path(results['figures'].get('report_dir', '.'))}")
    return "\n".join(lines)


def write_demo_report(results: dict[str, Any], out_dir: Path) -> None:
    """Writes ``report.md`` (``results.json`` is written by the caller, last)."""
    cfg, training, corpus = results["config"], results["training"], results["corpus"]
    figures = results["figures"]
    counts = corpus.get("counts") or {}
    text = [
        "# mmv demo report",
        "",
        f"MMV with the **FAC** graph (`{cfg['model']}`), trained with `mmv.train` for {cfg['steps']} steps of "
        f"{cfg['batch_size']} clips ({cfg['num_frames']} frames at {cfg['fps']:g} fps, {cfg['crop']}x{cfg['crop']} "
        f"pixels, log-mel audio, ASR-like narrations) on {cfg['num_train']} generated videos, then evaluated with "
        f"`mmv.eval` on {cfg['num_test']} held-out videos whose handwriting was never seen in training.",
        "",
        "## Results (held-out videos)",
        "",
        markdown_summary(results["summary"]),
        "",
        "Chance: 100/classes for the probes (10 digits, 4 attribute values); for retrieval the expected R@1 of a "
        "random ranking given the number of clips of the query's class. *Margin* = value − chance.",
        "",
        "## Training",
        "",
        f"Loss {_fmt(training.get('first_loss'), 3)} → {_fmt(training.get('last_loss'), 3)} "
        f"(status: {training.get('status')}).",
        "",
        f"![loss curves]({figures.get('loss_curves', 'loss_curves.png')})",
        "",
        "## Zero-shot text→video retrieval",
        "",
        "For each query (a held-out narration), the top held-out videos in S_vat; green = same digit as the query.",
        "",
        f"![retrieval examples]({figures.get('retrieval_grid', 'retrieval_grid.png')})",
        "",
        f"![similarity matrix]({figures.get('similarity_matrix', 'similarity_matrix.png')})",
        "",
        "## Corpus",
        "",
        f"Counts: `{json.dumps(counts)}`.",
        "",
        "## Time",
        "",
        "| stage | wall s | CPU s |",
        "|---|---:|---:|",
        *[f"| {name} | {t.get('wall_s', 0):.0f} | {t.get('cpu_s', 0):.0f} |"
          for name, t in results["timings"].items() if "cpu_s" in t],
        "",
        "Machine-readable numbers: `results.json`.",
        "",
    ]
    atomic_write_text(out_dir / "report.md", "\n".join(text))


# ----------------------------------------------------------------------------------------------------------------
# The comparison (paper's Table 1)
# ----------------------------------------------------------------------------------------------------------------

def run_record(name: str, label: str, seed: int, training: dict[str, Any], evaluation: dict[str, Any]) -> dict:
    """One trained-and-evaluated model of the comparison: its metric values per task (NaN where unavailable)."""
    tasks = evaluation["tasks"]
    values = {key: float(tasks[key]["value"]) if key in tasks else float("nan") for key in TABLE_TASKS}
    chances = {key: float(tasks[key]["chance"]) for key in TABLE_TASKS if key in tasks}
    return {"variant": name, "label": label, "seed": seed, "values": values, "chance": chances,
            "final_loss": training.get("loss"), "status": training.get("status")}


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std with n - 1, n) of the finite values; NaN mean when there are none; std 0 for one value."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return float(finite.mean()), std, int(finite.size)


def comparison_table(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{variant label: {task: {"mean", "std", "n"}}}`` over the runs, rows in the order they first appear."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for label in dict.fromkeys(run["label"] for run in runs):
        mine = [run for run in runs if run["label"] == label]
        table[label] = {}
        for task in TABLE_TASKS:
            mean, std, n = mean_std([run["values"].get(task, float("nan")) for run in mine])
            table[label][task] = {"mean": mean, "std": std, "n": n}
    return table


def _cell(stats: dict[str, float]) -> str:
    return "n/a" if not stats["n"] else f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def table_markdown(table: dict[str, dict[str, dict[str, float]]], chance: dict[str, float]) -> str:
    tasks = list(TABLE_TASKS)
    lines = ["| model | " + " | ".join(TABLE_TASKS[t] for t in tasks) + " |",
             "|---|" + "---:|" * len(tasks)]
    for label, row in table.items():
        best = [t for t in tasks if row[t]["n"] and row[t]["mean"] == max(
            (r[t]["mean"] for r in table.values() if r[t]["n"]), default=float("nan"))]
        cells = [f"**{_cell(row[t])}**" if t in best else _cell(row[t]) for t in tasks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| *chance* | " + " | ".join(_fmt(chance.get(t)) for t in tasks) + " |")
    return "\n".join(lines)


def _stat(table: dict, label: str, task: str) -> tuple[float, float] | None:
    cell = table.get(label, {}).get(task)
    return None if not cell or not cell["n"] else (cell["mean"], cell["std"])


def _compare(table: dict, a: str, b: str, task: str) -> tuple[str, float] | None:
    """How ``a`` compares with ``b`` on ``task``: ("better" | "worse" | "tie", difference of means)."""
    sa, sb = _stat(table, a, task), _stat(table, b, task)
    if sa is None or sb is None:
        return None
    diff = sa[0] - sb[0]
    # NOTE: a difference within the seeds' combined spread is reported as a tie, not as a win.
    noise = math.hypot(sa[1], sb[1])
    return ("better" if diff > noise else "worse" if diff < -noise else "tie"), diff


def findings(table: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """The paper's qualitative claims checked against the table; each ``{"claim", "holds", "evidence"}``.

    ``holds`` is True (every comparison clear, beyond the seeds' spread), "within noise" (no comparison goes the
    wrong way, some are ties) or False. Claims whose rows are missing are left out.
    """
    out = []

    def claim(text: str, pairs: list[tuple[str, str, str]], at_least: bool = False) -> None:
        evidence, verdicts = [], []
        for a, b, task in pairs:
            result = _compare(table, a, b, task)
            if result is not None:
                verdicts.append(result[0])
                evidence.append(f"{a} vs {b} on {TABLE_TASKS[task]}: {result[1]:+.1f} ({result[0]})")
        if not verdicts:
            return
        if "worse" in verdicts:
            holds: Any = False
        elif at_least or all(v == "better" for v in verdicts):
            holds = True  # "at least as well": a tie is enough
        else:
            holds = "within noise"
        out.append({"claim": text, "holds": holds, "evidence": evidence})

    claim("three modalities beat two (FAC vs VT only, FAC vs VA only)",
          [("FAC", "VT only", "video_probe"), ("FAC", "VT only", "text_to_video"),
           ("FAC", "VA only", "video_probe"), ("FAC", "VA only", "audio_probe")])
    claim("FAC keeps the fine audio-visual detail at least as well as Disjoint",
          [("FAC", "Disjoint", "attribute_video_va"), ("FAC", "Disjoint", "attribute_audio_va")], at_least=True)
    if _stat(table, "FAC", "text_to_audio") and not _stat(table, "Disjoint", "text_to_audio"):
        out.append({"claim": "FAC adds text↔audio retrieval, which Disjoint cannot do", "holds": True,
                    "evidence": [f"FAC T→A R@1 {_cell(table['FAC']['text_to_audio'])}; Disjoint: n/a"]})
    claim("Shared loses some fine audio-visual detail (FAC better than Shared)",
          [("FAC", "Shared", "attribute_video_va"), ("FAC", "Shared", "attribute_audio_va")])
    return out


def winners(table: dict[str, dict[str, dict[str, float]]]) -> dict[str, list[str]]:
    """``{task: [labels with the best mean]}``."""
    out = {}
    for task in TABLE_TASKS:
        cells = {label: row[task]["mean"] for label, row in table.items() if row[task]["n"]}
        if cells:
            best = max(cells.values())
            out[task] = [label for label, v in cells.items() if v == best]
    return out


def comparison_results(cfg: Any, corpus: dict[str, Any], runs: list[dict[str, Any]],
                       timings: dict[str, Any]) -> dict[str, Any]:
    table = comparison_table(runs)
    chance: dict[str, float] = {}
    for run in runs:
        for task, value in run["chance"].items():
            chance.setdefault(task, value)
    return {"table": table, "chance": chance, "winners": winners(table), "findings": findings(table),
            "runs": runs, "seeds": sorted({run["seed"] for run in runs}), "config": cfg.to_dict(),
            "corpus": {"counts": corpus.get("counts"), "parameters": corpus.get("parameters")}, "timings": timings}


def _findings_markdown(items: list[dict[str, Any]]) -> str:
    lines = []
    for item in items:
        holds = {True: "holds", False: "does not hold", "within noise": "holds only within the seeds' spread"}[
            item["holds"]]
        lines.append(f"- **{item['claim']}**: {holds}. " + "; ".join(item["evidence"]) + ".")
    return "\n".join(lines)


def comparison_markdown(results: dict[str, Any]) -> str:
    seeds = results["seeds"]
    wins = "; ".join(f"{TABLE_TASKS[t]}: {', '.join(labels)}" for t, labels in results["winners"].items())
    return "\n".join([
        f"Mean ± std (n − 1) over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); held-out videos; "
        "probes: top-1 %, retrieval: R@1 %; best mean in bold.",
        "",
        table_markdown(results["table"], results["chance"]),
        "",
        f"Best per task: {wins}.",
        "",
        "Paper's qualitative findings, checked here (a difference within the combined std of the seeds counts as "
        "a tie):",
        "",
        _findings_markdown(results["findings"]),
    ])


def write_comparison_report(results: dict[str, Any], out_dir: Path) -> None:
    atomic_write_json(out_dir / "comparison.json", results)
    atomic_write_text(out_dir / "comparison.md", "# mmv demo --compare\n\n" + comparison_markdown(results) + "\n")


def comparison_terminal(results: dict[str, Any]) -> str:
    return comparison_markdown(results)
