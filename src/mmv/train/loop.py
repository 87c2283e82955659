"""The MMV training loop: one function, read top to bottom (setup, model, loss, optimizer, resume, data, steps).

``train(cfg)`` runs in a single process (CPU or one GPU) or in every process of a ``torchrun`` launch: the
process group, the rank and the device come from the launcher's environment (:func:`mmv.distributed.
init_distributed`). Every rank computes its own rows of the contrastive loss against the embeddings gathered from
all ranks, so gradients are those of the global batch (:class:`mmv.losses.MMVLoss`).

Behaviour worth knowing:

* A step whose loss (on any rank) or gradient norm is not finite is skipped: no update, the batch is consumed and
  the step still counts. ``run.max_nonfinite`` consecutive ones stop the run with a checkpoint of the last good
  weights and :class:`NonFiniteLossError`.
* SIGTERM or SIGINT (e.g. a SLURM pre-emption or Ctrl-C) lets the current step finish, writes a checkpoint and
  returns; ``run.resume=auto`` then continues exactly where it stopped.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from mmv.distributed import DistInfo, all_reduce_mean, init_distributed
from mmv.losses import MMVLoss

from . import checkpoint as ckpt
from .config import LossSection, OptimSection, RunSection, TrainConfig, config_to_dict, save_config
from .data import BatchStream, build_dataset

__all__ = ["NonFiniteLossError", "lr_at", "train"]

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised after ``run.max_nonfinite`` consecutive non-finite steps (a checkpoint has been written)."""


