"""A search library on disk: segments of media files and their embeddings, in one folder that needs no server.

Layout of ``LIB/``::

    library.json      what the library is: the model (where it was loaded from, its weights' checksum), the
                      preprocessing, the segment length and stride, the spaces stored, counts
    library.sqlite    files (path, size, modification time: a file's identity), segments (file, start, end, has
                      sound), vectors (one L2-normalised float32 row per segment, side and space), skipped files
    index-*.faiss     approximate-search indexes built from the vectors on first use (a cache: deleting them is safe)

SQLite in WAL mode holds everything that matters, and a file's segments and vectors are written in one
transaction: a run killed at any moment leaves every file either fully indexed or not at all, so the next run
resumes without duplicates or losses. ``library.json`` is rewritten atomically at the end of a run.

Why SQLite plus an index built on demand (docs/search.md has the measurements): exact search over the vectors is
a single matrix product, under 0.1 s up to a million segments on two CPU cores; beyond that an approximate FAISS
index (IVF) answers in milliseconds with a recall@10 of about 0.95, and is rebuilt only when the library changed.
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from mmv.atomic import atomic_write_json

__all__ = ["FileRecord", "Library", "LibraryError", "Segment", "file_identity"]

FORMAT = "mmv-library"
FORMAT_VERSION = 1
DESCRIPTION_NAME = "library.json"
DATABASE_NAME = "library.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    duration REAL NOT NULL, has_video INTEGER NOT NULL, has_sound INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    start REAL NOT NULL, end REAL NOT NULL, has_sound INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS segments_by_file ON segments(file_id, start);
CREATE TABLE IF NOT EXISTS vectors (
    segment_id INTEGER NOT NULL REFERENCES segments(id) ON DELETE CASCADE, side TEXT NOT NULL, space TEXT NOT NULL,
    vector BLOB NOT NULL, PRIMARY KEY (segment_id, side, space));
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, reason TEXT NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class LibraryError(ValueError):
    """A library that cannot be used as asked: missing, of another format, or made with another model."""


def file_identity(path: str | os.PathLike) -> tuple[str, int, int]:
    """(resolved path, size, modification time in ns): a file is the same file when all three are equal."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return str(resolved), stat.st_size, stat.st_mtime_ns


@dataclass(frozen=True)
class FileRecord:
    id: int
    path: str
    size: int
    mtime_ns: int
    duration: float
    has_video: bool
    has_sound: bool


@dataclass(frozen=True)
class Segment:
    """One indexed segment: ``[start, end)`` seconds of a file."""

    id: int
    file_id: int
    path: str
    start: float
    end: float
    has_sound: bool


