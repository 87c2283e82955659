"""Peak memory and time of reading HowTo100M's caption file: the index (mmv) against reading the file whole.

HowTo100M's ``raw_caption.json`` is one JSON object ``{video_id: {"start": [...], "end": [...], "text": [...]}}``
of 1.2M videos in several GB. This script writes a file of that shape (``--size-mb``, default 600 MB: 40 captions
and about 2 KB per video, text ASCII-escaped as ``json.dump`` writes it), then measures, each in
a fresh process (peak memory is the process's maximum resident set size):

* ``whole``         what ``read_howto100m_captions`` did before: decode the file, ``json.loads`` it, turn every
                    video's columns into narrations; then look up ``--lookups`` random videos.
* ``index: build``  ``HowTo100MCaptions(path)`` on a file without an index: one scan of the file (a 4 MB window
                    at a time) for each video's byte range, the index saved beside it; then the same lookups.
* ``index: open``   the same with the index already saved (every later run, every DataLoader worker).

Each row gives the peak, the peak above a bare interpreter with the same imports, the time to open the file and
the lookups per second; the ratios divide by the ``whole`` row of the same run. The looked-up narrations are
compared across the three readers (a checksum), so the rows measure readers that agree.

Examples::

    python benchmarks/bench_captions.py                    # 600 MB in a temporary folder
    python benchmarks/bench_captions.py --size-mb 2000 --dir /data/bench --json results/bench_captions.json
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import cpu_model  # benchmarks/machine.py (scripts run from their folder)

WORDS = ("so now we are going to cut the onions and then add some salt to the pan make sure it is hot enough before "
         "you put the butter in caf\u00e9 cr\u00e8me just like that okay let me show you how to fold the dough").split()
CAPTIONS_PER_VIDEO = 40
POOL = 512  # distinct entries; videos reuse them (parsing costs the same whatever the words)


# ----------------------------------------------------------------------------------------------------------------
# The test file
# ----------------------------------------------------------------------------------------------------------------

def _entries(seed: int = 0) -> list[str]:
    """``POOL`` serialised video entries of 40 captions of 2-4.5 s each (about 2 KB)."""
    rng = random.Random(seed)
    pool = []
    for _ in range(POOL):
        start, starts, ends, texts = rng.uniform(0, 5), [], [], []
        for _ in range(CAPTIONS_PER_VIDEO):
            length = rng.uniform(2.0, 4.5)
            starts.append(round(start, 2))
            ends.append(round(start + length, 2))
            texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))))
            start += length + rng.uniform(0.0, 1.0)
        pool.append(json.dumps({"start": starts, "end": ends, "text": texts}))  # ASCII-escaped, as json.dump writes
    return pool


def video_id(number: int) -> str:
    """An 11-character YouTube-like id."""
    return base64.urlsafe_b64encode(hashlib.blake2b(number.to_bytes(8, "little"), digest_size=9).digest()).decode()[:11]


def write_caption_file(path: Path, size_mb: float) -> int:
    """Writes ``{video_id: entry, ...}`` of at least ``size_mb`` MB (atomically); returns the number of videos."""
    pool = _entries()
    target = int(size_mb * 1e6)
    tmp = path.with_name(path.name + ".tmp")
    written, count = 1, 0
    with open(tmp, "w", encoding="ascii") as f:
        f.write("{")
        while written < target:
            parts = []
            for _ in range(2000):
                parts.append(f'{", " if count else ""}"{video_id(count)}": {pool[count % POOL]}')
                count += 1
            chunk = "".join(parts)
            f.write(chunk)
            written += len(chunk)
        f.write("}")
    os.replace(tmp, path)
    return count


# ----------------------------------------------------------------------------------------------------------------
# One measurement, in its own process
# ----------------------------------------------------------------------------------------------------------------

def _peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def measure(mode: str, path: Path, lookups: int, seed: int) -> dict:
    """Runs one reader in this process: its peak memory, open time, lookup rate and a checksum of what it read."""
    from mmv.data.narrations import HowTo100MCaptions, _columns_to_narrations, _read_text

    interpreter = _peak_mib()  # with the imports, before any reading
    began = time.perf_counter()
    if mode == "whole":
        data = json.loads(_read_text(path))
        captions = {video: sorted(_columns_to_narrations(entry, path, where=f"video {video!r}: "),
                                  key=lambda n: n.start) for video, entry in data.items()}
        del data
    else:
        index = path.with_name(path.name + ".index.npz")
        if mode == "build" and index.exists():
            index.unlink()
        captions = HowTo100MCaptions(path)
    opened = time.perf_counter() - began
    rng = random.Random(seed)
    chosen = [video_id(rng.randrange(len(captions))) for _ in range(lookups)]
    began = time.perf_counter()
    digest = hashlib.sha256()
    for video in chosen:
        for narration in captions[video]:
            digest.update(f"{narration.start}|{narration.end}|{narration.text}\n".encode())
    looked_up = time.perf_counter() - began
    return {"mode": mode, "peak_mib": _peak_mib(), "interpreter_mib": interpreter, "open_s": opened,
            "lookups": lookups, "lookups_per_s": lookups / max(looked_up, 1e-9), "videos": len(captions),
            "checksum": digest.hexdigest()}


def _run(mode: str, path: Path, lookups: int, seed: int) -> dict:
    output = subprocess.run([sys.executable, __file__, "--measure", mode, "--file", str(path), "--lookups",
                             str(lookups), "--seed", str(seed)], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=600.0, help="size of the generated file (default: 600)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the file is written, in a temporary folder removed at the end (default: /tmp)")
    parser.add_argument("--lookups", type=int, default=1000, help="random videos looked up per reader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--measure", choices=("whole", "build", "open"), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:  # the child process of one measurement
        print(json.dumps(measure(args.measure, args.file, args.lookups, args.seed)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "raw_caption.json"
        began = time.perf_counter()
        videos = write_caption_file(path, args.size_mb)
        generated = time.perf_counter() - began
        size_mb = path.stat().st_size / 1e6
        print(f"wrote {path.name}: {size_mb:.0f} MB, {videos} videos, in {generated:.1f} s; CPU: {cpu_model()}")
        rows = [_run(mode, path, args.lookups, args.seed) for mode in ("whole", "build", "open")]
    if len({row["checksum"] for row in rows}) != 1:
        print("the readers disagree on the looked-up narrations", file=sys.stderr)
        return 1
    whole = rows[0]
    names = {"whole": "whole (json.loads)", "build": "index: build", "open": "index: open"}
    print("\n| reader | peak MiB | above interpreter MiB | x whole (peak) | open s | lookups/s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        row["above_interpreter_mib"] = row["peak_mib"] - row["interpreter_mib"]
        row["peak_vs_whole"] = row["peak_mib"] / whole["peak_mib"]
        print(f"| {names[row['mode']]} | {row['peak_mib']:.0f} | {row['above_interpreter_mib']:.0f} | "
              f"{row['peak_vs_whole']:.3f} | {row['open_s']:.2f} | {row['lookups_per_s']:.0f} |")
    report = {"size_mb": size_mb, "videos": videos, "generate_s": generated, "cpu": cpu_model(), "results": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
