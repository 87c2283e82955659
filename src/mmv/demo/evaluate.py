"""Every protocol on the demo corpus (``mmv demo-data``), each beside its chance level.

Tasks, all on the held-out ``test`` videos (classifiers trained on ``train``):

* ``video_probe``: linear probe of the class (digit) on ``vid_repr`` (augmented training passes, window-averaged
  test features), the UCF101 protocol in miniature;
* ``audio_probe``: linear probe of the class on ``aud_repr`` (videos with an audio track);
* ``attribute_video_va`` / ``attribute_audio_va``: linear probe of the fine-grained attribute (motion direction /
  pitch glide, never narrated) from the S_va embeddings of video and of audio;
* ``text_to_video`` / ``text_to_audio``: zero-shot retrieval in S_vat; a query is a test video's narration (on-topic
  narrations only) and every test clip of the same class counts as correct (the narrations name the class only);
* ``image_deflated`` (+ ``image_naive``, ``image_video``): classification of single frames (each video's middle
  frame) through the deflated network with BN γ/β trained on training frames, beside naive deflation and the
  video network on static clips.

Use it in-process: ``evaluate_demo(model, data_dir, cfg=DemoEvalConfig(...)) -> dict``; ``mmv eval demo`` wraps it.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mmv.demo.corpus import corpus_records, read_corpus
from mmv.eval.audio_probe import AudioProbeConfig, audio_window_features, probe_folds
from mmv.eval.datasets import CaptionedClip, ClassificationSplit, LabeledFile
from mmv.data.audio import MelConfig
from mmv.eval.features import preprocess_of
from mmv.preprocess import AudioPreprocess, ImagePreprocess, Preprocess, VideoPreprocess
from mmv.atomic import atomic_path
from mmv.data.skips import SkipReport
from mmv.eval.io import FeatureCache, markdown_table, model_checksum
from mmv.eval.linear_probe import VideoProbeConfig, fit_and_score, split_features

logger = logging.getLogger(__name__)


@dataclass
class DemoEvalConfig:
    """How the demo corpus is evaluated. Clips are the model's own (``model.preprocess``: the frames, crop and
    spectrogram it was trained on); ``preprocess`` replaces them.

    Attributes:
        preprocess: a :class:`~mmv.preprocess.Preprocess` to use instead of the model's. A model without
            preprocessing of its own (``source == "default"``: created by name, never trained) takes the corpus's
            native settings (:func:`corpus_preprocess`).
        train_passes: augmented passes for the video probes.
        test_windows: windows per test clip (probes and retrieval).
        deflation_epochs: passes over the training frames when training the deflated BN γ/β.
        deflation_lr: Adam learning rate of that training.
        batch_size: clips per forward pass.
    """

    preprocess: Any = None
    train_passes: int = 3
    test_windows: int = 4
    deflation_epochs: int = 3
    deflation_lr: float = 1e-3
    batch_size: int = 16
    extra: dict[str, Any] = field(default_factory=dict)


def caption_text(path: Path | None, report: SkipReport | None = None) -> str:
    """All narrations of a caption file joined by spaces ("" when there is none or it cannot be read).

    A caption file that cannot be read, or only by guessing, is noted in ``report`` when one is given (summarised
    once at the end of the task), else logged.
    """
    from mmv.data.narrations import NarrationError, read_narrations

    if path is None or not path.is_file():
        return ""
    guesses: list[str] | None = [] if report is not None else None
    try:
        text = " ".join(n.text for n in read_narrations(path, guesses=guesses))
    except NarrationError as err:
        if report is None:
            logger.warning("ignoring unreadable captions %s (%s)", path, err)
        else:
            report.note("bad_caption", path, err.reason)
        return ""
    if guesses:
        report.note("repaired_caption", path, "; ".join(guesses))
    return text


def corpus_preprocess(corpus: dict[str, Any], num_frames: int = 16) -> Preprocess:
    """The corpus's native clips: ``num_frames`` frames at its frame rate, whole frames, its suggested spectrogram."""
    params = corpus["parameters"]["config"]
    size, fps = int(params["size"]), float(params["fps"])
    video = VideoPreprocess(num_frames, fps, size, size)
    audio = AudioPreprocess(video.seconds, MelConfig(**corpus["suggested_mel_config"]))
    return Preprocess(video=video, audio=audio, image=ImagePreprocess(size, size), source="corpus")