class Library:
    """A library folder (see the module docstring). Open with :meth:`create` or :meth:`open`."""

    def __init__(self, root: Path, description: dict[str, Any]) -> None:
        self.root = root
        self.description = description
        self._db = sqlite3.connect(str(root / DATABASE_NAME), check_same_thread=False)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")  # readers (mmv serve) never block the writer (mmv index)
        self._db.executescript(_SCHEMA)

    # ------------------------------------------------------------------------------------------------------
    # Opening
    @classmethod
    def create(cls, root: str | os.PathLike, description: dict[str, Any]) -> "Library":
        """Opens the library at ``root`` for indexing, creating it if needed.

        Raises:
            LibraryError: ``root`` holds a library made with another model or other settings (the message says
                which), or something that is not a library.
        """
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise LibraryError(f"{root}: not a folder")
        existing = root / DESCRIPTION_NAME
        if existing.exists():
            library = cls.open(root)
            library.check_compatible(description)
            return library
        if root.is_dir() and any(root.iterdir()):
            raise LibraryError(f"{root}: a folder that is not an mmv library (no {DESCRIPTION_NAME}); choose an "
                               "empty or new folder for --out")
        root.mkdir(parents=True, exist_ok=True)
        description = {"format": FORMAT, "format_version": FORMAT_VERSION, **description}
        library = cls(root, description)
        library.write_description()
        return library

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Library":
        """Opens an existing library.

        Raises:
            LibraryError: No library there.
        """
        root = Path(root)
        path = root / DESCRIPTION_NAME
        if not path.is_file():
            raise LibraryError(f"{root}: not an mmv library (no {DESCRIPTION_NAME}); make one with 'mmv index'")
        try:
            description = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise LibraryError(f"{path}: unreadable ({err})") from None
        if description.get("format") != FORMAT:
            raise LibraryError(f"{path}: not an mmv library description")
        if description.get("format_version", 0) > FORMAT_VERSION:
            raise LibraryError(f"{path}: written by a newer mmv (format {description['format_version']})")
        return cls(root, description)

    def check_compatible(self, description: dict[str, Any]) -> None:
        """Raises :class:`LibraryError` unless ``description`` (a model and settings) matches this library's."""
        mine = self.description
        checks = [("model checksum", mine.get("model", {}).get("checksum"), description["model"]["checksum"]),
                  ("preprocessing", mine.get("preprocess"), description["preprocess"]),
                  ("segment length", mine.get("segment_seconds"), description["segment_seconds"]),
                  ("stride", mine.get("stride"), description["stride"])]
        for what, ours, theirs in checks:
            if ours != theirs:
                raise LibraryError(
                    f"{self.root}: indexed with another {what} ({_short(ours)}, not {_short(theirs)}); index into "
                    f"another folder, or use the model this library was made with "
                    f"({mine.get('model', {}).get('source')})")

    def write_description(self) -> None:
        self.description["counts"] = self.counts()
        atomic_write_json(self.root / DESCRIPTION_NAME, self.description)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------------
    # Reading
    def files(self) -> dict[str, FileRecord]:
        """Every indexed file by path."""
        rows = self._db.execute("SELECT id, path, size, mtime_ns, duration, has_video, has_sound FROM files")
        return {r[1]: FileRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5]), bool(r[6])) for r in rows}

    def file(self, file_id: int) -> FileRecord | None:
        row = self._db.execute("SELECT id, path, size, mtime_ns, duration, has_video, has_sound FROM files "
                               "WHERE id = ?", (int(file_id),)).fetchone()
        return FileRecord(row[0], row[1], row[2], row[3], row[4], bool(row[5]), bool(row[6])) if row else None

    def skipped(self) -> dict[str, tuple[int, int, str, str]]:
        """Files that could not be indexed: path -> (size, mtime_ns, reason, detail)."""
        rows = self._db.execute("SELECT path, size, mtime_ns, reason, detail FROM skipped")
        return {r[0]: (r[1], r[2], r[3], r[4] or "") for r in rows}

    def segments(self, ids: Iterable[int] | None = None) -> dict[int, Segment]:
        """Segments by id (all of them, or those with the given ids)."""
        query = ("SELECT s.id, s.file_id, f.path, s.start, s.end, s.has_sound FROM segments s "
                 "JOIN files f ON f.id = s.file_id")
        if ids is None:
            rows = self._db.execute(query)
        else:
            ids = [int(i) for i in ids]
            rows = []
            for first in range(0, len(ids), 900):  # SQLite's limit on bound parameters
                chunk = ids[first:first + 900]
                rows += self._db.execute(f"{query} WHERE s.id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        return {r[0]: Segment(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows}

    def vectors(self, side: str, space: str) -> tuple[np.ndarray, np.ndarray]:
        """``(segment ids [N], vectors [N, D] float32)`` of one side and space, in segment order."""
        rows = self._db.execute("SELECT segment_id, vector FROM vectors WHERE side = ? AND space = ? "
                                "ORDER BY segment_id", (side, space)).fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])

    def generation(self) -> int:
        """A counter raised by every change: derived indexes built at another generation are stale."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def counts(self) -> dict[str, int]:
        one = lambda sql: self._db.execute(sql).fetchone()[0]  # noqa: E731
        return {"files": one("SELECT COUNT(*) FROM files"), "segments": one("SELECT COUNT(*) FROM segments"),
                "segments_with_sound": one("SELECT COUNT(*) FROM segments WHERE has_sound = 1"),
                "skipped": one("SELECT COUNT(*) FROM skipped")}

    # ------------------------------------------------------------------------------------------------------
    # Writing (the indexer's side; each call is one transaction)
    def add_file(self, identity: tuple[str, int, int], duration: float, has_video: bool, has_sound: bool,
                 segments: list[tuple[float, float, bool]], vectors: dict[tuple[str, str], np.ndarray]) -> int:
        """Adds (or replaces) a file with its segments and their vectors, all or nothing.

        Args:
            identity: :func:`file_identity` of the file.
            duration, has_video, has_sound: what the file is.
            segments: ``(start, end, has_sound)`` per segment.
            vectors: ``{(side, space): [num_segments, D] float32}``; a NaN row means "no vector" (a segment
                without sound has no audio-side vectors).
        """
        path, size, mtime_ns = identity
        with self._db:
            self._db.execute("DELETE FROM files WHERE path = ?", (path,))
            self._db.execute("DELETE FROM skipped WHERE path = ?", (path,))
            cursor = self._db.execute("INSERT INTO files (path, size, mtime_ns, duration, has_video, has_sound) "
                                      "VALUES (?, ?, ?, ?, ?, ?)",
                                      (path, size, mtime_ns, duration, int(has_video), int(has_sound)))
            file_id = cursor.lastrowid
            segment_ids = []
            for start, end, sound in segments:
                cursor = self._db.execute("INSERT INTO segments (file_id, start, end, has_sound) VALUES (?, ?, ?, ?)",
                                          (file_id, float(start), float(end), int(sound)))
                segment_ids.append(cursor.lastrowid)
            rows = [(segment_ids[i], side, space, np.ascontiguousarray(matrix[i], dtype=np.float32).tobytes())
                    for (side, space), matrix in vectors.items() for i in range(len(segment_ids))
                    if np.isfinite(matrix[i]).all()]
            self._db.executemany("INSERT INTO vectors (segment_id, side, space, vector) VALUES (?, ?, ?, ?)", rows)
            self._bump()
        return file_id

    def remove_files(self, paths: Iterable[str]) -> int:
        """Drops files (their segments and vectors with them); returns how many were there."""
        paths = list(paths)
        with self._db:
            removed = sum(self._db.execute("DELETE FROM files WHERE path = ?", (p,)).rowcount for p in paths)
            for path in paths:
                self._db.execute("DELETE FROM skipped WHERE path = ?", (path,))
            if removed:
                self._bump()
        return removed

    def record_skip(self, identity: tuple[str, int, int], reason: str, detail: str) -> None:
        """Remembers a file that could not be indexed (retried only when it changes)."""
        path, size, mtime_ns = identity
        with self._db:
            self._db.execute("DELETE FROM files WHERE path = ?", (path,))
            self._db.execute("INSERT OR REPLACE INTO skipped (path, size, mtime_ns, reason, detail) "
                             "VALUES (?, ?, ?, ?, ?)", (path, size, mtime_ns, reason, detail))

    def _bump(self) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES ('generation', '1') ON CONFLICT(key) DO UPDATE "
                         "SET value = CAST(value AS INTEGER) + 1")

    def iter_file_rows(self) -> Iterator[tuple[FileRecord, list[Segment], dict[tuple[str, str], np.ndarray]]]:
        """Every file with its segments and vectors (for merging libraries)."""
        for record in self.files().values():
            segments = [s for s in self.segments_of(record.id)]
            vectors: dict[tuple[str, str], np.ndarray] = {}
            for side, space in self.stored_spaces():
                rows = dict(self._db.execute(
                    "SELECT v.segment_id, v.vector FROM vectors v JOIN segments s ON s.id = v.segment_id "
                    "WHERE s.file_id = ? AND v.side = ? AND v.space = ?", (record.id, side, space)).fetchall())
                if rows:
                    width = len(next(iter(rows.values()))) // 4
                    matrix = np.full((len(segments), width), np.nan, dtype=np.float32)
                    for i, segment in enumerate(segments):
                        if segment.id in rows:
                            matrix[i] = np.frombuffer(rows[segment.id], dtype=np.float32)
                    vectors[(side, space)] = matrix
            yield record, segments, vectors

    def segments_of(self, file_id: int) -> list[Segment]:
        rows = self._db.execute("SELECT s.id, s.file_id, f.path, s.start, s.end, s.has_sound FROM segments s "
                                "JOIN files f ON f.id = s.file_id WHERE s.file_id = ? ORDER BY s.start",
                                (int(file_id),)).fetchall()
        return [Segment(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def stored_spaces(self) -> list[tuple[str, str]]:
        """The (side, space) pairs the library holds vectors for."""
        return [(side, space) for side, spaces in self.description.get("spaces", {}).items() for space in spaces]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
