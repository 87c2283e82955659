"""Typed training configuration: dataclasses loaded from YAML, with ``key.sub=value`` command-line overrides.

A run is described by one :class:`TrainConfig`, whose sections are :class:`ModelSection`, :class:`DataSection`,
:class:`OptimSection`, :class:`LossSection` and :class:`RunSection`. Presets live in ``configs/*.yaml``; every
field has a default, so a YAML file only lists what differs. Loading is strict: an unknown key, or a value of the
wrong type, is an error that names the key (and the file it came from), so a typo never silently trains with a
default.

A file may build on others: a top-level ``base:`` names one file, or a list of files applied in order, each a path
relative to the file that names it. The bases are loaded (with bases of their own), deep-merged (mappings merge key
by key and the later file wins; lists and single values are replaced whole), the file's own keys are merged last,
and the result is validated as one config. So the paper presets hold only what makes them different
(``configs/mmv_*.yaml``), and the recipe they share lives once, in ``configs/_base/``. ``base`` is consumed by the
loader: it is not a :class:`TrainConfig` field and :func:`save_config` writes the resolved config without it.

>>> cfg = load_config("configs/synthetic_tiny.yaml", ["run.steps=20", "optim.lr=1e-3"])
>>> cfg.run.steps
20
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "ConfigError",
    "DataSection",
    "DatasetSpec",
    "LossSection",
    "ModelSection",
    "OptimSection",
    "RunSection",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]

DATASET_KINDS = ("folder", "manifest", "shards", "synthetic")


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, wrong type or impossible value (the message names it)."""


@dataclass
class ModelSection:
    """Which architecture to train.

    Attributes:
        name: A registered model (``mmv.list_models()``), e.g. ``mmv_fac_s3dg`` or ``mmv_tiny_s3dg``.
        overrides: :class:`mmv.MMVConfig` fields replacing the registered ones, e.g. ``{graph: shared}``.
    """

    name: str = "mmv_tiny_s3dg"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetSpec:
    """One training source; several are mixed by ``weight``.

    Attributes:
        kind: ``folder`` (a directory of videos with optional caption files), ``manifest`` (CSV/JSONL listing
            them), ``shards`` (WebDataset tars written by ``mmv prepare``; a local pattern or URL) or ``synthetic``
            (generated clips with real cross-modal correspondence, for smoke tests and benchmarks).
        path: The folder, manifest file or shard pattern (unused for ``synthetic``).
        weight: Relative sampling weight when several datasets are mixed.
        size: ``synthetic`` only: number of distinct clips.
        nonfinite_every: ``synthetic`` only, fault injection: every n-th clip (by index) carries an infinite
            pixel, which makes the loss of any batch holding it non-finite (exercises the non-finite guard).
        caption_lang: ``folder`` only: the preferred language of caption files saved by yt-dlp / youtube-dl
            beside the videos (``talk.en.vtt``, ``talk.en-orig.vtt``); captions only in other languages are not
            used (see :func:`mmv.data.files.pair_captions`).
    """

    kind: str = "synthetic"
    path: str = ""
    weight: float = 1.0
    size: int = 1024
    nonfinite_every: int = 0
    caption_lang: str = "en"


@dataclass
class DataSection:
    """What a training clip is (the paper's settings by default, fact sheet section 1.3-1.5).

    Attributes:
        datasets: The sources, mixed by weight.
        num_frames: Frames per clip (32 for the final models, 16 for the design exploration).
        fps: Frame rate at which frames are sampled (10).
        crop: Side of the square random crop (200).
        min_resize: The short side is resized to this before cropping (224; unconfirmed for training).
        flip: Random horizontal flips (the paper's augmentation). Turn off where left/right carries meaning that
            another modality shares (the demo corpus: a flip reverses the motion but not the pitch glide).
        color_jitter: Random brightness/contrast/saturation/hue (fact sheet section 1.3).
        sample_rate: Audio sample rate in Hz (48000).
        num_mel_bins: Mel bins of the log-mel spectrogram (80).
        stft_window: STFT window in samples (2048, 42.7 ms at 48 kHz).
        stft_hop: STFT hop in samples (1024, 21.3 ms at 48 kHz).
        mel_fmin: Lower edge of the mel filterbank in Hz (80; DMVR's, unconfirmed for MMV).
        mel_fmax: Upper edge in Hz (7600; DMVR's, unconfirmed for MMV).
        num_narrations: K, narrations per clip for MIL-NCE's positive bag P(x) (5).
        max_words: Tokens per narration (16).
        vocab: Word-to-id vocabulary file for real text (``mmv vocab``); empty for synthetic data.
        workers: DataLoader worker processes per rank (0: load in the training process).
    """

    datasets: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()])
    num_frames: int = 32
    fps: float = 10.0
    crop: int = 200
    min_resize: int = 224
    flip: bool = True
    color_jitter: bool = True
    sample_rate: int = 48000
    num_mel_bins: int = 80
    stft_window: int = 2048
    stft_hop: int = 1024
    mel_fmin: float = 80.0
    mel_fmax: float = 7600.0
    num_narrations: int = 5
    max_words: int = 16
    vocab: str = ""
    workers: int = 4


