"""The MMV model: three backbones, projection heads and one of the paper's embedding graphs.

Graphs (paper Fig. 1; released models: FAC with a ReLU between the spaces, ``fac_relu``):

* ``shared``: one space S_vat; each modality has one head into it.
* ``disjoint``: S_va (video–audio) and S_vt (video–text); the video has one head into each. Text and audio never
  meet, except through the optional audio–text heads.
* ``fac`` (fine and coarse): video and audio meet in the fine S_va; the coarse S_vat, where text lives, is reached
  from S_va through ``act`` + ``vis_embd``. At inference audio reaches S_vat through the *video's* va→vat head, so
  text↔audio retrieval works although the two were never paired in training (property iii). In training mode,
  as in the official code, audio's text-space output comes from the separate ``audio2txt_embd`` head instead
  (no loss on it by default), so that audio does not pollute the BN statistics of ``vis_embd``.

Output keys follow the official model (``vid_embd_toaud`` is the official ``out['vid_embd']['toaud']``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import audio_resnet, s3dg, text, tsm_resnet  # noqa: F401  (registers the backbones)
from ._registry import create_backbone, register_model
from .heads import EmbeddingHead, HeadConfig
from .layers import batch_norm

GRAPHS = ("shared", "disjoint", "fac")
FAC_ACTIVATIONS = ("none", "relu", "bnrelu")
MODALITIES = ("video", "audio", "text")
SPACES = ("repr", "va", "vt")

# Head names are the official module names (they are also the names in the converted checkpoints).
HEAD_NAMES = ("vid2audio_embd", "audio_embd", "vis_embd", "txt_embd", "audio2txt_embd", "txt2audio_embd")


def _released_heads() -> dict[str, HeadConfig]:
    """The heads of the released FAC models (paper fact sheet §1.6)."""
    return {
        "vid2audio_embd": HeadConfig("mlp@512", bn_out=True),
        "audio_embd": HeadConfig("linear", bn_out=False),
        "vis_embd": HeadConfig("linear", bn_out=True),
        "txt_embd": HeadConfig("linear", bn_out=False),
        "audio2txt_embd": HeadConfig("linear", bn_out=False),
        "txt2audio_embd": HeadConfig("linear", bn_out=False),
    }


@dataclass
class MMVConfig:
    """Everything that defines an MMV architecture; stored as ``config.json`` beside the weights."""

    video_backbone: str = "s3dg"
    video_backbone_args: dict[str, Any] = field(default_factory=dict)
    audio_backbone: str = "audio_resnet"
    audio_backbone_args: dict[str, Any] = field(default_factory=dict)
    text_backbone: str = "word_embedding"
    text_backbone_args: dict[str, Any] = field(default_factory=dict)
    graph: str = "fac"
    fac_activation: str = "relu"  # between S_va and the va→vat head: "none", "relu" (released) or "bnrelu"
    va_dim: int = 512  # S_va (FAC, Disjoint)
    vt_dim: int = 256  # S_vat (FAC), S_vt (Disjoint), the one space (Shared)
    at_dim: int = 512  # output of the optional audio–text heads (official config_audio_text: 512)
    heads: dict[str, HeadConfig] = field(default_factory=_released_heads)
    audio_text_heads: bool = True  # build audio2txt_embd / txt2audio_embd (the official graph has them)
    modalities: tuple[str, ...] = MODALITIES  # e.g. ("video", "audio") for a VA-only model

    def __post_init__(self) -> None:
        self.heads = {k: HeadConfig(**v) if isinstance(v, dict) else v for k, v in self.heads.items()}
        # Backbone arguments are stored as JSON; normalise now (tuples → lists) so a saved config compares equal.
        self.video_backbone_args = json.loads(json.dumps(self.video_backbone_args))
        self.audio_backbone_args = json.loads(json.dumps(self.audio_backbone_args))
        self.text_backbone_args = json.loads(json.dumps(self.text_backbone_args))
        self.modalities = tuple(self.modalities)
        if self.graph not in GRAPHS:
            raise ValueError(f"graph must be one of {GRAPHS}, got {self.graph!r}")
        if self.fac_activation not in FAC_ACTIVATIONS:
            raise ValueError(f"fac_activation must be one of {FAC_ACTIVATIONS}, got {self.fac_activation!r}")
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or "video" not in self.modalities or len(self.modalities) < 2:
            raise ValueError(f"modalities must include 'video' and one or two of audio/text, got {self.modalities}")
        missing = set(HEAD_NAMES) - set(self.heads)
        if missing:
            raise ValueError(f"head configs missing for {sorted(missing)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MMVConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown MMVConfig fields: {sorted(unknown)}")
        return cls(**d)


class MMV(nn.Module):
    """``forward(video=None, audio=None, word_ids=None) -> dict`` (see docs/design.md for shapes and keys)."""

    def __init__(self, cfg: MMVConfig) -> None:
        from mmv.preprocess import Preprocess

        super().__init__()
        self.cfg = cfg
        self.deflated = False
        # What a file must become to be this model's input (frames, audio features, vocabulary): saved with the
        # weights by mmv.save, set by mmv.load, mmv convert and mmv train (see mmv.preprocess).
        self.preprocess = Preprocess()
        mods = cfg.modalities
        self.video_backbone = create_backbone(cfg.video_backbone, **cfg.video_backbone_args)
        self.audio_backbone = (
            create_backbone(cfg.audio_backbone, **cfg.audio_backbone_args) if "audio" in mods else None
        )
        self.text_backbone = create_backbone(cfg.text_backbone, **cfg.text_backbone_args) if "text" in mods else None
        dv = self.video_backbone.num_features
        heads: dict[str, EmbeddingHead] = {}

        def add(name: str, in_dim: int, out_dim: int) -> None:
            heads[name] = EmbeddingHead(in_dim, out_dim, cfg.heads[name])

        self.fac_bn = None
        if cfg.graph == "shared":
            add("vis_embd", dv, cfg.vt_dim)
            if self.audio_backbone is not None:
                add("audio_embd", self.audio_backbone.num_features, cfg.vt_dim)
            if self.text_backbone is not None:
                add("txt_embd", self.text_backbone.num_features, cfg.vt_dim)
        else:
            if self.audio_backbone is not None:
                add("vid2audio_embd", dv, cfg.va_dim)
                add("audio_embd", self.audio_backbone.num_features, cfg.va_dim)
            if self.text_backbone is not None:
                # FAC reaches S_vat from S_va (or from the backbone in a VT-only model, where there is no S_va).
                fac_from_va = cfg.graph == "fac" and self.audio_backbone is not None
                add("vis_embd", cfg.va_dim if fac_from_va else dv, cfg.vt_dim)
                add("txt_embd", self.text_backbone.num_features, cfg.vt_dim)
                if fac_from_va and cfg.fac_activation == "bnrelu":
                    self.fac_bn = batch_norm(cfg.va_dim, 1)
            if cfg.audio_text_heads and self.audio_backbone is not None and self.text_backbone is not None:
                add("audio2txt_embd", self.audio_backbone.num_features, cfg.at_dim)
                add("txt2audio_embd", self.text_backbone.num_features, cfg.at_dim)
        self.heads = nn.ModuleDict(heads)

    # ----------------------------------------------------------------------------------------------------------
    # The graph
    def _fac_act(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.fac_activation == "none":
            return x
        if self.fac_bn is not None:
            x = self.fac_bn(x)
        return torch.relu(x)

    def _fac_from_va(self) -> bool:
        return self.cfg.graph == "fac" and "vid2audio_embd" in self.heads

    def _video_heads(self, vid_repr: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.heads
        if self.cfg.graph == "shared":
            z = h["vis_embd"](vid_repr)
            return {"vid_embd_toaud": z, "vid_embd_totxt": z} if "audio_embd" in h else {"vid_embd_totxt": z}
        out = {}
        if "vid2audio_embd" in h:
            out["vid_embd_toaud"] = h["vid2audio_embd"](vid_repr)
        if "vis_embd" in h:
            src = self._fac_act(out["vid_embd_toaud"]) if self._fac_from_va() else vid_repr
            out["vid_embd_totxt"] = h["vis_embd"](src)
        return out

    def _audio_heads(self, aud_repr: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.heads
        if self.cfg.graph == "shared":
            z = h["audio_embd"](aud_repr)
            return {"aud_embd_tovid": z, "aud_embd_totxt": z} if "txt_embd" in h else {"aud_embd_tovid": z}
        out = {"aud_embd_tovid": h["audio_embd"](aud_repr)}
        if self._fac_from_va() and not self.training:
            out["aud_embd_totxt"] = h["vis_embd"](self._fac_act(out["aud_embd_tovid"]))
        elif "audio2txt_embd" in h:
            out["aud_embd_totxt"] = h["audio2txt_embd"](aud_repr)
        # FAC in training without audio2txt_embd: no audio text-space output, so that vis_embd's BN statistics
        # stay video-only (no loss uses it by default).
        return out

    def _text_heads(self, txt_repr: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.heads
        out = {"txt_embd_tovid": h["txt_embd"](txt_repr)}
        if self.cfg.graph == "shared" and "audio_embd" in h:
            out["txt_embd_toaud"] = out["txt_embd_tovid"]
        elif "txt2audio_embd" in h:
            out["txt_embd_toaud"] = h["txt2audio_embd"](txt_repr)
        return out

    # ----------------------------------------------------------------------------------------------------------
    # Public API
    def _as_clip(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim == 4:
            if not self.deflated:
                raise ValueError(
                    f"got images of shape {tuple(video.shape)}; run them through a deflated model "
                    "(mmv.deflate(model)) or pass a static clip [B, T, H, W, 3]"
                )
            video = video[:, None]
        if video.ndim != 5 or video.shape[-1] != 3:
            raise ValueError(f"video must be [B, T, H, W, 3] (or images [B, H, W, 3]), got {tuple(video.shape)}")
        return video

    def forward(
        self,
        video: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        word_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Representations and embeddings for whichever modalities are given (any of them may be None)."""
        out: dict[str, torch.Tensor] = {}
        if video is not None:
            out["vid_repr"] = self.video_backbone(self._as_clip(video))
            out.update(self._video_heads(out["vid_repr"]))
        if audio is not None:
            if self.audio_backbone is None:
                raise ValueError("this model has no audio branch (modalities: %s)" % (self.cfg.modalities,))
            out["aud_repr"] = self.audio_backbone(audio)
            out.update(self._audio_heads(out["aud_repr"]))
        if word_ids is not None:
            if self.text_backbone is None:
                raise ValueError("this model has no text branch (modalities: %s)" % (self.cfg.modalities,))
            out["txt_repr"] = self.text_backbone(word_ids)
            out.update(self._text_heads(out["txt_repr"]))
        return out

    def _select(self, out: dict[str, torch.Tensor], prefix: str, space: str, keys: dict[str, str]) -> torch.Tensor:
        space = "vt" if space == "vat" else space
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES} (or 'vat'), got {space!r}")
        key = f"{prefix}_repr" if space == "repr" else keys[space]
        if key not in out:
            raise ValueError(f"this model ({self.cfg.graph}, {self.cfg.modalities}) has no {key!r} output")
        return out[key]

    def encode_video(self, video: torch.Tensor, space: str = "vt") -> torch.Tensor:
        """Video (or, deflated, images) → backbone output (``repr``), S_va (``va``) or S_vat/S_vt (``vt``)."""
        return self._select(self(video=video), "vid", space, {"va": "vid_embd_toaud", "vt": "vid_embd_totxt"})

    def encode_audio(self, audio: torch.Tensor, space: str = "va") -> torch.Tensor:
        return self._select(self(audio=audio), "aud", space, {"va": "aud_embd_tovid", "vt": "aud_embd_totxt"})

    def encode_text(self, word_ids: torch.Tensor, space: str = "vt") -> torch.Tensor:
        return self._select(self(word_ids=word_ids), "txt", space, {"va": "txt_embd_toaud", "vt": "txt_embd_tovid"})

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part (trainable and frozen), e.g. for ``mmv info``."""
        parts = {"video_backbone": self.video_backbone, "audio_backbone": self.audio_backbone,
                 "text_backbone": self.text_backbone}
        counts = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items() if m is not None}
        for name, head in self.heads.items():
            counts[f"head/{name}"] = sum(p.numel() for p in head.parameters())
        if self.fac_bn is not None:
            counts["fac_bn"] = sum(p.numel() for p in self.fac_bn.parameters())
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts


def deflate(model: MMV) -> MMV:
    """Turns the visual branch into an image network in place (paper §3.4) and returns the model.

    S3D-G: every 3D kernel summed over time; TSM: the shift switched off. Afterwards ``model(video=images)``
    accepts images ``[B, H, W, 3]``. Naive deflation differs from the video network run on a static clip at the
    clip's temporal boundaries (zero padding); ``mmv deflate`` learns BN γ/β to close that gap.
    """
    backbone = model.video_backbone
    if not hasattr(backbone, "deflate_"):
        raise ValueError(f"{type(backbone).__name__} cannot be deflated")
    if not model.deflated:
        backbone.deflate_()
        model.deflated = True
    return model


# ---------------------------------------------------------------------------------------------------------------
# Registered variants. Released models (the paper's Table 2, FAC, AudioSet + HowTo100M):
def _create(cfg: MMVConfig, overrides: dict[str, Any], released: bool = False) -> MMV:
    from mmv.preprocess import Preprocess

    if overrides:
        cfg = MMVConfig.from_dict({**cfg.to_dict(), **overrides})
    model = MMV(cfg)
    if released:
        model.preprocess = Preprocess.released()
    return model


def _released_config(video_backbone: str, video_args: dict[str, Any]) -> MMVConfig:
    return MMVConfig(
        video_backbone=video_backbone,
        video_backbone_args=video_args,
        audio_backbone_args={"depth": 50},
        text_backbone_args={"vocab_size": 65536, "embedding_dim": 300, "sentence_dim": 2048},
    )


@register_model
def mmv_fac_s3dg(**overrides: Any) -> MMV:
    """MMV FAC with S3D-G (9.1M), the released ``mmv_s3d.pkl``."""
    return _create(_released_config("s3dg", {"space_to_depth": True}), overrides, released=True)


@register_model
def mmv_fac_tsm_resnet50(**overrides: Any) -> MMV:
    """MMV FAC with TSM-ResNet50 (23.5M), the released ``mmv_tsm_resnet_x1.pkl``."""
    return _create(_released_config("tsm_resnet", {"depth": 50, "width_mult": 1}), overrides, released=True)


@register_model
def mmv_fac_tsm_resnet50x2(**overrides: Any) -> MMV:
    """MMV FAC with TSM-ResNet50x2 (93.9M), the released ``mmv_tsm_resnet_x2.pkl``."""
    return _create(_released_config("tsm_resnet", {"depth": 50, "width_mult": 2}), overrides, released=True)


# Tiny members of the same families: CPU-trainable in minutes (demo, tests). Same code paths, smaller widths/depths.
def _tiny_config(video_backbone: str, video_args: dict[str, Any]) -> MMVConfig:
    heads = _released_heads()
    heads["vid2audio_embd"] = HeadConfig("mlp@128", bn_out=True)
    return MMVConfig(
        video_backbone=video_backbone,
        video_backbone_args=video_args,
        audio_backbone_args={"depth": 18, "blocks": (1, 1, 1, 1), "base_channels": 16},
        text_backbone_args={"vocab_size": 2048, "embedding_dim": 64, "sentence_dim": 256},
        va_dim=128,
        vt_dim=64,
        heads=heads,
        audio_text_heads=False,
    )


@register_model
def mmv_tiny_s3dg(**overrides: Any) -> MMV:
    """Tiny S3D-G (width 1/8, 128-d), audio ResNet (4 basic blocks, 128-d), 64-d word embeddings; FAC."""
    return _create(_tiny_config("s3dg", {"width_mult": 0.125, "space_to_depth": True}), overrides)


@register_model
def mmv_tiny_tsm(**overrides: Any) -> MMV:
    """Tiny TSM-ResNet (4 bottleneck blocks, stem 16, 512-d) with the tiny audio and text backbones; FAC."""
    return _create(_tiny_config("tsm_resnet", {"blocks": (1, 1, 1, 1), "base_channels": 16}), overrides)


@register_model
def mmv_tiny_s3dg_x2(**overrides: Any) -> MMV:
    """``mmv_tiny_s3dg`` at twice the width (S3D-G at 1/4 width, 256-d): the demo's model.

    At width 1/8 the Inception branches have 2-8 channels and the network does not learn the demo clips in a few
    hundred steps, even supervised; at 1/4 it learns both the handwriting and the motion (docs/demo.md).
    """
    return _create(_tiny_config("s3dg", {"width_mult": 0.25, "space_to_depth": True}), overrides)
