"""Deflation with trained BN: learn the γ/β of a deflated network so that it matches the video network on images.

Paper §3.4 (fact sheet §4): naive deflation (S3D-G kernels summed over time; TSM shift off) is not the video network
run on a static clip, because of the zero temporal padding at the clip's ends, and its image results collapse
(Table 3 "n-def"). The fix keeps every convolution weight and learns only the BatchNorm scale and shift (γ, β) of the
deflated network, with an L1 loss between its output on an image and the video network's output on the static
video made of that image.

Choices where the paper is unconfirmed (documented in docs/evaluation.md):

* the matched output is the visual backbone's ``vid_repr`` (the feature every downstream image task uses);
* BN running statistics stay frozen (the network runs in eval mode; only the affine parameters train);
* the static clip has ``num_frames`` copies of the image (default 32, the paper's clip length);
* Adam, constant learning rate, ``epochs`` passes over the given images (the paper's data and schedule are unknown).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mmv.data.files import IMAGE_EXTENSIONS, scan_files
from mmv.data.skips import SkipReport
from mmv.eval.io import forget_checksum

logger = logging.getLogger(__name__)


@dataclass
class DeflationConfig:
    """Options of BN γ/β training.

    Attributes:
        num_frames: frames of the static clip fed to the video network (None: the model's clip length).
        size: images are resized so that their short side has this many pixels... (None: the model's image
            settings, ``model.preprocess.image``)
        crop: ...then centre-cropped to ``crop`` x ``crop`` (None: the model's).
        epochs: passes over the images.
        batch_size: images per step.
        lr: Adam learning rate.
        seed: seed of the batch order.
    """

    num_frames: int | None = None
    size: int | None = None
    crop: int | None = None
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0


@dataclass
class DeflationResult:
    """The deflated model and how well it matches the video network (mean L1 over the training images).

    ``num_images`` counts the images trained on (those read; ``skipped`` has the others), ``config`` the options
    used, with the model's settings in place of None."""

    model: torch.nn.Module
    l1_naive: float
    l1_trained: float
    history: list[float] = field(default_factory=list)
    skipped: SkipReport = field(default_factory=SkipReport)
    num_images: int = 0
    config: DeflationConfig | None = None


def image_paths(root: str | Path | Sequence[str | Path]) -> list[Path]:
    """All images under a folder (recursively, sorted), or the given list of files."""
    if isinstance(root, (str, Path)):
        root = Path(root)
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: image folder not found")
        return scan_files(root, IMAGE_EXTENSIONS)
    return [Path(p) for p in root]


def bn_affine_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The γ (weight) and β (bias) of every BatchNorm layer in ``module``."""
    params = []
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.affine:
            params += [layer.weight, layer.bias]
    return params


def resolved(cfg: DeflationConfig, model: torch.nn.Module) -> DeflationConfig:
    """``cfg`` with the settings left at None taken from the model's preprocessing."""
    from mmv.eval.features import preprocess_of

    preprocess = preprocess_of(model)
    return dataclasses.replace(cfg, num_frames=cfg.num_frames or preprocess.video.num_frames,
                               size=cfg.size or preprocess.image.min_resize, crop=cfg.crop or preprocess.image.crop)


def _load_images(paths: list[Path], cfg: DeflationConfig, skipped: SkipReport) -> torch.Tensor:
    from mmv.data.media import MediaError
    from mmv.data.windows import image_window
    from mmv.preprocess import ImagePreprocess

    spec = ImagePreprocess(cfg.size, cfg.crop)
    images = []
    for path in paths:
        try:
            images.append(image_window(path, spec))
        except MediaError as err:
            skipped.add(err.reason, path)
    if not images:
        raise ValueError("no readable image to train the deflated BN parameters on")
    return torch.from_numpy(np.stack(images))  # [N, H, W, 3] uint8


@torch.no_grad()
def _video_targets(model: torch.nn.Module, images: torch.Tensor, cfg: DeflationConfig) -> torch.Tensor:
    out = []
    for first in range(0, len(images), cfg.batch_size):
        x = images[first:first + cfg.batch_size].float().div(255.0)
        clip = x[:, None].expand(-1, cfg.num_frames, -1, -1, -1)  # [B, T, H, W, 3] static clip
        out.append(model.encode_video(clip, space="repr"))
    return torch.cat(out)


def _l1(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int) -> float:
    with torch.no_grad():
        total = sum(
            (model.encode_video(images[i:i + batch_size].float().div(255.0), space="repr") - targets[i:i + batch_size])
            .abs().mean(dim=1).sum().item()
            for i in range(0, len(images), batch_size))
    return total / len(images)


def train_deflated_bn(
    model: torch.nn.Module,
    images: str | Path | Sequence[str | Path],
    cfg: DeflationConfig | None = None,
    *,
    progress: bool = True,
) -> DeflationResult:
    """Deflates a copy of ``model`` and trains its visual BN γ/β against the video network on static clips.

    Args:
        model: the (video) MMV model; left unchanged.
        images: a folder of images (searched recursively) or a list of image files.
        cfg: training options.
        progress: tqdm bar over steps.

    Returns:
        A :class:`DeflationResult` whose ``model`` is the deflated copy (eval mode) with trained γ/β.
    """
    import mmv
    from tqdm import tqdm

    cfg = resolved(cfg or DeflationConfig(), model)
    if getattr(model, "deflated", False):
        raise ValueError("train_deflated_bn needs the video model, not an already deflated one")
    skipped = SkipReport()
    pixels = _load_images(image_paths(images), cfg, skipped)
    model.eval()
    device = next(model.parameters()).device
    targets = _video_targets(model, pixels.to(device), cfg)
    deflated = mmv.deflate(copy.deepcopy(model)).eval()
    forget_checksum(deflated)
    for p in deflated.parameters():
        p.requires_grad_(False)
    trainable = bn_affine_parameters(deflated.video_backbone)
    for p in trainable:
        p.requires_grad_(True)
    l1_naive = _l1(deflated, pixels.to(device), targets, cfg.batch_size)
    optimiser = torch.optim.Adam(trainable, lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    history = []
    steps = cfg.epochs * -(-len(pixels) // cfg.batch_size)
    bar = tqdm(total=steps, desc="deflation BN training", disable=not progress, unit="step")
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(pixels), generator=generator).split(cfg.batch_size):
            x = pixels[batch].to(device).float().div(255.0)
            loss = (deflated.encode_video(x, space="repr") - targets[batch]).abs().mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            history.append(loss.item())
            bar.update()
            bar.set_postfix(l1=f"{loss.item():.4f}")
    bar.close()
    for p in trainable:
        p.requires_grad_(False)
    forget_checksum(deflated)
    l1_trained = _l1(deflated, pixels.to(device), targets, cfg.batch_size)
    logger.info("deflation: mean L1 to the video network %.4f (naive) -> %.4f (trained BN) on %d images",
                l1_naive, l1_trained, len(pixels))
    return DeflationResult(deflated.eval(), l1_naive, l1_trained, history, skipped, num_images=len(pixels), config=cfg)