@dataclass
class OptimSection:
    """Adam with linear warm-up then half-period cosine decay (fact sheet section 3).

    Attributes:
        lr: Peak learning rate (0.002).
        warmup_steps: Linear warm-up from 0 to ``lr`` (5000).
        schedule: ``cosine`` (half a cosine period from ``lr`` down to ``min_lr`` at the last step) or ``constant``.
        min_lr: Learning rate at the end of the cosine.
        betas: Adam's moment decay rates.
        eps: Adam's epsilon.
        weight_decay: L2 penalty added to the gradients (Adam's coupled form; 0: none, as in the paper's text).
        grad_clip: Clip the global gradient norm to this (0: no clipping; the paper mentions none).
    """

    lr: float = 0.002
    warmup_steps: int = 5000
    schedule: str = "cosine"
    min_lr: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 0.0


@dataclass
class LossSection:
    """``lambda_va * NCE(video, audio) + lambda_vt * MIL-NCE(video, narrations)`` (see :class:`mmv.losses.MMVLoss`).

    Attributes:
        lambda_va: Weight of the video-audio NCE.
        lambda_vt: Weight of the video-text MIL-NCE.
        lambda_at: Weight of an optional audio-text MIL-NCE (not in MMV: 0). While 0 the audio-text heads feed no
            loss, so they are frozen.
        temperature: tau (0.07).
        direction: Negatives in the denominators: ``joint`` (the formula as written), ``released`` (the public
            implementations: positives counted twice), ``symmetric`` or ``v2x`` (see :mod:`mmv.losses`).
    """

    lambda_va: float = 1.0
    lambda_vt: float = 1.0
    lambda_at: float = 0.0
    temperature: float = 0.07
    direction: str = "joint"


@dataclass
class RunSection:
    """How long, how big, where to write, and the engineering switches.

    Attributes:
        out_dir: The run directory (checkpoints, logs, the resolved config).
        steps: Optimizer steps in total.
        batch_size: Clips per device per step.
        global_batch_size: If > 0, the batch over all devices (4096 in the paper); ``batch_size`` is then derived
            as ``global_batch_size / world_size`` (which must divide).
        checkpoint_every: Write a checkpoint every N steps (and always at the end).
        keep_last: Keep this many most recent checkpoints.
        log_every: Log metrics every N steps.
        amp: ``auto`` (bfloat16 autocast on CUDA, float32 on CPU), ``bf16`` or ``fp32`` (no autocast).
        compile: Wrap the model in ``torch.compile``.
        channels_last: Channels-last memory format for conv weights (faster convolutions on recent GPUs).
        sync_bn: Convert BatchNorm to SyncBatchNorm when several processes train (the released models used
            cross-replica BN).
        seed: Seeds the model initialisation, the data order and every RNG (per rank).
        max_nonfinite: Stop after this many consecutive steps with a non-finite loss or gradient.
        device: ``auto`` (this rank's GPU if CUDA is available, else CPU), ``cpu`` or ``cuda``.
        resume: ``""`` (new run), ``auto`` (the run directory's latest checkpoint, or a new run if it has none) or
            the path of a checkpoint directory.
        tensorboard: Write TensorBoard scalars to ``out_dir/tensorboard``.
        progress: Show a progress bar on rank 0.
    """

    out_dir: str = "runs/mmv"
    steps: int = 500_000
    batch_size: int = 32
    global_batch_size: int = 0
    checkpoint_every: int = 1000
    keep_last: int = 3
    log_every: int = 10
    amp: str = "auto"
    compile: bool = False
    channels_last: bool = False
    sync_bn: bool = True
    seed: int = 0
    max_nonfinite: int = 20
    device: str = "auto"
    resume: str = ""
    tensorboard: bool = True
    progress: bool = True


