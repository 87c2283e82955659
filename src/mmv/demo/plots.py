"""The demo's figures (matplotlib, written as PNG): loss curves, a retrieval example grid, a similarity matrix.

The figure functions take plain arrays, so they can be drawn from any results; :func:`demo_figures` gathers the
arrays from a trained model and the held-out corpus. Embeddings come from the evaluation's feature cache (the same
windows and options as :func:`mmv.demo.evaluate.evaluate_demo`), so drawing costs almost no extra compute.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmv.extras import require

# Imported with this module, not with the first figure: ``mmv demo`` imports this module before it generates and
# trains, so without matplotlib it stops at once instead of after minutes of work.
matplotlib = require("matplotlib", "demo", "the demo")

__all__ = ["demo_figures", "plot_loss_curves", "plot_retrieval_grid", "plot_similarity_matrix"]

log = logging.getLogger(__name__)

# Loss term key in metrics.jsonl -> legend label.
LOSS_TERMS = {"loss": "total (weighted sum)", "nce_va": "NCE(video, audio)", "milnce_vt": "MIL-NCE(video, text)",
              "milnce_at": "MIL-NCE(audio, text)"}
CORRECT, WRONG = "#2ca02c", "#d62728"


def _pyplot():
    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Saves atomically (temporary file, then rename) and closes the figure."""
    from mmv.atomic import atomic_path

    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return path


def plot_loss_curves(rows: Sequence[dict[str, Any]], path: Path, title: str = "training loss") -> Path:
    """One panel per loss term (total, NCE, MIL-NCE) against the step, from ``metrics.jsonl`` rows."""
    plt = _pyplot()
    terms = [key for key in LOSS_TERMS if any(row.get(key) is not None for row in rows)]
    if not terms:
        raise ValueError("no loss values in the training metrics (was the run logged?)")
    fig, axes = plt.subplots(1, len(terms), figsize=(3.6 * len(terms), 3.0), squeeze=False)
    for ax, key in zip(axes[0], terms):
        points = [(row["step"], row[key]) for row in rows if row.get(key) is not None]
        steps, values = zip(*points)
        ax.plot(steps, values, color="#1f77b4", lw=1.5)
        ax.set_title(LOSS_TERMS[key], fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("loss")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_retrieval_grid(queries: Sequence[str], query_labels: Sequence[int], retrieved: Sequence[Sequence[int]],
                        frames: Sequence[np.ndarray], labels: Sequence[int], class_names: Sequence[str],
                        path: Path) -> Path:
    """For each text query, its top retrieved videos (one frame each), correct ones framed green, wrong red.

    Args:
        queries: the query sentences.
        query_labels: the class each query is about.
        retrieved: per query, the candidate indices in rank order (the first few are drawn).
        frames: one ``[H, W, 3]`` uint8 frame per candidate.
        labels: the class of each candidate.
        class_names: class index -> name.
        path: the PNG to write.
    """
    plt = _pyplot()
    top = max(len(r) for r in retrieved)
    fig, axes = plt.subplots(len(queries), top + 1, figsize=(1.45 * top + 2.4, 1.55 * len(queries)),
                             squeeze=False, gridspec_kw={"width_ratios": [1.6] + [1] * top})
    for row, (text, qlabel, ranking) in enumerate(zip(queries, query_labels, retrieved)):
        text_ax = axes[row][0]
        text_ax.axis("off")
        text_ax.text(0.0, 0.5, f"\u201c{_wrap(text, 26)}\u201d\n(about: {class_names[qlabel]})", va="center",
                     ha="left", fontsize=8, transform=text_ax.transAxes)
        for col in range(top):
            ax = axes[row][col + 1]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(ranking):
                ax.axis("off")
                continue
            index = ranking[col]
            ok = labels[index] == qlabel
            ax.imshow(frames[index])
            for spine in ax.spines.values():
                spine.set_edgecolor(CORRECT if ok else WRONG)
                spine.set_linewidth(3)
            ax.set_title(f"#{col + 1} {'✓' if ok else '✗'} {class_names[labels[index]]}", fontsize=7,
                         color=CORRECT if ok else WRONG)
    fig.suptitle("zero-shot text→video retrieval on held-out videos (green: the digit the narration names)",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:4])


def plot_similarity_matrix(similarity: np.ndarray, row_labels: Sequence[int], col_labels: Sequence[int],
                           class_names: Sequence[str], path: Path,
                           title: str = "text × video similarity in S_vat (held-out clips, ordered by class)") -> Path:
    """Heat map of ``similarity [rows, cols]`` with rows and columns sorted by class and class boundaries drawn."""
    plt = _pyplot()
    row_order, col_order = np.argsort(row_labels, kind="stable"), np.argsort(col_labels, kind="stable")
    matrix = similarity[row_order][:, col_order]
    rows, cols = np.asarray(row_labels)[row_order], np.asarray(col_labels)[col_order]
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    for labels, draw, ticks in ((rows, ax.axhline, ax.set_yticks), (cols, ax.axvline, ax.set_xticks)):
        classes = np.unique(labels)
        starts = [int(np.searchsorted(labels, c)) for c in classes]
        ends = starts[1:] + [len(labels)]
        for s in starts[1:]:
            draw(s - 0.5, color="white", lw=0.6)
        ticks([(s + e - 1) / 2 for s, e in zip(starts, ends)], [class_names[c] for c in classes], fontsize=7)
    ax.tick_params(axis="x", labelrotation=60)
    ax.set_ylabel("narration (query)")
    ax.set_xlabel("video")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------------------------
