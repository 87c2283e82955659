"""``mmv vocab CORPUS... --out vocab.txt``: build the word vocabulary of the text network from a corpus."""
from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from pathlib import Path

logger = logging.getLogger("mmv.vocab")

DESCRIPTION = """\
Count the words of a text corpus and write the most frequent as a vocabulary: one word per line, line i holding
the word with id i (0 = <pad>, 1 = <unk>). Words are lower-cased, with punctuation and English stop words removed,
exactly as the tokenizer encodes narrations. MMV's released models use 65,536 entries (2^16).

CORPUS is any mix of files and folders (searched recursively):
  .vtt .srt .csv .json   caption files ('.json' may hold many videos, as HowTo100M's raw_caption.json)
  .txt                   plain text, one sentence per line

Unreadable or malformed files are skipped, counted and reported. The last line printed is a JSON summary.

Example:
  mmv vocab captions/ extra_sentences.txt --out vocab.txt --min-count 2"""



def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "vocab", help="build a word vocabulary from caption or text files", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", metavar="CORPUS", nargs="+", help="caption/text files or folders")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="vocabulary to write (.txt: one word per line; .json: {word: id})")
    parser.add_argument("--max-size", type=int, default=65536,
                        help="entries including <pad> and <unk> (default: 65536, as the released models)")
    parser.add_argument("--min-count", type=int, default=1, help="leave out words seen fewer times (default: 1)")
    parser.set_defaults(func=run)
    return parser


def corpus_files(inputs: list[str]) -> list[Path]:
    """Caption and text files named by ``inputs`` (files as given, folders searched recursively, sorted)."""
    from mmv.data.files import CAPTION_EXTENSIONS, TEXT_EXTENSIONS, scan_files

    return scan_files(inputs, CAPTION_EXTENSIONS + TEXT_EXTENSIONS)


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
    from tqdm import tqdm

    from mmv.data.narrations import NarrationError
    from mmv.data.tokenizer import count_words, vocabulary_from_counts

    if args.max_size < 2 or args.min_count < 1:
        raise ValueError("--max-size must be >= 2 and --min-count >= 1")
    began = time.perf_counter()
    # NOTE: the output may sit in a corpus folder (a .txt): never count a previous vocabulary as text.
    files = [p for p in corpus_files(args.corpus) if p.resolve() != Path(args.out).resolve()]
    failures: dict[str, list[str]] = collections.defaultdict(list)
    counts: collections.Counter[str] = collections.Counter()
    num_sentences = 0
    for path in tqdm(files, desc="reading", unit="file"):
        try:
            texts = file_texts(path)
        except (NarrationError, OSError) as err:
            failures[type(err).__name__].append(str(path))
            logger.warning("skipped %s", err)
            continue
        counts.update(count_words(texts))
        num_sentences += len(texts)
    vocab = vocabulary_from_counts(counts, max_size=args.max_size, min_count=args.min_count)
    vocab.save(args.out)
    covered = sum(count for word, count in counts.items() if word in vocab)
    total = sum(counts.values())
    summary = {
        "out": args.out, "files": len(files), "failed": sum(len(p) for p in failures.values()),
        "failures": dict(sorted(failures.items())), "sentences": num_sentences, "words": total,
        "distinct_words": len(counts), "vocabulary_size": len(vocab),
        "token_coverage": round(covered / total, 4) if total else None,
        "seconds": round(time.perf_counter() - began, 2),
    }
    print(f"{len(vocab)} entries written to {args.out} from {num_sentences} sentences in {len(files)} files "
          f"({summary['failed']} skipped); {len(counts)} distinct words, the vocabulary covers "
          f"{100 * (summary['token_coverage'] or 0):.1f}% of {total} word occurrences")
    print(json.dumps(summary))
    return 0