@dataclass
class TrainConfig:
    """A full training run. ``name`` labels the run in logs."""

    name: str = "mmv"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    run: RunSection = field(default_factory=RunSection)

    def validate(self) -> "TrainConfig":
        """Checks values that types alone cannot; returns self. Raises :class:`ConfigError` naming the key."""
        _check_choice("run.amp", self.run.amp, ("auto", "bf16", "fp32"))
        _check_choice("run.device", self.run.device, ("auto", "cpu", "cuda"))
        _check_choice("optim.schedule", self.optim.schedule, ("cosine", "constant"))
        _check_choice("loss.direction", self.loss.direction, ("joint", "released", "symmetric", "v2x"))
        for key, value in (("run.steps", self.run.steps), ("run.batch_size", self.run.batch_size),
                           ("run.checkpoint_every", self.run.checkpoint_every), ("run.keep_last", self.run.keep_last),
                           ("run.log_every", self.run.log_every), ("run.max_nonfinite", self.run.max_nonfinite),
                           ("data.num_frames", self.data.num_frames), ("data.crop", self.data.crop),
                           ("data.num_narrations", self.data.num_narrations), ("data.max_words", self.data.max_words)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        for key, value in (("optim.lr", self.optim.lr), ("loss.temperature", self.loss.temperature),
                           ("data.fps", self.data.fps)):
            if not value > 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        for key, value in (("optim.warmup_steps", self.optim.warmup_steps), ("data.workers", self.data.workers),
                           ("run.global_batch_size", self.run.global_batch_size),
                           ("optim.grad_clip", self.optim.grad_clip), ("optim.weight_decay", self.optim.weight_decay),
                           ("loss.lambda_va", self.loss.lambda_va), ("loss.lambda_vt", self.loss.lambda_vt),
                           ("loss.lambda_at", self.loss.lambda_at)):
            if value < 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        if not (self.loss.lambda_va or self.loss.lambda_vt or self.loss.lambda_at):
            raise ConfigError("loss.lambda_va, loss.lambda_vt and loss.lambda_at are all 0: nothing to train")
        if not self.data.datasets:
            raise ConfigError("data.datasets is empty: give at least one dataset")
        for i, spec in enumerate(self.data.datasets):
            _check_choice(f"data.datasets.{i}.kind", spec.kind, DATASET_KINDS)
            if spec.kind != "synthetic" and not spec.path:
                raise ConfigError(f"data.datasets.{i}.path is empty (a {spec.kind} dataset needs one)")
            if not spec.weight > 0:
                raise ConfigError(f"data.datasets.{i}.weight must be > 0, got {spec.weight}")
        _check_model_name(self.model.name)
        _check_model_overrides(self.model.overrides)
        return self


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _check_model_name(name: str) -> None:
    from mmv.models import list_models

    if name not in list_models():
        raise ConfigError(f"model.name: unknown model {name!r}; available: {', '.join(list_models())}")


def _check_model_overrides(overrides: dict[str, Any]) -> None:
    from mmv.models import MMVConfig

    known = {f.name for f in dataclasses.fields(MMVConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown key model.overrides.{unknown[0]} (MMVConfig fields: {', '.join(sorted(known))})")


# ----------------------------------------------------------------------------------------------------------------
# Typed conversion between plain data (YAML/JSON) and the dataclasses
# ----------------------------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against (and converted to) the annotation ``tp``; :class:`ConfigError` names ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of {tp.__name__} fields, got {value!r}")
        return _dataclass_from_dict(tp, value, key)
    if origin in (Union, types.UnionType):
        for option in args:
            if option is type(None) and value is None:
                return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(item, args[0], f"{key}.{i}") for i, item in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(item, arg, f"{key}.{i}") for i, (item, arg) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # NOTE: YAML 1.1 reads "1e-3" (no dot) as a string; accept any number Python can parse.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r} (YAML reads yes/no/on/off as booleans: quote "
                              "the value)")
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported annotation {_type_name(tp)}")


def _dataclass_from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for name in data:
        if name not in names:
            where = f"{prefix}.{name}" if prefix else str(name)
            raise ConfigError(f"unknown key {where} (valid keys{' of ' + prefix if prefix else ''}: {', '.join(names)})")
    kwargs = {name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name) for name, value in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A validated :class:`TrainConfig` from nested plain data (as read from YAML or JSON)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a training config must be a mapping, got {type(data).__name__}")
    return _dataclass_from_dict(TrainConfig, data, "").validate()


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Nested plain data (tuples as lists), fit for JSON and YAML; :func:`config_from_dict` reverses it."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# ----------------------------------------------------------------------------------------------------------------
# Overrides: key.sub=value
# ----------------------------------------------------------------------------------------------------------------

def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({err})") from None
    return key.split("."), value


def _set_path(data: Any, path: list[str], value: Any, full_key: str) -> None:
    """Sets ``data[path...] = value``; keys the dataclasses lack are reported later by :func:`config_from_dict`."""
    head, rest = path[0], path[1:]
    if isinstance(data, list):
        if not head.isdigit() or int(head) >= len(data):
            raise ConfigError(f"override {full_key}: {head!r} is not an index of a list of {len(data)} items")
        head = int(head)
    elif not isinstance(data, dict):
        parent = ".".join(full_key.split(".")[:-len(path)])
        raise ConfigError(f"unknown key {full_key} ({parent} is a single value, not a section)")
    if not rest:
        data[head] = value
        return
    if isinstance(data, dict) and head not in data:
        data[head] = {}
    _set_path(data[head], rest, value, full_key)


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """A new config with ``key.sub=value`` overrides applied (values parsed as YAML, then type-checked).

    List items are addressed by index (``data.datasets.0.path=...``); a whole list or mapping can be given in
    YAML flow style (``data.datasets=[{kind: synthetic, size: 64}]``). ``model.overrides.*`` keys are
    :class:`mmv.MMVConfig` fields.
    """
    data = config_to_dict(cfg)
    for text in overrides:
        path, value = _parse_override(text)
        _set_path(data, path, value, ".".join(path))
    return config_from_dict(data)


BASE_KEY = "base"


def _deep_merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: mappings merge key by key (``child`` wins); lists and single values are replaced."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_config_file(path: Path, included_from: list[Path], files_read: list[Path]) -> dict[str, Any]:
    """The merged plain data of ``path`` and its bases.

    ``included_from`` is the chain of files that led here (for cycles and messages); every file read is appended
    to ``files_read``.
    """
    # NOTE: a base's errors also name the files that pulled it in, since the user only named the first of them.
    where = str(path)
    if included_from:
        where += f" (a base of {' <- '.join(str(p) for p in reversed(included_from))})"
    chain = [*included_from, path]
    resolved = [p.resolve() for p in chain]
    if resolved[-1] in resolved[:-1]:
        cycle = chain[resolved.index(resolved[-1]):]
        raise ConfigError(f"{chain[0]}: a cycle of bases: {' -> '.join(str(p) for p in cycle)}")
    if not path.is_file():
        raise ConfigError(f"{where}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a training config must be a mapping, got {type(data).__name__}")
    files_read.append(path)
    if BASE_KEY not in data:
        return data
    data = dict(data)
    bases = data.pop(BASE_KEY)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{where}: {BASE_KEY} must be a file path or a list of file paths, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _deep_merge(merged, _read_config_file(path.parent / base, chain, files_read))
    return _deep_merge(merged, data)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Reads a YAML (or JSON) config and its bases, applies overrides and validates.

    A top-level ``base:`` key names a file (or a list of files, applied in order) that this one builds on, as a
    path relative to this file. Bases may have bases of their own. They are deep-merged: mappings merge key by key
    and the later file wins, lists (``data.datasets``) and single values are replaced whole; this file's keys are
    merged last. Validation runs once, on the merged result, so a base need not be a complete config. ``base``
    itself never reaches the :class:`TrainConfig`.

    Args:
        path: The config file; None starts from the defaults.
        overrides: ``key.sub=value`` strings applied after the file.

    Raises:
        ConfigError: A missing or unparsable file or base, a cycle of bases, an unknown key or an invalid value (the
            message names the file, with the files that included it, and the key).
    """
    cfg = TrainConfig()
    if path is not None:
        path = Path(path)
        files_read: list[Path] = []
        data = _read_config_file(path, [], files_read)
        try:
            cfg = config_from_dict(data)
        except ConfigError as err:
            # NOTE: the bad key may come from any file of the merge; the message names them all.
            base_files = list(dict.fromkeys(str(p) for p in files_read[1:]))  # a base two others share is read twice
            with_bases = f" (with its bases {', '.join(base_files)})" if base_files else ""
            raise ConfigError(f"{path}{with_bases}: {err}") from None
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML (``.yaml``/``.yml``) or JSON, atomically."""
    from mmv.atomic import atomic_write_bytes

    data = config_to_dict(cfg)
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    atomic_write_bytes(path, text.encode())
