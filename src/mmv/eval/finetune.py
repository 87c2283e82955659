"""Fine-tuning: the whole video network plus a linear classifier, trained end to end on UCF101 or HMDB51 splits
(the "FT" columns of the paper's Table 2), a folder per class, or ``{train,test}/manifest.jsonl`` manifests.

The paper does not state its fine-tuning protocol (fact sheet §5.2: unconfirmed). The defaults are the usual recipe
of this family of papers, and each is an option (:class:`FinetuneConfig`; why each, in docs/evaluation.md §8):

* clips: the model's own (``model.preprocess.video``: frames, rate, resize, crop), one random window per video and
  epoch, with the training augmentation of :class:`mmv.data.transforms.VideoTransform` (random crop, horizontal
  flip, DMVR's colour jitter; scale jitter of the short side in (0.8, 1.2));
* network: the visual backbone (BatchNorm in training mode), dropout 0.5, a linear classifier on ``vid_repr``;
* optimiser: SGD with momentum 0.9, weight decay 1e-4, learning rate 0.005 for the backbone and 10x (0.05) for the
  new classifier, one epoch of linear warm-up then half a cosine to 0, over 20 epochs;
* test: 10 evenly spaced windows x 3 spatial crops (left, centre, right along the long side) per video, class
  probabilities averaged; top-1 and top-5 per split and their mean.

Runs on one CPU, one GPU or every process of a ``torchrun`` launch (:func:`mmv.distributed.init_distributed`;
DistributedDataParallel, each rank its share of every batch and of the test videos). Checkpoints are those of
``mmv train``: ``RUN/ckpt_<step>/`` written atomically (a temporary folder renamed into place), holding the
fine-tuned model (``mmv.load`` reads it), the classifier, the optimiser, every rank's RNG states and data position;
resuming continues at the exact step, batch and random state where the checkpoint was written (checked bit for bit
in ``tests/test_finetune.py``). SIGTERM or SIGINT finish the current step and write a checkpoint.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from mmv.data.skips import SkippedSample, SkipReport
from mmv.data.windows import MediaItem, Windowing
from mmv.eval.datasets import ClassificationSplit, coverage_cells, coverage_markdown

logger = logging.getLogger(__name__)

HEAD_NAME = "classifier.safetensors"
RESULT_NAME = "result.json"


@dataclass
class FinetuneConfig:
    """Options of fine-tuning (defaults: the usual recipe, see the module docstring).

    Attributes:
        spec: frames, rate, resize and crop of a clip (a :class:`~mmv.preprocess.VideoPreprocess`); None: the
            model's own.
        optimizer: ``sgd`` (momentum ``momentum``), ``adam`` or ``adamw``.
        backbone_lr: peak learning rate of the pre-trained visual backbone.
        head_lr: peak learning rate of the new linear classifier.
        momentum: SGD momentum.
        weight_decay: L2 penalty (SGD, Adam) or decoupled decay (AdamW), on every parameter.
        epochs: passes over the training videos (an epoch is ``len(train) // global batch`` steps).
        warmup_epochs: linear warm-up from 0, then half a cosine period down to 0 at the last step.
        batch_size: clips per process and step (the global batch is this times the number of processes).
        dropout: dropout on the backbone features before the classifier.
        flip: random horizontal flips.
        color_jitter: DMVR's colour augmentation (probability 0.8).
        scale_jitter: ``(low, high)`` factor on the resized short side before the random crop; None: off.
        freeze_bn: keep the BatchNorm statistics of the pre-trained model (BN layers in eval mode); their affine
            parameters still train.
        test_windows: evenly spaced windows per test video.
        test_crops: spatial crops per window: 1 (centre) or 3 (both ends and centre of the long side).
        amp: ``auto`` (bfloat16 on CUDA), ``bf16`` or ``fp32``.
        sync_bn: SyncBatchNorm across processes (GPUs only).
        workers: decoding processes per training process.
        eval_batch_size: clips per forward pass at test time.
        save_every: steps between checkpoints; 0: at the end of every epoch.
        keep_last: checkpoints kept.
        stop_after: stop cleanly (with a checkpoint) after this many steps of this invocation, e.g. for a
            time-limited job; 0: never. Resume continues from there.
        log_every: steps between log lines.
        seed: initial classifier weights, clip choice and augmentation, dropout.
        device: ``cpu`` or ``cuda`` (under torchrun each process takes its local GPU).
    """

    spec: Any = None
    optimizer: str = "sgd"
    backbone_lr: float = 0.005
    head_lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 20
    warmup_epochs: float = 1.0
    batch_size: int = 8
    dropout: float = 0.5
    flip: bool = True
    color_jitter: bool = True
    scale_jitter: tuple[float, float] | None = (0.8, 1.2)
    freeze_bn: bool = False
    test_windows: int = 10
    test_crops: int = 3
    amp: str = "auto"
    sync_bn: bool = False
    workers: int = 0
    eval_batch_size: int = 8
    save_every: int = 0
    keep_last: int = 2
    stop_after: int = 0
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer must be sgd, adam or adamw, got {self.optimizer!r}")
        if self.test_crops not in (1, 3):
            raise ValueError(f"test_crops must be 1 or 3, got {self.test_crops}")
        if self.epochs < 1 or self.batch_size < 1 or self.test_windows < 1:
            raise ValueError("epochs, batch_size and test_windows must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class VideoClassifier(nn.Module):
    """The visual backbone, dropout and a linear classifier: ``[B, T, H, W, 3]`` pixels -> ``[B, classes]`` logits.

    Args:
        backbone: the MMV model's ``video_backbone`` (shared with the model, so saving the model saves it).
        num_features: the backbone's output width.
        num_classes: classes of the task.
        dropout: dropout probability on the features.
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(video)))  # [B, D] -> [B, classes]


