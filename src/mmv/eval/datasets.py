"""Readers for the official layouts of the evaluation datasets.

Each reader returns plain lists of files with labels (or captions) and never decodes media. Public copies of these
datasets are often incomplete (YouTube-sourced videos disappear), so each reader also returns its
:class:`Coverage`: which of the files its metadata lists are on disk, per split side (or fold) and per class. A
missing file is counted in a :class:`~mmv.data.skips.SkipReport` instead of failing the run; a copy where none of the
listed files is found is an error naming the folder searched and the file names expected there. Whether a result
below full coverage may be reported is the evaluation's decision (:func:`require_coverage`).

Layouts:

* UCF101: ``ucfTrainTestlist/{classInd,trainlist0K,testlist0K}.txt`` and ``UCF-101/<Class>/v_*.avi``.
* HMDB51: ``testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt`` (1 train, 2 test, 0 unused) and
  ``<class>/<name>.avi`` (under the root, or under ``--video-root``).
* Folder per class: ``<root>/{train,test}/<class>/*`` or ``<root>/<class>/*`` (split here, stratified, seeded).
* Manifests: ``<root>/{train,test}/manifest.jsonl`` with a ``label`` per video (the demo corpus).
* Kinetics-600 and AudioSet: their readers live with their protocols (:mod:`mmv.eval.kinetics`,
  :mod:`mmv.eval.audioset`; clips found by :mod:`mmv.eval.youtube_clips`).
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
from typing import Any, Iterable, Sequence

import numpy as np

from mmv.data.files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, scan_files
from mmv.data.skips import SkipReport

logger = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class PartialDatasetError(ValueError):
    """A benchmark copy that lacks some of the files its metadata lists, evaluated without ``allow_partial``."""


@dataclass
class Coverage:
    """Which of the files a benchmark's metadata lists are on disk.

    Attributes:
        dataset: The benchmark (``ucf101``, ``esc50``, ...).
        searched: The folder the files were looked for in.
        listed_in: The metadata that lists them (for messages).
        entries: One per listed file and part: ``(path, part, classes, found)``; ``part`` is a split side or a fold
            (``train``, ``test``, ``fold3``), ``classes`` the classes the file belongs to (several for VOC).
    """

    dataset: str
    searched: Path
    listed_in: str
    entries: list[tuple[str, str, tuple[str, ...], bool]] = field(default_factory=list)

    def check(self, path: Path, part: str, classes: str | Sequence[str] = ()) -> bool:
        """Records one listed file; returns whether it is on disk."""
        found = Path(path).is_file()
        classes = (classes,) if isinstance(classes, str) else tuple(classes)
        self.entries.append((str(path), part, classes, found))
        return found

    @classmethod
    def union(cls, coverages: Iterable["Coverage"]) -> "Coverage":
        """One coverage over several (e.g. every split of UCF101: a file counts once however often it is listed)."""
        coverages = list(coverages)
        listed_in = ", ".join(dict.fromkeys(coverage.listed_in for coverage in coverages))
        merged = cls(coverages[0].dataset, coverages[0].searched, listed_in)
        for coverage in coverages:
            merged.entries += coverage.entries
        return merged

    def _files(self, keep=lambda entry: True) -> dict[str, bool]:
        return {path: found for path, part, classes, found in self.entries if keep((path, part, classes, found))}

    @property
    def listed(self) -> int:
        return len(self._files())

    @property
    def found(self) -> int:
        return sum(self._files().values())

    @property
    def complete(self) -> bool:
        return self.found == self.listed

    @property
    def missing(self) -> list[str]:
        return sorted(path for path, found in self._files().items() if not found)

    def by_part(self) -> dict[str, dict[str, int]]:
        """``{part: {"found", "listed"}}`` in the order parts were met."""
        return self._count_groups(lambda entry: (entry[1],))

    def by_class(self) -> dict[str, dict[str, int]]:
        """``{class: {"found", "listed"}}`` in the order classes were met."""
        return self._count_groups(lambda entry: entry[2])

    def _count_groups(self, groups_of) -> dict[str, dict[str, int]]:
        """Distinct files per group, in one pass over the entries: AudioSet lists about 2M files in 527 classes,
        too many for a pass per class."""
        files: dict[str, tuple[bool, tuple[str, ...]]] = {}  # path -> (found, its groups)
        for entry in self.entries:
            _, before = files.get(entry[0], (False, ()))
            files[entry[0]] = (entry[3], before + tuple(g for g in groups_of(entry) if g not in before))
        counts = {group: {"found": 0, "listed": 0} for entry in self.entries for group in groups_of(entry)}
        for found, groups in files.values():
            for group in groups:
                counts[group]["listed"] += 1
                counts[group]["found"] += int(found)
        return counts

    def as_dict(self, missing_files: bool = True) -> dict[str, Any]:
        """For the JSON report: counts overall, per part and per class, and (``missing_files``) every missing path."""
        classes = self.by_class()
        out = {"found": self.found, "listed": self.listed, "complete": self.complete,
               "percent": 100.0 * self.found / max(self.listed, 1), "searched": str(self.searched),
               "listed_in": self.listed_in, "parts": self.by_part(), "classes": classes,
               "classes_present": sum(c["found"] > 0 for c in classes.values()), "num_classes": len(classes)}
        if missing_files:
            out["missing"] = self.missing
        return out

    def summary(self, max_files: int = 3) -> str:
        """One line: how many listed files are missing, the first few, where the full list is."""
        missing = self.missing
        first = ", ".join(_relative(path, self.searched) for path in missing[:max_files])
        return (f"{self.dataset}: {len(missing)} of the {self.listed} files listed in {self.listed_in} are missing "
                f"under {self.searched} ({self.found} found, {100.0 * self.found / max(self.listed, 1):.2f} %; "
                f"e.g. {first}; every one in the JSON report under coverage.missing)")

    def nothing_found(self) -> FileNotFoundError:
        """The error of a copy where none of the listed files is on disk."""
        expected = ", ".join(_relative(path, self.searched) for path in self.missing[:3])
        return FileNotFoundError(
            f"{self.dataset}: none of the {self.listed} files listed in {self.listed_in} was found: searched "
            f"{self.searched} for {expected}, ... (point --data at the folder holding them)")


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def require_coverage(coverage: Coverage, allow_partial: bool) -> None:
    """Lets a benchmark number be computed only on a complete copy, unless ``allow_partial``.

    Raises:
        FileNotFoundError: None of the listed files is on disk.
        PartialDatasetError: Some are missing and ``allow_partial`` is False (the message gives the count, the
            first few and the way out).
    """
    if coverage.found == 0:
        raise coverage.nothing_found()
    if coverage.complete:
        return
    if not allow_partial:
        raise PartialDatasetError(
            f"{coverage.summary()}. A {coverage.dataset} number needs every listed file; --allow-partial "
            f"(allow_partial=True) evaluates the {coverage.found} found and marks every result partial")
    logger.warning("%s; results are marked partial", coverage.summary())


def coverage_cell(counts: dict[str, Any], partial: bool) -> str:
    """A table cell: ``found/listed``, and ``partial`` on every row of a partial result."""
    return f"{counts['found']}/{counts['listed']}" + (" partial" if partial else "")


def coverage_cells(counts: dict[str, Any] | None, coverage: dict[str, Any] | None, partial: bool) -> list[str]:
    """The coverage column of a result table's row: none without a benchmark's coverage, an empty cell for a row
    without counts."""
    if coverage is None:
        return []
    return [coverage_cell(counts, partial) if counts is not None else ""]


def coverage_markdown(coverage: dict[str, Any]) -> str:
    """The lines under a result table: the coverage overall and by class (the classes below full coverage)."""
    head = (f"Coverage: {coverage['found']} of the {coverage['listed']} files listed in {coverage['listed_in']} "
            f"({coverage['percent']:.2f} %), {coverage['classes_present']} of {coverage['num_classes']} classes "
            f"present.")
    if coverage["complete"]:
        return head + " Every class complete."
    short = [f"{name} {counts['found']}/{counts['listed']}" for name, counts in coverage["classes"].items()
             if counts["found"] < counts["listed"]]
    return (f"**PARTIAL**: not a benchmark number. {head}\n\nClasses below full coverage (found/listed): "
            + (", ".join(short) if short else "none (the missing files have no class)") + ".")


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
    coverage: Coverage | None = None  # None: no metadata lists the files (a folder per class)


def _read_lines(path: Path, layout: str = "") -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found" + (f" (expected layout: {layout})" if layout else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def _keep_existing(files: list[LabeledFile], skipped: SkipReport, coverage: Coverage, part: str,
                   classes: Sequence[str]) -> list[LabeledFile]:
    present = []
    for item in files:
        if coverage.check(item.path, part, classes[item.label]):
            present.append(item)
        else:
            skipped.add("listed in the split file but missing", item.path)
    return present


def _require_something(splits: list[ClassificationSplit]) -> list[ClassificationSplit]:
    """The splits, unless none of their listed files is on disk (then the error names where we looked)."""
    coverage = Coverage.union(split.coverage for split in splits)
    if coverage.listed and coverage.found == 0:
        raise coverage.nothing_found()
    return splits


# --------------------------------------------------------------------------------------------------------- UCF101
def ucf101_splits(root: str | Path, splits: tuple[int, ...] = (1, 2, 3)) -> list[ClassificationSplit]:
    """Reads the official UCF101 splits (``classInd.txt`` numbers classes from 1; we use 0-based labels).

    Class folders are matched case-insensitively because the official lists spell some classes differently from
    the file names inside them (``HandstandPushups/v_HandStandPushups_*``).
    """
    root = Path(root)
    lists = root / "ucfTrainTestlist"
    videos = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    layout = f"ucfTrainTestlist/{{classInd,trainlist0K,testlist0K}}.txt and UCF-101/<Class>/v_*.avi under {root}"
    class_lines = _read_lines(lists / "classInd.txt", layout)
    classes = [line.split()[1] for line in class_lines]
    index = {name.lower(): i for i, name in enumerate(classes)}
    out = []
    for k in splits:
        skipped = SkipReport()
        coverage = Coverage("ucf101", videos, f"{lists.name}/{{train,test}}list0{k}.txt")
        train = [_ucf_entry(line, videos, index, lists / f"trainlist0{k}.txt") for line in
                 _read_lines(lists / f"trainlist0{k}.txt", layout)]
        test = [_ucf_entry(line, videos, index, lists / f"testlist0{k}.txt") for line in
                _read_lines(lists / f"testlist0{k}.txt", layout)]
        out.append(ClassificationSplit(f"split{k}", classes, _keep_existing(train, skipped, coverage, "train", classes),
                                       _keep_existing(test, skipped, coverage, "test", classes), skipped, coverage))
    return _require_something(out)


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
        coverage = Coverage("hmdb51", video_root, f"{split_dir.name}/<class>_test_split{k}.txt")
        for label, name in enumerate(classes):
            split_file = split_dir / f"{name}_test_split{k}.txt"
            for line in _read_lines(split_file):
                parts = line.split()
                if len(parts) != 2 or parts[1] not in {"0", "1", "2"}:
                    raise ValueError(f"{split_file}: malformed line {line!r} (want '<video> <0|1|2>')")
                item = LabeledFile(video_root / name / parts[0], label)
                {"1": train, "2": test}.get(parts[1], []).append(item)
        out.append(ClassificationSplit(f"split{k}", classes, _keep_existing(train, skipped, coverage, "train", classes),
                                       _keep_existing(test, skipped, coverage, "test", classes), skipped, coverage))
    return _require_something(out)


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


def manifest_split(root: str | Path, label_field: str = "label") -> ClassificationSplit:
    """``<root>/{train,test}/manifest.jsonl`` (a manifest per side, as ``mmv demo-data`` writes): integer labels
    from ``label_field``, classes named by their index. Rows without a label are an error."""
    from mmv.data.datasets import read_manifest

    root = Path(root)
    sides = {}
    for side in ("train", "test"):
        items = read_manifest(root / side / "manifest.jsonl", label_field=label_field)
        unlabelled = [item.path for item in items if item.label < 0]
        if unlabelled:
            raise ValueError(f"{root / side / 'manifest.jsonl'}: {len(unlabelled)} rows without a {label_field!r} "
                             f"(e.g. {unlabelled[0]})")
        sides[side] = [LabeledFile(Path(item.path), item.label) for item in items]
    num_classes = 1 + max(f.label for files in sides.values() for f in files)
    return ClassificationSplit("manifest", [str(i) for i in range(num_classes)], sides["train"], sides["test"])


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
    coverage: Coverage | None = None


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
    coverage = Coverage("esc50", root / "audio", "meta/esc50.csv")
    for row in rows:
        path = root / "audio" / row["filename"]
        if not coverage.check(path, f"fold{row['fold']}", row["category"]):
            skipped.add("listed in esc50.csv but missing", path)
            continue
        files.append(LabeledFile(path, int(row["target"])))
        folds.append(int(row["fold"]))
    if not files:
        raise coverage.nothing_found()
    return AudioFolds(classes, files, np.asarray(folds, dtype=np.int64), skipped, coverage)


# ------------------------------------------------------------------------------------------------------- retrieval
@dataclass(frozen=True)
class CaptionedClip:
    """A clip (a whole file, or a time segment of it) and its caption."""

    path: Path
    caption: str
    key: str
    start: float | None = None
    end: float | None = None


def msrvtt_1ka(root: str | Path, skipped: SkipReport | None = None,
               coverage: Coverage | None = None) -> list[CaptionedClip]:
    """The 1k-A test split (``MSRVTT_JSFUSION_test.csv``): 1000 videos, one sentence each.

    Missing videos are added to ``skipped`` and, with the found ones, to ``coverage`` (when given; its
    ``searched`` is set to the videos folder). None found is an error naming the folder and expected files.
    """
    root = Path(root)
    csv_path = root / "MSRVTT_JSFUSION_test.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: MSR-VTT 1k-A test list not found")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"video_id", "sentence"} <= set(rows[0]):
        raise ValueError(f"{csv_path}: expected columns key,vid_key,video_id,sentence")
    video_dir = root / "videos" / "all"
    coverage = _fill(coverage, "msrvtt", video_dir, csv_path.name)
    clips = []
    for row in rows:
        path = video_dir / f"{row['video_id']}.mp4"
        if not coverage.check(path, "test"):
            if skipped is not None:
                skipped.add("listed in MSRVTT_JSFUSION_test.csv but missing", path)
            continue
        clips.append(CaptionedClip(path, row["sentence"], row.get("key") or row["video_id"]))
    if not clips:
        raise coverage.nothing_found()
    return clips


def _fill(coverage: Coverage | None, dataset: str, searched: Path, listed_in: str) -> Coverage:
    """The caller's coverage (or a new one) set to describe ``dataset``."""
    if coverage is None:
        return Coverage(dataset, searched, listed_in)
    coverage.dataset, coverage.searched, coverage.listed_in = dataset, searched, listed_in
    return coverage


