"""``mmv embed``: embeddings of users' own files, written in resumable parts with an index.

Output folder::

    OUT/meta.json                 model checksum, modality, space, windowing (a resumed run must match it)
    OUT/part-00000.npy            float32 [rows, D] embeddings       (--format npy)
    OUT/part-00000.index.csv      file, line, start, end, text per row
    OUT/part-00000.parquet        the same, one table with an "embedding" column   (--format parquet)
    OUT/report.json               what the last run did: files embedded, skipped (by reason), rows

A row is one window of a video or audio file (``start``/``end`` in seconds), one image, or one line of a text file
(``line``, 0-based, with its ``text``). Parts are written atomically every ``files_per_part`` files, so an
interrupted run loses at most one part; a new run with the same options skips every file already in an index.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mmv.data.files import IMAGE_EXTENSIONS, MEDIA_EXTENSIONS, TEXT_EXTENSIONS, VIDEO_EXTENSIONS, scan_files
from mmv.atomic import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text
from mmv.data.skips import SkipReport
from mmv.data.windows import MediaItem, Windowing
from mmv.eval.features import embed_audio, embed_images, embed_texts, embed_videos, preprocess_of
from mmv.eval.io import model_checksum

logger = logging.getLogger(__name__)

MODALITIES = ("video", "audio", "text", "image")
INDEX_COLUMNS = ("file", "line", "start", "end", "text")
_EXTENSIONS = {"video": VIDEO_EXTENSIONS, "audio": MEDIA_EXTENSIONS, "image": IMAGE_EXTENSIONS,
               "text": TEXT_EXTENSIONS}


@dataclass
class EmbedOptions:
    """What ``mmv embed`` computes (stored in ``meta.json``).

    Attributes:
        modality: ``video``, ``audio``, ``text`` or ``image``.
        space: ``repr``, ``va`` or ``vt``.
        windowing: windows per video/audio file.
        preprocess: frames, audio features, image crop and text settings (a :class:`~mmv.preprocess.Preprocess`);
            None: the model's own (``model.preprocess``).
        overrides: settings of ``preprocess`` that differ from the model's, ``{key: {"model", "used"}}`` (from
            :meth:`~mmv.preprocess.Preprocess.override`); recorded in ``meta.json``.
        whole_audio: embed each audio file as one window, whatever its length.
        static_frames: feed images to a video network as static clips of this many frames (None: the model must
            be deflated, see ``mmv deflate``).
        vocab: vocabulary file used for text, when not the model's own (recorded for reproducibility).
    """

    modality: str = "video"
    space: str = "repr"
    windowing: Windowing = field(default_factory=Windowing)
    preprocess: Any = None
    overrides: dict[str, Any] = field(default_factory=dict)
    whole_audio: bool = False
    static_frames: int | None = None
    vocab: str | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")


def collect_files(paths: Sequence[str | Path], modality: str, *, recursive: bool = True) -> list[Path]:
    """Files given directly, plus files under given folders (and their sub-folders unless ``recursive`` is False)
    whose extension fits the modality (sorted), as resolved absolute paths: a file is the same file however it was
    spelled (``clips`` or ``../x/clips``), so a resumed run never embeds it twice."""
    return list(dict.fromkeys(path.resolve() for path in scan_files(paths, _EXTENSIONS[modality],
                                                                     recursive=recursive)))


def done_files(out_dir: Path) -> set[str]:
    """Files already present in the index parts of ``out_dir``."""
    done: set[str] = set()
    for path in sorted(out_dir.glob("part-*.index.csv")):
        with open(path, newline="", encoding="utf-8") as handle:
            done.update(row["file"] for row in csv.DictReader(handle))
    for path in sorted(out_dir.glob("part-*.parquet")):
        from mmv.extras import require

        pq = require("pyarrow.parquet", "parquet", "reading Parquet embeddings")

        done.update(pq.read_table(path, columns=["file"]).column("file").to_pylist())
    return done


def read_embeddings(out_dir: str | Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    """All rows of an ``mmv embed`` folder: ``(index rows, [rows, D] embeddings)`` in part order."""
    out_dir = Path(out_dir)
    rows: list[dict[str, Any]] = []
    arrays = []
    for path in sorted(out_dir.glob("part-*.index.csv")):
        with open(path, newline="", encoding="utf-8") as handle:
            part_rows = list(csv.DictReader(handle))
        arrays.append(np.load(path.with_name(path.name.replace(".index.csv", ".npy")), allow_pickle=False))
        rows += [_typed(r) for r in part_rows]
    for path in sorted(out_dir.glob("part-*.parquet")):
        from mmv.extras import require

        pq = require("pyarrow.parquet", "parquet", "reading Parquet embeddings")

        table = pq.read_table(path).to_pydict()
        arrays.append(np.asarray(table.pop("embedding"), dtype=np.float32))
        rows += [_typed(dict(zip(table, values))) for values in zip(*table.values())]
    if not arrays:
        return [], np.zeros((0, 0), dtype=np.float32)
    return rows, np.concatenate(arrays)


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    return {"file": row["file"], "line": int(row["line"]), "start": float(row["start"]), "end": float(row["end"]),
            "text": row["text"] or ""}


def _check_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    path = out_dir / "meta.json"
    if path.exists():
        existing = json.loads(path.read_text(encoding="utf-8"))
        if existing != meta:
            changed = sorted(k for k in set(existing) | set(meta) if existing.get(k) != meta.get(k))
            raise ValueError(f"{out_dir} holds embeddings made with other settings ({', '.join(changed)}); "
                             "use another --out folder")
    else:
        atomic_write_json(path, meta)


def _next_part(out_dir: Path) -> int:
    numbers = [int(p.name.split("-")[1].split(".")[0]) for p in out_dir.glob("part-*")
               if p.name.split("-")[1].split(".")[0].isdigit()]
    return max(numbers, default=-1) + 1


def _write_part(out_dir: Path, number: int, rows: list[dict[str, Any]], embeddings: np.ndarray, fmt: str) -> None:
    stem = out_dir / f"part-{number:05d}"
    if fmt == "parquet":
        from mmv.extras import require

        pa = require("pyarrow", "parquet", "writing Parquet (--format parquet)")
        pq = require("pyarrow.parquet", "parquet", "writing Parquet (--format parquet)")

        table = pa.table({**{c: [r[c] for r in rows] for c in INDEX_COLUMNS},
                          "embedding": list(embeddings.astype(np.float32))})
        with atomic_path(stem.with_suffix(".parquet"), suffix=".parquet") as tmp:
            pq.write_table(table, tmp)
        return
    # The embeddings first, the index last: an index file means its part is complete.
    atomic_save_npy(stem.with_suffix(".npy"), embeddings.astype(np.float32))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=INDEX_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(stem.with_suffix(".index.csv"), buffer.getvalue())


def _embed_chunk(model: torch.nn.Module, files: list[Path], opts: EmbedOptions, tokenizer: Callable | None,
                 batch_size: int, num_workers: int, progress: bool) -> tuple[list[dict], np.ndarray, SkipReport]:
    if opts.modality == "text":
        return _embed_text_files(model, files, opts, tokenizer)
    items = [MediaItem(f) for f in files]
    preprocess = opts.preprocess or preprocess_of(model)
    common = {"space": opts.space, "batch_size": batch_size, "num_workers": num_workers, "progress": progress}
    if opts.modality == "video":
        result = embed_videos(model, items, spec=preprocess.video, windowing=opts.windowing, **common)
    elif opts.modality == "audio":
        result = embed_audio(model, items, spec=preprocess.audio, windowing=opts.windowing,
                             whole=opts.whole_audio, **common)
    else:
        result = embed_images(model, items, spec=preprocess.image, static_frames=opts.static_frames, **common)
    rows, arrays = [], []
    for path, feats, windows in zip(files, result.features, result.windows):
        if feats is None:
            continue
        arrays.append(feats)
        nan = float("nan")
        for start, end in windows:
            rows.append({"file": str(path), "line": -1, "start": start if opts.modality != "image" else nan,
                         "end": end if opts.modality != "image" else nan, "text": ""})
    return rows, (np.concatenate(arrays) if arrays else np.zeros((0, 0), np.float32)), result.skipped


def _embed_text_files(model, files, opts, tokenizer) -> tuple[list[dict], np.ndarray, SkipReport]:
    rows, sentences, skipped = [], [], SkipReport()
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            skipped.add(f"unreadable text ({type(err).__name__})", path)
            continue
        for number, line in enumerate(lines):
            if line.strip():
                rows.append({"file": str(path), "line": number, "start": float("nan"), "end": float("nan"),
                             "text": line.strip()})
                sentences.append(line.strip())
    embeddings = embed_texts(model, sentences, tokenizer, space=opts.space) if sentences else np.zeros((0, 0))
    return rows, embeddings, skipped


def embed_files(
    model: torch.nn.Module,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    opts: EmbedOptions,
    *,
    tokenizer: Callable | None = None,
    fmt: str = "npy",
    files_per_part: int = 64,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
    recursive: bool = True,
) -> dict[str, Any]:
    """Embeds files into ``out_dir`` (see the module docstring), skipping files already embedded there.

    ``paths`` are files and folders; folders are searched with their sub-folders unless ``recursive`` is False.

    Returns:
        The run report (also written to ``report.json``).
    """
    if fmt not in ("npy", "parquet"):
        raise ValueError(f"format must be 'npy' or 'parquet', got {fmt!r}")
    preprocess = opts.preprocess or preprocess_of(model)
    if opts.modality == "text" and tokenizer is None:
        tokenizer = preprocess.text.tokenizer().encode_batch  # before anything is written: no vocabulary, no run
    files = collect_files(paths, opts.modality, recursive=recursive)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {f.name: getattr(opts, f.name) for f in fields(opts) if f.name != "preprocess"}
    meta = {"model": model_checksum(model), "format": fmt,
            **_jsonable({**settings, "windowing": asdict(opts.windowing), "preprocess": preprocess.to_dict()})}
    _check_meta(out_dir, meta)
    already = done_files(out_dir)
    todo = [f for f in files if str(f) not in already]
    logger.info("%d files, %d already embedded, %d to do", len(files), len(files) - len(todo), len(todo))
    skipped, num_rows, part = SkipReport(), 0, _next_part(out_dir)
    for first in range(0, len(todo), files_per_part):
        chunk = todo[first:first + files_per_part]
        rows, embeddings, chunk_skipped = _embed_chunk(model, chunk, opts, tokenizer, batch_size, num_workers,
                                                       progress)
        skipped.merge(chunk_skipped)
        if rows:
            _write_part(out_dir, part, rows, embeddings, fmt)
            part += 1
            num_rows += len(rows)
    report = {"files": len(files), "already_embedded": len(files) - len(todo),
              "embedded": len(todo) - skipped.total, "rows_written": num_rows, "skipped": skipped.as_dict()}
    atomic_write_json(out_dir / "report.json", report)
    return report


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
