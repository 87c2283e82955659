"""Which files are media, and finding them: the one list of extensions and the one folder scanner.

Every command that takes files or folders (``mmv embed``, ``mmv prepare``, ``mmv vocab``, ``mmv transcribe``,
``mmv deflate``, the evaluation readers, the training datasets) finds its files with :func:`scan_files`, so they all
agree on what a video, an audio file, an image or a caption file is.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "AUDIO_EXTENSIONS",
    "CAPTION_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "MEDIA_EXTENSIONS",
    "SIDECAR_SUFFIXES",
    "TEXT_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ignored_kind",
    "is_sidecar",
    "kind_of",
    "pair_captions",
    "scan_files",
]

# Containers FFmpeg reads that normally hold video (they may hold only sound: the decoder finds out).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ts", ".ogv", ".flv", ".3gp",
                    ".wmv")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS  # files with a soundtrack
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Narrations beside a video share its stem, with or without a language tag (``talk.vtt``, ``talk.en.vtt``, as
# yt-dlp and youtube-dl save them): WebVTT, SRT, HowTo100M's CSV and JSON, preferred in this order.
CAPTION_EXTENSIONS = (".vtt", ".srt", ".csv", ".json")
TEXT_EXTENSIONS = (".txt",)
# Files yt-dlp and youtube-dl save beside a video that end in a caption extension but hold no captions: the video's
# metadata and the live chat replay.
SIDECAR_SUFFIXES = (".info.json", ".live_chat.json")

_KINDS = (("video", VIDEO_EXTENSIONS), ("audio", AUDIO_EXTENSIONS), ("image", IMAGE_EXTENSIONS),
          ("caption", CAPTION_EXTENSIONS), ("text", TEXT_EXTENSIONS))


def kind_of(path: str | os.PathLike) -> str | None:
    """``video``, ``audio``, ``image``, ``caption`` or ``text`` from the file's extension; None for anything else."""
    suffix = Path(path).suffix.lower()
    return next((kind for kind, extensions in _KINDS if suffix in extensions), None)


def scan_files(paths: str | os.PathLike | Iterable[str | os.PathLike], extensions: Sequence[str], *,
               recursive: bool = True, left_out: list[Path] | None = None) -> list[Path]:
    """Files given directly, plus the files under given folders whose extension is one of ``extensions``.

    A file named explicitly is kept whatever its extension (the user asked for it); inside folders only the
    listed extensions count (case-insensitive), and hidden files are left out (``.name``: partial downloads,
    macOS ``._`` resource forks, this library's own temporary files). Folders are searched recursively unless
    ``recursive`` is False. Each folder's files come sorted by path; a file reached twice is kept once, at its first
    place.

    Args:
        paths: One path or several, files or folders.
        extensions: The extensions that count inside folders, with the dot (``VIDEO_EXTENSIONS``, ...).
        recursive: Look into subfolders.
        left_out: When given, every other file found under the folders is appended to it (sorted per folder), so
            that a caller can account for each file it did not take (:func:`ignored_kind`, :func:`pair_captions`).

    Returns:
        The files, in the order described.

    Raises:
        FileNotFoundError: A path that does not exist (the message names it).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    wanted = {extension.lower() for extension in extensions}
    found: list[Path] = []
    others: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            for candidate in sorted(candidates):
                taken = candidate.suffix.lower() in wanted and not candidate.name.startswith(".")
                if taken and candidate.is_file():
                    found.append(candidate)
                elif not taken and left_out is not None and candidate.is_file():
                    others.append(candidate)
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    found = list(dict.fromkeys(found))
    if left_out is not None:
        taken_set = set(found)
        left_out += [other for other in dict.fromkeys(others) if other not in taken_set]
    return found


def is_sidecar(path: str | os.PathLike) -> bool:
    """A yt-dlp or youtube-dl metadata file with a caption extension (``talk.info.json``, ``talk.live_chat.json``):
    not captions, whatever its extension says."""
    return Path(path).name.lower().endswith(SIDECAR_SUFFIXES)


def ignored_kind(path: str | os.PathLike) -> str:
    """How a file that a scan did not take is counted: its extension in lower case (``.txt``), ``(hidden)`` for a
    hidden file (``.DS_Store``, ``._x.mp4``), ``(no extension)`` otherwise."""
    path = Path(path)
    if path.name.startswith("."):
        return "(hidden)"
    return path.suffix.lower() or "(no extension)"


# A BCP 47-like language tag as yt-dlp and youtube-dl put it in caption names: en, en-US, en-orig, pt-BR, zh-Hans,
# es-419. It leaves out their other sidecar files (talk.info.json, talk.live_chat.json, talk.description).
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")


def _language_rank(tag: str, language: str) -> int | None:
    """Preference of a caption's language tag (lower is better); None for another language."""
    tag, language = tag.lower(), language.lower()
    if tag == "":
        return 0  # named exactly after the video: the user paired it (mmv transcribe writes these)
    if tag == language:
        return 1  # uploaded captions in that language, or YouTube's automatic captions (maybe translated)
    if tag == f"{language}-orig":
        return 2  # YouTube's automatic captions in the language spoken
    if tag.startswith(f"{language}-"):
        return 3  # regional variants: en-US, en-GB
    return None


def pair_captions(videos: Sequence[Path], captions: Iterable[Path],
                  language: str = "en") -> tuple[dict[Path, Path], list[Path]]:
    """Each video's caption file among ``captions``, found by name, with a language preference.

    A caption file belongs to a video in the same folder named ``<stem>.<ext>`` or ``<stem>.<lang>.<ext>`` (yt-dlp
    and youtube-dl save ``talk.en.vtt``, ``talk.en-orig.vtt``, ``talk.de.srt`` beside ``talk.mp4``). The preferred
    file is the untagged one, then the tag ``language``, then ``<language>-orig`` (YouTube's automatic captions in
    the language spoken), then other tags ``<language>-*`` in sorted order; for one tag, extensions in the order of
    ``CAPTION_EXTENSIONS``. Captions in other languages are not used: text in another language would reach the
    tokenizer as unknown words.

    A caption file named exactly after one video (``talk.en.vtt`` beside ``talk.en.mp4``) is that video's, never
    another video's English captions.

    Args:
        videos: The videos.
        captions: Candidate caption files (others are ignored), e.g. what :func:`scan_files` left out.
        language: The preferred language tag (``en``, ``de``, ``pt-BR``; case-insensitive).

    Returns:
        ``({video: caption file}, the caption files paired with no video, sorted)``; videos without captions are
        absent from the dict.
    """
    owners = {(video.parent, video.stem): video for video in videos}
    choices: dict[Path, list[tuple[tuple[int, str, int], Path]]] = {}
    considered: list[Path] = []
    for caption in captions:
        caption = Path(caption)
        suffix = caption.suffix.lower()
        if suffix not in CAPTION_EXTENSIONS:
            continue
        considered.append(caption)
        owner = owners.get((caption.parent, caption.stem))
        tag = ""
        if owner is None:
            stem, _, tag = caption.stem.rpartition(".")
            owner = owners.get((caption.parent, stem)) if stem and _LANGUAGE_TAG.match(tag) else None
        rank = _language_rank(tag, language) if owner is not None else None
        if rank is not None:
            choices.setdefault(owner, []).append(((rank, tag.lower(), CAPTION_EXTENSIONS.index(suffix)), caption))
    paired = {video: min(choices[video])[1] for video in videos if video in choices}
    used = set(paired.values())
    return paired, sorted(c for c in dict.fromkeys(considered) if c not in used)