def youcook2(root: str | Path, subset: str = "validation", skipped: SkipReport | None = None,
             coverage: Coverage | None = None) -> list[CaptionedClip]:
    """Every annotated segment of ``subset`` whose video is present, with its sentence and times.

    Coverage counts videos (any extension), by recipe type; see :func:`msrvtt_1ka` for ``skipped`` and ``coverage``.
    """
    root = Path(root)
    ann_path = root / "youcookii_annotations_trainval.json"
    if not ann_path.is_file():
        raise FileNotFoundError(f"{ann_path}: YouCook2 annotations not found")
    database = json.loads(ann_path.read_text(encoding="utf-8")).get("database")
    if not isinstance(database, dict):
        raise ValueError(f"{ann_path}: no 'database' object")
    clips = []
    coverage = _fill(coverage, "youcook2", root / "raw_videos" / subset, ann_path.name + f" ({subset})")
    for video_id, entry in sorted(database.items()):
        if entry.get("subset") != subset:
            continue
        recipe = str(entry.get("recipe_type", ""))
        folder = root / "raw_videos" / subset / recipe
        candidates = sorted(p for p in folder.glob(f"{video_id}.*") if p.suffix.lower() in VIDEO_EXTENSIONS)
        coverage.check(candidates[0] if candidates else folder / f"{video_id}.*", subset, recipe)
        if not candidates:
            if skipped is not None:
                skipped.add("annotated but video missing", folder / f"{video_id}.*")
            continue
        for ann in entry.get("annotations", []):
            start, end = (float(t) for t in ann["segment"])
            clips.append(CaptionedClip(candidates[0], ann["sentence"], f"{video_id}_{ann['id']}", start, end))
    if coverage.listed and not coverage.found:
        raise coverage.nothing_found()
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
    coverage: Coverage | None = None


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
    coverage = Coverage("voc2007", base / "JPEGImages", f"ImageSets/Main/<class>_{image_set}.txt")
    for path, row in zip(paths, targets):
        # An image counts for the classes it shows (1) or shows only as difficult (0).
        coverage.check(path, image_set, [name for name, flag in zip(VOC_CLASSES, row) if flag >= 0])
    if paths and not coverage.found:
        raise coverage.nothing_found()
    return VOCSplit(image_ids, paths, targets, coverage)
