"""Time and peak memory of ``mmv vocab recover`` (``mmv.data.vocab_recovery.recover_vocabulary``) on a generated
word2vec file, against the time to merely read the same file in the same run.

The file has ``--words`` random 300-d float32 vectors (words ``w0``, ``w1``, ...; every 50th a phrase ``a_b``) in
word2vec's binary format (or text, ``--format txt``), gzip-compressed with ``--gzip`` (as Google News is
distributed: ``GoogleNews-vectors-negative300.bin.gz``). The embedding to recover has ``--rows`` rows as the released
models' (65,536): row 0 all zero, 60,000 exact copies of vectors spread through the file, 3,000 normalised copies,
500 copies times 2.5, the rest random (no word). Each phase runs in its own process, so that its peak resident
set size is its own:

* ``read``     read (and decompress) the file in 1 MiB chunks (the baseline: what any pass over the file costs);
* ``parse``    :class:`mmv.data.word_vectors.VectorFile` blocks, nothing matched;
* ``gensim``   ``KeyedVectors.load_word2vec_format`` (when gensim is installed): the usual way to load the file;
* ``recover``  the whole recovery (hashing, lookups, projections, resolution); checked against the known answer.

Times are the best of ``--repeats`` runs; the file is read from the page cache after the first run (a cold read from
disk adds the same disk time to every phase). Ratios are against ``read``. The recovery's time grows linearly with
the words of the file and its memory with the rows of the embedding, so the printed extrapolation to Google News
(3,000,000 words) multiplies the per-word time.

Examples::

    python benchmarks/bench_vocab_recovery.py                      # 300,000 words, binary
    python benchmarks/bench_vocab_recovery.py --words 100000 --format txt
    python benchmarks/bench_vocab_recovery.py --gzip
    python benchmarks/bench_vocab_recovery.py --json results/bench_vocab_recovery.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import cpu_model  # benchmarks/machine.py (scripts run from their folder)

DIM = 300
GOOGLE_NEWS_WORDS = 3_000_000


def generate(folder: Path, words: int, rows: int, fmt: str, gzipped: bool) -> tuple[Path, Path, Path]:
    """The word2vec file, the embedding (.npy) and the answer (.json {row: word index}); cached by their sizes."""
    import gzip
    import shutil

    import numpy as np

    stem = folder / f"w2v_{words}_{rows}"
    path, matrix_path, answer_path = stem.with_suffix(f".{fmt}"), stem.with_suffix(".npy"), stem.with_suffix(".json")
    packed = path.with_name(path.name + ".gz")
    if path.exists() and matrix_path.exists() and answer_path.exists():
        if gzipped and not packed.exists():
            with open(path, "rb") as src, gzip.open(packed, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
        return (packed if gzipped else path), matrix_path, answer_path
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((words, DIM), dtype=np.float32)
    names = [f"w{i}" if i % 50 else f"w{i}_p{i}" for i in range(words)]
    with open(path, "wb") as f:
        f.write(f"{words} {DIM}\n".encode())
        for start in range(0, words, 10000):
            block = vectors[start:start + 10000]
            if fmt == "bin":
                f.write(b"".join(names[start + i].encode() + b" " + v.tobytes() + b"\n" for i, v in enumerate(block)))
            else:
                f.write("".join(names[start + i] + " " + " ".join(f"{x:.9g}" for x in v) + "\n"
                                for i, v in enumerate(block)).encode())
    picks = rng.choice(words, size=min(63500, words), replace=False)
    order = rng.permutation(rows - 1)[:len(picks)] + 1
    matrix = rng.standard_normal((rows, DIM), dtype=np.float32)
    matrix[0] = 0
    answer = {}
    for n, (row, index) in enumerate(zip(order.tolist(), picks.tolist())):
        vector = vectors[index]
        matrix[row] = vector if n < 60000 else (vector / np.linalg.norm(vector) if n < 63000 else vector * 2.5)
        answer[row] = index
    np.save(matrix_path, matrix)
    answer_path.write_text(json.dumps(answer))
    return generate(folder, words, rows, fmt, gzipped)


def child(phase: str, path: str, matrix_path: str, answer_path: str) -> dict:
    """One phase in this process: its time, and the peak RSS before and after it (MiB)."""
    import resource

    import numpy as np

    from mmv.data.vocab_recovery import DEFAULT_MIN_COSINE, _RowIndex, _stream
    from mmv.data.word_vectors import VectorFile

    matrix = np.load(matrix_path) if phase == "recover" else None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    began = time.perf_counter()
    out: dict = {}
    if phase == "read":
        import gzip

        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            while f.read(1 << 20):
                pass
    elif phase == "parse":
        with VectorFile(path) as vectors:
            out["words"] = sum(len(words) for words, _ in vectors.blocks())
    elif phase == "gensim":
        from gensim.models import KeyedVectors

        out["words"] = len(KeyedVectors.load_word2vec_format(path, binary=".bin" in path).index_to_key)
    else:
        # recover_vocabulary's three steps, timed apart: only the pass grows with the file.
        index = _RowIndex(matrix, DEFAULT_MIN_COSINE)
        indexed = time.perf_counter()
        with VectorFile(path) as vectors:
            words_read = _stream(vectors, index, 16384, progress=False)
        streamed = time.perf_counter()
        result = index.resolve(words_read)
        out["split_s"] = {"index": indexed - began, "pass": streamed - indexed,
                          "resolve": time.perf_counter() - streamed}
        answer = {int(row): index for row, index in json.loads(Path(answer_path).read_text()).items()}
        words = {f"w{i}" if i % 50 else f"w{i}_p{i}": i for i in answer.values()}
        wrong = sum(words.get(word) != answer.get(row) for word, row in result.table.items() if word != "<pad>")
        out |= {"counts": result.counts(), "wrong": wrong, "missed": len(answer) - len(result.kind)}
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"phase": phase, "seconds": seconds, "rss_before_mib": round(before, 1), "peak_rss_mib": round(peak, 1),
            **out}


def run_phase(phase: str, files: tuple[Path, Path, Path]) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_vocab_recovery as b; "
            f"print(json.dumps(b.child({phase!r}, *{tuple(map(str, files))!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=300_000)
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--format", choices=("bin", "txt"), default="bin")
    parser.add_argument("--gzip", action="store_true", help="read a .gz of the file (as Google News is distributed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the generated files go (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench_vocab_recovery."))
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    files = generate(folder, args.words, args.rows, args.format, args.gzip)
    size = files[0].stat().st_size
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); python {platform.python_version()}")
    print(f"file: {files[0]} ({args.words:,} words, {size / 2**20:.0f} MiB on disk, {args.format}); embedding "
          f"{args.rows:,} x {DIM}; generated in {time.perf_counter() - began:.1f} s")
    import importlib.util

    phases = ("read", "parse", *(("gensim",) if importlib.util.find_spec("gensim") else ()), "recover")
    results = {}
    for _ in range(args.repeats):
        for phase in phases:  # taking turns, so that other load on the machine hits all alike
            result = run_phase(phase, files)
            best = results.get(phase)
            if best is None or result["seconds"] < best["seconds"]:
                results[phase] = result
    read = results["read"]["seconds"]
    print(f"{'phase':<9} {'best s':>8} {'x read':>8} {'us/word':>8} {'peak RSS MiB':>13} {'rise MiB':>9}")
    for phase, r in results.items():
        print(f"{phase:<9} {r['seconds']:>8.2f} {r['seconds'] / read:>8.1f} {1e6 * r['seconds'] / args.words:>8.2f} "
              f"{r['peak_rss_mib']:>13.0f} {r['peak_rss_mib'] - r['rss_before_mib']:>9.0f}")
    recover = results["recover"]
    print(f"recovered: {recover['counts']}; wrong mappings: {recover['wrong']}; planted rows missed: "
          f"{recover['missed']}")
    split = recover["split_s"]
    print("recover split: " + ", ".join(f"{k} {v:.2f} s" for k, v in split.items()) + " (only the pass grows with "
          "the file)")
    scale = GOOGLE_NEWS_WORDS / args.words
    estimate = split["index"] + split["resolve"] + split["pass"] * scale
    parse = results["parse"]["seconds"]
    print(f"extrapolated to {GOOGLE_NEWS_WORDS:,} words (the pass x {scale:g}; memory set by the embedding): recovery "
          f"{estimate:.0f} s, reading alone {read * scale:.1f} s, parsing alone {parse * scale:.1f} s, peak RSS about "
          f"{recover['peak_rss_mib']:.0f} MiB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "words": args.words, "rows": args.rows,
                                               "format": args.format, "bytes": size, "results": results}, indent=2))


if __name__ == "__main__":
    main()