def lr_at(step: int, optim: OptimSection, total_steps: int) -> float:
    """The learning rate of step ``step`` (0-based): linear warm-up, then half a cosine period down to ``min_lr``.

    Warm-up reaches the peak at step ``warmup_steps - 1`` (no step is wasted at lr 0); the cosine runs over the
    remaining ``total_steps - warmup_steps`` steps (fact sheet section 3: Adam, 0.002, 5k warm-up, half-period
    cosine).
    """
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    progress = min(1.0, (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps))
    return optim.min_lr + (optim.lr - optim.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Trains (or continues training) the model ``cfg`` describes; returns a summary of the run.

    Returns:
        ``{"status": "completed" | "interrupted", "step", "checkpoint", "run_dir", "loss", "nonfinite_steps",
        "clips_per_s"}`` (``loss`` is the last logged total loss, averaged over ranks).

    Raises:
        NonFiniteLossError: ``run.max_nonfinite`` consecutive steps had a non-finite loss or gradient.
    """
    # ---- setup: processes, device, run directory, seeds --------------------------------------------------------
    created_group = not dist.is_initialized()
    info = init_distributed(backend="gloo" if cfg.run.device == "cpu" else None)
    if cfg.run.device == "cuda" and info.device.type != "cuda":
        raise RuntimeError("run.device=cuda but CUDA is not available")
    device, run_dir = info.device, Path(cfg.run.out_dir)
    batch_size = per_device_batch(cfg.run, info.world_size)
    resume_from = ckpt.resolve_resume(cfg.run.resume, run_dir)
    if resume_from is None and ckpt.list_checkpoints(run_dir):  # checked on every rank, so all stop together
        raise ValueError(f"{run_dir} already holds checkpoints; continue that run with --resume auto or choose "
                         "another run.out_dir")
    if info.primary:
        prepare_run_dir(run_dir, cfg)
    torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank

    # ---- model, loss, optimizer --------------------------------------------------------------------------------
    model = build_model(cfg, info)
    loss_fn = MMVLoss(cfg.loss.lambda_va, cfg.loss.lambda_vt, cfg.loss.temperature, cfg.loss.direction,
                      local_loss=True, gather_with_grad=True, rank=info.rank, world_size=info.world_size,
                      lambda_at=cfg.loss.lambda_at)
    named_params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    param_names = [name for name, _ in named_params]
    optimizer = torch.optim.Adam([p for _, p in named_params], lr=cfg.optim.lr, betas=cfg.optim.betas,
                                 eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay)
    seed_rngs(cfg.run.seed + 1 + info.rank)  # rank-specific from here on (data workers, any random op)

    # ---- resume: weights, optimizer, counters (RNG states are restored just before the first step) ------------
    state = {"step": 0, "samples_seen": 0, "nonfinite_total": 0, "nonfinite_consecutive": 0}
    rng_to_restore = data_state = None
    if resume_from is not None:
        state, rng_to_restore, data_state = load_training_state(resume_from, model, optimizer, param_names, info)

    # ---- wrappers: DDP, then torch.compile (compiling the DDP module lets dynamo split graphs at buckets) -----
    raw_model = model
    if info.distributed:
        # With one loss weight at 0 a branch feeds no loss; otherwise every trainable parameter gets a gradient.
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not (cfg.loss.lambda_va and cfg.loss.lambda_vt))
    if cfg.run.compile:
        model = torch.compile(model)

    # ---- data: batches in a deterministic order that continues where the checkpoint stopped ------------------
    dataset = build_dataset(cfg.data, cfg.run.seed, vocab_size=text_vocab_size(raw_model), rank=info.rank,
                            world_size=info.world_size)
    # Every checkpoint records the clips, audio features and vocabulary it was trained on (mmv.preprocess), so it
    # is evaluated and embedded on the same inputs without any flag.
    raw_model.preprocess = training_preprocess(cfg)
    stream = BatchStream(dataset, batch_size, rank=info.rank, world_size=info.world_size, seed=cfg.run.seed,
                         workers=cfg.data.workers, pin_memory=device.type == "cuda", state=data_state)

    # ---- the step loop ---------------------------------------------------------------------------------------
    autocast = get_autocast(cfg.run.amp, device)
    max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
    logger = MetricLogger(run_dir, cfg, info, state["step"], resuming=resume_from is not None)
    stop_signal = StopSignal()
    bn_stats = BufferSnapshot(raw_model)
    if rng_to_restore is not None:
        ckpt.restore_rng_state(rng_to_restore)
    status, last = "completed", {}
    model.train()
    try:
        with stop_signal:
            while state["step"] < cfg.run.steps:
                step = state["step"]
                batch = to_device(next(stream), device)
                bn_stats.save()
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, cfg.optim, cfg.run.steps)
                with autocast():
                    out = model(**model_inputs(batch, raw_model))
                    losses = loss_fn(**out, audio_mask=batch["audio_mask"], text_mask=batch["text_mask"])
                # One collective per step: did any rank get a non-finite loss, or a stop signal?
                loss_bad, stop_now = any_rank(info, not torch.isfinite(losses["loss"]).item(), stop_signal.received)
                grad_norm = torch.tensor(float("nan"))
                if not loss_bad:
                    losses["loss"].backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in named_params], max_norm)
                    if torch.isfinite(grad_norm):  # the same on all ranks: DDP has averaged the gradients
                        optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"], state["samples_seen"] = step + 1, state["samples_seen"] + batch_size * info.world_size
                step_ok = not loss_bad and bool(torch.isfinite(grad_norm))
                if not step_ok:
                    bn_stats.restore()  # the forward pass has folded the bad batch into the BN statistics
                if count_nonfinite(state, step_ok, loss_bad, step) >= cfg.run.max_nonfinite:
                    path = save_training_state(run_dir, raw_model, optimizer, param_names, state, stream, cfg, info)
                    raise NonFiniteLossError(
                        f"{cfg.run.max_nonfinite} consecutive steps (up to step {step}) had a non-finite loss or "
                        f"gradient; the run stopped. {path} holds the last good weights (those after step "
                        f"{step + 1 - cfg.run.max_nonfinite}). Check the data, lower optim.lr or set optim.grad_clip.")
                if state["step"] % cfg.run.log_every == 0 or state["step"] == cfg.run.steps:
                    last = logger.log(state, losses, grad_norm, optimizer.param_groups[0]["lr"], stream, info)
                else:
                    logger.advance()
                if state["step"] % cfg.run.checkpoint_every == 0 or state["step"] == cfg.run.steps or stop_now:
                    path = save_training_state(run_dir, raw_model, optimizer, param_names, state, stream, cfg, info)
                if stop_now:
                    status = "interrupted"
                    log.warning("stopped by a signal after step %d; checkpoint %s; continue with --resume auto",
                                state["step"], path)
                    break
    finally:
        logger.close()
        stream.close()
        if created_group and info.distributed:
            dist.destroy_process_group()
    if info.primary and not stream.report.empty:
        # One line per reason with counts and the first files; each file was logged at DEBUG when first met.
        stream.report.log_summary(log, f"data pipeline (rank 0, {stream.report.samples_seen} clips used)")
    return {"status": status, "step": state["step"], "checkpoint": str(ckpt.find_latest(run_dir)),
            "run_dir": str(run_dir), "loss": last.get("loss"), "nonfinite_steps": state["nonfinite_total"],
            "clips_per_s": logger.clips_per_s()}


def count_nonfinite(state: dict[str, Any], step_ok: bool, loss_bad: bool, step: int) -> int:
    """Updates the non-finite counters after a step; returns how many steps in a row were skipped."""
    if step_ok:
        state["nonfinite_consecutive"] = 0
        return 0
    state["nonfinite_total"] += 1
    state["nonfinite_consecutive"] += 1
    log.warning("step %d: non-finite %s, step skipped (%d in a row, %d in total)", step,
                "loss" if loss_bad else "gradient", state["nonfinite_consecutive"], state["nonfinite_total"])
    return state["nonfinite_consecutive"]


# ----------------------------------------------------------------------------------------------------------------
# Setup helpers
# ----------------------------------------------------------------------------------------------------------------

def per_device_batch(run: RunSection, world_size: int) -> int:
    """Clips per device per step: ``run.batch_size``, or ``run.global_batch_size / world_size`` when that is set."""
    if not run.global_batch_size:
        return run.batch_size
    if run.global_batch_size % world_size:
        raise ValueError(f"run.global_batch_size={run.global_batch_size} is not divisible by the {world_size} "
                         "processes of this launch")
    return run.global_batch_size // world_size


def prepare_run_dir(run_dir: Path, cfg: TrainConfig) -> None:
    """Creates the run directory, clears what a killed run left half-written, writes the resolved config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.remove_stale_temporaries(run_dir)
    save_config(cfg, run_dir / "config.yaml")


def seed_rngs(seed: int) -> None:
    """Seeds torch (CPU and CUDA), numpy and Python's ``random``."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, info: DistInfo) -> nn.Module:
    """The registered model with the config's overrides, prepared for training on ``info.device``."""
    from mmv.models import create_model

    model = create_model(cfg.model.name, **cfg.model.overrides)
    freeze_unused_heads(model, cfg.loss)
    if cfg.run.sync_bn and info.distributed:
        # NOTE: the official models use cross-replica BN; SyncBatchNorm is its counterpart across processes.
        if info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif info.primary:
            log.warning("run.sync_bn: SyncBatchNorm works on GPUs only; on CPU each process keeps its own BN "
                        "statistics")
    model.to(info.device)
    if cfg.run.channels_last:
        to_channels_last(model)
    return model


def training_preprocess(cfg: TrainConfig) -> Any:
    """The :class:`mmv.preprocess.Preprocess` of a run: its data settings and, with real text, its vocabulary."""
    from mmv.preprocess import Preprocess

    vocabulary = None
    if cfg.data.vocab and any(spec.kind != "synthetic" for spec in cfg.data.datasets):  # synthetic text has no words
        from mmv.data.tokenizer import Vocabulary

        vocabulary = Vocabulary.load(cfg.data.vocab)
    return Preprocess.from_training_data(cfg.data, vocabulary)


def freeze_unused_heads(model: nn.Module, loss: LossSection) -> None:
    """Freezes the audio-text heads while no loss uses them (``lambda_at == 0``, MMV's setting).

    Their outputs feed no loss term then, so they would get no gradient: DDP would need the slower
    ``find_unused_parameters`` and Adam would carry state for parameters that never change.
    """
    heads = getattr(model, "heads", {})
    if loss.lambda_at == 0:
        for name in ("audio2txt_embd", "txt2audio_embd"):
            if name in heads:
                heads[name].requires_grad_(False)


def to_channels_last(model: nn.Module) -> None:
    """Puts 4-d conv weights in ``channels_last`` and 5-d ones in ``channels_last_3d`` memory format, in place."""
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
        elif param.dim() == 5:
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)


