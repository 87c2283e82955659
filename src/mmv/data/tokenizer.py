"""Words to ids for MMV's text network: stop-word removal, a word vocabulary, 16 ids per sentence.

MMV's text input is a sentence as at most 16 word ids (paper fact sheet §1.5: stop words removed, truncated/padded to
16 words, 300-d word2vec vectors, a vocabulary of 2^16 = 65,536 words). The released models do not ship their word
vocabulary, so :func:`build_vocabulary` makes one from a corpus (``mmv vocab``) and
:func:`mmv.data.word_vectors.load_word_vectors` fills the embedding matrix from word2vec.

Id 0 is padding and id 1 stands for words not in the vocabulary. A table recovered from a model's embedding
(``mmv vocab recover``, :mod:`mmv.data.vocab_recovery`) is a *table of rows* instead
(:meth:`Vocabulary.from_rows`): each word's id is the row of the embedding that holds its vector, ``<pad>`` names
the all-zero row, and there is no ``<unk>``, so words not in it are left out.

Example:
    >>> vocab = build_vocabulary(["Cut the onions", "then fry the onions"])
    >>> tokenizer = Tokenizer(vocab, max_words=4)
    >>> tokenizer.words("Now, cut THE onions!")
    ['cut', 'onions']
    >>> tokenizer.encode("Now, cut THE onions!").tolist()
    [3, 2, 0, 0]
"""
from __future__ import annotations

import collections
import json
import logging
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from mmv.atomic import atomic_write_text

logger = logging.getLogger(__name__)

PAD_ID, UNK_ID = 0, 1
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
DEFAULT_MAX_WORDS = 16  # paper fact sheet §1.5
DEFAULT_VOCAB_SIZE = 65536  # 2^16, the released models' embedding size (paper fact sheet §1.5)

# The English stop-word list of NLTK (``nltk.corpus.stopwords.words("english")``, 179 words), written out so that
# tokenizing needs no NLTK download.
DEFAULT_STOP_WORDS: frozenset[str] = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his himself
she she's her hers herself it it's its itself they them their theirs themselves what which who whom this that that'll
these those am is are was were be been being have has had having do does did doing a an the and but if or because as
until while of at by for with about against between into through during before after above below to from up down in
out on off over under again further then once here there when where why how all any both each few more most other
some such no nor not only own same so than too very s t can will just don don't should should've now d ll m o re ve y
ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn
mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
""".split())

# A word: letters and digits, with apostrophes inside ("don't", "chef's"); everything else separates words.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def split_words(text: str, stop_words: Iterable[str] = DEFAULT_STOP_WORDS) -> list[str]:
    """Lower-cased words of ``text`` with punctuation and stop words removed.

    Text is NFKC-normalised and typographic apostrophes become ``'`` so that "don’t" and "don't" are the same word.
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    stop_words = stop_words if isinstance(stop_words, (set, frozenset)) else frozenset(stop_words)
    return [word for word in _WORD.findall(text) if word not in stop_words]


def _check_word(word: str) -> None:
    if not isinstance(word, str) or not word or any(ch.isspace() for ch in word):
        raise ValueError(f"invalid vocabulary word {word!r}: words must be non-empty without whitespace")


