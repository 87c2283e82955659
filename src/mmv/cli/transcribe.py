"""``mmv transcribe PATH...``: timed WebVTT narrations for videos without text, by speech recognition."""
from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from mmv.cli.common import DeprecatedFlag, UsageError, nothing_produced

if TYPE_CHECKING:
    from mmv.data.asr import ASRBackend

logger = logging.getLogger("mmv.transcribe")

DESCRIPTION = """\
Write narrations for every video or audio file given, or found in the given folders (searched recursively;
--no-recursive: only the files directly in them), by automatic speech recognition, as MMV's HowTo100M text is
YouTube's ASR: lines of a few seconds with their times. Each FILE.EXT gets FILE.vtt beside it (WebVTT), which
'mmv prepare', the datasets and 'mmv vocab' read.

Backends:
  pocketsphinx  (default) offline, English, no download; needs 'pip install mmv[asr]'. Fast to set up, far less
                accurate than modern recognisers. --asr-model/--lm/--dict select another language's model files.
  whisper       a Whisper model through faster-whisper or openai-whisper, whichever is installed. --asr-model is
                a local model: a CTranslate2 folder or a cached name (faster-whisper), a .pt checkpoint or a cached
                name (openai-whisper). Nothing is downloaded.

Files that already have captions are skipped unless --overwrite: FILE.vtt, or a caption file with a language tag
as yt-dlp saves them (FILE.en.vtt, FILE.en-orig.vtt, FILE.en.srt) in the --language (default: en). A file that
cannot be read (corrupt, no audio track) is counted by reason and reported at the end; it never stops the run.
The last line printed is a JSON summary; a run in which no file could be transcribed exits with status 1.

Examples:
  mmv transcribe videos/ talk.mp4
  mmv transcribe videos/ --backend whisper --asr-model ~/models/faster-whisper-small --language en"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "transcribe", help="write WebVTT narrations for videos by speech recognition", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="video or audio files, or folders of them")
    parser.add_argument("--backend", choices=("pocketsphinx", "whisper"), default="pocketsphinx",
                        help="speech recogniser (default: pocketsphinx)")
    parser.add_argument("--asr-model", metavar="PATH",
                        help="whisper: local model folder, checkpoint or cached name (required); pocketsphinx: "
                             "acoustic model folder (default: the wheel's US English model)")
    # NOTE: --model is the MMV model in every other command; here it was the speech model.
    parser.add_argument("--model", dest="asr_model", metavar="PATH", action=DeprecatedFlag, new="--asr-model")
    parser.add_argument("--lm", metavar="PATH", help="pocketsphinx: language model file")
    parser.add_argument("--dict", metavar="PATH", help="pocketsphinx: pronunciation dictionary")
    parser.add_argument("--language", help="whisper: language code such as 'en' (default: detected); also the "
                        "language of existing captions that count (default: en)")
    parser.add_argument("--no-recursive", action="store_true", help="do not look into sub-folders of the given folders")
    # NOTE: sub-folders were searched only with --recursive before they were by default; it is still accepted.
    parser.add_argument("--recursive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--overwrite", action="store_true", help="transcribe files that already have captions too")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes transcribing in parallel, each with its own recogniser (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run, on_interrupt="every .vtt written so far is kept; run the same command again to "
                        "continue (files with captions are skipped)")
    return parser


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "whisper":
        if args.lm or args.dict:
            raise UsageError("--lm and --dict are options of the pocketsphinx backend")
        return {"model": args.asr_model, "language": args.language}
    if args.language:
        raise UsageError("--language is an option of the whisper backend")
    return {"hmm": args.asr_model, "lm": args.lm, "dict": args.dict}


def find_media(paths: str | list[str], recursive: bool = True) -> list[Path]:
    """Media files given, and those in the given folders (sorted per folder), by extension; like every command."""
    from mmv.data.files import MEDIA_EXTENSIONS, scan_files

    return scan_files(paths, MEDIA_EXTENSIONS, recursive=recursive)


def existing_captions(files: list[Path], language: str) -> set[Path]:
    """The files that already have captions beside them: FILE.vtt (what this command writes) or a caption file in
    ``language`` as yt-dlp names them (FILE.en.vtt, FILE.en-orig.vtt, FILE.en.srt), as the datasets pair them."""
    from mmv.data.files import CAPTION_EXTENSIONS, pair_captions, scan_files

    beside = scan_files(sorted({path.parent for path in files}), CAPTION_EXTENSIONS, recursive=False)
    paired, _ = pair_captions(files, beside, language=language)
    return set(paired)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmv.data.asr import get_backend

    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    options = _backend_options(args)
    began = time.perf_counter()
    files = find_media(args.paths, recursive=not args.no_recursive)
    todo, counts = _plan(files, args.overwrite, existing_captions(files, args.language or "en"))
    backend = get_backend(args.backend, **options)  # also checks engine and model before any worker starts
    if args.workers > 1 and len(todo) > 1:
        del backend
        outcomes = _run_parallel(todo, args.backend, options, args.workers)
    else:
        outcomes = (_transcribe_to_vtt(path, backend) for path in todo)
    failures: dict[str, list[str]] = collections.defaultdict(list)
    num_narrations, audio_seconds = 0, 0.0
    for path, reason, lines, seconds in tqdm(outcomes, total=len(todo), desc="transcribe", unit="file",
                                             disable=args.no_progress):
        if reason is not None:
            failures[reason].append(path)
            continue
        counts["transcribed"] += 1
        num_narrations += lines
        audio_seconds += seconds
    return _report(args, files, counts, failures, num_narrations, audio_seconds, time.perf_counter() - began)


def _plan(files: list[Path], overwrite: bool,
          captioned: set[Path]) -> tuple[list[Path], collections.Counter[str]]:
    """The files to transcribe, and counts of those skipped (``captioned``: the files that have captions)."""
    counts: collections.Counter[str] = collections.Counter()
    todo, outputs = [], set()
    for path in files:
        out = path.with_suffix(".vtt")
        if out in outputs:
            # NOTE: two files with the same stem (a.mp4, a.wav) map to one a.vtt; the first (sorted) wins.
            counts["skipped_same_stem"] += 1
        elif (out.exists() or path in captioned) and not overwrite:
            counts["skipped_existing"] += 1
        else:
            todo.append(path)
        outputs.add(out)
    return todo, counts


def _transcribe_to_vtt(path: Path, backend: ASRBackend) -> tuple[str, str | None, int, float]:
    """Transcribes one file and writes its .vtt; returns (path, failure reason or None, lines, audio seconds)."""
    from mmv.data.asr import ASR_SAMPLE_RATE
    from mmv.data.media import MediaError, decode_audio
    from mmv.data.narrations import write_webvtt

    try:
        waveform = decode_audio(path, sample_rate=ASR_SAMPLE_RATE)
        narrations = backend.transcribe(waveform, ASR_SAMPLE_RATE)
        write_webvtt(narrations, path.with_suffix(".vtt"))
    except MediaError as err:
        logger.warning("skipped %s", err)
        return str(path), err.reason, 0, 0.0
    except (OSError, RuntimeError, ValueError) as err:  # a write error or a backend failure on this file
        logger.warning("failed on %s: %s", path, err)
        return str(path), type(err).__name__, 0, 0.0
    return str(path), None, len(narrations), len(waveform) / ASR_SAMPLE_RATE


# One backend per worker process, made once by the pool's initializer (recognisers are slow to load).
_worker_backend: ASRBackend | None = None


def _init_worker(name: str, options: dict[str, Any]) -> None:
    global _worker_backend
    from mmv.data.asr import get_backend

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _worker_backend = get_backend(name, **options)


def _work(path: Path) -> tuple[str, str | None, int, float]:
    return _transcribe_to_vtt(path, _worker_backend)


def _run_parallel(todo: list[Path], name: str, options: dict[str, Any],
                  workers: int) -> Iterator[tuple[str, str | None, int, float]]:
    """Yields the outcomes of ``_transcribe_to_vtt`` from ``workers`` processes, in completion order."""
    import concurrent.futures
    import multiprocessing

    # NOTE: 'spawn', not fork: a forked copy of a process that has used FFmpeg's or a recogniser's threads can hang.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                                initargs=(name, options)) as pool:
        futures = [pool.submit(_work, path) for path in todo]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _report(args: argparse.Namespace, files: list[Path], counts: collections.Counter[str],
            failures: dict[str, list[str]], num_narrations: int, audio_seconds: float, seconds: float) -> int:
    num_failed = sum(len(paths) for paths in failures.values())
    print(f"{len(files)} media files: {counts['transcribed']} transcribed ({num_narrations} lines from "
          f"{audio_seconds:.0f} s of audio), {counts['skipped_existing']} already had captions, {num_failed} failed; "
          f"{seconds:.1f} s")
    for reason, paths in sorted(failures.items()):
        print(f"  {reason}: {len(paths)} (e.g. {paths[0]})")
    summary = {
        "paths": args.paths, "backend": args.backend, "files": len(files), "transcribed": counts["transcribed"],
        "narrations": num_narrations, "audio_seconds": round(audio_seconds, 2),
        "skipped_existing": counts["skipped_existing"],
        "skipped_same_stem": counts["skipped_same_stem"], "failed": num_failed,
        "failures": {reason: paths for reason, paths in sorted(failures.items())}, "seconds": round(seconds, 2),
    }
    print(json.dumps(summary))
    if num_failed and not counts["transcribed"] and not counts["skipped_existing"]:
        return nothing_produced("transcribe", f"none of the {num_failed} files could be transcribed (see the summary "
                                              "above)")
    return 0