# ------------------------------------------------------------------------------------------------ test windows
def spatial_crops(frames: torch.Tensor, size: int, count: int) -> list[torch.Tensor]:
    """``count`` (1 or 3) square crops of ``[T, H, W, 3]`` frames: the centre, or both ends and the centre of the
    long side (the width for square frames), centred on the short side."""
    from mmv.data.transforms import center_crop

    if count == 1:
        return [center_crop(frames, size)]
    height, width = frames.shape[1:3]
    if min(height, width) < size:
        raise ValueError(f"cannot crop {size}x{size} from frames of {height}x{width}")
    crops = []
    for fraction in (0.0, 0.5, 1.0):
        if width >= height:
            top, left = (height - size) // 2, int(fraction * (width - size))
        else:
            top, left = int(fraction * (height - size)), (width - size) // 2
        crops.append(frames[:, top:top + size, left:left + size])
    return crops


class MultiCropWindows(Dataset):
    """``(index, uint8 [W * C, T, crop, crop, 3] or None, windows, SkippedSample or None)``: ``W`` evenly spaced
    windows of each test video, each cut into ``C`` spatial crops (the test-time views of fine-tuning)."""

    def __init__(self, items: Sequence[MediaItem], spec: Any, windows: int, crops: int) -> None:
        self.items, self.spec, self.windowing, self.crops = list(items), spec, Windowing("even", windows), crops

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from mmv.data.media import MediaError, decode_clip, probe
        from mmv.data.transforms import resize_short_side
        from mmv.data.windows import decode_limit

        item, spec = self.items[index], self.spec
        try:
            start, end = item.span(probe(item.path).duration)
            clips, windows = [], []
            for offset in self.windowing.starts(end - start, spec.seconds):
                clip = decode_clip(item.path, start + offset, spec.num_frames, spec.fps, with_audio=False,
                                   max_short_side=decode_limit(spec.min_resize))
                frames = resize_short_side(clip.frames, spec.min_resize)
                clips += [crop.numpy() for crop in spatial_crops(frames, spec.crop, self.crops)]
                windows += [(clip.start, clip.end)] * self.crops
            return index, np.stack(clips), windows, None
        except (MediaError, OSError, ValueError) as err:
            return index, None, [], SkippedSample.from_error(item.path, err)


