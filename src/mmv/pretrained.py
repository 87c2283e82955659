"""Released MMV models by name: ``mmv.load("mmv_s3d")`` and ``mmv download NAME``.

The three released checkpoints (paper fact sheet §6.1) are Haiku pickles at
``https://storage.googleapis.com/deepmind-research-mmv/<name>.pkl``. :func:`fetch` downloads one, converts it with
the safe reader (:func:`mmv.convert.convert_checkpoint`) and caches the converted model; later calls use the cache
without the network.

* **Where.** ``$MMV_HOME/<name>/`` (``model.safetensors``, ``config.json``, ``release.json``); ``MMV_HOME`` defaults
  to the platform's cache folder (``$XDG_CACHE_HOME/mmv``, else ``~/.cache/mmv`` on Linux). ``MMV_RELEASE_URL``
  replaces the base URL: a mirror, or a local folder (a path or ``file://`` URL) holding the ``.pkl`` files.
* **Downloading.** pooch (:func:`pooch.retrieve`) with :class:`ResumableDownloader`: the file grows in
  ``$MMV_HOME/downloads/<name>.pkl.part``; a connection cut mid-file is resumed with an HTTP range request (up to
  ``attempts_without_progress`` times in a row without a byte gained); the file must end at the size the server
  announced. Ctrl-C keeps the part and the next call resumes it; any other failure removes it.
* **Integrity.** ``release.json`` records the URL, size and SHA-256 of the first download and the SHA-256 of the
  converted weights. Each reuse of the cache checks the weights against it; a later download of the same name (after
  ``--force``) must have the first download's SHA-256, or the cached model is kept and the new file refused.
* **Concurrency.** A file lock per name (``$MMV_HOME/.<name>.lock``): a second process waits, then reuses the entry.
  The converted model is written to a temporary folder and renamed into place, so an entry is complete or absent.
* **Licence.** The weights are CC BY-NC 4.0; :data:`LICENCE` is printed (stderr) when they are first downloaded.

>>> model = mmv.load("mmv_s3d")                 # downloads, converts and caches on first use
>>> from mmv.pretrained import fetch
>>> fetch("mmv_tsm_resnet_x2")                   # the cached model folder
PosixPath('/home/me/.cache/mmv/mmv_tsm_resnet_x2')
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

from mmv.atomic import current_umask

__all__ = ["DEFAULT_RELEASE_URL", "LICENCE", "RELEASES", "DownloadError", "Release", "ResumableDownloader", "fetch",
           "is_released", "list_released", "mmv_home", "release_url"]

log = logging.getLogger(__name__)

DEFAULT_RELEASE_URL = "https://storage.googleapis.com/deepmind-research-mmv"  # the official README's links
RELEASE_URL_ENV, HOME_ENV = "MMV_RELEASE_URL", "MMV_HOME"
RECORD_NAME = "release.json"
LICENCE = ("the MMV weights are DeepMind's, released under CC BY-NC 4.0 (Creative Commons Attribution-NonCommercial "
           "4.0, https://creativecommons.org/licenses/by-nc/4.0/): non-commercial use only, crediting Alayrac et al., "
           "NeurIPS 2020. The mmv code is Apache-2.0.")


@dataclass(frozen=True)
class Release:
    """One released checkpoint: its name (the file is ``<name>.pkl``) and the architecture it converts to."""

    name: str
    arch: str
    backbone: str


RELEASES = {release.name: release for release in (
    Release("mmv_s3d", "mmv_fac_s3dg", "S3D-G"),
    Release("mmv_tsm_resnet_x1", "mmv_fac_tsm_resnet50", "TSM-ResNet50"),
    Release("mmv_tsm_resnet_x2", "mmv_fac_tsm_resnet50x2", "TSM-ResNet50x2"),
)}


class DownloadError(RuntimeError):
    """A released model could not be downloaded or converted. The message is one line: what failed, that nothing
    was cached, and how to place the file by hand."""


def list_released() -> list[str]:
    """The names :func:`fetch` and :func:`mmv.load` know."""
    return list(RELEASES)


def is_released(name: str) -> bool:
    return name in RELEASES


def mmv_home() -> Path:
    """The cache folder: ``$MMV_HOME``, else the platform's user cache folder for ``mmv`` (``~/.cache/mmv`` on
    Linux, or ``$XDG_CACHE_HOME/mmv``)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mmv", appauthor=False))


def release_url(name: str) -> str:
    """Where ``name`` is downloaded from: ``$MMV_RELEASE_URL/<name>.pkl``, by default the official location."""
    base = os.environ.get(RELEASE_URL_ENV) or DEFAULT_RELEASE_URL
    return f"{base.rstrip('/')}/{name}.pkl"


