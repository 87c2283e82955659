"""Readers for the official layouts of the evaluation datasets.

Each reader returns plain lists of files with labels (or captions) and never decodes media; missing files are
counted in a :class:`~mmv.data.skips.SkipReport` instead of failing the run, because public copies of these datasets
are often incomplete (YouTube-sourced videos disappear).

Layouts:

* UCF101: ``ucfTrainTestlist/{classInd,trainlist0K,testlist0K}.txt`` and ``UCF-101/<Class>/v_*.avi``.
* HMDB51: ``testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt`` (1 train, 2 test, 0 unused) and
  ``<class>/<name>.avi`` (under the root, or under ``--video-root``).
* Folder per class: ``<root>/{train,test}/<class>/*`` or ``<root>/<class>/*`` (split here, stratified, seeded).
* ESC-50: ``audio/*.wav`` and ``meta/esc50.csv`` (filename, fold, target, category, ...).
* MSR-VTT 1k-A: ``MSRVTT_JSFUSION_test.csv`` (key, vid_key, video_id, sentence) and ``videos/all/<video_id>.mp4``.
* YouCook2: ``youcookii_annotations_trainval.json`` and ``raw_videos/<subset>/<recipe_type>/<youtube_id>.*``.
* Images: ``<root>/{train,val}/<class>/*`` (ImageNet style).
* PASCAL VOC 2007: ``VOCdevkit/VOC2007/ImageSets/Main/<class>_{trainval,test}.txt`` and ``JPEGImages/<id>.jpg``.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmv.data.files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, scan_files
from mmv.data.skips import SkipReport

logger = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


@dataclass(frozen=True)
class LabeledFile:
    """One media file and its class index."""

    path: Path
    label: int


@dataclass
class ClassificationSplit:
    """One train/test split of a classification dataset."""

    name: str
    classes: list[str]
    train: list[LabeledFile]
    test: list[LabeledFile]
    skipped: SkipReport = field(default_factory=SkipReport)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def _keep_existing(files: list[LabeledFile], skipped: SkipReport) -> list[LabeledFile]:
    present = []
    for item in files:
        if item.path.is_file():
            present.append(item)
        else:
            skipped.add("listed in the split file but missing", item.path)
    return present


# --------------------------------------------------------------------------------------------------------- UCF101
def ucf101_splits(root: str | Path, splits: tuple[int, ...] = (1, 2, 3)) -> list[ClassificationSplit]:
    """Reads the official UCF101 splits (``classInd.txt`` numbers classes from 1; we use 0-based labels).

    Class folders are matched case-insensitively because the official lists spell some classes differently from
    the file names inside them (``HandstandPushups/v_HandStandPushups_*``).
    """
    root = Path(root)
    lists = root / "ucfTrainTestlist"
    videos = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    class_lines = _read_lines(lists / "classInd.txt")
    classes = [line.split()[1] for line in class_lines]
    index = {name.lower(): i for i, name in enumerate(classes)}
    out = []
    for k in splits:
        skipped = SkipReport()
        train = [_ucf_entry(line, videos, index, lists / f"trainlist0{k}.txt") for line in
                 _read_lines(lists / f"trainlist0{k}.txt")]
        test = [_ucf_entry(line, videos, index, lists / f"testlist0{k}.txt") for line in
                _read_lines(lists / f"testlist0{k}.txt")]
        out.append(ClassificationSplit(f"split{k}", classes, _keep_existing(train, skipped),
                                       _keep_existing(test, skipped), skipped))
    return out


def _ucf_entry(line: str, videos: Path, index: dict[str, int], source: Path) -> LabeledFile:
    relative = line.split()[0]
    class_name = relative.split("/")[0]
    if class_name.lower() not in index:
        raise ValueError(f"{source}: class {class_name!r} of {relative!r} is not in classInd.txt")
    return LabeledFile(videos / relative, index[class_name.lower()])


# --------------------------------------------------------------------------------------------------------- HMDB51
def hmdb51_splits(
    root: str | Path, splits: tuple[int, ...] = (1, 2, 3), video_root: str | Path | None = None
) -> list[ClassificationSplit]:
    """Reads the official HMDB51 70/30 splits; classes are sorted by name (the usual 0..50 numbering)."""
    root = Path(root)
    split_dir = root / "testTrainMulti_7030_splits"
    video_root = Path(video_root) if video_root is not None else root
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: HMDB51 split folder not found")
    classes = sorted({p.name.rsplit("_test_split", 1)[0] for p in split_dir.glob("*_test_split*.txt")})
    if not classes:
        raise FileNotFoundError(f"{split_dir}: no <class>_test_split<k>.txt files")
    out = []
    for k in splits:
        train, test, skipped = [], [], SkipReport()
        for label, name in enumerate(classes):
            split_file = split_dir / f"{name}_test_split{k}.txt"
            for line in _read_lines(split_file):
                parts = line.split()
                if len(parts) != 2 or parts[1] not in {"0", "1", "2"}:
                    raise ValueError(f"{split_file}: malformed line {line!r} (want '<video> <0|1|2>')")
                item = LabeledFile(video_root / name / parts[0], label)
                {"1": train, "2": test}.get(parts[1], []).append(item)
        out.append(ClassificationSplit(f"split{k}", classes, _keep_existing(train, skipped),
                                       _keep_existing(test, skipped), skipped))
    return out


# ---------------------------------------------------------------------------------------------- folder per class
def _class_files(folder: Path, extensions: tuple[str, ...]) -> dict[str, list[Path]]:
    return {d.name: scan_files(d, extensions) for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def folder_split(
    root: str | Path,
    *,
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
    test_fraction: float = 0.3,
    seed: int = 0,
    train_dir: str = "train",
    test_dirs: tuple[str, ...] = ("test", "val"),
) -> ClassificationSplit:
    """A folder-per-class dataset: ``root/train/<class>/`` + ``root/{test|val}/<class>/``, or ``root/<class>/``.

    Without train/test folders, each class's files are split with a seeded permutation, ``test_fraction`` of them
    (at least one) to test, so every class appears on both sides.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    test_dir = next((root / d for d in test_dirs if (root / d).is_dir()), None)
    if (root / train_dir).is_dir() and test_dir is not None:
        train_files, test_files = _class_files(root / train_dir, extensions), _class_files(test_dir, extensions)
        classes = sorted(set(train_files) | set(test_files))
        index = {c: i for i, c in enumerate(classes)}
        train = [LabeledFile(p, index[c]) for c, ps in train_files.items() for p in ps]
        test = [LabeledFile(p, index[c]) for c, ps in test_files.items() for p in ps]
        return ClassificationSplit("train/" + test_dir.name, classes, train, test)
    files = _class_files(root, extensions)
    classes = [c for c, ps in files.items() if ps]
    if len(classes) < 2:
        raise ValueError(f"{root}: need at least two class folders with {'/'.join(extensions)} files")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label, name in enumerate(classes):
        paths = files[name]
        order = rng.permutation(len(paths))
        num_test = max(1, int(round(test_fraction * len(paths)))) if len(paths) > 1 else 0
        test += [LabeledFile(paths[i], label) for i in order[:num_test]]
        train += [LabeledFile(paths[i], label) for i in order[num_test:]]
    return ClassificationSplit(f"seed{seed}", classes, train, test)


