"""What was left out of a run and why: the one skip report of training, evaluation, embedding and packing.

Bad data never ends a run: a file that cannot be used is skipped, and a :class:`SkipReport` counts it by reason
(``missing``, ``truncated``, ``not_media``, ``no_audio``, ...) and remembers which files, so the end of the run can
print one summary and write the full list to its JSON report. Two more kinds of entry make every input accounted
for: problems with an input whose sample was still used (``bad_caption``: an unreadable caption file, the video kept
with its text masked; ``repaired_caption``: a caption file read by guessing), and files a folder scan ignored
because they are not a media type the run reads (counted by extension).

Datasets return a :class:`SkippedSample` marker instead of a sample they cannot build, and attach
:class:`SampleNote` markers to a sample built despite a problem; the collate function lists them under
``batch["skipped"]`` and ``batch["notes"]``, and :meth:`SkipReport.update` counts them in the main process::

    report = SkipReport()
    for batch in report.track(loader):   # yields only the batches that still hold samples
        ...
    report.log_summary(logger)           # one WARNING line per reason, with counts and the first files

Each file is logged once, at DEBUG, when first seen: a long run shows one line per reason at its end, not one line
per file (the full lists are in :meth:`SkipReport.as_dict`, for the run's JSON report).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["SampleNote", "SkipReport", "SkippedSample"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedSample:
    """Marker returned instead of a sample whose data cannot be used."""

    path: str
    reason: str
    detail: str = ""

    @classmethod
    def from_error(cls, path: str | Path, error: BaseException) -> SkippedSample:
        """The skip of a file that raised ``error``: a ``MediaError``'s reason and detail, else
        ``unreadable (<exception type>)`` and the message."""
        from mmv.data.media import MediaError

        if isinstance(error, MediaError):
            return cls(str(path), error.reason, error.detail)
        return cls(str(path), f"unreadable ({type(error).__name__})", str(error))


@dataclass(frozen=True)
class SampleNote:
    """A problem with an input whose sample was still built, e.g. an unreadable caption file (``bad_caption``: the
    video is used with its text masked). ``path`` names the input at fault (the caption file)."""

    path: str
    reason: str
    detail: str = ""


class SkipReport:
    """Counts skipped inputs by reason and remembers the files (each file is logged once, at DEBUG, when first seen).

    Attributes:
        counts: Skips by reason (a file skipped twice, e.g. in two epochs, counts twice).
        files: For each skipped file, the reason and detail of its first skip.
        note_counts: Problems of inputs that were still used, by reason (counted like skips).
        noted_files: For each such input, the reason and detail of its first problem.
        ignored: Files a folder scan did not take, each with its kind (:func:`mmv.data.files.ignored_kind`: the
            extension, ``(hidden)`` or ``(no extension)``).
        samples_seen: Samples that were used (when the report tracks batches).
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.files: dict[str, tuple[str, str]] = {}
        self.note_counts: Counter[str] = Counter()
        self.noted_files: dict[str, tuple[str, str]] = {}
        self.ignored: dict[str, str] = {}
        self.samples_seen = 0

    def add(self, reason: str | SkippedSample, path: str | Path | None = None, detail: str = "") -> None:
        """Records one skip: ``add(reason, path, detail)`` or ``add(skipped_sample)``."""
        if isinstance(reason, SkippedSample):
            reason, path, detail = reason.reason, reason.path, reason.detail
        path = str(path)
        self.counts[reason] += 1
        if path not in self.files:
            self.files[path] = (reason, detail)
            log.debug("skipped %s [%s]%s", path, reason, f": {detail}" if detail else "")

    def note(self, reason: str | SampleNote, path: str | Path | None = None, detail: str = "") -> None:
        """Records a problem of an input that was still used: ``note(reason, path, detail)`` or ``note(marker)``."""
        if isinstance(reason, SampleNote):
            reason, path, detail = reason.reason, reason.path, reason.detail
        path = str(path)
        self.note_counts[reason] += 1
        if path not in self.noted_files:
            self.noted_files[path] = (reason, detail)
            log.debug("used despite a problem: %s [%s]%s", path, reason, f": {detail}" if detail else "")

    def ignore(self, path: str | Path) -> None:
        """Records a file a folder scan did not take (not a media type the run reads), counted by extension."""
        from mmv.data.files import ignored_kind

        path = str(path)
        if path not in self.ignored:
            self.ignored[path] = ignored_kind(path)
            log.debug("ignored %s (%s)", path, self.ignored[path])

    def merge(self, other: "SkipReport") -> None:
        """Adds another report's entries (a file already known keeps its first reason)."""
        self.counts.update(other.counts)
        for path, entry in other.files.items():
            self.files.setdefault(path, entry)
        self.note_counts.update(other.note_counts)
        for path, entry in other.noted_files.items():
            self.noted_files.setdefault(path, entry)
        for path, kind in other.ignored.items():
            self.ignored.setdefault(path, kind)
        self.samples_seen += other.samples_seen

    def update(self, batch: dict[str, Any]) -> None:
        """Counts the skipped samples and the notes of a collated batch, and the samples it still holds."""
        for skipped in batch.get("skipped", ()):
            self.add(skipped)
        for note in batch.get("notes", ()):
            self.note(note)
        self.samples_seen += len(batch["path"]) if "path" in batch else 0

    def track(self, batches: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Yields the batches of ``batches`` that still hold samples, recording what was skipped."""
        for batch in batches:
            self.update(batch)
            if "path" in batch and len(batch["path"]):
                yield batch

    @property
    def total(self) -> int:
        """Skips in all."""
        return sum(self.counts.values())

    @property
    def empty(self) -> bool:
        """Nothing recorded at all: no skip, no problem of a used input, no ignored file."""
        return not (self.counts or self.note_counts or self.ignored)

    def files_by_reason(self) -> dict[str, list[str]]:
        """The skipped files grouped by the reason of their first skip, each list sorted."""
        return _group(self.files)

    def ignored_by_kind(self) -> dict[str, list[str]]:
        """The ignored files grouped by kind (extension), each list sorted."""
        return _group({path: (kind, "") for path, kind in self.ignored.items()})

    def as_dict(self) -> dict[str, Any]:
        """For JSON reports: ``{"total", "samples", "by_reason", "files": {reason: [paths]}, "kept_with_problems":
        {"total", "by_reason", "files": {reason: [{"path", "detail"}]}}, "ignored": {"total", "by_extension",
        "files": {extension: [paths]}}}``."""
        noted: dict[str, list[dict[str, str]]] = {}
        for path, (reason, detail) in sorted(self.noted_files.items()):
            noted.setdefault(reason, []).append({"path": path, "detail": detail})
        ignored = dict(sorted(self.ignored_by_kind().items()))
        return {"total": self.total, "samples": self.samples_seen, "by_reason": dict(sorted(self.counts.items())),
                "files": self.files_by_reason(),
                "kept_with_problems": {"total": sum(self.note_counts.values()),
                                       "by_reason": dict(sorted(self.note_counts.items())), "files": noted},
                "ignored": {"total": len(self.ignored), "by_extension": {k: len(v) for k, v in ignored.items()},
                            "files": ignored}}

    def summary(self) -> str:
        """One line: how many were skipped, by reason (then inputs used despite a problem, and ignored files)."""
        parts = [f"{self.total} skipped (" + _counts(self.counts) + ")" if self.counts else "none skipped"]
        if self.note_counts:
            parts.append(f"{sum(self.note_counts.values())} used despite a problem ({_counts(self.note_counts)})")
        if self.ignored:
            kinds = Counter(self.ignored.values())
            parts.append(f"{len(self.ignored)} files ignored as not media ({_counts(kinds)})")
        return "; ".join(parts)

    def lines(self, max_files: int = 3) -> list[str]:
        """One line per reason (skips, then problems of used inputs), then one for ignored files: the count and the
        first ``max_files`` files."""
        return [text for _, text in self._summary_lines(max_files)]

    def log_summary(self, logger: logging.Logger | None = None, context: str = "", max_files: int = 3) -> None:
        """The end-of-run summary: one WARNING line per reason (ignored files: one INFO line). The per-file list is
        in :meth:`as_dict` and was logged at DEBUG as each file was met."""
        prefix = f"{context}: " if context else ""
        for level, text in self._summary_lines(max_files):
            (logger or log).log(level, "%s%s", prefix, text)

    def _summary_lines(self, max_files: int) -> list[tuple[int, str]]:
        lines = []
        # The most frequent reasons first.
        for reason, files in sorted(self.files_by_reason().items(), key=lambda item: (-self.counts[item[0]], item[0])):
            lines.append((logging.WARNING, f"{self.counts[reason]} skipped [{reason}]: {_first(files, max_files)}"))
        noted = _group(self.noted_files)
        for reason, files in sorted(noted.items(), key=lambda item: (-self.note_counts[item[0]], item[0])):
            # The detail says what is wrong with the file (e.g. the line of a caption file at fault).
            described = [f"{path} ({self.noted_files[path][1]})" if self.noted_files[path][1] else path
                         for path in files]
            lines.append((logging.WARNING, f"{self.note_counts[reason]} used despite a problem [{reason}]: "
                                           f"{_first(described, max_files)}"))
        if self.ignored:
            # A stray README beside the videos is no problem: worth a line, not a warning.
            kinds = Counter(self.ignored.values())
            lines.append((logging.INFO, f"{len(self.ignored)} files ignored as not media ({_counts(kinds)}): "
                                        f"{_first(sorted(self.ignored), max_files)}"))
        return lines

    def details(self, max_files: int = 20) -> str:
        """The summary, then the first ``max_files`` files with their reasons, one per line."""
        lines = [f"{self.samples_seen} samples, {self.summary()}"]
        entries = [(path, reason) for path, (reason, _) in self.files.items()]
        entries += [(path, f"used: {reason}") for path, (reason, _) in self.noted_files.items()]
        entries += [(path, f"ignored: {kind}") for path, kind in self.ignored.items()]
        for path, reason in sorted(entries)[:max_files]:
            lines.append(f"    {path} [{reason}]")
        if len(entries) > max_files:
            lines.append(f"    ... and {len(entries) - max_files} more files")
        return "\n".join(lines)


def _group(entries: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for path, (reason, _) in sorted(entries.items()):
        grouped.setdefault(reason, []).append(path)
    return grouped


def _counts(counts: Counter[str]) -> str:
    return ", ".join(f"{key}: {count}" for key, count in sorted(counts.items()))


def _first(files: list[str], limit: int) -> str:
    shown = ", ".join(files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")
