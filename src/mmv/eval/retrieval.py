"""Zero-shot retrieval in the shared spaces: text→video, text→audio (S_vat) and audio→video (S_va).

Text→video is the paper's zero-shot protocol on MSR-VTT (1k-A test split) and YouCook2 (validation segments).
Text→audio and audio→video test property (iii) of the FAC graph: audio and text meet in S_vat although they were
never paired in training (audio enters S_vat through the video's va→vat head).

Embeddings (the paper's pipeline per VATT, fact sheet §5.3, unconfirmed for MMV itself): each clip is covered by
``windows`` evenly spaced windows (default 4); each window is embedded and L2-normalised, the windows are averaged
and the mean is L2-normalised again. Similarity is the dot product (cosine). Ranks use the explicit tie rule of
:func:`mmv.eval.metrics.retrieval_ranks` (default pessimistic). Clips whose video cannot be decoded are dropped
from every direction; clips without an audio track are dropped from the directions that need audio (reported).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mmv.eval.datasets import (
    CaptionedClip,
    Coverage,
    coverage_cell,
    coverage_markdown,
    msrvtt_1ka,
    require_coverage,
    youcook2,
)
from mmv.data.windows import MediaItem, Windowing
from mmv.eval.features import (
    cached_windows,
    embed_audio,
    embed_texts,
    embed_videos,
    files_key,
    l2_normalize,
    preprocess_of,
)
from mmv.data.skips import SkipReport
from mmv.eval.io import FeatureCache, markdown_table, model_checksum
from mmv.eval.metrics import retrieval_chance, retrieval_metrics, retrieval_ranks

logger = logging.getLogger(__name__)

DIRECTIONS = ("text->video", "text->audio", "audio->video")
# (query modality, query space, candidate modality, candidate space) per direction.
_SPACES = {
    "text->video": ("text", "vt", "video", "vt"),
    "text->audio": ("text", "vt", "audio", "vt"),
    "audio->video": ("audio", "va", "video", "va"),
}


@dataclass
class RetrievalConfig:
    """Options of the retrieval evaluation.

    Attributes:
        spec: frames, fps, resize and crop of a video window (a :class:`~mmv.preprocess.VideoPreprocess`); None:
            the model's own (``model.preprocess.video``).
        audio: sample rate and spectrogram of the audio windows (an :class:`~mmv.preprocess.AudioPreprocess`);
            None: the model's. Audio windows always span the video windows (``clip_seconds`` is set to the video
            window's length), so a clip's sound and pictures cover the same seconds.
        windows: evenly spaced windows per clip.
        ties: ``pessimistic``, ``optimistic`` or ``average`` (see :mod:`mmv.eval.metrics`).
        tie_atol: cosine similarities closer than this count as tied. Default 0 (exact ties only). Note that on
            CPU the same clip embedded in batches of different composition can differ by ~1e-5 (oneDNN picks
            algorithms per batch shape); ``batch_size=1`` makes embeddings bit-reproducible.
        match: ``instance`` (a caption's own clip is the only correct one) or ``label`` (every clip with the
            caption's label is correct; the demo corpus, whose narrations name the class only).
        batch_size: clips per forward pass.
        num_workers: decoding processes.
    """

    spec: Any = None
    audio: Any = None
    windows: int = 4
    ties: str = "pessimistic"
    tie_atol: float = 0.0
    match: str = "instance"
    batch_size: int = 8
    num_workers: int = 0


def _pooled(windows_features, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings [N, D] L2-normalised, present [N] bool)`` from cached window features."""
    pooled = windows_features.pooled(normalize=True)
    width = pooled.features.shape[1] if pooled.features.ndim == 2 else 0
    out = np.zeros((num_items, width), dtype=np.float32)
    present = np.zeros(num_items, dtype=bool)
    out[pooled.valid] = l2_normalize(pooled.features)
    present[pooled.valid] = True
    return out, present


def clip_settings(model: torch.nn.Module, cfg: RetrievalConfig) -> tuple[Any, Any]:
    """The video and audio window settings: the config's, else the model's; audio windows span the video's."""
    preprocess = preprocess_of(model)
    video = cfg.spec or preprocess.video
    audio = dataclasses.replace(cfg.audio or preprocess.audio, clip_seconds=video.seconds)
    return video, audio


def clip_embeddings(
    model: torch.nn.Module, clips: Sequence[CaptionedClip], cfg: RetrievalConfig, cache: FeatureCache | None,
    modality: str, space: str, progress: bool, tag: str,
) -> tuple[np.ndarray, np.ndarray, SkipReport]:
    """Window-averaged, normalised clip embeddings of one modality/space; ``present`` marks embedded clips."""
    items = [MediaItem(c.path, c.start, c.end) for c in clips]
    windowing = Windowing("even", cfg.windows)
    video, audio = clip_settings(model, cfg)
    options = {"space": space, "windows": cfg.windows, "spec": asdict(video), "files": files_key(items)}
    if modality == "video":
        compute = lambda: embed_videos(model, items, space=space, spec=video, windowing=windowing,  # noqa: E731
                                       batch_size=cfg.batch_size, num_workers=cfg.num_workers, progress=progress,
                                       desc=f"{tag} video ({space})")
    else:
        options.update(audio=asdict(audio))
        compute = lambda: embed_audio(model, items, space=space, spec=audio, windowing=windowing,  # noqa: E731
                                      batch_size=cfg.batch_size, num_workers=cfg.num_workers, progress=progress,
                                      desc=f"{tag} audio ({space})")
    feats = cached_windows(cache, f"{tag}-{modality}-{space}", options, compute)
    embeddings, present = _pooled(feats, len(clips))
    return embeddings, present, feats.skipped


def evaluate_retrieval(
    model: torch.nn.Module,
    clips: Sequence[CaptionedClip],
    tokenizer: Callable[[list[str]], Any] | None,
    *,
    cfg: RetrievalConfig | None = None,
    directions: Sequence[str] = DIRECTIONS,
    labels: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    tag: str = "retrieval",
) -> dict[str, Any]:
    """Retrieval metrics for each direction, each beside its chance level.

    Args:
        model: a frozen MMV model.
        clips: the test clips with their captions.
        tokenizer: maps a list of sentences to ``[N, L]`` word ids (needed for text directions); None: the
            model's own vocabulary, if it has one.
        cfg: options.
        directions: any of ``text->video``, ``text->audio``, ``audio->video``.
        labels: per-clip labels for ``cfg.match == "label"``.
        cache_dir: feature cache folder.
        progress: tqdm bars.
        tag: cache-file prefix.
    """
    cfg = cfg or RetrievalConfig()
    unknown = set(directions) - set(DIRECTIONS)
    if unknown:
        raise ValueError(f"unknown retrieval direction(s) {sorted(unknown)}; choose from {DIRECTIONS}")
    if not clips:
        raise ValueError("no clips to evaluate (are the videos present?)")
    if tokenizer is None and preprocess_of(model).text.vocabulary is not None:
        tokenizer = preprocess_of(model).text.tokenizer().encode_batch
    cache = FeatureCache(cache_dir, model_checksum(model))
    groups = _groups(clips, cfg.match, labels)
    embedded: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    skipped: dict[str, dict[str, Any]] = {}

    def get(modality: str, space: str) -> tuple[np.ndarray, np.ndarray]:
        if (modality, space) not in embedded:
            if modality == "text":
                if tokenizer is None:
                    raise ValueError("text retrieval needs a vocabulary (--vocab)")
                emb = l2_normalize(embed_texts(model, [c.caption for c in clips], tokenizer, space=space))
                embedded[(modality, space)] = (emb, np.ones(len(clips), dtype=bool))
            else:
                emb, present, skips = clip_embeddings(model, clips, cfg, cache, modality, space, progress, tag)
                skipped.setdefault(modality, skips.as_dict())
                embedded[(modality, space)] = (emb, present)
        return embedded[(modality, space)]

    results = {}
    video_present = get("video", "vt" if any(d.startswith("text->v") for d in directions) else "va")[1]
    for direction in directions:
        q_mod, q_space, c_mod, c_space = _SPACES[direction]
        try:
            queries, q_present = get(q_mod, q_space)
            candidates, c_present = get(c_mod, c_space)
        except ValueError as err:  # e.g. a Disjoint model has no audio output in the text space
            logger.warning("%s: not available for this model (%s)", direction, err)
            results[direction] = {"num_queries": 0, "note": f"not available for this model: {err}"}
            continue
        keep = q_present & c_present & video_present
        results[direction] = _score(queries[keep], candidates[keep], groups[keep], cfg.ties, cfg.tie_atol)
        results[direction]["dropped_clips"] = int((~keep).sum())
        results[direction]["clip_index"] = np.flatnonzero(keep).tolist()  # the clip of each query/candidate
    return {"task": "zero-shot retrieval", "num_clips": len(clips), "directions": results,
            "skipped": skipped, "options": {**asdict(cfg), "spec": asdict(clip_settings(model, cfg)[0]),
                                            "audio": asdict(clip_settings(model, cfg)[1])}}


def _groups(clips: Sequence[CaptionedClip], match: str, labels: Sequence[int] | None) -> np.ndarray:
    if match == "instance":
        return np.arange(len(clips))
    if match == "label":
        if labels is None or len(labels) != len(clips):
            raise ValueError("match='label' needs one label per clip")
        return np.asarray(labels)
    raise ValueError(f"match must be 'instance' or 'label', got {match!r}")


def pairwise_dot(queries: np.ndarray, candidates: np.ndarray, chunk: int = 64) -> np.ndarray:
    """``[Nq, Nc]`` float64 dot products, each pair summed in the same order.

    A BLAS matrix product sums different output columns in different orders (blocked kernels), so two identical
    candidates can get scores that differ in the last bit, which turns exact ties into arbitrary wins. Summing
    each product vector along the feature axis makes identical embeddings score identically.
    """
    q, c = queries.astype(np.float64), candidates.astype(np.float64)
    return np.concatenate([(q[i:i + chunk, None, :] * c[None, :, :]).sum(axis=-1)
                           for i in range(0, len(q), chunk)]) if len(q) else np.zeros((0, len(c)))


def _score(queries: np.ndarray, candidates: np.ndarray, groups: np.ndarray, ties: str,
           atol: float) -> dict[str, Any]:
    if len(queries) == 0:
        return {"num_queries": 0, "note": "no clip has every modality this direction needs"}
    similarity = pairwise_dot(queries, candidates)
    positives = groups[:, None] == groups[None, :]
    ranks = retrieval_ranks(similarity, positives, ties=ties, atol=atol)
    out = retrieval_metrics(ranks)
    out["num_candidates"] = int(len(candidates))
    out["chance"] = retrieval_chance(len(candidates), positives.sum(axis=1))
    out["ranks"] = ranks.tolist()
    return out


def evaluate_msrvtt(model: torch.nn.Module, data_dir: str | Path, tokenizer: Any, *, allow_partial: bool = False,
                    **kwargs: Any) -> dict[str, Any]:
    """MSR-VTT 1k-A test split (``MSRVTT_JSFUSION_test.csv``).

    A copy lacking some of the 1000 videos is refused unless ``allow_partial``: with fewer candidates the task is
    easier, and the result is not the benchmark's (it is then marked partial on every row).
    """
    skipped, coverage = SkipReport(), Coverage("msrvtt", Path(data_dir), "")
    clips = msrvtt_1ka(data_dir, skipped, coverage)
    require_coverage(coverage, allow_partial)
    result = evaluate_retrieval(model, clips, tokenizer, tag="msrvtt", **kwargs)
    result.update(dataset="msrvtt-1k-A", data=str(data_dir), missing_videos=skipped.as_dict(),
                  coverage=coverage.as_dict(), partial=not coverage.complete)
    return result


def evaluate_youcook2(model: torch.nn.Module, data_dir: str | Path, tokenizer: Any, *, allow_partial: bool = False,
                      **kwargs: Any) -> dict[str, Any]:
    """YouCook2 validation segments (clips cut by their annotated times); a copy lacking some annotated videos is
    refused unless ``allow_partial`` (see :func:`evaluate_msrvtt`)."""
    skipped, coverage = SkipReport(), Coverage("youcook2", Path(data_dir), "")
    clips = youcook2(data_dir, "validation", skipped, coverage)
    require_coverage(coverage, allow_partial)
    result = evaluate_retrieval(model, clips, tokenizer, tag="youcook2", **kwargs)
    result.update(dataset="youcook2-val", data=str(data_dir), missing_videos=skipped.as_dict(),
                  coverage=coverage.as_dict(), partial=not coverage.complete)
    return result


def retrieval_table(result: dict[str, Any]) -> str:
    """Markdown: one row per direction, chance beneath each; for a benchmark, its coverage on every row and
    beneath."""
    coverage, partial = result.get("coverage"), result.get("partial", False)
    cell = [coverage_cell(coverage, partial)] if coverage is not None else []
    rows = []
    for direction, r in result["directions"].items():
        if not r.get("num_queries"):
            rows.append([direction, "-", "-", "-", "-", "-", 0] + cell)
            continue
        rows.append([direction, r["R@1"], r["R@5"], r["R@10"], r["median_rank"], r["mean_rank"], r["num_queries"]]
                    + cell)
        c = r["chance"]
        rows.append([f"  chance ({r['num_candidates']} candidates)", c["R@1"], c["R@5"], c["R@10"], c["median_rank"],
                     c["mean_rank"], ""] + cell)
    head = f"### {result['task']}: {result.get('dataset', '')}" + (" (PARTIAL copy)" if partial else "") + "\n\n"
    headers = ["direction", "R@1", "R@5", "R@10", "MedR", "MeanR", "queries"] + (["coverage"] if cell else [])
    table = head + markdown_table(headers, rows)
    return table + (f"\n\n{coverage_markdown(coverage)}" if coverage is not None else "")