def detect_video_layout(root: str | Path) -> str:
    """``"ucf101"``, ``"hmdb51"`` or ``"folder"`` from what the folder contains."""
    root = Path(root)
    if (root / "ucfTrainTestlist").is_dir():
        return "ucf101"
    if (root / "testTrainMulti_7030_splits").is_dir():
        return "hmdb51"
    return "folder"


# ---------------------------------------------------------------------------------------------------------- ESC-50
@dataclass
class AudioFolds:
    """ESC-50: every clip with its label and its cross-validation fold."""

    classes: list[str]
    files: list[LabeledFile]
    folds: np.ndarray
    skipped: SkipReport = field(default_factory=SkipReport)


def esc50(root: str | Path) -> AudioFolds:
    """Reads ``meta/esc50.csv``; class names come from its ``category`` column, ordered by ``target``."""
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: ESC-50 metadata not found")
    with open(meta, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    needed = {"filename", "fold", "target", "category"}
    if not rows or not needed <= set(rows[0]):
        raise ValueError(f"{meta}: expected columns {sorted(needed)}, got {sorted(rows[0]) if rows else 'nothing'}")
    names = {int(r["target"]): r["category"] for r in rows}
    classes = [names.get(i, str(i)) for i in range(max(names) + 1)]
    files, folds, skipped = [], [], SkipReport()
    for row in rows:
        path = root / "audio" / row["filename"]
        if not path.is_file():
            skipped.add("listed in esc50.csv but missing", path)
            continue
        files.append(LabeledFile(path, int(row["target"])))
        folds.append(int(row["fold"]))
    return AudioFolds(classes, files, np.asarray(folds, dtype=np.int64), skipped)


# ------------------------------------------------------------------------------------------------------- retrieval
@dataclass(frozen=True)
class CaptionedClip:
    """A clip (a whole file, or a time segment of it) and its caption."""

    path: Path
    caption: str
    key: str
    start: float | None = None
    end: float | None = None


def msrvtt_1ka(root: str | Path, skipped: SkipReport | None = None) -> list[CaptionedClip]:
    """The 1k-A test split (``MSRVTT_JSFUSION_test.csv``): 1000 videos, one sentence each."""
    root = Path(root)
    csv_path = root / "MSRVTT_JSFUSION_test.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: MSR-VTT 1k-A test list not found")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"video_id", "sentence"} <= set(rows[0]):
        raise ValueError(f"{csv_path}: expected columns key,vid_key,video_id,sentence")
    video_dir = root / "videos" / "all"
    clips = []
    for row in rows:
        path = video_dir / f"{row['video_id']}.mp4"
        if not path.is_file():
            if skipped is not None:
                skipped.add("listed in MSRVTT_JSFUSION_test.csv but missing", path)
            continue
        clips.append(CaptionedClip(path, row["sentence"], row.get("key") or row["video_id"]))
    return clips