def evaluate_demo(
    model: torch.nn.Module,
    data_dir: str | Path,
    *,
    cfg: DemoEvalConfig | None = None,
    tokenizer: Callable[[list[str]], Any] | None = None,
    vocab: str | Path | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs every demo task; returns ``{"tasks": {name: {"metric", "value", "chance", ...}}, ...}``.

    Args:
        model: the trained (frozen) MMV model.
        data_dir: a demo corpus folder.
        cfg: clip settings (match training).
        tokenizer: ``list[str] -> [N, L]`` word ids; or give ``vocab`` (a vocabulary file). Without either, the
            text tasks are skipped.
        cache_dir: feature cache (None: no cache).
        seed: seed of random windows and classifier selection.
        progress: tqdm bars.
    """
    from mmv.eval.io import load_tokenizer

    cfg = cfg or DemoEvalConfig()
    data_dir = Path(data_dir)
    corpus = read_corpus(data_dir)
    preprocess = cfg.preprocess or preprocess_of(model)
    if preprocess.source == "default":
        preprocess = corpus_preprocess(corpus)
    train, test = corpus_records(data_dir, "train"), corpus_records(data_dir, "test")
    if tokenizer is None and vocab is not None:
        tokenizer = load_tokenizer(vocab, max_words=preprocess.text.max_words)
    if tokenizer is None and preprocess.text.vocabulary is not None:
        tokenizer = preprocess.text.tokenizer().encode_batch
    cache = FeatureCache(cache_dir, model_checksum(model))
    ctx = _Context(model, cfg, preprocess, cache, seed, progress)
    num_classes, num_attributes = len(corpus["class_names"]), len(corpus["attribute_names"])
    tasks: dict[str, Any] = {}
    tasks["video_probe"] = ctx.video_probe(train, test, "label", "repr", num_classes)
    if "audio" in model.cfg.modalities:  # S_va exists only with an audio branch
        tasks["attribute_video_va"] = ctx.video_probe(train, test, "attribute", "va", num_attributes)
        tasks["audio_probe"] = ctx.audio_probe(train, test, "label", "repr", num_classes)
        tasks["attribute_audio_va"] = ctx.audio_probe(train, test, "attribute", "va", num_attributes)
    if "text" in model.cfg.modalities:
        if tokenizer is None:
            logger.warning("no tokenizer or vocabulary: skipping the text retrieval tasks")
        else:
            tasks.update(ctx.retrieval(test, tokenizer))
    tasks.update(ctx.images(train, test, cache_dir, num_classes))
    options = {k: v for k, v in asdict(cfg).items() if k != "preprocess"}
    return {"task": "demo", "data": str(data_dir), "tasks": tasks,
            "options": {**options, "preprocess": preprocess.to_dict(include_vocabulary=False), "seed": seed}}


@dataclass
class _Context:
    model: torch.nn.Module
    cfg: DemoEvalConfig
    preprocess: Preprocess
    cache: FeatureCache
    seed: int
    progress: bool

    def video_probe(self, train, test, key: str, space: str, num_classes: int) -> dict[str, Any]:
        split = ClassificationSplit("demo", [], [LabeledFile(r["path"], r[key]) for r in train],
                                    [LabeledFile(r["path"], r[key]) for r in test])
        # No flips: the demo's attribute pairs left/right motion with a pitch glide that a flip would not reverse.
        probe_cfg = VideoProbeConfig(spec=self.preprocess.video, flip=False, train_passes=self.cfg.train_passes,
                                     test_windows=self.cfg.test_windows, space=space,
                                     batch_size=self.cfg.batch_size, seed=self.seed)
        tx, ty, vx, vy, skipped = split_features(self.model, split, probe_cfg, self.cache, self.progress,
                                                 tag="demo-video")
        groups = np.tile(np.arange(len(tx) // probe_cfg.train_passes), probe_cfg.train_passes)
        result = fit_and_score(tx, ty, vx, vy, C=None, seed=self.seed, groups=groups)
        return _task(f"{key} from video {space}", "top-1 %", result["top1"], 100.0 / num_classes, result, skipped)

    def audio_probe(self, train, test, key: str, space: str, num_classes: int) -> dict[str, Any]:
        records = [r for r in train if r.get("has_audio", True)]
        num_train = len(records)
        records += [r for r in test if r.get("has_audio", True)]
        probe_cfg = AudioProbeConfig(spec=self.preprocess.audio, windows=self.cfg.test_windows, space=space,
                                     batch_size=self.cfg.batch_size, seed=self.seed)
        feats = audio_window_features(self.model, [r["path"] for r in records], probe_cfg, self.cache,
                                      self.progress, f"demo-{space}")
        labels = np.array([r[key] for r in records])
        folds = (np.arange(len(records)) >= num_train).astype(np.int64)
        result = probe_folds(feats.rows, feats.owner, labels, folds, probe_cfg, test_folds=[1])["fold1"]
        return _task(f"{key} from audio {space}", "top-1 %", result["top1"], 100.0 / num_classes, result,
                     feats.skipped)

    def retrieval(self, test, tokenizer) -> dict[str, Any]:
        from mmv.eval.retrieval import RetrievalConfig, evaluate_retrieval

        captions = SkipReport()
        texts = [caption_text(r["caption_path"], captions) for r in test]
        captions.log_summary(logger, "demo retrieval captions")
        queries = [r for r, text in zip(test, texts) if r.get("text_kind") == "on_topic" and text]
        clips = [CaptionedClip(r["path"], text, r["video"]) for r, text in zip(test, texts)]
        directions = ["text->video"] + (["text->audio"] if "audio" in self.model.cfg.modalities else [])
        rcfg = RetrievalConfig(spec=self.preprocess.video, audio=self.preprocess.audio, windows=self.cfg.test_windows,
                               match="label", batch_size=self.cfg.batch_size)
        # Captions of every test clip are embedded, but only on-topic ones are queries (see _demo_ranks).
        result = evaluate_retrieval(self.model, clips, tokenizer, cfg=rcfg, directions=directions,
                                    labels=[r["label"] for r in test], cache_dir=self.cache.directory,
                                    progress=self.progress, tag="demo-retrieval")
        keep = {r["video"] for r in queries}
        out = {}
        for direction in directions:
            if "note" in result["directions"][direction]:  # e.g. text->audio for a Disjoint model
                logger.warning("demo %s: %s", direction, result["directions"][direction]["note"])
                continue
            r = _restrict_queries(result["directions"][direction], clips, [c["label"] for c in test], keep)
            name = "text_to_video" if direction == "text->video" else "text_to_audio"
            out[name] = {"what": f"{direction} retrieval (class match)", "metric": "R@1 %", "value": r["R@1"],
                         "chance": r["chance"]["R@1"], "margin": r["R@1"] - r["chance"]["R@1"], "detail": r}
        return out

    def images(self, train, test, cache_dir, num_classes: int) -> dict[str, Any]:
        from mmv.eval.deflation import DeflationConfig, train_deflated_bn
        from mmv.eval.images import ImageEvalConfig, build_variants, image_features

        frames_dir = Path(cache_dir or self.cache.directory or Path.cwd() / ".mmv_demo_frames") / "demo_frames"
        undecodable = SkipReport()
        train_paths = _middle_frames(train, frames_dir / "train", undecodable)
        test_paths = _middle_frames(test, frames_dir / "test", undecodable)
        undecodable.log_summary(logger, "demo middle frames")
        image, frames = self.preprocess.image, self.preprocess.video.num_frames
        deflation = train_deflated_bn(self.model, [p for p in train_paths if p is not None],
                                      DeflationConfig(num_frames=frames, size=image.min_resize, crop=image.crop,
                                                      epochs=self.cfg.deflation_epochs, lr=self.cfg.deflation_lr,
                                                      seed=self.seed),
                                      progress=self.progress)
        icfg = ImageEvalConfig(spec=image, static_frames=frames, seed=self.seed, batch_size=self.cfg.batch_size)
        out = {}
        names = {"trained": "image_deflated", "naive": "image_naive", "video": "image_video"}
        for variant, (net, frames) in build_variants(self.model, ("trained", "naive", "video"),
                                                     deflation.model).items():
            frames = icfg.static_frames if frames == -1 else frames
            tr = image_features(net, frames, [p for p in train_paths if p], icfg, self.cache.directory,
                           f"demo-frames-train-{variant}", self.progress)
            te = image_features(net, frames, [p for p in test_paths if p], icfg, self.cache.directory,
                           f"demo-frames-test-{variant}", self.progress)
            ty = np.array([r["label"] for r, p in zip(train, train_paths) if p])[tr.valid]
            vy = np.array([r["label"] for r, p in zip(test, test_paths) if p])[te.valid]
            result = fit_and_score(tr.features, ty, te.features, vy, C=None, seed=self.seed)
            out[names[variant]] = _task(f"class from frames ({variant})", "top-1 %", result["top1"],
                                        100.0 / num_classes, result, te.skipped)
        out["image_deflated"]["deflation_l1"] = {"naive": deflation.l1_naive, "trained": deflation.l1_trained}
        return out


def _restrict_queries(result: dict[str, Any], clips: list[CaptionedClip], labels: list[int],
                      keep: set[str]) -> dict[str, Any]:
    """Metrics and chance over on-topic queries only (off-topic narrations cannot name the class)."""
    from mmv.eval.metrics import retrieval_chance, retrieval_metrics

    if not result.get("num_queries"):
        return {**result, "R@1": float("nan"), "chance": {"R@1": float("nan")}}
    ranks = np.asarray(result["ranks"])
    index = np.asarray(result["clip_index"])  # the clip of each query; the candidates are the same clips
    mask = np.array([clips[i].key in keep for i in index], dtype=bool)
    if not mask.any():
        return {**result, "R@1": float("nan"), "num_queries": 0, "chance": {"R@1": float("nan")}}
    candidate_labels = np.asarray(labels)[index]
    positives = [(candidate_labels == labels[i]).sum() for i in index[mask]]
    return {**result, **retrieval_metrics(ranks[mask]), "ranks": ranks[mask].tolist(),
            "query_clip_index": index[mask].tolist(), "chance": retrieval_chance(len(index), positives)}


def _middle_frames(records: list[dict[str, Any]], folder: Path, skipped: SkipReport) -> list[Path | None]:
    """Writes each video's middle frame as a PNG (once) and returns the paths (None: undecodable video, counted in
    ``skipped``)."""
    from PIL import Image

    from mmv.data.media import MediaError, decode_clip, probe

    paths: list[Path | None] = []
    for record in records:
        target = folder / (Path(record["video"]).stem + ".png")
        if not target.exists():
            try:
                clip = decode_clip(record["path"], probe(record["path"]).duration / 2, 1, 1.0, with_audio=False)
            except MediaError as err:
                skipped.add(err.reason, record["path"], str(err))
                paths.append(None)
                continue
            with atomic_path(target, suffix=".png") as tmp:
                Image.fromarray(clip.frames[0]).save(tmp, format="PNG")
        paths.append(target)
    return paths


def _task(what: str, metric: str, value: float, chance: float, detail: dict[str, Any],
          skipped: SkipReport) -> dict[str, Any]:
    return {"what": what, "metric": metric, "value": value, "chance": chance, "margin": value - chance,
            "detail": detail, "skipped": skipped.as_dict()}


def demo_table(result: dict[str, Any]) -> str:
    """Markdown: task, metric, value, chance, margin."""
    rows = [[name, t.get("what", name), t["metric"], t["value"], t["chance"], t["value"] - t["chance"]]
            for name, t in result["tasks"].items()]
    return "### demo corpus evaluation (held-out videos)\n\n" + markdown_table(
        ["task", "what", "metric", "value", "chance", "margin"], rows)
