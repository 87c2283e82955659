"""Which files are media, and finding them: the one list of extensions and the one folder scanner.

Every command that takes files or folders (``mmv embed``, ``mmv prepare``, ``mmv vocab``, ``mmv transcribe``,
``mmv deflate``, the evaluation readers, the training datasets) finds its files with :func:`scan_files`, so they all
agree on what a video, an audio file, an image or a caption file is.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "AUDIO_EXTENSIONS",
    "CAPTION_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "MEDIA_EXTENSIONS",
    "TEXT_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "kind_of",
    "scan_files",
]

# Containers FFmpeg reads that normally hold video (they may hold only sound: the decoder finds out).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ts", ".ogv", ".flv", ".3gp",
                    ".wmv")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS  # files with a soundtrack
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Narrations beside a video share its stem: WebVTT, SRT, HowTo100M's CSV and JSON (the first that exists wins).
CAPTION_EXTENSIONS = (".vtt", ".srt", ".csv", ".json")
TEXT_EXTENSIONS = (".txt",)

_KINDS = (("video", VIDEO_EXTENSIONS), ("audio", AUDIO_EXTENSIONS), ("image", IMAGE_EXTENSIONS),
          ("caption", CAPTION_EXTENSIONS), ("text", TEXT_EXTENSIONS))


def kind_of(path: str | os.PathLike) -> str | None:
    """``video``, ``audio``, ``image``, ``caption`` or ``text`` from the file's extension; None for anything else."""
    suffix = Path(path).suffix.lower()
    return next((kind for kind, extensions in _KINDS if suffix in extensions), None)


def scan_files(paths: str | os.PathLike | Iterable[str | os.PathLike], extensions: Sequence[str], *,
               recursive: bool = True) -> list[Path]:
    """Files given directly, plus the files under given folders whose extension is one of ``extensions``.

    A file named explicitly is kept whatever its extension (the user asked for it); inside folders only the
    listed extensions count (case-insensitive), and hidden files are left out (``.name``: partial downloads,
    macOS ``._`` resource forks, this library's own temporary files). Folders are searched recursively unless ``recursive`` is False.
    Each folder's files come sorted by path; a file reached twice is kept once, at its first place.

    Args:
        paths: One path or several, files or folders.
        extensions: The extensions that count inside folders, with the dot (``VIDEO_EXTENSIONS``, ...).
        recursive: Look into subfolders.

    Returns:
        The files, in the order described.

    Raises:
        FileNotFoundError: A path that does not exist (the message names it).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    wanted = {extension.lower() for extension in extensions}
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            found += sorted(p for p in candidates
                            if p.suffix.lower() in wanted and not p.name.startswith(".") and p.is_file())
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))