def get_autocast(amp: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts: bfloat16 for ``bf16`` (and ``auto`` on CUDA), a no-op otherwise.

    bfloat16 has float32's exponent range, so no loss scaling is needed (the losses compute in float32 anyway).
    """
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def model_inputs(batch: dict[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """The batch tensors the model takes: ``video``, and ``audio``/``word_ids`` where it has those branches."""
    modalities = model.cfg.modalities
    inputs = {"video": batch["video"]}  # [B, T, H, W, 3]
    if "audio" in modalities:
        inputs["audio"] = batch["audio"]  # [B, T', F]
    if "text" in modalities:
        inputs["word_ids"] = batch["word_ids"]  # [B, K, L]
    return inputs


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def any_rank(info: DistInfo, *flags: bool) -> tuple[bool, ...]:
    """Each flag OR-ed over ranks (one all-reduce), so that every rank takes the same branch."""
    if not info.distributed:
        return flags
    tensor = torch.tensor([float(f) for f in flags], device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in tensor.tolist())


class BufferSnapshot:
    """A copy of a model's buffers (BatchNorm running statistics), to undo a skipped step's forward pass."""

    def __init__(self, model: nn.Module) -> None:
        self.live = [b for b in model.buffers() if b is not None]
        self.saved = [b.detach().clone() for b in self.live]

    def save(self) -> None:
        with torch.no_grad():
            for saved, live in zip(self.saved, self.live):
                saved.copy_(live)

    def restore(self) -> None:
        with torch.no_grad():
            for saved, live in zip(self.saved, self.live):
                live.copy_(saved)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint helpers
# ----------------------------------------------------------------------------------------------------------------

def gather_rank_states(stream: BatchStream, info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG states and data position, in rank order (a collective: all ranks call it)."""
    mine = {"rng": ckpt.capture_rng_state(), "data": stream.state_dict()}
    if not info.distributed:
        return [mine]
    rank_states: list[Any] = [None] * info.world_size
    dist.all_gather_object(rank_states, mine)
    return rank_states


def save_training_state(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str],
                        state: dict[str, Any], stream: BatchStream, cfg: TrainConfig, info: DistInfo) -> Path:
    """Gathers every rank's RNG and data position and writes ``ckpt_<step>`` from rank 0; all ranks call it."""
    rank_states = gather_rank_states(stream, info)
    path = run_dir / ckpt.checkpoint_name(state["step"])
    if info.primary:
        trainer_state = {**state, "world_size": info.world_size, "ranks": rank_states, "config": config_to_dict(cfg)}
        path = ckpt.save_checkpoint(run_dir, state["step"], model, optimizer, param_names, trainer_state,
                                    cfg.run.keep_last)
    if info.distributed:
        dist.barrier()  # nobody moves on (or exits) before the checkpoint is complete
    return path


