"""What was left out of a run and why: the one skip report of training, evaluation, embedding and packing.

Bad data never ends a run: a file that cannot be used is skipped, and a :class:`SkipReport` counts it by reason
(``missing``, ``truncated``, ``not_media``, ``no_audio``, ``bad_caption``, ...) and remembers which files, so the
end of the run can print one summary and write the full list to its JSON report.

Datasets return a :class:`SkippedSample` marker instead of a sample they cannot build; the collate function lists
the markers under ``batch["skipped"]``, and :meth:`SkipReport.update` counts them in the main process::

    report = SkipReport()
    for batch in report.track(loader):   # yields only the batches that still hold samples
        ...
    print(report.summary())
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["SkipReport", "SkippedSample"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedSample:
    """Marker returned instead of a sample whose data cannot be used."""

    path: str
    reason: str
    detail: str = ""


class SkipReport:
    """Counts skipped inputs by reason and remembers the files (each file is logged once, when first seen).

    Attributes:
        counts: Skips by reason (a file skipped twice, e.g. in two epochs, counts twice).
        files: For each skipped file, the reason and detail of its first skip.
        samples_seen: Samples that were used (when the report tracks batches).
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.files: dict[str, tuple[str, str]] = {}
        self.samples_seen = 0

    def add(self, reason: str | SkippedSample, path: str | Path | None = None, detail: str = "") -> None:
        """Records one skip: ``add(reason, path, detail)`` or ``add(skipped_sample)``."""
        if isinstance(reason, SkippedSample):
            reason, path, detail = reason.reason, reason.path, reason.detail
        path = str(path)
        self.counts[reason] += 1
        if path not in self.files:
            self.files[path] = (reason, detail)
            log.warning("skipped %s [%s]%s", path, reason, f": {detail}" if detail else "")

    def merge(self, other: "SkipReport") -> None:
        """Adds another report's skips (a file already known keeps its first reason)."""
        self.counts.update(other.counts)
        for path, entry in other.files.items():
            self.files.setdefault(path, entry)
        self.samples_seen += other.samples_seen

    def update(self, batch: dict[str, Any]) -> None:
        """Counts the skipped samples of a collated batch and the samples it still holds."""
        for skipped in batch.get("skipped", ()):
            self.add(skipped)
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

    def files_by_reason(self) -> dict[str, list[str]]:
        """The skipped files grouped by the reason of their first skip, each list sorted."""
        grouped: dict[str, list[str]] = {}
        for path, (reason, _) in sorted(self.files.items()):
            grouped.setdefault(reason, []).append(path)
        return grouped

    def as_dict(self) -> dict[str, Any]:
        """For JSON reports: ``{"total", "samples", "by_reason", "files": {reason: [paths]}}``."""
        return {"total": self.total, "samples": self.samples_seen, "by_reason": dict(sorted(self.counts.items())),
                "files": self.files_by_reason()}

    def summary(self) -> str:
        """One line: how many were skipped, by reason."""
        if not self.counts:
            return "none skipped"
        return f"{self.total} skipped (" + ", ".join(f"{r}: {n}" for r, n in sorted(self.counts.items())) + ")"

    def details(self, max_files: int = 20) -> str:
        """The summary, then the first ``max_files`` files with their reasons, one per line."""
        lines = [f"{self.samples_seen} samples, {self.summary()}"]
        for path, (reason, _) in sorted(self.files.items())[:max_files]:
            lines.append(f"    {path} [{reason}]")
        if len(self.files) > max_files:
            lines.append(f"    ... and {len(self.files) - max_files} more files")
        return "\n".join(lines)