def _release(name: str) -> Release:
    if name not in RELEASES:
        raise ValueError(f"{name!r} is not a released model; the released models are {', '.join(RELEASES)}")
    return RELEASES[name]


def fetch(name: str, *, force: bool = False, source: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The cached model folder of the released model ``name``, downloaded and converted first if needed.

    Args:
        name: ``"mmv_s3d"``, ``"mmv_tsm_resnet_x1"`` or ``"mmv_tsm_resnet_x2"``.
        force: Download and convert again even if the cache holds the model (the new file must have the SHA-256
            of the first download).
        source: A ``.pkl`` already on disk to convert instead of downloading (the file placed by hand).
        progress: Show a progress bar while downloading.

    Raises:
        ValueError: ``name`` is not a released model, or the cached copy is damaged (the message says how to
            download it again).
        DownloadError: The download or the conversion failed; nothing was cached.
    """
    release = _release(name)
    home = mmv_home()
    entry = home / name
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"{name}: cannot create the cache folder {home} ({err}); set {HOME_ENV} to a writable "
                            "folder") from None
    with _lock(home, name):
        record = _read_record(entry)
        if record is not None and not force and source is None:
            _check_cached(entry, record)
            return entry
        try:
            _build_entry(release, home, record, source, progress)
        except OSError as err:  # e.g. a cache folder that is not writable (a DownloadError is no OSError)
            raise DownloadError(f"{name}: {err}; nothing was cached (the cache folder is {home}: {HOME_ENV})") \
                from None
    if record is None:
        print(f"{name}: {LICENCE}", file=sys.stderr)
    return entry


@contextlib.contextmanager
def _lock(home: Path, name: str) -> Iterator[None]:
    import filelock

    lock = filelock.FileLock(str(home / f".{name}.lock"))
    try:
        lock.acquire(timeout=0.2)
    except filelock.Timeout:
        log.info("%s: another process is downloading or converting it; waiting for it (%s)", name, lock.lock_file)
        lock.acquire()
    except OSError as err:  # a cache shared read-only: reading needs no lock, and writing will say why it fails
        log.debug("%s: no lock in %s (%s)", name, home, err)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _read_record(entry: Path) -> dict[str, Any] | None:
    """The entry's record, or None when the entry is absent or incomplete (then it is rebuilt)."""
    try:
        record = json.loads((entry / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "sha256" in record else None


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_cached(entry: Path, record: dict[str, Any]) -> None:
    weights = entry / "model.safetensors"
    found = _sha256(weights) if weights.is_file() else "missing"
    if found != record.get("weights_sha256"):
        raise ValueError(f"{weights}: the cached weights do not match the SHA-256 recorded when they were converted "
                         f"({RECORD_NAME}): the cache is damaged; run `mmv download {entry.name} --force` to download "
                         "and convert them again")


def _by_hand(name: str, url: str) -> str:
    return (f"To place the file by hand: download {url} another way, then run `mmv download {name} --from "
            f"{name}.pkl` (or `mmv convert {name}.pkl --out DIR` and load DIR)")


def _build_entry(release: Release, home: Path, record: dict[str, Any] | None, source: Any, progress: bool) -> None:
    """Download (or take ``source``), check, convert into a temporary folder, and rename it into place."""
    name = release.name
    url = release_url(name) if source is None else Path(source).resolve().as_uri()
    downloaded = None
    try:
        if source is None:
            downloaded = _download(name, url, home / "downloads", progress)
        pkl = downloaded or Path(source)
        if not pkl.is_file():
            raise DownloadError(f"{name}: {pkl}: no such file")
        digest = _sha256(pkl)
        if record is not None and digest != record["sha256"]:
            raise DownloadError(f"{name}: {url} has SHA-256 {digest}, but the first download had {record['sha256']} "
                                f"({home / name / RECORD_NAME}): the release changed or the file is corrupt; the "
                                f"cached model was kept. To use the new file, delete {home / name} first")
        _convert_into(release, pkl, home, {"name": name, "url": url, "bytes": pkl.stat().st_size, "sha256": digest})
    finally:
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)


def _download(name: str, url: str, downloads: Path, progress: bool) -> Path:
    import pooch

    downloads.mkdir(parents=True, exist_ok=True)
    downloader = ResumableDownloader(downloads / f"{name}.pkl.part", progress=progress, desc=f"{name}.pkl")
    pooch_logger = pooch.get_logger()
    level = pooch_logger.level
    # NOTE: pooch logs each download at INFO and suggests pinning its hash; our record does that, so quiet it.
    pooch_logger.setLevel(logging.WARNING)
    try:
        return Path(pooch.retrieve(url, known_hash=None, fname=f"{name}.pkl", path=downloads,
                                   downloader=downloader, progressbar=False))
    except DownloadError as err:
        raise DownloadError(f"{name}: cannot download {url}: {err}; nothing was cached. {_by_hand(name, url)}") \
            from None
    except OSError as err:
        raise DownloadError(f"{name}: cannot write the download to {downloads} ({err}); nothing was cached") from None
    finally:
        pooch_logger.setLevel(level)


def _convert_into(release: Release, pkl: Path, home: Path, record: dict[str, Any]) -> None:
    from mmv import __version__
    from mmv.convert import convert_checkpoint
    from mmv.convert.haiku import ConversionError
    from mmv.convert.pickle_io import CheckpointFormatError, UnsafePickleError

    entry = home / release.name
    building = Path(tempfile.mkdtemp(prefix=f".{release.name}.", suffix=".tmp", dir=home))
    try:
        try:
            convert_checkpoint(pkl, building, arch=release.arch)
        except (CheckpointFormatError, UnsafePickleError, ConversionError) as err:
            raise DownloadError(f"{release.name}: {record['url']} is not a valid {release.name} release, corrupt or "
                                f"truncated ({_first_line(err)}); nothing was cached. "
                                f"{_by_hand(release.name, record['url'])}") from None
        converted = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        record |= {"arch": release.arch, "weights_sha256": _sha256(building / "model.safetensors"),
                   "licence": "CC BY-NC 4.0", "converted": converted, "mmv_version": __version__}
        (building / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.chmod(building, 0o777 & ~current_umask())  # mkdtemp makes it private; a cache is as readable as any folder
        old = None
        if entry.exists():
            old = entry.rename(home / f".{release.name}.old-{os.getpid()}")
        os.replace(building, entry)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


# ----------------------------------------------------------------------------------------------------------------
# The downloader


class ResumableDownloader:
    """A pooch downloader (``downloader(url, output_file, pooch)``) that resumes cut-off downloads with HTTP range
    requests and checks the size the server announced.

    NOTE: pooch's own ``HTTPDownloader`` (pooch 1.9) opens its output with ``"w+b"`` and sends no ``Range`` header,
    and ``pooch.retrieve`` hands each attempt a new temporary file that it deletes on failure, so with it an
    interrupted download starts over and a short one is not noticed. This downloader keeps its own ``.part`` file
    (with the size and validator in ``.part.json``), asks for the missing bytes with ``Range`` and ``If-Range`` after
    a cut, and moves the part onto pooch's temporary file once it has the announced size; pooch still chooses the
    temporary file and moves the result into place. A local source (a path or ``file://`` URL) is copied.

    Args:
        part: Where the download grows.
        progress: Show a tqdm progress bar (stderr).
        desc: The bar's label.
    """

    attempts_without_progress = 3  # consecutive cuts that bring no new byte before giving up
    retry_wait_s = 1.0  # times the number of such cuts so far
    timeout = (15, 60)  # connect, read (seconds)
    chunk_bytes = 1 << 18  # a cut loses the chunk being read: keep it small

    def __init__(self, part: str | os.PathLike, progress: bool = True, desc: str = "") -> None:
        self.part = Path(part)
        self.meta = self.part.with_name(self.part.name + ".json")
        self.progress = progress
        self.desc = desc

    def __call__(self, url: str, output_file: str, pooch: Any = None, check_only: bool = False) -> bool | None:
        local = _local_path(url)
        if check_only:
            if local is not None:
                return local.is_file()
            import requests

            return requests.head(url, timeout=self.timeout, allow_redirects=True).status_code == 200
        try:
            if local is not None:
                self._copy(local)
            else:
                self._get(url)
            os.replace(self.part, output_file)
            self.meta.unlink(missing_ok=True)
        except KeyboardInterrupt:
            raise  # the part stays: the next call resumes it
        except BaseException:
            self.part.unlink(missing_ok=True)
            self.meta.unlink(missing_ok=True)
            raise
        return None

    def _copy(self, source: Path) -> None:
        from tqdm import tqdm

        if not source.is_file():
            raise DownloadError(f"{source}: no such file")
        size = source.stat().st_size
        with open(source, "rb") as src, open(self.part, "wb") as dst, \
                tqdm(total=size, unit="B", unit_scale=True, desc=self.desc, disable=not self.progress) as bar:
            for chunk in iter(lambda: src.read(self.chunk_bytes), b""):
                dst.write(chunk)
                bar.update(len(chunk))
        if self.part.stat().st_size != size:
            raise DownloadError(f"copied {self.part.stat().st_size} of the {size} bytes of {source}")

    def _resume_state(self, url: str) -> tuple[int, int | None, str | None]:
        """(bytes already there, total size, validator) of a part left by an interrupted call for the same URL."""
        try:
            meta = json.loads(self.meta.read_text(encoding="utf-8"))
            if meta.get("url") == url and self.part.is_file():
                return self.part.stat().st_size, meta.get("total"), meta.get("validator")
        except (OSError, ValueError):
            pass
        self.part.unlink(missing_ok=True)
        return 0, None, None

    def _get(self, url: str) -> None:
        import requests
        from tqdm import tqdm

        have, total, validator = self._resume_state(url)
        stalls, problem = 0, ""
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=self.desc, disable=not self.progress)
        with bar, requests.Session() as session:
            while total is None or have < total:
                before = have
                headers = {"Accept-Encoding": "identity"}  # the size announced must be the size of the file
                if have:
                    headers["Range"] = f"bytes={have}-"
                    if validator:
                        headers["If-Range"] = validator
                try:
                    with session.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
                        accepted = self._accept(response, have, total, validator)
                        if accepted is None:  # the part is no prefix of the file (any more): start again
                            have, total, validator = 0, None, None
                            self.part.unlink(missing_ok=True)
                            problem = "the server would not resume the download"
                        else:
                            have, total, validator = accepted
                            self.meta.write_text(json.dumps({"url": url, "total": total, "validator": validator}))
                            bar.total, bar.n = total, have
                            bar.refresh()
                            have = self._write(response, have, bar)
                except requests.exceptions.ChunkedEncodingError:
                    have = self.part.stat().st_size if self.part.is_file() else 0
                    problem = f"truncated download: it stopped at byte {have} of the {total} the server announced"
                except (requests.ConnectionError, requests.Timeout) as err:
                    if not have and total is None:
                        raise DownloadError(_connection_problem(url, err)) from None
                    have = self.part.stat().st_size if self.part.is_file() else 0
                    problem = f"the connection broke after {have} of {total} bytes ({_connection_problem(url, err)})"
                else:
                    if total is None:
                        return  # no size announced: the end of the stream is the end of the file
                    if have < total:
                        problem = f"truncated download: it stopped at byte {have} of the {total} the server announced"
                if total is not None and have > total:
                    raise DownloadError(f"received {have} bytes, more than the {total} the server announced")
                if total is not None and have == total:
                    return
                stalls = 0 if have > before else stalls + 1
                if stalls >= self.attempts_without_progress:
                    raise DownloadError(f"{problem}; {stalls} attempts in a row to resume brought no more data")
                message = f"{self.desc}: {problem}; resuming at byte {have}"
                bar.write(message, file=sys.stderr) if self.progress else log.info(message)
                time.sleep(self.retry_wait_s * stalls)

    def _write(self, response: Any, have: int, bar: Any) -> int:
        """Appends the response's body to the part from byte ``have``; returns the part's size."""
        with open(self.part, "r+b" if have else "wb") as f:
            f.seek(have)
            f.truncate()
            for chunk in response.iter_content(self.chunk_bytes):
                f.write(chunk)
                have += len(chunk)
                bar.update(len(chunk))
        return have

    @staticmethod
    def _accept(response: Any, have: int, total: int | None,
                validator: str | None) -> tuple[int, int | None, str | None] | None:
        """(first byte of the file this response holds, total size, validator); None when the response cannot
        continue the part; DownloadError for an error status."""
        if response.status_code == 416 and have:
            return None
        if response.status_code >= 400:
            raise DownloadError(f"the server answered {response.status_code} {response.reason}")
        new_validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        if response.status_code == 206:
            content_range = response.headers.get("Content-Range", "")
            try:
                first, size = int(content_range.split()[1].split("-")[0]), content_range.rsplit("/", 1)[1]
            except (IndexError, ValueError):
                raise DownloadError(f"the server sent an invalid Content-Range {content_range!r}") from None
            size_value = int(size) if size.isdigit() else total
            if first != have or (total is not None and size_value != total):
                return None
            return have, size_value, new_validator or validator
        length = response.headers.get("Content-Length")
        return 0, int(length) if length and length.isdigit() else None, new_validator


def _local_path(url: str) -> Path | None:
    """The file a ``file://`` URL or a plain path names; None for a network URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("http", "https", "ftp", "sftp", "doi"):
        return None
    return Path(url).expanduser()


def _connection_problem(url: str, err: BaseException) -> str:
    """``cannot connect to HOST (reason)``, the reason without urllib3's wrappers and object addresses."""
    inner = err.args[0] if err.args else err
    reason = str(getattr(inner, "reason", None) or inner)
    if "object at 0x" in reason and ": " in reason:
        reason = reason.split(": ", 1)[1]
    reason = reason.rpartition("Failed to establish a new connection: ")[2]
    reason = reason.strip("()'")[:200]
    return f"cannot connect to {urlparse(url).netloc or url} ({reason})"