# From a trained model
# ----------------------------------------------------------------------------------------------------------------

def demo_figures(model: Any, cfg: Any, data_dir: Path, vocab: Path, cache_dir: Path,
                 metrics: Sequence[dict[str, Any]], out_dir: Path, progress: bool = True,
                 num_queries: int = 4, top_k: int = 5) -> dict[str, str]:
    """Draws the three figures of the demo report into ``out_dir``; returns ``{figure: file name}``."""
    figures = {"report_dir": str(out_dir)}
    if metrics:
        plot_loss_curves(metrics, out_dir / "loss_curves.png", title=f"training loss ({model.cfg.graph.upper()})")
        figures["loss_curves"] = "loss_curves.png"
    if "text" not in model.cfg.modalities:
        return figures
    text_emb, text_labels, captions, video_emb, video_labels, test, class_names = _retrieval_embeddings(
        model, cfg, data_dir, vocab, cache_dir, progress)
    similarity = text_emb @ video_emb.T
    plot_similarity_matrix(similarity, text_labels, video_labels, class_names, out_dir / "similarity_matrix.png")
    figures["similarity_matrix"] = "similarity_matrix.png"
    chosen = _pick_queries(text_labels, num_queries)
    rankings = [np.argsort(-similarity[q], kind="stable")[:top_k].tolist() for q in chosen]
    needed = sorted({i for ranking in rankings for i in ranking})
    frames = {i: _middle_frame(test[i]["path"]) for i in needed}
    blank = np.zeros((cfg.crop, cfg.crop, 3), dtype=np.uint8)
    plot_retrieval_grid([captions[q] for q in chosen], [text_labels[q] for q in chosen], rankings,
                        [frames.get(i, blank) for i in range(len(test))], video_labels, class_names,
                        out_dir / "retrieval_grid.png")
    figures["retrieval_grid"] = "retrieval_grid.png"
    return figures


def _pick_queries(labels: Sequence[int], count: int) -> list[int]:
    """The first on-topic query of each of ``count`` different classes, in corpus order (no cherry-picking)."""
    chosen, seen = [], set()
    for index, label in enumerate(labels):
        if label not in seen:
            chosen.append(index)
            seen.add(label)
        if len(chosen) == count:
            break
    return chosen


def _retrieval_embeddings(model: Any, cfg: Any, data_dir: Path, vocab: Path, cache_dir: Path, progress: bool):
    """(text emb, text labels, captions, video emb, video labels, test records, class names) of held-out clips.

    Text rows are the on-topic narrations (the retrieval queries of the evaluation); video rows are every held-out
    video, embedded with the evaluation's retrieval settings so that its cached features are reused.
    """
    from mmv.demo.corpus import corpus_records, read_corpus
    from mmv.eval.datasets import CaptionedClip
    from mmv.demo.evaluate import caption_text
    from mmv.eval.features import embed_texts, l2_normalize
    from mmv.eval.io import FeatureCache, load_tokenizer, model_checksum
    from mmv.eval.retrieval import RetrievalConfig, clip_embeddings

    eval_cfg = cfg.eval_config()
    test = corpus_records(data_dir, "test")
    class_names = read_corpus(data_dir)["class_names"]
    clips = [CaptionedClip(r["path"], caption_text(r["caption_path"]), r["video"]) for r in test]
    # The evaluation's retrieval settings (the model's own clips), so its cached video features are reused.
    rcfg = RetrievalConfig(windows=eval_cfg.test_windows, match="label", batch_size=eval_cfg.batch_size)
    cache = FeatureCache(cache_dir, model_checksum(model))
    video_emb, present, _ = clip_embeddings(model, clips, rcfg, cache, "video", "vt", progress, "demo-retrieval")
    queries = [i for i, r in enumerate(test) if r.get("text_kind") == "on_topic" and clips[i].caption]
    tokenizer = load_tokenizer(vocab, max_words=model.preprocess.text.max_words)
    text_emb = l2_normalize(embed_texts(model, [clips[i].caption for i in queries], tokenizer, space="vt"))
    # Videos that could not be decoded have no embedding: give them the lowest similarity rather than drop them.
    video_emb = np.where(present[:, None], video_emb, 0.0)
    return (text_emb, [test[i]["label"] for i in queries], [clips[i].caption for i in queries], video_emb,
            [r["label"] for r in test], test, class_names)


def _middle_frame(path: Path) -> np.ndarray:
    from mmv.data.media import MediaError, decode_clip, probe

    try:
        return decode_clip(path, probe(path).duration / 2, 1, 1.0, with_audio=False).frames[0]
    except MediaError as err:
        log.warning("no frame for %s (%s)", path, err.reason)
        return np.zeros((8, 8, 3), dtype=np.uint8)
