"""``mmv demo`` end to end: generate the corpus, train with the real training loop, evaluate, write the report.

Stages of :func:`run_demo` (each announced on the terminal, long ones with tqdm bars):

1. **corpus**: :func:`mmv.demo.corpus.generate_demo_corpus` into ``OUT/corpus`` (reused when it is already
   there with the same parameters);
2. **vocabulary**: the words of the *training* narrations (:func:`mmv.data.tokenizer.build_vocabulary`);
3. **train**: :func:`mmv.train.loop.train` on the training videos (a finished run with the same config is reused);
4. **evaluate**: :func:`mmv.demo.evaluate.evaluate_demo` on the held-out videos;
5. **report**: ``report.md``, ``results.json`` and the PNG figures (:mod:`mmv.demo.report`, :mod:`mmv.demo.plots`).

:func:`run_compare` repeats stages 3-4 for the five variants of the paper's Table 1 over several seeds.
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import mmv
from mmv.atomic import atomic_write_json

from .config import VARIANTS, DemoConfig, Variant

__all__ = ["StageClock", "build_vocab", "evaluate_model", "prepare_corpus", "run_compare", "run_demo",
           "train_variant"]

log = logging.getLogger(__name__)


@dataclass
class StageClock:
    """Announces stages on the terminal and records the wall and CPU seconds of each (``timings``)."""

    total: int
    stream: Any = None
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    _index: int = 0

    def __post_init__(self) -> None:
        self.stream = self.stream or sys.stderr
        self._began = time.perf_counter()

    def stage(self, name: str, what: str) -> "_Stage":
        self._index += 1
        print(f"[{self._index}/{self.total}] {what}", file=self.stream, flush=True)
        return _Stage(self, name)

    def elapsed(self) -> float:
        return time.perf_counter() - self._began


class _Stage:
    def __init__(self, clock: StageClock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> "_Stage":
        self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc: Any) -> None:
        wall, cpu = time.perf_counter() - self.wall, _cpu_seconds() - self.cpu
        entry = self.clock.timings.setdefault(self.name, {"wall_s": 0.0, "cpu_s": 0.0})
        entry["wall_s"] += wall
        entry["cpu_s"] += cpu
        if exc[0] is None:
            print(f"      done in {wall:.0f} s ({cpu:.0f} CPU s)", file=self.clock.stream, flush=True)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (corpus encoding runs in worker processes)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# ----------------------------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------------------------

def prepare_corpus(cfg: DemoConfig, data_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Generates the demo corpus in ``data_dir``, or reuses the one there when its parameters are the same.

    A corpus made with other parameters (an earlier ``--quick`` run, say) is replaced: ``data_dir`` belongs to
    the demo's output folder.
    """
    from mmv.demo.corpus import generate_demo_corpus

    return generate_demo_corpus(data_dir, num_train=cfg.num_train, num_test=cfg.num_test, seed=cfg.corpus_seed,
                                config=cfg.corpus_config(), overwrite=True, progress=progress)


def build_vocab(data_dir: Path, path: Path, max_size: int) -> Path:
    """Writes the vocabulary of the training narrations (never the held-out ones) to ``path``."""
    from mmv.demo.corpus import corpus_records
    from mmv.data.tokenizer import build_vocabulary
    from mmv.demo.evaluate import caption_text

    texts = [caption_text(record["caption_path"]) for record in corpus_records(data_dir, "train")]
    vocab = build_vocabulary(texts, max_size=max_size)
    vocab.save(path)
    log.info("vocabulary: %d words from %d training narration files", len(vocab), sum(bool(t) for t in texts))
    return path