def load_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str],
                        info: DistInfo) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """Loads weights and optimizer state; returns the loop counters and this rank's RNG state and data position.

    Raises:
        ValueError: The checkpoint was written by a launch with another number of processes (its per-rank data
            positions and random states do not map onto this one).
    """
    from safetensors.torch import load_file

    trainer_state = ckpt.read_trainer_state(path)
    if trainer_state.get("world_size") != info.world_size:
        raise ValueError(f"{path} was written by {trainer_state.get('world_size')} processes, this launch has "
                         f"{info.world_size}: launch the same number to resume exactly (or start a new run from "
                         "its weights)")
    weights = load_file(str(path / "model.safetensors"), device=str(info.device))
    model.load_state_dict(weights, strict=True)
    ckpt.load_optimizer(optimizer, param_names, path / ckpt.OPTIMIZER_NAME)
    rank_state = trainer_state["ranks"][info.rank]
    state = {k: int(trainer_state.get(k, 0)) for k in ("step", "samples_seen", "nonfinite_total",
                                                         "nonfinite_consecutive")}
    if info.primary:
        log.info("resuming from %s (step %d)", path, state["step"])
    return state, rank_state["rng"], rank_state["data"]


def text_vocab_size(model: nn.Module) -> int | None:
    """Rows of the model's word embedding (the largest usable word id + 1), or None without a text branch."""
    text = getattr(model, "text_backbone", None)
    embed = getattr(text, "embed", None)
    return None if embed is None else embed.weight.shape[0]


