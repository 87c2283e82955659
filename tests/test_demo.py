"""Tests of ``mmv demo``: the quick run end to end through the CLI, the comparison table, findings and figures."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmv.demo import report
from mmv.demo.config import VARIANTS, DemoConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MUST_SHOW = ("video_probe", "audio_probe", "attribute_video_va", "attribute_audio_va", "text_to_video",
             "text_to_audio", "image_deflated")


def assert_png(path: Path) -> np.ndarray:
    """The file is a complete PNG that PIL decodes; returns its RGB pixels."""
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as image:
        image.verify()  # checks the chunk CRCs
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels.std() > 0, f"{path} is blank"
    return pixels


# ----------------------------------------------------------------------------------------------------------------
# End to end (quick), through the command line
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmv.cli.main import main

    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    return out


@pytest.mark.slow
def test_quick_demo_writes_every_report_file(quick_demo: Path) -> None:
    for name in ("report.md", "results.json", "loss_curves.png", "retrieval_grid.png", "similarity_matrix.png"):
        assert (quick_demo / name).is_file(), name
    results = json.loads((quick_demo / "results.json").read_text())
    assert {"summary", "config", "corpus", "training", "loss_curve", "evaluation", "figures", "timings",
            "environment"} <= set(results)
    rows = {row["task"]: row for row in results["summary"]}
    assert set(MUST_SHOW) <= set(rows)
    for row in rows.values():
        assert {"what", "metric", "value", "chance", "margin", "verdict"} <= set(row)
        if row["value"] is not None:
            assert row["margin"] == pytest.approx(row["value"] - row["chance"])
            assert 0.0 <= row["value"] <= 100.0
    # The chance of a class probe is 100 / 10 digits, of an attribute probe 100 / 4 values.
    assert rows["video_probe"]["chance"] == pytest.approx(10.0)
    assert rows["attribute_video_va"]["chance"] == pytest.approx(25.0)
    quick = DemoConfig.quick()
    assert results["config"]["steps"] == quick.steps
    assert results["training"]["step"] == quick.steps
    assert [r["step"] for r in results["loss_curve"]][-1] == quick.steps
    assert all(math.isfinite(r["loss"]) for r in results["loss_curve"])
    assert results["corpus"]["counts"]["train"]["videos"] == quick.num_train
    for stage in ("corpus", "vocabulary", "train", "evaluate", "report"):
        assert results["timings"][stage]["cpu_s"] >= 0
    text = (quick_demo / "report.md").read_text()
    for row in rows.values():
        assert row["what"] in text
    for name in ("loss_curves.png", "retrieval_grid.png", "similarity_matrix.png"):
        assert_png(quick_demo / name)
        assert f"]({name})" in text


@pytest.mark.slow
def test_rerun_reuses_corpus_and_training(quick_demo: Path, capsys: pytest.CaptureFixture) -> None:
    from mmv.cli.main import main

    corpus_stamp = (quick_demo / "corpus" / "corpus.json").stat().st_mtime_ns
    checkpoint = json.loads((quick_demo / "results.json").read_text())["training"]["checkpoint"]
    assert main(["demo", "--quick", "--out", str(quick_demo), "--no-progress", "--threads", "1"]) == 0
    results = json.loads((quick_demo / "results.json").read_text())
    assert results["training"]["status"] == "reused"
    assert results["training"]["checkpoint"] == checkpoint
    assert (quick_demo / "corpus" / "corpus.json").stat().st_mtime_ns == corpus_stamp
    printed = capsys.readouterr().out
    assert "video linear probe (class)" in printed and "chance" in printed


@pytest.mark.slow
def test_quick_compare_builds_the_table(quick_demo: Path) -> None:
    from mmv.demo.run import run_compare

    results = run_compare(DemoConfig.quick(), quick_demo, seeds=1, variants=("fac", "disjoint"), progress=False,
                          print_fn=lambda text: None)
    assert list(results["table"]) == ["FAC", "Disjoint"]
    # Disjoint has no audio in the text space: text→audio is not available, FAC has it.
    assert results["table"]["Disjoint"]["text_to_audio"]["n"] == 0
    assert results["table"]["FAC"]["text_to_audio"]["n"] == 1
    markdown = (quick_demo / "comparison.md").read_text()
    disjoint_row = next(line for line in markdown.splitlines() if line.startswith("| Disjoint |"))
    assert "n/a" in disjoint_row
    assert json.loads((quick_demo / "comparison.json").read_text())["seeds"] == [0]


# ----------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(VARIANTS))
def test_train_config_of_each_variant(tmp_path: Path, name: str) -> None:
    from mmv.models import create_model

    variant = VARIANTS[name]
    cfg = DemoConfig().train_config(data_dir=str(tmp_path), vocab="vocab.txt", out_dir=str(tmp_path / "run"),
                                    variant=variant, seed=7)
    assert cfg.run.seed == 7 and cfg.run.device == "cpu"
    assert (cfg.loss.lambda_va > 0) == ("audio" in variant.modalities)
    assert (cfg.loss.lambda_vt > 0) == ("text" in variant.modalities)
    model = create_model(cfg.model.name, **cfg.model.overrides)
    assert model.cfg.graph == variant.graph
    assert tuple(model.cfg.modalities) == variant.modalities


@pytest.mark.parametrize("cores, torch_threads, workers, expected", [
    (2, 2, 1, 1),    # the development machine: one core decodes, one trains
    (16, 16, 1, 15),
    (16, 4, 1, 4),   # torch limited beforehand (OMP_NUM_THREADS): never raised
    (1, 1, 1, 1),    # never below one thread
    (8, 8, 0, 8),    # no data worker (the quick config)
])
def test_demo_threads_leave_the_data_workers_their_cores(cores, torch_threads, workers, expected) -> None:
    from mmv.cli.demo import default_threads

    assert default_threads(cores, torch_threads, workers) == expected


def test_default_model_is_the_s3dg_at_a_quarter_width() -> None:
    """The demo's video network is the real S3D-G, only narrower: at 1/8 width its Inception branches have 2-8
    channels and it learns nothing from the demo clips in 300 steps (docs/demo.md); at 1/4 the narrowest has 4."""
    from mmv.models import create_model
    from mmv.models.s3dg import S3DG, InceptionBlock3D

    video = create_model(DemoConfig().model).video_backbone
    assert isinstance(video, S3DG) and video.cfg.width_mult == 0.25 and video.num_features == 256
    widths = [conv.out_channels for block in video.modules() if isinstance(block, InceptionBlock3D)
              for conv in block.modules() if isinstance(conv, torch.nn.Conv3d)]
    assert min(widths) == 4


def test_the_loss_direction_reaches_the_training_config() -> None:
    for direction in ("joint", "released"):
        cfg = DemoConfig(loss_direction=direction).train_config(data_dir="d", vocab="v", out_dir="o")
        assert cfg.loss.direction == direction


@pytest.mark.slow
def test_the_demo_model_carries_its_training_clips(quick_demo: Path) -> None:
    """The model the demo writes records the clips it was trained on, and the evaluation used exactly those."""
    import mmv
    from mmv.data.tokenizer import Vocabulary
    from mmv.preprocess import Preprocess

    quick = DemoConfig.quick()
    train = quick.train_config(data_dir=str(quick_demo / "corpus"), vocab=str(quick_demo / "vocab.txt"),
                               out_dir="o").data
    model = mmv.load(quick_demo / "model")
    expected = Preprocess.from_training_data(train)
    assert model.preprocess == expected and model.preprocess.source == "training"
    assert (expected.video.num_frames, expected.video.fps, expected.video.crop) == (quick.num_frames, quick.fps,
                                                                                    quick.crop)
    assert expected.audio.mel.fmax == quick.sample_rate() / 2 * 0.95  # the demo's own mel edge, not the default
    assert model.preprocess.text.vocabulary == Vocabulary.load(quick_demo / "vocab.txt")
    results = json.loads((quick_demo / "results.json").read_text())
    assert results["evaluation"]["options"]["preprocess"] == expected.to_dict(include_vocabulary=False)


# ----------------------------------------------------------------------------------------------------------------
# The comparison table on hand-made results
# ----------------------------------------------------------------------------------------------------------------

def _run(label: str, seed: int, **values: float) -> dict:
    return {"variant": label.lower(), "label": label, "seed": seed,
            "values": {task: values.get(task, float("nan")) for task in report.TABLE_TASKS},
            "chance": {"video_probe": 10.0, "text_to_audio": 12.0}}


def test_mean_std_by_hand() -> None:
    mean, std, n = report.mean_std([60.0, 70.0, 80.0])
    assert (mean, std, n) == (70.0, 10.0, 3)  # sample std: sqrt((100 + 0 + 100) / 2)
    mean, std, n = report.mean_std([1.0, 2.0, 4.0, float("nan")])
    assert n == 3 and mean == pytest.approx(7 / 3)
    assert std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert report.mean_std([42.0]) == (42.0, 0.0, 1)
    mean, std, n = report.mean_std([float("nan")])
    assert n == 0 and math.isnan(mean)


def test_comparison_table_on_hand_made_runs() -> None:
    runs = [
        _run("FAC", 0, video_probe=50.0, text_to_audio=30.0),
        _run("FAC", 1, video_probe=54.0, text_to_audio=34.0),
        _run("FAC", 2, video_probe=58.0, text_to_audio=38.0),
        _run("Disjoint", 0, video_probe=40.0),
        _run("Disjoint", 1, video_probe=46.0),
    ]
    table = report.comparison_table(runs)
    assert list(table) == ["FAC", "Disjoint"]
    assert table["FAC"]["video_probe"] == {"mean": 54.0, "std": 4.0, "n": 3}
    assert table["Disjoint"]["video_probe"]["mean"] == 43.0
    assert table["Disjoint"]["video_probe"]["std"] == pytest.approx(math.sqrt(18.0))
    assert table["Disjoint"]["text_to_audio"]["n"] == 0
    markdown = report.table_markdown(table, {"video_probe": 10.0})
    lines = markdown.splitlines()
    assert lines[0].startswith("| model | Video probe |")
    fac = next(line for line in lines if line.startswith("| FAC |"))
    disjoint = next(line for line in lines if line.startswith("| Disjoint |"))
    assert "**54.0 ± 4.0**" in fac  # the best mean of its column is bold
    assert "43.0 ± 4.2" in disjoint and "**" not in disjoint.split("|")[2]
    assert disjoint.split("|")[6].strip() == "n/a"  # text→audio column
    assert lines[-1].startswith("| *chance* | 10.0 |")
    assert report.winners(table)["video_probe"] == ["FAC"]


def test_findings_follow_the_table() -> None:
    def cell(mean: float, std: float = 1.0) -> dict:
        return {"mean": mean, "std": std, "n": 3}

    nan = {"mean": float("nan"), "std": float("nan"), "n": 0}
    table = {
        "FAC": {"video_probe": cell(60), "audio_probe": cell(50), "text_to_video": cell(40),
                "attribute_video_va": cell(70), "attribute_audio_va": cell(69), "text_to_audio": cell(30)},
        "Disjoint": {"attribute_video_va": cell(70.5), "attribute_audio_va": cell(68), "text_to_audio": nan},
        "Shared": {"attribute_video_va": cell(50), "attribute_audio_va": cell(68.5)},
        "VT only": {"video_probe": cell(55), "text_to_video": cell(39)},
        "VA only": {"video_probe": cell(52), "audio_probe": cell(45)},
    }
    by_claim = {f["claim"].split(" (")[0]: f for f in report.findings(table)}
    # 60 vs 55 and 60 vs 52 and 50 vs 45 are clear; 40 vs 39 is within the spread (sqrt(2) ≈ 1.4): a tie.
    assert by_claim["three modalities beat two"]["holds"] == "within noise"
    assert by_claim["FAC keeps the fine audio-visual detail at least as well as Disjoint"]["holds"] is True
    assert by_claim["FAC adds text↔audio retrieval, which Disjoint cannot do"]["holds"] is True
    assert by_claim["Shared loses some fine audio-visual detail"]["holds"] == "within noise"
    table["Disjoint"]["attribute_video_va"] = cell(80)  # now FAC is clearly worse than Disjoint
    by_claim = {f["claim"].split(" (")[0]: f for f in report.findings(table)}
    assert by_claim["FAC keeps the fine audio-visual detail at least as well as Disjoint"]["holds"] is False


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------

def _colour_pixels(pixels: np.ndarray, hex_colour: str, tol: int = 30) -> int:
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels.astype(int) - target).max(axis=-1) <= tol).sum())


def test_retrieval_grid_marks_correct_and_wrong(tmp_path: Path) -> None:
    from mmv.demo.plots import CORRECT, WRONG, plot_retrieval_grid

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 60, (32, 32, 3), dtype=np.uint8) for _ in range(6)]  # dark: no green/red by chance
    labels = [0, 0, 1, 1, 2, 2]
    names = ["zero", "one", "two"]
    all_correct = assert_png(plot_retrieval_grid(["zero here", "a one"], [0, 1], [[0, 1], [2, 3]], frames, labels,
                                                 names, tmp_path / "good.png"))
    assert _colour_pixels(all_correct, CORRECT) > 100 and _colour_pixels(all_correct, WRONG) == 0
    all_wrong = assert_png(plot_retrieval_grid(["zero here"], [0], [[4, 5]], frames, labels, names,
                                               tmp_path / "bad.png"))
    assert _colour_pixels(all_wrong, WRONG) > 100 and _colour_pixels(all_wrong, CORRECT) == 0


def test_loss_curves_and_similarity_matrix_are_pngs(tmp_path: Path) -> None:
    from mmv.demo.plots import plot_loss_curves, plot_similarity_matrix

    rows = [{"step": s, "loss": 5.0 / s, "nce_va": 3.0 / s, "milnce_vt": 2.0 / s} for s in range(1, 21)]
    assert_png(plot_loss_curves(rows, tmp_path / "loss.png"))
    with pytest.raises(ValueError, match="no loss values"):
        plot_loss_curves([{"step": 1}], tmp_path / "none.png")
    rng = np.random.default_rng(1)
    sims = rng.uniform(-1, 1, (12, 15))
    assert_png(plot_similarity_matrix(sims, rng.integers(0, 3, 12), rng.integers(0, 3, 15), ["a", "b", "c"],
                                      tmp_path / "sim.png"))
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