class Vocabulary:
    """A word-to-id table: id 0 is ``<pad>``, id 1 is ``<unk>``, then the words in the order given.

    A *table of rows* (:meth:`from_rows`, what ``mmv vocab recover`` writes) is the other kind: the ids are rows of a
    model's word embedding, not ``0..N-1``; ``<pad>`` names the padding row and there is no ``<unk>``, so
    :meth:`id` gives None for a word not in it and the tokenizer leaves such words out. A lower-case word that is
    not in such a table also finds its capitalised entries (``"paris"`` finds ``"Paris"``; of several, the lowest
    row), because the tokenizer lower-cases text while the word2vec file the table came from keeps case.

    Args:
        words: The vocabulary words (without the two special tokens), most frequent first by convention. Words must
            be non-empty, unique and free of whitespace.
    """

    def __init__(self, words: Iterable[str]) -> None:
        self._words = [PAD_TOKEN, UNK_TOKEN]
        for word in words:
            _check_word(word)
            self._words.append(word)
        self._ids = {word: index for index, word in enumerate(self._words)}
        if len(self._ids) != len(self._words):
            duplicates = [w for w, c in collections.Counter(self._words).items() if c > 1]
            raise ValueError(f"duplicate vocabulary words: {duplicates[:10]}")
        self._rows: dict[int, str] | None = None  # id -> word of a table of rows; None: ids are list positions
        self._folded: dict[str, int] = {}
        self._pad_id: int = PAD_ID

    @classmethod
    def from_rows(cls, rows: dict[str, int]) -> Vocabulary:
        """A table of rows: ``{word: row of the model's word embedding}``, with ``"<pad>": padding row``.

        Words keep their spelling (word2vec is case-sensitive); several words may not share a row, except that
        ``<pad>`` may share one with a word (a model without an all-zero row pads with id 0 whatever it holds).

        Raises:
            ValueError: ``<pad>`` missing, ``<unk>`` present, an id that is not an integer >= 0, an invalid word, or
                two words with the same row.
        """
        if PAD_TOKEN not in rows:
            raise ValueError(f"a table of rows needs {PAD_TOKEN!r} (the padding row)")
        if UNK_TOKEN in rows:
            raise ValueError(f"a table of rows has no {UNK_TOKEN!r}: words not in it are left out")
        owner: dict[int, str] = {}
        for word, row in rows.items():
            _check_word(word)
            if isinstance(row, bool) or not isinstance(row, int) or row < 0:
                raise ValueError(f"the id of {word!r} is {row!r}, expected a row number >= 0")
            if word != PAD_TOKEN:
                if row in owner:
                    raise ValueError(f"{owner[row]!r} and {word!r} both have row {row}")
                owner[row] = word
        self = cls.__new__(cls)
        self._pad_id = rows[PAD_TOKEN]
        # Entries by id, <pad> before a word that shares its row, so that `words` and the checksum are canonical.
        entries = sorted(rows.items(), key=lambda item: (item[1], item[0] != PAD_TOKEN))
        self._words = [word for word, _ in entries]
        self._ids = dict(entries)
        self._rows = {self._pad_id: PAD_TOKEN, **{row: word for row, word in owner.items() if row != self._pad_id}}
        self._folded = {}
        for word, row in entries:  # ascending rows: of several capitalised forms, the lowest row is found
            lower = word.lower()
            if lower != word and lower not in self._ids:
                self._folded.setdefault(lower, row)
        return self

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._words)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Vocabulary) and self.is_rows_table == other.is_rows_table
                and self._words == other._words and self._ids == other._ids)

    def __repr__(self) -> str:
        kind = "table of rows, " if self.is_rows_table else ""
        return f"Vocabulary({kind}{len(self)} entries: {self._words[2:7]}{'...' if len(self) > 7 else ''})"

    @property
    def words(self) -> list[str]:
        """All entries by id, the special tokens included."""
        return list(self._words)

    @property
    def is_rows_table(self) -> bool:
        """True for a table of rows (:meth:`from_rows`), False for ids ``0..N-1``."""
        return self._rows is not None

    @property
    def pad_id(self) -> int:
        """The id sentences are padded with (0, or a table of rows' ``<pad>`` row)."""
        return self._pad_id

    @property
    def unk_id(self) -> int | None:
        """The id of words not in the vocabulary; None for a table of rows (such words are left out)."""
        return None if self.is_rows_table else UNK_ID

    @property
    def max_id(self) -> int:
        """The largest id: the model's word embedding needs more rows than this."""
        return max(self._ids.values())

    def id(self, word: str) -> int | None:
        """The id of ``word``; ``UNK_ID`` when it is not in the vocabulary (None for a table of rows)."""
        index = self._ids.get(word)
        if index is None:
            index = self._folded.get(word) if self.is_rows_table else UNK_ID
        return index

    def word(self, index: int) -> str:
        """The word with id ``index``."""
        if self._rows is not None:
            if index not in self._rows:
                raise IndexError(f"no word has row {index} in this table")
            return self._rows[index]
        return self._words[index]

    def to_json(self) -> str:
        """The ``{word: id}`` JSON text of the vocabulary (what :meth:`save` writes to a ``.json`` file)."""
        return json.dumps(self._ids, ensure_ascii=False, indent=0)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary atomically: ``.json`` as ``{word: id}``, else one word per line (line i = id i).

        Raises:
            ValueError: A table of rows to a file that is not ``.json`` (its ids are not line numbers).
        """
        if Path(path).suffix.lower() == ".json":
            atomic_write_text(path, self.to_json() + "\n")
        elif self.is_rows_table:
            raise ValueError(f"{os.fspath(path)}: a table of rows is saved as .json (its ids are not line numbers)")
        else:
            atomic_write_text(path, "\n".join(self._words) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads a vocabulary written by :meth:`save`.

        A text file may also be a plain word list without the special tokens; its words then get ids from 2.

        Raises:
            FileNotFoundError: No such file.
            ValueError: Not a vocabulary file (the message names the file and the problem).
        """
        text = Path(path).read_text(encoding="utf-8-sig")
        try:
            if Path(path).suffix.lower() == ".json":
                return cls.from_json(text)
            return cls._from_lines(text.splitlines())
        except ValueError as err:
            raise ValueError(f"{os.fspath(path)}: not a vocabulary file: {err}") from None

    @classmethod
    def _from_lines(cls, lines: list[str]) -> Vocabulary:
        while lines and not lines[-1].strip():
            lines = lines[:-1]
        if lines[:2] == [PAD_TOKEN, UNK_TOKEN]:
            return cls(lines[2:])
        if PAD_TOKEN in lines or UNK_TOKEN in lines:
            raise ValueError(f"{PAD_TOKEN} and {UNK_TOKEN} must be the first two lines")
        return cls(lines)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        """A vocabulary from the JSON text :meth:`save` writes (``{word: id}``) or a JSON list of words.

        A ``{word: id}`` table with ``<pad>`` and without ``<unk>`` is a table of rows (:meth:`from_rows`); any other
        table must have the ids ``0..N-1`` with ``<pad>`` = 0 and ``<unk>`` = 1.

        Raises:
            ValueError: Not such a table.
        """
        try:
            table = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"invalid JSON ({err})") from None
        if isinstance(table, list):
            return cls._from_lines([str(word) for word in table])
        if isinstance(table, dict) and PAD_TOKEN in table and UNK_TOKEN not in table:
            return cls.from_rows(table)
        if not isinstance(table, dict) or sorted(table.values()) != list(range(len(table))):
            raise ValueError("expected {word: id} with ids 0..N-1")
        words = sorted(table, key=table.__getitem__)
        if words[:2] != [PAD_TOKEN, UNK_TOKEN]:
            raise ValueError(f"ids 0 and 1 must be {PAD_TOKEN} and {UNK_TOKEN}")
        return cls(words[2:])