def predict_videos(classifier: nn.Module, items: Sequence[MediaItem], spec: Any, cfg: FinetuneConfig,
                   device: torch.device, progress: bool = True) -> tuple[dict[int, np.ndarray], SkipReport]:
    """Class probabilities of each video (softmax averaged over its windows and crops), and the skipped videos.

    Returns:
        ``({item index: [classes] probabilities}, skipped)``.
    """
    from mmv.eval.features import _loader, _run_batched, model_pixels
    from mmv.train.loop import get_autocast

    classifier.eval()
    autocast = get_autocast(cfg.amp, device)

    def encode(clips: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast():
            logits = classifier(model_pixels(clips.to(device), spec.pixel_range))
        return torch.softmax(logits.float(), dim=-1)

    dataset = MultiCropWindows(items, spec, cfg.test_windows, cfg.test_crops)
    out = _run_batched(_loader(dataset, cfg.workers), encode, list(items), cfg.eval_batch_size, progress,
                       f"fine-tuned test ({cfg.test_windows} windows x {cfg.test_crops} crops)")
    probabilities = {i: views.mean(axis=0) for i, views in enumerate(out.features) if views is not None}
    return probabilities, out.skipped


# ------------------------------------------------------------------------------------------------ checkpoints
def save_finetune_checkpoint(run_dir: Path, step: int, model: nn.Module, classifier: VideoClassifier,
                             optimizer: torch.optim.Optimizer, param_names: list[str], trainer_state: dict[str, Any],
                             keep_last: int) -> Path:
    """Writes ``run_dir/ckpt_<step>`` with :func:`mmv.train.checkpoint.save_checkpoint`, adding the classifier;
    ``run_dir/latest`` then names it, and older checkpoints beyond ``keep_last`` are removed.

    The folder is a saved model (``mmv.load`` gives the fine-tuned network) plus ``classifier.safetensors``,
    ``optimizer.safetensors`` and ``trainer_state.json``.
    """
    from mmv.train import checkpoint as ckpt

    return ckpt.save_checkpoint(run_dir, step, model, optimizer, param_names, trainer_state, keep_last,
                                config_key="finetune", extra_tensors={HEAD_NAME: classifier.head.state_dict()})


def load_finetune_checkpoint(path: Path, model: nn.Module, classifier: VideoClassifier,
                             optimizer: torch.optim.Optimizer, param_names: list[str], rank: int,
                             world_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Loads weights, classifier and optimiser; returns the counters and this rank's RNG states and data position.

    Raises:
        ValueError: The checkpoint was written by another number of processes.
    """
    from safetensors.torch import load_file

    from mmv.train import checkpoint as ckpt

    state = ckpt.read_trainer_state(path)
    if state.get("world_size") != world_size:
        raise ValueError(f"{path} was written by {state.get('world_size')} processes, this launch has {world_size}: "
                         "launch the same number to resume exactly")
    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(device)), strict=True)
    classifier.head.load_state_dict(load_file(str(path / HEAD_NAME), device=str(device)), strict=True)
    ckpt.load_optimizer(optimizer, param_names, path / ckpt.OPTIMIZER_NAME)
    logger.info("resuming fine-tuning from %s (step %d)", path, state["step"])
    return state, state["ranks"][rank]


# ------------------------------------------------------------------------------------------------ one split
def build_optimizer(classifier: VideoClassifier, cfg: FinetuneConfig) -> tuple[torch.optim.Optimizer, list[str]]:
    """Two parameter groups (backbone, classifier) with their own peak learning rates (``base_lr``)."""
    groups, names = [], []
    for prefix, lr in (("backbone.", cfg.backbone_lr), ("head.", cfg.head_lr)):
        named = [(n, p) for n, p in classifier.named_parameters() if n.startswith(prefix) and p.requires_grad]
        names += [n for n, _ in named]
        groups.append({"params": [p for _, p in named], "lr": lr, "base_lr": lr})
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    return optimizer, names


def _train_batches(split: ClassificationSplit, spec: Any, cfg: FinetuneConfig, info: Any,
                   state: dict[str, Any] | None) -> Any:
    """The endless, exactly resumable stream of augmented training clips of this rank (``mmv train``'s)."""
    from mmv.data.datasets import ClipDataset, VideoItem
    from mmv.data.transforms import VideoTransform
    from mmv.train.data import BatchStream

    transform = VideoTransform(train=True, crop_size=spec.crop, min_resize=spec.min_resize, flip=cfg.flip,
                               color_jitter=cfg.color_jitter, scale_jitter=cfg.scale_jitter)
    items = [VideoItem(str(f.path), label=f.label) for f in split.train]
    dataset = ClipDataset(items, num_frames=spec.num_frames, fps=spec.fps, transform=transform, train=True,
                          seed=cfg.seed, with_audio=False, with_text=False)
    return BatchStream(dataset, cfg.batch_size, rank=info.rank, world_size=info.world_size, seed=cfg.seed,
                       workers=cfg.workers, pin_memory=info.device.type == "cuda", state=state)


def _set_train_mode(classifier: VideoClassifier, freeze_bn: bool) -> None:
    classifier.train()
    if freeze_bn:
        for module in classifier.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def finetune_split(model: nn.Module, split: ClassificationSplit, cfg: FinetuneConfig, run_dir: Path, *,
                   resume_from: Path | None = None, info: Any = None, progress: bool = True,
                   return_scores: bool = False) -> dict[str, Any]:
    """Fine-tunes ``model`` (modified in place) on one split and scores its test videos.

    Returns:
        ``{"status": "completed" | "interrupted", "step", "checkpoint", ...}``; when completed also ``top1``,
        ``top5``, ``num_train``, ``num_test``, ``skipped`` (and, with ``return_scores``, ``test_probabilities``
        ``[N, classes]`` and ``test_labels``, arrays not meant for the JSON report).
    """
    import torch.distributed as dist

    from mmv.distributed import init_distributed
    from mmv.train import checkpoint as ckpt
    from mmv.train.config import OptimSection
    from mmv.train.loop import StopSignal, any_rank, gather_rank_states, get_autocast, lr_at, seed_rngs

    info = info or init_distributed(backend="gloo" if cfg.device == "cpu" else None)
    device = info.device
    spec = cfg.spec or model.preprocess.video
    model.preprocess = _with_video(model.preprocess, spec)  # the checkpoints record the clips they were tuned on
    torch.manual_seed(cfg.seed)  # the same classifier on every rank
    classifier = VideoClassifier(model.video_backbone, model.video_backbone.num_features, len(split.classes),
                                 cfg.dropout)
    if cfg.sync_bn and info.distributed and device.type == "cuda":
        classifier = _sync_bn(classifier)
    model.to(device)
    classifier.to(device)
    optimizer, param_names = build_optimizer(classifier, cfg)
    steps_per_epoch = max(1, len(split.train) // (cfg.batch_size * info.world_size))
    total_steps = cfg.epochs * steps_per_epoch
    schedule = OptimSection(lr=1.0, warmup_steps=max(1, round(cfg.warmup_epochs * steps_per_epoch)),
                            schedule="cosine", min_lr=0.0)
    save_every = cfg.save_every or steps_per_epoch
    seed_rngs(cfg.seed + 1 + info.rank)  # dropout and anything else random: per rank from here on
    state: dict[str, Any] = {"step": 0, "nonfinite_steps": 0, "elapsed_s": 0.0}
    rank_state: dict[str, Any] = {}
    config = _config_record(cfg, spec, split, steps_per_epoch)
    if resume_from is not None:
        saved, rank_state = load_finetune_checkpoint(resume_from, model, classifier, optimizer, param_names,
                                                     info.rank, info.world_size)
        _require_same_recipe(saved["config"], config, resume_from)
        state = {k: saved[k] for k in state}
    if info.primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(run_dir)
    stream = _train_batches(split, spec, cfg, info, rank_state.get("data"))
    trained = classifier
    if info.distributed:
        trained = nn.parallel.DistributedDataParallel(classifier,
                                                      device_ids=[device.index] if device.type == "cuda" else None)
    autocast = get_autocast(cfg.amp, device)
    if rank_state.get("rng") is not None:
        ckpt.restore_rng_state(rank_state["rng"])

    def save() -> Path:
        states = gather_rank_states(stream, info)
        path = run_dir / ckpt.checkpoint_name(state["step"])
        if info.primary:
            trainer_state = {**state, "world_size": info.world_size, "ranks": states, "config": config}
            path = save_finetune_checkpoint(run_dir, state["step"], model, classifier, optimizer, param_names,
                                            trainer_state, cfg.keep_last)
        if info.distributed:
            dist.barrier()
        return path

    status, last_loss, checkpoint, started, steps_run = "completed", float("nan"), None, time.perf_counter(), 0
    _set_train_mode(classifier, cfg.freeze_bn)
    with StopSignal() as stop_signal:
        while state["step"] < total_steps:
            step = state["step"]
            batch = next(stream)
            factor = lr_at(step, schedule, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            video = _pixels(batch["video"].to(device, non_blocking=True), spec.pixel_range)  # [B, T, H, W, 3]
            labels = batch["label"].to(device)
            with autocast():
                logits = trained(video)
            loss = nn.functional.cross_entropy(logits.float(), labels)
            bad, stop_now = any_rank(info, not bool(torch.isfinite(loss)), stop_signal.received)
            if not bad:
                loss.backward()
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"], state["nonfinite_steps"] = step + 1, state["nonfinite_steps"] + int(bad)
            steps_run += 1
            last_loss = float(loss.detach())
            if info.primary and (state["step"] % cfg.log_every == 0 or state["step"] == total_steps):
                logger.info("%s step %d/%d (epoch %.2f) loss %.4f lr %.3g", split.name, state["step"], total_steps,
                            state["step"] / steps_per_epoch, last_loss, optimizer.param_groups[0]["lr"])
            stop_now = stop_now or (cfg.stop_after and steps_run >= cfg.stop_after)
            if state["step"] % save_every == 0 or state["step"] == total_steps or stop_now:
                state["elapsed_s"] += time.perf_counter() - started
                started = time.perf_counter()
                checkpoint = save()
            if stop_now and state["step"] < total_steps:
                status = "interrupted"
                break
    stream.close()
    state["elapsed_s"] += time.perf_counter() - started
    if checkpoint is None:  # resumed from the last step: nothing left to train
        checkpoint = resume_from
    out: dict[str, Any] = {"status": status, "step": state["step"], "total_steps": total_steps,
                           "checkpoint": str(checkpoint), "train_loss": last_loss,
                           "nonfinite_steps": state["nonfinite_steps"], "train_skipped": stream.report.as_dict()}
    if status != "completed":
        return out
    out.update(_score(classifier, split, spec, cfg, info, progress, return_scores))
    out.update(num_train=len(split.train), epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
               train_seconds=state["elapsed_s"])
    return out


def _score(classifier, split, spec, cfg, info, progress, return_scores) -> dict[str, Any]:
    """Top-1/top-5 of the test videos; each rank scores its share, rank 0 gathers them."""
    import torch.distributed as dist

    from mmv.eval.metrics import topk_accuracy

    items = [MediaItem(str(f.path)) for f in split.test]
    mine = list(range(info.rank, len(items), info.world_size))
    local, skipped = predict_videos(classifier, [items[i] for i in mine], spec, cfg, info.device,
                                    progress and info.primary)
    gathered = [({mine[k]: v for k, v in local.items()}, skipped.as_dict())]
    if info.distributed:
        gathered = [None] * info.world_size
        dist.all_gather_object(gathered, ({mine[k]: v for k, v in local.items()}, skipped.as_dict()))
    probabilities = {index: p for part, _ in gathered for index, p in part.items()}
    report = SkipReport()
    report.merge(split.skipped)  # listed in the split files but missing on disk
    for _, part in gathered:
        for reason, paths in part["files"].items():
            for path in paths:
                report.add(reason, path)
    if not probabilities:
        raise ValueError(f"{split.name}: no test video could be decoded ({report.details()})")
    order = sorted(probabilities)
    scores = np.stack([probabilities[i] for i in order])
    if not np.isfinite(scores).all():
        # NaN scores would rank no class above the true one and pass for correct: refuse them.
        raise ValueError(f"{split.name}: the fine-tuned network gives non-finite scores (training diverged); "
                         "lower --backbone-lr/--head-lr")
    labels = np.array([split.test[i].label for i in order], dtype=np.int64)
    out = {**topk_accuracy(scores, labels, ks=(1, 5)), "num_test": len(order), "skipped": report.as_dict(),
           "num_classes_present": int(len({f.label for f in split.train}))}
    if return_scores:
        out.update(test_probabilities=scores, test_labels=labels)
    return out


def _pixels(video: torch.Tensor, pixel_range: tuple[float, float]) -> torch.Tensor:
    """Training clips come in [0, 1]; a model that takes another pixel range gets it."""
    low, high = pixel_range
    return video if (low, high) == (0.0, 1.0) else video * (high - low) + low


def _with_video(preprocess: Any, spec: Any) -> Any:
    import dataclasses

    return dataclasses.replace(preprocess, video=spec)


def _sync_bn(classifier: VideoClassifier) -> VideoClassifier:
    # NOTE: convert only the backbone in place of the shared module, so the MMV model that owns it sees the change.
    classifier.backbone = nn.SyncBatchNorm.convert_sync_batchnorm(classifier.backbone)
    return classifier


def _config_record(cfg: FinetuneConfig, spec: Any, split: ClassificationSplit, steps_per_epoch: int) -> dict:
    """The run's settings as JSON data (what a checkpoint stores)."""
    return json.loads(json.dumps({**asdict(cfg), "spec": asdict(spec), "split": split.name,
                                  "classes": list(split.classes), "steps_per_epoch": steps_per_epoch}))


# Settings that shape the training sequence: a checkpoint continues exactly only with the same ones (the others,
# e.g. workers, checkpoint spacing or the test views, may change between a stop and its resume).
RECIPE_KEYS = ("spec", "optimizer", "backbone_lr", "head_lr", "momentum", "weight_decay", "epochs", "warmup_epochs",
               "batch_size", "dropout", "flip", "color_jitter", "scale_jitter", "freeze_bn", "amp", "seed", "split",
               "classes", "steps_per_epoch")


def _require_same_recipe(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    differ = [key for key in RECIPE_KEYS if saved.get(key) != current.get(key)]
    if differ:
        shown = "; ".join(f"{key}: {saved.get(key)!r} there, {current.get(key)!r} now" for key in differ[:3])
        raise ValueError(f"{path} was trained with other settings ({shown}); resume with the options it was started "
                         "with, or choose another --out")


# ------------------------------------------------------------------------------------------------ the protocol
def finetune_splits(data_dir: str | Path, dataset: str = "auto", splits: Sequence[int] = (1, 2, 3),
                    video_root: str | Path | None = None, seed: int = 0) -> tuple[str, list[ClassificationSplit]]:
    """The dataset's splits: ``ucf101``, ``hmdb51``, ``folder``, ``manifest`` or ``auto`` (detected)."""
    from mmv.eval.datasets import manifest_split
    from mmv.eval.linear_probe import _load_splits

    root = Path(data_dir)
    if dataset == "manifest" or (dataset == "auto" and (root / "train" / "manifest.jsonl").is_file()):
        return "manifest", [manifest_split(root)]
    if dataset not in ("ucf101", "hmdb51", "folder", "auto"):
        raise ValueError(f"unknown video dataset {dataset!r} (ucf101, hmdb51, folder, manifest or auto)")
    return _load_splits(root, dataset, splits, video_root, seed)


def finetune(
    model: nn.Module,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    dataset: str = "auto",
    splits: Sequence[int] = (1, 2, 3),
    cfg: FinetuneConfig | None = None,
    video_root: str | Path | None = None,
    resume: str = "",
    progress: bool = True,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """Fine-tunes a copy of ``model`` on every requested split and reports top-1/top-5 per split and their mean.

    Each split runs in ``out_dir/finetune-<dataset>/<split>/`` (checkpoints, then ``result.json``).

    Args:
        model: the pre-trained MMV model (left unchanged).
        data_dir: the dataset root (see :func:`finetune_splits`).
        out_dir: where the runs live.
        dataset: the layout, or ``auto``.
        splits: official splits (UCF101/HMDB51).
        cfg: the recipe.
        video_root: HMDB51 videos folder when not under ``data_dir``.
        resume: ``""`` (start; a split folder that already holds a run is an error), ``auto`` (finished splits
            are read back, interrupted ones continue from their latest checkpoint) or a checkpoint folder (for a
            single split).
        progress: progress bars.
        allow_partial: run on a UCF101/HMDB51 copy that lacks listed videos (results marked partial).

    Returns:
        The report (:func:`mmv.eval.linear_probe.summarise_splits` plus ``status``); ``status`` is
        ``interrupted`` when a stop signal or ``stop_after`` ended a split early (continue with ``resume="auto"``).
    """
    from mmv.distributed import cleanup, init_distributed
    from mmv.eval.linear_probe import _coverage_of, _require_both_sides, summarise_splits
    from mmv.train import checkpoint as ckpt

    cfg = cfg or FinetuneConfig()
    created_group = not torch.distributed.is_initialized()
    info = init_distributed(backend="gloo" if cfg.device == "cpu" else None)
    if cfg.device == "cuda" and info.device.type != "cuda":
        raise RuntimeError("device cuda asked for but CUDA is not available")
    dataset, split_list = finetune_splits(data_dir, dataset, splits, video_root, cfg.seed)
    coverage = _coverage_of(split_list, allow_partial)
    if resume not in ("", "auto") and len(split_list) > 1:
        raise ValueError("a checkpoint folder resumes one split: pass --splits with one split, or --resume auto")
    per_split, status = {}, "completed"
    try:
        for split in split_list:
            run_dir = Path(out_dir) / f"finetune-{dataset}" / split.name
            done = run_dir / RESULT_NAME
            if done.is_file() and resume == "auto":
                per_split[split.name] = json.loads(done.read_text())
                logger.info("%s: finished earlier, result read from %s", split.name, done)
                continue
            resume_from = ckpt.resolve_resume(resume, run_dir)
            if resume_from is None and (ckpt.list_checkpoints(run_dir) or done.is_file()):
                raise ValueError(f"{run_dir} already holds a fine-tuning run; continue it with --resume auto or "
                                 "choose another --out")
            _require_both_sides(dataset, split)
            logger.info("%s %s: fine-tuning on %d videos, testing on %d, %d classes", dataset, split.name,
                        len(split.train), len(split.test), len(split.classes))
            result = finetune_split(copy.deepcopy(model), split, cfg, run_dir, resume_from=resume_from, info=info,
                                    progress=progress)
            if result["status"] != "completed":
                status = result["status"]
                logger.warning("%s: stopped at step %d of %d; continue with --resume auto", split.name,
                               result["step"], result["total_steps"])
                break
            if split.coverage is not None:
                result["coverage"] = split.coverage.as_dict(missing_files=False)
            if info.primary:
                from mmv.atomic import atomic_write_json

                atomic_write_json(done, result)
            per_split[split.name] = result
    finally:
        if created_group:
            cleanup()
    options = {**asdict(cfg), "spec": asdict(cfg.spec or model.preprocess.video), "world_size": info.world_size}
    if not per_split:
        return {"task": "fine-tuning", "dataset": dataset, "status": status, "splits": {}, "options": options}
    report = summarise_splits("fine-tuning", dataset, Path(data_dir), per_split, len(split_list[0].classes), options,
                              coverage)
    report["status"] = status
    report["splits_requested"] = [s.name for s in split_list]
    return report


def finetune_table(result: dict[str, Any]) -> str:
    """Markdown: one row per split (top-1, top-5, videos, steps, skipped, coverage), the mean and chance."""
    from mmv.eval.io import markdown_table

    coverage, partial = result.get("coverage"), result.get("partial", False)
    overall = coverage_cells(coverage, coverage, partial)  # the coverage cell of the mean and chance rows
    rows = [[name, r["top1"], r["top5"], r["num_train"], r["num_test"], f"{r['epochs']} ({r['step']} steps)",
             r["skipped"]["total"]] + coverage_cells(r.get("coverage"), coverage, partial)
            for name, r in result["splits"].items()]
    if result["splits"]:
        mean = result["mean"]
        rows.append([f"**mean** ({len(result['splits'])} splits)", f"{mean['top1']:.2f} ± {mean['top1_std']:.2f}",
                     f"{mean['top5']:.2f} ± {mean['top5_std']:.2f}", "", "", "", ""] + overall)
        rows.append(["chance", result["chance"]["top1"], result["chance"]["top5"], "", "", "", ""] + overall)
    o = result["options"]
    head = (f"### fine-tuning: {result['dataset']} ({o['optimizer']}, lr {o['backbone_lr']:g} backbone / "
            f"{o['head_lr']:g} classifier, {o['epochs']} epochs, batch {o['batch_size']} x {o['world_size']}, "
            f"{o['test_windows']} windows x {o['test_crops']} crops)")
    if result.get("status", "completed") != "completed":
        head += f"\n\n**{result['status']}**: splits not listed have not finished (continue with --resume auto)"
    headers = ["split", "top-1 %", "top-5 %", "train videos", "test videos", "epochs", "skipped"]
    table = head + "\n\n" + markdown_table(headers + (["coverage"] if coverage is not None else []), rows)
    return table + (f"\n\n{coverage_markdown(coverage)}" if coverage is not None else "")