# ----------------------------------------------------------------------------------------------------------------
# Signals and logging
# ----------------------------------------------------------------------------------------------------------------

class StopSignal:
    """Within ``with``, SIGTERM and SIGINT set ``received`` instead of killing the process (a second one kills)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:  # asked twice: give up on the clean stop
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
        self.received = True
        log.warning("received %s: finishing this step, then writing a checkpoint", signal.Signals(signum).name)

    def __enter__(self) -> "StopSignal":
        import threading

        if threading.current_thread() is threading.main_thread():  # handlers can only be set from the main thread
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class MetricLogger:
    """Rank 0's progress bar (loss, clips/s, ETA), TensorBoard scalars and ``metrics.jsonl``.

    Every rank calls :meth:`log` (the loss is averaged over ranks there), only rank 0 writes.
    """

    def __init__(self, run_dir: Path, cfg: TrainConfig, info: DistInfo, start_step: int, resuming: bool) -> None:
        self.primary, self.total = info.primary, cfg.run.steps
        self.clips_per_step = per_device_batch(cfg.run, info.world_size) * info.world_size
        self.start_step, self.start_time = start_step, time.perf_counter()
        self.window_step, self.window_time = start_step, self.start_time
        self.device = info.device
        self.bar = self.writer = self.jsonl = None
        if not self.primary:
            return
        self.metrics_path = run_dir / "metrics.jsonl"
        if resuming:
            truncate_metrics(self.metrics_path, start_step)
        self.jsonl = open(self.metrics_path, "a")
        if cfg.run.tensorboard:
            from mmv.extras import require

            # torch.utils.tensorboard needs the tensorboard package; without it, a message that says how to get it.
            require("tensorboard", "train", "TensorBoard logging (run.tensorboard=false turns it off)")
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step if resuming else None)
        if cfg.run.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=cfg.run.steps, initial=start_step, desc=cfg.name, unit="step", dynamic_ncols=True)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def clips_per_s(self) -> float:
        return self.clips_per_step * (self.window_step - self.start_step) / max(1e-9, self.window_time -
                                                                                  self.start_time)

    def log(self, state: dict[str, Any], losses: dict[str, torch.Tensor], grad_norm: torch.Tensor, lr: float,
            stream: BatchStream, info: DistInfo) -> dict[str, Any]:
        """Averages the loss terms over ranks and records one row; returns it (on every rank)."""
        names = sorted(losses)
        values = all_reduce_mean(torch.stack([losses[n].detach().float() for n in names]))
        now = time.perf_counter()
        rate = self.clips_per_step * (state["step"] - self.window_step) / max(1e-9, now - self.window_time)
        self.window_step, self.window_time = state["step"], now
        row = {"step": state["step"], **{n: float(v) for n, v in zip(names, values.tolist())}, "lr": lr,
               "grad_norm": float(grad_norm), "clips_per_s": rate, "samples_seen": state["samples_seen"],
               "nonfinite_total": state["nonfinite_total"], "skipped_clips": stream.report.total,
               "elapsed_s": now - self.start_time}
        if self.device.type == "cuda":
            row["max_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if not self.primary:
            return row
        # NOTE: NaN/inf are not JSON; a skipped step's loss is written as null.
        self.jsonl.write(json.dumps({k: v if not isinstance(v, float) or math.isfinite(v) else None
                                     for k, v in row.items()}) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and math.isfinite(float(value)):
                    self.writer.add_scalar(f"train/{key}", value, state["step"])
        if self.bar is not None:
            self.bar.update(state["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", clips_s=f"{rate:.1f}", lr=f"{lr:.2e}", refresh=False)
        else:
            log.info("step %d/%d loss %.4f lr %.3g %.1f clips/s", state["step"], self.total, row["loss"], lr, rate)
        return row

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()
        self.bar = self.writer = self.jsonl = None


def truncate_metrics(path: Path, step: int) -> None:
    """Drops the rows a killed run logged after the checkpoint it is resumed from (they will be logged again)."""
    if not path.is_file():
        return
    from mmv.atomic import atomic_write_bytes

    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by the kill
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
