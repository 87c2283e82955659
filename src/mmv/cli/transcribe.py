"""``mmv transcribe DIR``: timed WebVTT narrations for videos without text, by speech recognition."""
from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from pathlib import Path

logger = logging.getLogger("mmv.transcribe")

DESCRIPTION = """\
Write narrations for every video or audio file in DIR by automatic speech recognition, as MMV's HowTo100M text
is YouTube's ASR: lines of a few seconds with their times. Each FILE.EXT gets FILE.vtt beside it (WebVTT), which
'mmv prepare', the datasets and 'mmv vocab' read.

Backends:
  pocketsphinx  (default) offline, English, no download; needs 'pip install mmv[asr]'. Fast to set up, far less
                accurate than modern recognisers. --model/--lm/--dict select another language's model files.
  whisper       a Whisper model through faster-whisper or openai-whisper, whichever is installed. --model is a
                local model: a CTranslate2 folder or a cached name (faster-whisper), a .pt checkpoint or a cached
                name (openai-whisper). Nothing is downloaded.

Files that already have a .vtt are skipped unless --overwrite. A file that cannot be read (corrupt, no audio track)
is counted by reason and reported at the end; it never stops the run. The last line printed is a JSON summary.

Example:
  mmv transcribe videos/ --backend whisper --model ~/models/faster-whisper-small --language en"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "transcribe", help="write WebVTT narrations for videos by speech recognition", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", metavar="DIR", help="folder of video or audio files")
    parser.add_argument("--backend", choices=("pocketsphinx", "whisper"), default="pocketsphinx",
                        help="speech recogniser (default: pocketsphinx)")
    parser.add_argument("--model", metavar="PATH",
                        help="whisper: local model folder, checkpoint or cached name (required); pocketsphinx: "
                             "acoustic model folder (default: the wheel's US English model)")
    parser.add_argument("--lm", metavar="PATH", help="pocketsphinx: language model file")
    parser.add_argument("--dict", metavar="PATH", help="pocketsphinx: pronunciation dictionary")
    parser.add_argument("--language", help="whisper: language code such as 'en' (default: detected)")
    parser.add_argument("--recursive", action="store_true", help="also look into sub-folders")
    parser.add_argument("--overwrite", action="store_true", help="replace existing .vtt files")
    parser.set_defaults(func=run)
    return parser


def _backend_options(args: argparse.Namespace) -> dict:
    if args.backend == "whisper":
        if args.lm or args.dict:
            raise ValueError("--lm and --dict are options of the pocketsphinx backend")
        return {"model": args.model, "language": args.language}
    if args.language:
        raise ValueError("--language is an option of the whisper backend")
    return {"hmm": args.model, "lm": args.lm, "dict": args.dict}


def find_media(root: str, recursive: bool) -> list[Path]:
    """Media files under ``root`` (sorted), by extension."""
    from mmv.data.asr import MEDIA_EXTENSIONS

    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS
                  and not p.name.startswith("."))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmv.data.asr import get_backend, transcribe_file
    from mmv.data.media import MediaError
    from mmv.data.narrations import write_webvtt

    began = time.perf_counter()
    files = find_media(args.dir, args.recursive)
    backend = get_backend(args.backend, **_backend_options(args))
    counts: collections.Counter[str] = collections.Counter()
    failures: dict[str, list[str]] = collections.defaultdict(list)
    written_stems: set[Path] = set()
    num_narrations = 0
    for path in tqdm(files, desc="transcribe", unit="file"):
        out = path.with_suffix(".vtt")
        if out in written_stems:
            # NOTE: two files with the same stem (a.mp4, a.wav) map to one a.vtt; the first (sorted) wins.
            counts["skipped_same_stem"] += 1
            continue
        if out.exists() and not args.overwrite:
            counts["skipped_existing"] += 1
            continue
        try:
            narrations = transcribe_file(path, backend)
            write_webvtt(narrations, out)
        except MediaError as err:
            failures[err.reason].append(str(path))
            logger.warning("skipped %s", err)
            continue
        except (OSError, RuntimeError, ValueError) as err:  # a write error or a backend failure on this file
            failures[type(err).__name__].append(str(path))
            logger.warning("failed on %s: %s", path, err)
            continue
        written_stems.add(out)
        counts["transcribed"] += 1
        num_narrations += len(narrations)
    return _report(args, files, counts, failures, num_narrations, time.perf_counter() - began)


def _report(args: argparse.Namespace, files: list[Path], counts: collections.Counter[str],
            failures: dict[str, list[str]], num_narrations: int, seconds: float) -> int:
    num_failed = sum(len(paths) for paths in failures.values())
    print(f"{len(files)} media files in {args.dir}: {counts['transcribed']} transcribed ({num_narrations} lines), "
          f"{counts['skipped_existing']} already had a .vtt, {num_failed} failed; {seconds:.1f} s")
    for reason, paths in sorted(failures.items()):
        print(f"  {reason}: {len(paths)} (e.g. {paths[0]})")
    summary = {
        "dir": args.dir, "backend": args.backend, "files": len(files), "transcribed": counts["transcribed"],
        "narrations": num_narrations, "skipped_existing": counts["skipped_existing"],
        "skipped_same_stem": counts["skipped_same_stem"], "failed": num_failed,
        "failures": {reason: paths for reason, paths in sorted(failures.items())}, "seconds": round(seconds, 2),
    }
    print(json.dumps(summary))
    return 0
