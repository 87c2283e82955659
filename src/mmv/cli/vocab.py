"""``mmv vocab CORPUS... --out vocab.txt``: build the word vocabulary of the text network from a corpus;
``mmv vocab recover MODEL --word2vec FILE --out VOCAB.json``: recover a model's table from its word2vec file.

The two share one sub-command: a first argument ``recover`` selects recovery (a corpus folder of that name is given
as ``./recover``), so every existing ``mmv vocab CORPUS... --out FILE`` call keeps working unchanged.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from pathlib import Path
from typing import Any

from mmv.cli.common import UsageError, nothing_produced

logger = logging.getLogger("mmv.vocab")

DESCRIPTION = """\
Count the words of a text corpus and write the most frequent as a vocabulary: one word per line, line i holding
the word with id i (0 = <pad>, 1 = <unk>). Words are lower-cased, with punctuation and English stop words removed,
exactly as the tokenizer encodes narrations. MMV's released models use 65,536 entries (2^16).

CORPUS is any mix of files and folders (searched recursively; --no-recursive: only the files directly in them):
  .vtt .srt .csv .json   caption files ('.json' may hold many videos, as HowTo100M's raw_caption.json)
  .txt                   plain text, one sentence per line
In folders, the metadata files yt-dlp saves beside videos (NAME.info.json, NAME.live_chat.json) are left out.

Unreadable or malformed files are skipped, counted and reported. The last line printed is a JSON summary. A corpus
with no word in it writes nothing and exits with status 1.

Example:
  mmv vocab captions/ extra_sentences.txt --out vocab.txt --min-count 2

Recovering the word table of a model (the released ones never published theirs):
  mmv vocab recover MODEL --word2vec FILE --out VOCAB.json [--into MODEL_DIR]

MODEL is a model folder or .safetensors file, a released model's name (mmv_s3d, ...) or a released .pkl. Each row
of its frozen word embedding is matched with the word of FILE (word2vec binary .bin or text .txt/.vec, optionally
.gz; for the released models GoogleNews-vectors-negative300.bin.gz) whose vector it is: exact copies, then copies up
to scale (cosine >= --min-cosine). VOCAB.json is {word: row} for every row found, plus "<pad>": the all-zero row;
--vocab accepts it everywhere. --into stores it with the model, so text needs no --vocab (unknown words are left
out). Several words with the same vector: the first in FILE (the most frequent) takes the row. A file of another
vector size or a truncated file is refused."""



def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "vocab", help="build a word vocabulary from caption or text files, or recover a model's (vocab recover)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="mmv vocab CORPUS... --out FILE [--max-size N] [--min-count N] [--no-recursive] [--no-progress]\n"
              "       mmv vocab recover MODEL --word2vec FILE --out VOCAB.json [--into MODEL_DIR] [--min-cosine C]")
    parser.add_argument("corpus", metavar="CORPUS", nargs="+", help="caption/text files or folders")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="vocabulary to write (.txt: one word per line; .json: {word: id})")
    parser.add_argument("--max-size", type=int, default=None,
                        help="entries including <pad> and <unk> (default: 65536, as the released models)")
    parser.add_argument("--min-count", type=int, default=None,
                        help="leave out words seen fewer times (default: 1)")
    parser.add_argument("--no-recursive", action="store_true", help="do not look into sub-folders of CORPUS folders")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    recover = parser.add_argument_group("vocab recover")
    recover.add_argument("--word2vec", metavar="FILE", default=None,
                         help="the word2vec file the model's embedding was copied from (.bin, .txt, .vec, .gz)")
    recover.add_argument("--into", metavar="MODEL_DIR", default=None,
                         help="also store the recovered table with this model (a folder, .safetensors or a name)")
    recover.add_argument("--min-cosine", type=float, default=None,
                         help="least cosine of a copy up to scale (default: 0.9999)")
    parser.set_defaults(func=run)
    return parser


def corpus_files(inputs: list[str], *, recursive: bool = True, sidecars: list[Path] | None = None) -> list[Path]:
    """Caption and text files named by ``inputs`` (files as given, folders searched, sorted).

    yt-dlp's metadata files found in folders (``NAME.info.json``, ``NAME.live_chat.json``) are no captions: they are
    left out, and appended to ``sidecars`` when it is given. A file named explicitly is read whatever its name.
    """
    from mmv.data.files import CAPTION_EXTENSIONS, TEXT_EXTENSIONS, is_sidecar, scan_files

    found: list[Path] = []
    for given in inputs:
        files = scan_files(given, CAPTION_EXTENSIONS + TEXT_EXTENSIONS, recursive=recursive)
        if Path(given).is_dir():
            if sidecars is not None:
                sidecars += [path for path in files if is_sidecar(path)]
            files = [path for path in files if not is_sidecar(path)]
        found += files
    return list(dict.fromkeys(found))


def file_texts(path: Path) -> list[str]:
    """The sentences of one corpus file."""
    from mmv.data.narrations import read_howto100m_captions, read_narrations

    suffix = path.suffix.lower()
    if suffix == ".json":
        return [n.text for narrations in read_howto100m_captions(path).values() for n in narrations]
    if suffix == ".txt":
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [n.text for n in read_narrations(path)]


def run(args: argparse.Namespace) -> int:
    if args.corpus[0] == "recover":
        return run_recover(args)
    given = [flag for flag, value in (("--word2vec", args.word2vec), ("--into", args.into),
                                      ("--min-cosine", args.min_cosine)) if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: only for 'mmv vocab recover MODEL ...'")
    return run_build(args)


def run_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmv.cli.common import check_output_file
    from mmv.data.narrations import NarrationError
    from mmv.data.tokenizer import count_words, vocabulary_from_counts

    args.max_size = 65536 if args.max_size is None else args.max_size
    args.min_count = 1 if args.min_count is None else args.min_count
    if args.max_size < 2 or args.min_count < 1:
        raise UsageError("--max-size must be >= 2 and --min-count >= 1")
    check_output_file(args.out)  # before the corpus is read, which can take long
    began = time.perf_counter()
    sidecars: list[Path] = []
    # NOTE: the output may sit in a corpus folder (a .txt): never count a previous vocabulary as text.
    files = [p for p in corpus_files(args.corpus, recursive=not args.no_recursive, sidecars=sidecars)
             if p.resolve() != Path(args.out).resolve()]
    failures: dict[str, list[str]] = collections.defaultdict(list)
    counts: collections.Counter[str] = collections.Counter()
    num_sentences = 0
    for path in tqdm(files, desc="reading", unit="file", disable=args.no_progress):
        try:
            texts = file_texts(path)
        except (NarrationError, OSError) as err:
            failures[type(err).__name__].append(str(path))
            logger.warning("skipped %s", err)
            continue
        counts.update(count_words(texts))
        num_sentences += len(texts)
    vocab = vocabulary_from_counts(counts, max_size=args.max_size, min_count=args.min_count)
    if counts:  # a vocabulary of <pad> and <unk> alone is of no use: nothing is written
        vocab.save(args.out)
    covered = sum(count for word, count in counts.items() if word in vocab)
    total = sum(counts.values())
    summary = {
        "out": args.out if counts else None, "files": len(files), "failed": sum(len(p) for p in failures.values()),
        "failures": dict(sorted(failures.items())), "sidecars_left_out": len(sidecars), "sentences": num_sentences,
        "words": total, "distinct_words": len(counts), "vocabulary_size": len(vocab) if counts else 0,
        "token_coverage": round(covered / total, 4) if total else None,
        "seconds": round(time.perf_counter() - began, 2),
    }
    left_out = f", {len(sidecars)} yt-dlp metadata files left out" if sidecars else ""
    if counts:
        print(f"{len(vocab)} entries written to {args.out} from {num_sentences} sentences in {len(files)} files "
              f"({summary['failed']} skipped{left_out}); {len(counts)} distinct words, the vocabulary covers "
              f"{100 * (summary['token_coverage'] or 0):.1f}% of {total} word occurrences")
    print(json.dumps(summary))
    if not counts:
        return nothing_produced("vocab", f"no word in {num_sentences} sentences of {len(files)} files "
                                         f"({summary['failed']} unreadable{left_out}); nothing written")
    return 0


def run_recover(args: argparse.Namespace) -> int:
    """``mmv vocab recover MODEL --word2vec FILE --out VOCAB.json [--into MODEL_DIR]``."""
    from mmv.data.vocab_recovery import DEFAULT_MIN_COSINE, embedding_matrix, recover_vocabulary

    from mmv.cli.common import check_input_file, check_output_file

    if len(args.corpus) != 2:
        raise UsageError("usage: mmv vocab recover MODEL --word2vec FILE --out VOCAB.json (one MODEL)")
    if args.word2vec is None:
        raise UsageError("recover needs --word2vec FILE, the word2vec file the model's embedding came from")
    wrong = [flag for flag, value in (("--max-size", args.max_size), ("--min-count", args.min_count))
             if value is not None] + ["--no-recursive"] * args.no_recursive
    if wrong:
        raise UsageError(f"{', '.join(wrong)}: only for building a vocabulary from a corpus")
    if Path(args.out).suffix.lower() != ".json":
        raise UsageError(f"--out {args.out}: a recovered table is written as .json ({{word: row}})")
    check_input_file(args.word2vec, "--word2vec")
    check_output_file(args.out)
    from mmv.checkpoint import model_path, read_description, store_vocabulary

    into = model_path(args.into) if args.into else None
    if into is not None:
        read_description(into)  # a wrong --into is reported now, not after the pass over the file
    model = args.corpus[1]
    matrix = embedding_matrix(model)
    result = recover_vocabulary(matrix, args.word2vec,
                                min_cosine=DEFAULT_MIN_COSINE if args.min_cosine is None else args.min_cosine,
                                progress=not args.no_progress)
    vocabulary = result.vocabulary()
    vocabulary.save(args.out)
    if into is not None:
        store_vocabulary(into, vocabulary)
    reachable = reachable_entries(vocabulary)
    counts = result.counts()
    summary = {"out": args.out, "model": model, "word2vec": args.word2vec, **counts,
               "words_left_out": result.words_left_out, "duplicate_rows": result.duplicate_rows,
               "pad_row": vocabulary.pad_id, "reachable": reachable, "words_read": result.words_read,
               "into": args.into, "examples": result.examples, "seconds": round(result.seconds, 2)}
    print(f"{counts['rows'] - counts['not_found']} of {counts['rows']} rows recovered from {args.word2vec}: "
          f"{counts['exact']} exact, {counts['scaled']} up to scale, {counts['padding']} all-zero (padding: row "
          f"{vocabulary.pad_id}), {counts['not_found']} not found; {counts['ambiguous']} ambiguous (the first word in "
          f"the file kept, {result.words_left_out} words left out). {reachable} of the {len(vocabulary) - 1} words "
          f"can come out of the tokenizer (the others are phrases joined by '_', punctuation, stop words or "
          f"shadowed case variants). Wrote {args.out}" + (f" and stored it with {args.into}" if args.into else ""))
    print(json.dumps(summary))
    return 0


def reachable_entries(vocabulary: Any) -> int:
    """Words of a table of rows that some text tokenises to: the tokenizer lower-cases, splits on anything but
    letters, digits and inner apostrophes (so never yields a phrase joined by '_') and drops stop words."""
    from mmv.data.tokenizer import split_words

    count = 0
    for word in vocabulary.words:
        lower = word.lower()
        count += word != "<pad>" and split_words(lower) == [lower] and vocabulary.id(lower) == vocabulary.id(word)
    return count
