"""Training configs: YAML presets, typed key=value overrides, errors that name the key, round trips."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmv.train.config import (ConfigError, DatasetSpec, TrainConfig, apply_overrides, config_from_dict,
                              config_to_dict, load_config, save_config)

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_are_the_papers_recipe():
    cfg = TrainConfig()
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.schedule) == (0.002, 5000, "cosine")
    assert cfg.loss.temperature == 0.07
    assert (cfg.data.num_frames, cfg.data.fps, cfg.data.crop) == (32, 10.0, 200)
    assert (cfg.data.sample_rate, cfg.data.num_mel_bins, cfg.data.stft_window, cfg.data.stft_hop) == (48000, 80, 2048,
                                                                                                      1024)


def test_overrides_are_parsed_and_typed():
    cfg = apply_overrides(TrainConfig(), [
        "run.steps=20", "optim.lr=1e-3", "optim.betas=[0.8, 0.95]", "run.compile=true", "name=my run",
        "model.overrides.graph=shared", "data.datasets.0.size=64", "loss.lambda_vt=10",
    ])
    assert cfg.run.steps == 20 and isinstance(cfg.run.steps, int)
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # YAML 1.1 reads "1e-3" as a string
    assert cfg.optim.betas == (0.8, 0.95)
    assert cfg.run.compile is True
    assert cfg.name == "my run"
    assert cfg.model.overrides == {"graph": "shared"}
    assert cfg.data.datasets == [DatasetSpec(size=64)]
    assert cfg.loss.lambda_vt == 10.0 and isinstance(cfg.loss.lambda_vt, float)


def test_a_whole_list_can_be_replaced():
    cfg = apply_overrides(TrainConfig(), ["data.datasets=[{kind: manifest, path: a.jsonl, weight: 10}, "
                                          "{kind: folder, path: b}]"])
    assert [(d.kind, d.path, d.weight) for d in cfg.data.datasets] == [("manifest", "a.jsonl", 10.0),
                                                                       ("folder", "b", 1.0)]


@pytest.mark.parametrize("override, message", [
    ("run.stepz=3", "unknown key run.stepz"),
    ("foo.bar=1", "unknown key foo"),
    ("data.datasets.0.sise=3", "unknown key data.datasets.0.sise"),
    ("model.overrides.grap=shared", "unknown key model.overrides.grap"),
    ("run.steps.x=1", "unknown key run.steps.x"),
    ("data.datasets.5.size=3", "data.datasets.5"),
    ("run.steps=1.5", "run.steps must be an integer"),
    ("run.steps=many", "run.steps must be an integer"),
    ("run.compile=1", "run.compile must be true or false"),
    ("optim.lr=fast", "optim.lr must be a number"),
    ("optim.betas=[0.9]", "optim.betas must be a list of 2"),
    ("run.amp=fp16", "run.amp must be one of"),
    ("run.amp=off", "quote the value"),
    ("loss.direction=both", "loss.direction must be one of"),
    ("data.datasets.0.kind=youtube", "data.datasets.0.kind must be one of"),
    ("data.datasets.0.kind=folder", "data.datasets.0.path is empty"),
    ("run.steps=0", "run.steps must be >= 1"),
    ("optim.lr=0", "optim.lr must be > 0"),
    ("run.steps", "not of the form key.sub=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        apply_overrides(TrainConfig(), [override])


def test_all_loss_weights_zero_is_an_error():
    with pytest.raises(ConfigError, match="nothing to train"):
        apply_overrides(TrainConfig(), ["loss.lambda_va=0", "loss.lambda_vt=0"])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  steps: 10\n  batchsize: 4\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key run\.batchsize"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("run: [steps: 10\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_saved_config_round_trips(tmp_path, suffix):
    cfg = apply_overrides(TrainConfig(), ["run.steps=7", "optim.betas=[0.5, 0.6]", "model.overrides.va_dim=64"])
    path = tmp_path / f"config{suffix}"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_presets_load(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    if cfg.run.global_batch_size:
        assert cfg.run.global_batch_size == 4096


def test_paper_presets_cover_the_grid():
    names = {p.stem for p in CONFIGS}
    for backbone in ("s3dg", "tsm_resnet50", "tsm_resnet50x2"):
        for graph in ("fac", "shared", "disjoint"):
            for data in ("ht", "ht_as"):
                assert f"mmv_{graph}_{backbone}_{data}" in names
    ht = load_config(CONFIGS[0].parent / "mmv_fac_s3dg_ht.yaml")
    ht_as = load_config(CONFIGS[0].parent / "mmv_fac_s3dg_ht_as.yaml")
    assert (ht.loss.lambda_va, ht.loss.lambda_vt) == (1.0, 10.0)  # the 10:1 choice documented in docs/training.md
    assert (ht_as.loss.lambda_va, ht_as.loss.lambda_vt) == (1.0, 1.0)
    assert [d.weight for d in ht_as.data.datasets] == [1.0, 1.0]


def test_cli_takes_options_before_and_after_overrides(capsys):
    import yaml

    from mmv.cli.main import main

    preset = str(CONFIGS[0].parent / "synthetic_tiny.yaml")
    assert main(["train", "run.steps=3", "--config", preset, "--print-config", "run.seed=5", "--resume", "auto"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["run"]["steps"], printed["run"]["seed"], printed["run"]["resume"]) == (3, 5, "auto")
    assert main(["train", "--config", preset, "run.steps=3", "--bogus"]) == 2  # a usage error
    assert "unrecognized argument '--bogus'" in capsys.readouterr().err
    assert main(["train", "--config", preset, "run.stepz=3"]) == 2
    assert "unknown key run.stepz" in capsys.readouterr().err


def test_flip_switch_reaches_the_training_transform(tmp_path) -> None:
    """``data.flip=false`` must turn the random horizontal flip off in the transform the training data uses."""
    import numpy as np
    import torch

    from mmv.data.transforms import VideoTransform
    from mmv.demo.config import DemoConfig
    from mmv.train.config import load_config

    cfg = load_config(None, ["data.flip=false", "data.color_jitter=false"])
    assert cfg.data.flip is False and cfg.data.color_jitter is False
    demo = DemoConfig().train_config(data_dir=str(tmp_path), vocab="", out_dir=str(tmp_path / "run"))
    assert demo.data.flip is False  # the demo's attribute pairs left/right motion with a pitch glide
    clip = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    clip[:, :, :4] = 255  # bright left half
    transform = VideoTransform(train=True, crop_size=8, min_resize=8, flip=cfg.data.flip, color_jitter=False)
    for seed in range(20):
        out = transform(clip, torch.Generator().manual_seed(seed))
        assert float(out[:, :, :4].mean()) > float(out[:, :, 4:].mean())


# ----------------------------------------------------------------------------------------------------------------
# Inheritance: base files

def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_child_overrides_scalars_merges_mappings_and_replaces_lists(tmp_path):
    _write(tmp_path / "base.yaml", "name: from_base\n"
                                   "model: {name: mmv_tiny_s3dg, overrides: {va_dim: 64}}\n"
                                   "data: {num_frames: 4, datasets: [{kind: synthetic, size: 8}, "
                                   "{kind: synthetic, size: 16}]}\n"
                                   "run: {steps: 10, batch_size: 4}\n")
    child = _write(tmp_path / "child.yaml", "base: base.yaml\n"
                                            "model: {overrides: {graph: shared}}\n"
                                            "data: {datasets: [{kind: synthetic, size: 32}]}\n"
                                            "run: {steps: 20}\n")
    cfg = load_config(child)
    assert cfg.name == "from_base"  # a key only the base sets
    assert (cfg.run.steps, cfg.run.batch_size) == (20, 4)  # the child's scalar wins, its sibling survives
    assert cfg.model.name == "mmv_tiny_s3dg" and cfg.model.overrides == {"va_dim": 64, "graph": "shared"}
    assert cfg.data.datasets == [DatasetSpec(size=32)]  # replaced whole, not merged item by item
    assert cfg.data.num_frames == 4


def test_bases_chain_with_paths_relative_to_the_file_that_names_them(tmp_path):
    _write(tmp_path / "bases" / "root" / "grand.yaml", "run: {steps: 1, seed: 7, batch_size: 2}\n")
    _write(tmp_path / "bases" / "mid.yaml", "base: root/grand.yaml\nrun: {steps: 2, batch_size: 3}\n")
    child = _write(tmp_path / "child.yaml", "base: bases/mid.yaml\nrun: {steps: 3}\n")
    cfg = load_config(child)
    assert (cfg.run.steps, cfg.run.batch_size, cfg.run.seed) == (3, 3, 7)


def test_a_list_of_bases_applies_in_order(tmp_path):
    _write(tmp_path / "a.yaml", "run: {steps: 1, seed: 1}\n")
    _write(tmp_path / "b.yaml", "run: {steps: 2}\n")
    a_then_b = load_config(_write(tmp_path / "ab.yaml", "base: [a.yaml, b.yaml]\n"))
    b_then_a = load_config(_write(tmp_path / "ba.yaml", "base: [b.yaml, a.yaml]\n"))
    assert (a_then_b.run.steps, a_then_b.run.seed) == (2, 1)
    assert (b_then_a.run.steps, b_then_a.run.seed) == (1, 1)


def test_a_base_need_not_be_complete_alone(tmp_path):
    """Validation runs once on the merged result: a base may leave a required value to its children."""
    _write(tmp_path / "base.yaml", "data: {datasets: [{kind: folder}]}\n")
    child = _write(tmp_path / "child.yaml", "base: base.yaml\ndata: {datasets: [{kind: folder, path: videos}]}\n")
    assert load_config(child).data.datasets[0].path == "videos"
    with pytest.raises(ConfigError, match=r"data\.datasets\.0\.path is empty"):
        load_config(tmp_path / "base.yaml")


def test_a_cycle_of_bases_names_the_chain(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a cycle of bases: \S*a\.yaml -> \S*b\.yaml -> \S*a\.yaml"):
        load_config(tmp_path / "a.yaml")
    _write(tmp_path / "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match=r"a cycle of bases: \S*self\.yaml -> \S*self\.yaml"):
        load_config(tmp_path / "self.yaml")


def test_a_diamond_of_bases_is_not_a_cycle(tmp_path):
    _write(tmp_path / "common.yaml", "run: {seed: 3}\n")
    _write(tmp_path / "left.yaml", "base: common.yaml\nrun: {steps: 4}\n")
    _write(tmp_path / "right.yaml", "base: common.yaml\nrun: {batch_size: 5}\n")
    cfg = load_config(_write(tmp_path / "child.yaml", "base: [left.yaml, right.yaml]\n"))
    assert (cfg.run.seed, cfg.run.steps, cfg.run.batch_size) == (3, 4, 5)


@pytest.mark.parametrize("base_text, message", [
    (None, r"missing\.yaml \(a base of \S*child\.yaml\): no such config file"),
    ("run: [steps: 10\n", r"missing\.yaml \(a base of \S*child\.yaml\): not valid YAML"),
    ("- 1\n- 2\n", r"missing\.yaml \(a base of \S*child\.yaml\): a training config must be a mapping, got list"),
    ("run: {stepz: 3}\n", r"child\.yaml \(with its bases \S*missing\.yaml\): unknown key run\.stepz"),
])
def test_errors_in_a_base_name_the_base_and_the_child(tmp_path, base_text, message):
    if base_text is not None:
        _write(tmp_path / "missing.yaml", base_text)
    child = _write(tmp_path / "child.yaml", "base: missing.yaml\n")
    with pytest.raises(ConfigError, match=message):
        load_config(child)


def test_errors_deep_in_a_chain_name_every_file_that_led_there(tmp_path):
    _write(tmp_path / "mid.yaml", "base: gone.yaml\n")
    child = _write(tmp_path / "child.yaml", "base: mid.yaml\n")
    with pytest.raises(ConfigError, match=r"gone\.yaml \(a base of \S*mid\.yaml <- \S*child\.yaml\): no such"):
        load_config(child)


@pytest.mark.parametrize("value", ["3", "''", "[a.yaml, 3]", "{x: a.yaml}", "null"])
def test_base_must_be_a_path_or_a_list_of_paths(tmp_path, value):
    _write(tmp_path / "a.yaml", "run: {steps: 2}\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: base must be a file path or a list of file paths"):
        load_config(_write(tmp_path / "child.yaml", f"base: {value}\n"))


def test_base_is_consumed_by_the_loader(tmp_path):
    _write(tmp_path / "base.yaml", "run: {steps: 9}\n")
    cfg = load_config(_write(tmp_path / "child.yaml", "base: base.yaml\nname: child\n"))
    assert "base" not in config_to_dict(cfg)
    with pytest.raises(ConfigError, match="unknown key base"):
        config_from_dict({"base": "base.yaml"})
    with pytest.raises(ConfigError, match=r"unknown key run\.base"):  # only the top level names bases
        load_config(_write(tmp_path / "nested.yaml", "run: {base: base.yaml}\n"))
    saved = tmp_path / "out" / "config.yaml"
    saved.parent.mkdir()
    save_config(cfg, saved)
    written = yaml.safe_load(saved.read_text())
    assert "base" not in written and written["run"]["steps"] == 9  # the resolved config, standing on its own
    assert load_config(saved) == cfg


# ----------------------------------------------------------------------------------------------------------------
# The paper presets: a base plus differences

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PAPER_PRESETS = [p for p in CONFIGS if p.stem.startswith("mmv_")]
PRESET_ONLY_KEYS = {"base", "name", "model", "run"}  # what a paper preset may set itself; the rest is its bases'


def _code_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_base_files_are_not_presets():
    assert len(PAPER_PRESETS) == 18
    assert not [p for p in CONFIGS if p.parent != CONFIG_DIR]
    bases = sorted((CONFIG_DIR / "_base").glob("*.yaml"))
    assert bases, "configs/_base/ holds the shared recipe"
    named = {(CONFIG_DIR / b).resolve() for p in PAPER_PRESETS for b in yaml.safe_load(p.read_text())["base"]}
    assert named == {b.resolve() for b in bases}  # every base is used, and every preset names an existing one


@pytest.mark.parametrize("path", PAPER_PRESETS, ids=[p.stem for p in PAPER_PRESETS])
def test_paper_presets_hold_only_their_differences(path, tmp_path):
    assert len(_code_lines(path)) <= 8
    raw = yaml.safe_load(path.read_text())
    assert set(raw) <= PRESET_ONLY_KEYS and set(raw["run"]) == {"out_dir"}
    assert set(raw["model"]) <= {"name", "overrides"} and set(raw["model"].get("overrides", {})) <= {"graph"}
    # The preset's name, model and run directory follow from its file name.
    _, graph, rest = path.stem.split("_", 2)
    mix = "ht_as" if path.stem.endswith("_ht_as") else "ht"
    backbone = rest.removesuffix(f"_{mix}")
    cfg = load_config(path)
    assert cfg.name == path.stem and cfg.run.out_dir == f"runs/{path.stem}"
    assert cfg.model.name == f"mmv_fac_{backbone}"
    assert cfg.model.overrides == ({} if graph == "fac" else {"graph": graph})  # the registered models are FAC
    assert [(CONFIG_DIR / b).resolve() for b in raw["base"]] == [(CONFIG_DIR / "_base" / f).resolve()
                                                                 for f in ("mmv_paper.yaml", f"{mix}.yaml")]
    # Everything else is the bases' alone.
    bases = [str(CONFIG_DIR / b) for b in raw["base"]]
    bases_only = _write(tmp_path / "bases_only.yaml", yaml.safe_dump({"base": bases}))
    preset, recipe = config_to_dict(cfg), config_to_dict(load_config(bases_only))
    for data in (preset, recipe):
        del data["name"], data["model"], data["run"]["out_dir"]
    assert preset == recipe


def test_paper_recipe_lives_in_one_place():
    """The facts of the recipe, read back through every preset (a regression net for edits of the bases)."""
    for path in PAPER_PRESETS:
        cfg = load_config(path)
        assert (cfg.data.num_frames, cfg.data.fps, cfg.data.crop, cfg.data.min_resize) == (32, 10.0, 200, 224)
        assert (cfg.data.sample_rate, cfg.data.num_mel_bins, cfg.data.stft_window, cfg.data.stft_hop) == (
            48000, 80, 2048, 1024)
        assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.schedule, cfg.loss.temperature) == (
            0.002, 5000, "cosine", 0.07)
        assert (cfg.run.steps, cfg.run.global_batch_size, cfg.run.sync_bn) == (500_000, 4096, True)
        ht_as = path.stem.endswith("_ht_as")
        assert [d.path for d in cfg.data.datasets] == ["data/howto100m/manifest.jsonl"] + (
            ["data/audioset/manifest.jsonl"] if ht_as else [])
        assert (cfg.loss.lambda_va, cfg.loss.lambda_vt) == ((1.0, 1.0) if ht_as else (1.0, 10.0))


# ----------------------------------------------------------------------------------------------------------------
# configs/demo_cpu.yaml is `mmv demo`'s training

# Fields where configs/demo_cpu.yaml (a plain `mmv train` run) may differ from DemoConfig.train_config (the run
# `mmv demo` makes): run bookkeeping only, never what a clip is, the model, the loss or the optimizer.
DEMO_BOOKKEEPING = {
    "name",  # presets are named after their file (test_presets_load); `mmv demo` names its runs demo-<variant>
    # The demo evaluates only its final weights, so it checkpoints once, at the end; the preset checkpoints every
    # 100 steps and keeps two, so that an interrupted `mmv train` resumes with little lost.
    "run.checkpoint_every",
    "run.keep_last",
    "run.log_every",  # the demo logs steps // 60 rows (its loss plot); the preset logs often, for a user watching
    "run.tensorboard",  # the demo plots metrics.jsonl itself; the preset keeps the training default
    "run.device",  # the demo is the CPU run (docs/demo.md times it); the preset takes a GPU where there is one
    "run.sync_bn",  # acts only with several GPU processes; both are meant as one process, where it does nothing
}


def _flatten(data, prefix: str = "") -> dict:
    """``{"a.b.0.c": value}`` for nested data; empty containers are kept as values, so they compare too."""
    if isinstance(data, (dict, list)) and data:
        items = data.items() if isinstance(data, dict) else enumerate(data)
        flat = {}
        for key, value in items:
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: data}


def _demo_drift(preset: dict, demo: dict) -> dict:
    """The fields outside :data:`DEMO_BOOKKEEPING` where the two configs differ: ``{key: (preset, demo)}``."""
    flat_preset, flat_demo = _flatten(preset), _flatten(demo)
    keys = (set(flat_preset) | set(flat_demo)) - DEMO_BOOKKEEPING
    return {k: (flat_preset.get(k, "<unset>"), flat_demo.get(k, "<unset>")) for k in sorted(keys)
            if flat_preset.get(k, "<unset>") != flat_demo.get(k, "<unset>")}


def _demo_train_config(**changes) -> dict:
    from mmv.demo.config import DemoConfig

    return config_to_dict(DemoConfig(**changes).train_config(data_dir="data/demo", vocab="data/demo/vocab.txt",
                                                             out_dir="runs/demo_cpu"))


def test_demo_cpu_preset_is_the_demos_training():
    preset = config_to_dict(load_config(CONFIG_DIR / "demo_cpu.yaml"))
    demo = _demo_train_config()
    assert _demo_drift(preset, demo) == {}
    assert DEMO_BOOKKEEPING <= set(_flatten(demo))  # the allowed differences name real fields


def test_demo_drift_is_caught_on_either_side():
    preset = config_to_dict(load_config(CONFIG_DIR / "demo_cpu.yaml"))
    assert set(_demo_drift(preset, _demo_train_config(num_frames=16))) == {"data.num_frames"}
    edited = json.loads(json.dumps(preset))
    edited["data"]["mel_fmax"] = 8000.0
    assert _demo_drift(edited, _demo_train_config()) == {"data.mel_fmax": (8000.0, 7600.0)}
    edited["model"]["overrides"] = {}
    assert "model.overrides" in _demo_drift(edited, _demo_train_config())
