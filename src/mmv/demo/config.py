"""Settings of ``mmv demo``: the corpus to generate, the tiny model, how long to train and how to evaluate.

One :class:`DemoConfig` describes a demo run. It produces the :class:`mmv.train.config.TrainConfig` of each model
it trains (:meth:`DemoConfig.train_config`) and the :class:`mmv.demo.evaluate.DemoEvalConfig` of their evaluation
(:meth:`DemoConfig.eval_config`). Training records the clips (frames, frame rate, crop, audio rate, mel settings,
vocabulary) with each model (``model.preprocess``), and the evaluation reads them from there, so both always see
the same clips.

The default values were tuned so that the default ``mmv demo`` (FAC) runs in about seven minutes on two CPU
cores, corpus generation and evaluation included, with the video, audio and text rows far from chance
(``docs/demo.md`` gives the measured run and the rows that are not yet there). :meth:`DemoConfig.quick` is a
seconds-long variant for tests.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DemoConfig", "VARIANTS", "Variant"]


@dataclass(frozen=True)
class Variant:
    """One model of the comparison: a graph and the modalities it is trained on (a row of the paper's Table 1)."""

    name: str
    graph: str
    modalities: tuple[str, ...]

    @property
    def label(self) -> str:
        """The row label: ``FAC``, ``Shared``, ``Disjoint``, ``VT only``, ``VA only``."""
        return {"fac": "FAC", "shared": "Shared", "disjoint": "Disjoint"}[self.graph] if len(self.modalities) == 3 \
            else ("VT only" if "text" in self.modalities else "VA only")


# NOTE: two-modality models have a single pair of spaces, so their graph does not matter; the paper's Table 1
# lists them as "VT" and "VA" rows. They are built with the shared graph (one joint space for the pair).
VARIANTS: dict[str, Variant] = {
    "fac": Variant("fac", "fac", ("video", "audio", "text")),
    "shared": Variant("shared", "shared", ("video", "audio", "text")),
    "disjoint": Variant("disjoint", "disjoint", ("video", "audio", "text")),
    "vt": Variant("vt", "shared", ("video", "text")),
    "va": Variant("va", "shared", ("video", "audio")),
}


@dataclass
class DemoConfig:
    """Everything a demo run needs; every field has the default of ``mmv demo``.

    Attributes:
        num_train: training videos of the generated corpus.
        num_test: held-out videos (unseen handwriting) for every evaluation.
        corpus_seed: seed of the corpus (the same seed and sizes reuse a corpus already on disk).
        corpus: :class:`mmv.demo.corpus.DemoCorpusConfig` fields that differ from its defaults.
        model: a registered tiny model: ``mmv_tiny_s3dg_x2`` (S3D-G at 1/4 width, the default), ``mmv_tiny_s3dg``
            (1/8 width: too narrow to learn the demo clips in a few hundred steps) or ``mmv_tiny_tsm``.
        num_frames: frames per training clip (sampled at ``fps``).
        fps: frame rate of the clips (the corpus's).
        crop: side of the frames fed to the network. Training and evaluation both resize the whole frame to it
            (no random crop: the evaluation sees whole frames too, so both see the digit at one scale).
        num_mel_bins, stft_window, stft_hop: the log-mel spectrogram (at the corpus's sample rate).
        num_narrations: K, narrations per clip in MIL-NCE's positive bag.
        max_words: tokens per narration.
        vocab_size: largest vocabulary built from the training narrations (must fit the tiny text embedding).
        steps: optimizer steps per model.
        batch_size: clips per step.
        lr: peak learning rate (Adam).
        warmup_steps: linear warm-up steps.
        temperature: NCE temperature.
        loss_direction: the contrastive loss's denominator, ``joint`` (the formula as written) or ``released``
            (the public implementations' form, positives counted twice); see :mod:`mmv.losses`.
        lambda_va, lambda_vt: weights of NCE(video, audio) and MIL-NCE(video, text) (the paper's 1:1 for
            HowTo100M + AudioSet); a two-modality variant sets the missing pair's weight to 0.
        train_passes: augmented passes over the training videos for the video linear probes.
        test_windows: windows per held-out clip (probes and retrieval).
        deflation_epochs: passes over the training frames when fitting the deflated network's BN parameters.
        deflation_lr: Adam learning rate of that fit.
        eval_batch_size: clips per forward pass during evaluation.
        data_workers: DataLoader processes decoding training clips (1: decoding overlaps the training step, which
            matters on two cores, where decoding takes about as long as the step itself).
        seed: seed of training and evaluation (``--compare`` adds the seed index).
    """

    num_train: int = 600
    num_test: int = 200
    corpus_seed: int = 0
    corpus: dict[str, Any] = field(default_factory=dict)
    model: str = "mmv_tiny_s3dg_x2"
    num_frames: int = 8
    fps: float = 10.0
    crop: int = 48
    num_mel_bins: int = 64
    stft_window: int = 512
    stft_hop: int = 256
    num_narrations: int = 2
    max_words: int = 8
    vocab_size: int = 2048
    steps: int = 600
    batch_size: int = 32
    lr: float = 0.002
    warmup_steps: int = 30
    temperature: float = 0.07
    loss_direction: str = "joint"
    lambda_va: float = 1.0
    lambda_vt: float = 1.0
    train_passes: int = 1
    test_windows: int = 2
    deflation_epochs: int = 5
    deflation_lr: float = 1e-2
    eval_batch_size: int = 32
    data_workers: int = 1
    seed: int = 0

    @classmethod
    def quick(cls) -> "DemoConfig":
        """A run of seconds (tests, smoke checks): a tiny corpus and a few steps; its numbers mean nothing."""
        corpus = {"duration": 2.0, "size": 32, "digit_size": [16, 20], "speed": [2.0, 4.0]}
        return cls(num_train=24, num_test=12, corpus=corpus, num_frames=8, crop=24, steps=4, batch_size=8,
                   warmup_steps=2, train_passes=1, test_windows=1, deflation_epochs=1, eval_batch_size=16,
                   data_workers=0)

    def replace(self, **changes: Any) -> "DemoConfig":
        return dataclasses.replace(self, **changes)

    def corpus_config(self) -> Any:
        """The :class:`mmv.demo.corpus.DemoCorpusConfig` of the corpus this demo generates."""
        from mmv.demo.corpus import DemoCorpusConfig

        return DemoCorpusConfig.from_dict({**DemoCorpusConfig().to_dict(), **self.corpus})

    def sample_rate(self) -> int:
        return int(self.corpus_config().sample_rate)

    def train_config(self, *, data_dir: str, vocab: str, out_dir: str, variant: Variant = VARIANTS["fac"],
                     seed: int | None = None, progress: bool = True) -> Any:
        """The :class:`mmv.train.config.TrainConfig` that trains ``variant`` on the corpus in ``data_dir``.

        Args:
            data_dir: the generated corpus (its ``train/manifest.jsonl`` is the training set).
            vocab: the vocabulary file of the training narrations.
            out_dir: the run directory (checkpoints, ``metrics.jsonl``).
            variant: graph and modalities.
            seed: training seed (default: ``self.seed``).
            progress: the training progress bar.
        """
        from mmv.train.config import (DataSection, DatasetSpec, LossSection, ModelSection, OptimSection,
                                      RunSection, TrainConfig)

        overrides: dict[str, Any] = {"graph": variant.graph}
        if tuple(variant.modalities) != ("video", "audio", "text"):
            overrides["modalities"] = list(variant.modalities)
        data = DataSection(
            datasets=[DatasetSpec(kind="manifest", path=f"{data_dir}/train/manifest.jsonl")],
            num_frames=self.num_frames, fps=self.fps, crop=self.crop, min_resize=self.crop, flip=False,
            color_jitter=False,
            sample_rate=self.sample_rate(), num_mel_bins=self.num_mel_bins, stft_window=self.stft_window,
            stft_hop=self.stft_hop, mel_fmin=80.0, mel_fmax=self.sample_rate() / 2 * 0.95,
            num_narrations=self.num_narrations, max_words=self.max_words, vocab=vocab, workers=self.data_workers)
        cfg = TrainConfig(
            name=f"demo-{variant.name}",
            model=ModelSection(name=self.model, overrides=overrides),
            data=data,
            optim=OptimSection(lr=self.lr, warmup_steps=self.warmup_steps, schedule="cosine"),
            loss=LossSection(lambda_va=self.lambda_va if "audio" in variant.modalities else 0.0,
                             lambda_vt=self.lambda_vt if "text" in variant.modalities else 0.0,
                             temperature=self.temperature, direction=self.loss_direction),
            run=RunSection(out_dir=out_dir, steps=self.steps, batch_size=self.batch_size,
                           checkpoint_every=self.steps, keep_last=1, log_every=max(1, self.steps // 60),
                           device="cpu", seed=self.seed if seed is None else seed, tensorboard=False,
                           progress=progress, sync_bn=False),
        )
        return cfg.validate()

    def eval_config(self) -> Any:
        """The :class:`mmv.demo.evaluate.DemoEvalConfig` of the evaluation (its clips are the trained model's)."""
        from mmv.demo.evaluate import DemoEvalConfig

        return DemoEvalConfig(train_passes=self.train_passes, test_windows=self.test_windows,
                              deflation_epochs=self.deflation_epochs, deflation_lr=self.deflation_lr,
                              batch_size=self.eval_batch_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