def youcook2(root: str | Path, subset: str = "validation", skipped: SkipReport | None = None) -> list[CaptionedClip]:
    """Every annotated segment of ``subset`` whose video is present, with its sentence and times."""
    root = Path(root)
    ann_path = root / "youcookii_annotations_trainval.json"
    if not ann_path.is_file():
        raise FileNotFoundError(f"{ann_path}: YouCook2 annotations not found")
    database = json.loads(ann_path.read_text(encoding="utf-8")).get("database")
    if not isinstance(database, dict):
        raise ValueError(f"{ann_path}: no 'database' object")
    clips = []
    for video_id, entry in sorted(database.items()):
        if entry.get("subset") != subset:
            continue
        folder = root / "raw_videos" / subset / str(entry.get("recipe_type", ""))
        candidates = sorted(p for p in folder.glob(f"{video_id}.*") if p.suffix.lower() in VIDEO_EXTENSIONS)
        if not candidates:
            if skipped is not None:
                skipped.add("annotated but video missing", folder / f"{video_id}.*")
            continue
        for ann in entry.get("annotations", []):
            start, end = (float(t) for t in ann["segment"])
            clips.append(CaptionedClip(candidates[0], ann["sentence"], f"{video_id}_{ann['id']}", start, end))
    return clips


# ---------------------------------------------------------------------------------------------------------- images
def image_folder_split(root: str | Path) -> ClassificationSplit:
    """ImageNet-style ``root/train/<class>/*`` and ``root/val/<class>/*`` (``test/`` accepted for ``val/``)."""
    root = Path(root)
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"{root}: expected train/<class>/ and val/<class>/ folders")
    return folder_split(root, extensions=IMAGE_EXTENSIONS, test_dirs=("val", "test"))


@dataclass
class VOCSplit:
    """PASCAL VOC classification targets: ``targets[i, c]`` is 1 (present), -1 (absent) or 0 (difficult only)."""

    image_ids: list[str]
    paths: list[Path]
    targets: np.ndarray


def voc2007(root: str | Path, image_set: str) -> VOCSplit:
    """Reads ``<class>_<image_set>.txt`` for the 20 classes (``image_set``: ``trainval`` or ``test``)."""
    root = Path(root)
    base = root / "VOCdevkit" / "VOC2007" if (root / "VOCdevkit").is_dir() else root
    main = base / "ImageSets" / "Main"
    columns: dict[str, dict[str, int]] = {}
    for name in VOC_CLASSES:
        split_file = main / f"{name}_{image_set}.txt"
        entries = {}
        for line in _read_lines(split_file):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in {"1", "-1", "0"}:
                raise ValueError(f"{split_file}: malformed line {line!r} (want '<image id> <1|-1|0>')")
            entries[parts[0]] = int(parts[1])
        columns[name] = entries
    image_ids = sorted(columns[VOC_CLASSES[0]])
    for name in VOC_CLASSES[1:]:
        if set(columns[name]) != set(image_ids):
            raise ValueError(f"{main}: {name}_{image_set}.txt lists different images than {VOC_CLASSES[0]}")
    targets = np.array([[columns[c][i] for c in VOC_CLASSES] for i in image_ids], dtype=np.int64)
    paths = [base / "JPEGImages" / f"{i}.jpg" for i in image_ids]
    return VOCSplit(image_ids, paths, targets)