def train_variant(cfg: DemoConfig, data_dir: Path, vocab: Path, run_dir: Path, variant: Variant, seed: int,
                  progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """Trains one model with :func:`mmv.train.loop.train`; returns ``(model in eval mode, training summary)``.

    A run directory holding a finished run of the same config is reused, and an unfinished one (stopped by
    Ctrl-C, say) is resumed exactly where it stopped; a run directory of another config is started over.

    Raises:
        RuntimeError: training was interrupted (SIGINT/SIGTERM); running the same command again continues it.
    """
    import mmv
    from mmv.train.checkpoint import find_latest
    from mmv.train.loop import train

    train_cfg = cfg.train_config(data_dir=str(data_dir), vocab=str(vocab), out_dir=str(run_dir), variant=variant,
                                 seed=seed, progress=progress)
    state = _run_state(run_dir, train_cfg)
    if state == "finished":
        log.info("%s: reusing the finished run in %s", variant.label, run_dir)
        summary = {"status": "reused", "step": train_cfg.run.steps, "checkpoint": str(find_latest(run_dir)),
                   "run_dir": str(run_dir)}
    else:
        if state == "other":
            shutil.rmtree(run_dir, ignore_errors=True)
        train_cfg.run.resume = "auto" if state == "unfinished" else ""
        summary = train(train_cfg)
        if summary["status"] != "completed":
            raise RuntimeError(f"training of {variant.label} stopped at step {summary['step']} of "
                               f"{train_cfg.run.steps}; run the same command again to continue from {run_dir}")
    summary["metrics"] = read_metrics(run_dir / "metrics.jsonl")
    return mmv.load(summary["checkpoint"]).eval(), summary


def _run_state(run_dir: Path, train_cfg: Any) -> str:
    """``finished`` / ``unfinished`` (a run of this very config), ``other`` (anything else there) or ``none``."""
    from mmv.train.checkpoint import find_latest, read_trainer_state
    from mmv.train.config import config_to_dict, load_config

    if not run_dir.exists():
        return "none"
    latest = find_latest(run_dir) if run_dir.is_dir() else None
    if latest is None or not (run_dir / "config.yaml").is_file():
        return "other"
    try:
        saved = config_to_dict(load_config(run_dir / "config.yaml"))
        if _comparable(saved) != _comparable(config_to_dict(train_cfg)):
            return "other"
        finished = int(read_trainer_state(latest).get("step", -1)) == train_cfg.run.steps
    except (ValueError, OSError, KeyError):
        return "other"
    return "finished" if finished else "unfinished"


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A config without the switches that do not change the result (resume mode, progress bar)."""
    run = {k: v for k, v in config["run"].items() if k not in ("resume", "progress")}
    return {**config, "run": run}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (lines that do not parse are left out)."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def evaluate_model(model: Any, cfg: DemoConfig, data_dir: Path, vocab: Path, cache_dir: Path, seed: int,
                   progress: bool = True) -> dict[str, Any]:
    """Every protocol of :func:`mmv.demo.evaluate.evaluate_demo` on the held-out videos."""
    from mmv.demo.evaluate import evaluate_demo
    from mmv.eval.io import load_tokenizer

    tokenizer = load_tokenizer(vocab, max_words=cfg.max_words)
    return evaluate_demo(model, data_dir, cfg=cfg.eval_config(), tokenizer=tokenizer, cache_dir=cache_dir,
                         seed=seed, progress=progress)


# ----------------------------------------------------------------------------------------------------------------
# The two commands
# ----------------------------------------------------------------------------------------------------------------

def run_demo(cfg: DemoConfig, out_dir: str | Path, progress: bool = True,
             print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """The default ``mmv demo``: FAC trained and evaluated on the demo corpus; writes the report into ``out_dir``.

    Returns:
        The content of ``results.json``.
    """
    from . import plots, report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clock = StageClock(total=5)
    data_dir, vocab_path = out_dir / "corpus", out_dir / "vocab.txt"
    with clock.stage("corpus", f"demo corpus: {cfg.num_train} training + {cfg.num_test} held-out videos "
                               f"-> {data_dir}"):
        corpus = prepare_corpus(cfg, data_dir, progress)
    with clock.stage("vocabulary", "vocabulary of the training narrations"):
        build_vocab(data_dir, vocab_path, cfg.vocab_size)
    variant = VARIANTS["fac"]
    with clock.stage("train", f"training {variant.label} ({cfg.model}, {cfg.steps} steps of {cfg.batch_size} "
                              "clips) with mmv.train"):
        model, training = train_variant(cfg, data_dir, vocab_path, out_dir / "runs" / "fac", variant, cfg.seed,
                                        progress)
    mmv.save(model, out_dir / "model")  # the trained model, with its preprocessing and vocabulary
    with clock.stage("evaluate", "evaluating on the held-out videos with mmv.eval"):
        evaluation = evaluate_model(model, cfg, data_dir, vocab_path, out_dir / "cache", cfg.seed, progress)
    with clock.stage("report", f"writing the report into {out_dir}"):
        figures = plots.demo_figures(model, cfg, data_dir, vocab_path, out_dir / "cache", training["metrics"],
                                     out_dir, progress=progress)
        results = report.demo_results(cfg, corpus, training, evaluation, figures, clock.timings)
        report.write_demo_report(results, out_dir)
    results["timings"]["total"] = {"wall_s": clock.elapsed()}
    atomic_write_json(out_dir / "results.json", results)
    print_fn(report.terminal_summary(results))
    return results


def run_compare(cfg: DemoConfig, out_dir: str | Path, seeds: int = 3, variants: Sequence[str] = tuple(VARIANTS),
                progress: bool = True, print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """``mmv demo --compare``: every variant of the paper's Table 1 trained and evaluated with ``seeds`` seeds.

    Returns:
        The content of ``comparison.json`` (per-run metrics, the table's mean and std, the findings).
    """
    from . import report

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clock = StageClock(total=2 + seeds * len(variants) + 1)
    data_dir, vocab_path = out_dir / "corpus", out_dir / "vocab.txt"
    with clock.stage("corpus", f"demo corpus: {cfg.num_train} training + {cfg.num_test} held-out videos"):
        corpus = prepare_corpus(cfg, data_dir, progress)
    with clock.stage("vocabulary", "vocabulary of the training narrations"):
        build_vocab(data_dir, vocab_path, cfg.vocab_size)
    runs: list[dict[str, Any]] = []
    for seed_index in range(seeds):
        seed = cfg.seed + seed_index
        for name in variants:
            variant = VARIANTS[name]
            run_dir = out_dir / "runs" / f"{name}_seed{seed}"
            with clock.stage(f"{name}", f"{variant.label}, seed {seed}: train ({cfg.steps} steps) and evaluate"):
                model, training = train_variant(cfg, data_dir, vocab_path, run_dir, variant, seed, progress)
                evaluation = evaluate_model(model, cfg, data_dir, vocab_path, run_dir / "cache", seed, progress)
            runs.append(report.run_record(name, variant.label, seed, training, evaluation))
            atomic_write_json(out_dir / "comparison_runs.json", {"runs": runs})  # partial results survive a crash
    with clock.stage("report", f"writing the comparison into {out_dir}"):
        results = report.comparison_results(cfg, corpus, runs, clock.timings)
        report.write_comparison_report(results, out_dir)
    print_fn(report.comparison_terminal(results))
    return results