def count_words(texts: Iterable[str], stop_words: Iterable[str] = DEFAULT_STOP_WORDS) -> collections.Counter[str]:
    """How many times each word occurs in ``texts`` (split with :func:`split_words`)."""
    stop_words = frozenset(stop_words)
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
        counts.update(split_words(text, stop_words))
    return counts


def vocabulary_from_counts(counts: collections.Counter[str] | dict[str, int], max_size: int = DEFAULT_VOCAB_SIZE,
                           min_count: int = 1) -> Vocabulary:
    """The ``max_size - 2`` most frequent words seen at least ``min_count`` times (ties in alphabetical order)."""
    if max_size < 2:
        raise ValueError(f"max_size must be >= 2 (the padding and unknown tokens), got {max_size}")
    ranked = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda item: (-item[1], item[0]))
    return Vocabulary(word for word, _ in ranked[:max_size - 2])


def build_vocabulary(texts: Iterable[str], max_size: int = DEFAULT_VOCAB_SIZE, min_count: int = 1,
                     stop_words: Iterable[str] = DEFAULT_STOP_WORDS) -> Vocabulary:
    """Counts the words of a corpus and keeps the most frequent.

    Args:
        texts: Sentences (e.g. narration texts); split with :func:`split_words`.
        max_size: Entries in the vocabulary, the two special tokens included (65,536 for the released models).
        min_count: Words seen fewer times are left out.
        stop_words: Words never counted (they are removed before encoding anyway).

    Returns:
        The vocabulary, most frequent word first; words equally frequent are in alphabetical order, so the result
        does not depend on the order of ``texts``.
    """
    return vocabulary_from_counts(count_words(texts, stop_words), max_size, min_count)


class Tokenizer:
    """Sentence to a fixed number of word ids.

    Args:
        vocab: The word-to-id table.
        max_words: Ids per sentence: longer sentences are truncated, shorter ones padded with 0.
        stop_words: Words removed before encoding.
        drop_unknown: Leave out words not in the vocabulary (as MIL-NCE's released tokenizer does) instead of
            encoding them as ``UNK_ID``.
    """

    def __init__(self, vocab: Vocabulary, max_words: int = DEFAULT_MAX_WORDS,
                 stop_words: Iterable[str] = DEFAULT_STOP_WORDS, drop_unknown: bool = False) -> None:
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}")
        self.vocab = vocab
        self.max_words = max_words
        self.stop_words = frozenset(stop_words)
        self.drop_unknown = drop_unknown

    def words(self, text: str) -> list[str]:
        """Lower-cased words of ``text``, punctuation and stop words removed."""
        return split_words(text, self.stop_words)

    def encode(self, text: str) -> np.ndarray:
        """``[max_words]`` int64 ids of ``text``, padded with the vocabulary's padding id (0)."""
        unknown = self.vocab.unk_id
        # A table of rows has no unknown id (None): its unknown words are always left out.
        ids = [index for index in map(self.vocab.id, self.words(text))
               if index is not None and not (self.drop_unknown and index == unknown)]
        out = np.full(self.max_words, self.vocab.pad_id, dtype=np.int64)
        ids = ids[:self.max_words]
        out[:len(ids)] = ids
        return out

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """``[N, max_words]`` int64 ids, one row per text (``[0, max_words]`` for no texts)."""
        out = np.full((len(texts), self.max_words), self.vocab.pad_id, dtype=np.int64)
        for row, text in enumerate(texts):
            out[row] = self.encode(text)
        return out

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """The words of an encoded sentence, padding left out (unknown words read as ``<unk>``)."""
        return [self.vocab.word(int(index)) for index in ids if int(index) != self.vocab.pad_id]
