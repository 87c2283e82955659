"""Tokenizer, vocabulary and word vectors (word2vec binary and text files written here by hand)."""
from __future__ import annotations

import gzip
import importlib.util
import json
import random
import struct

import numpy as np
import pytest

from mmv.data.tokenizer import (
    DEFAULT_STOP_WORDS,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    Vocabulary,
    build_vocabulary,
    split_words,
)
from mmv.data.word_vectors import load_word_vectors, read_word_vectors

HAS_GENSIM = importlib.util.find_spec("gensim") is not None

# ----------------------------------------------------------------------------------------------------- words


def test_split_words_lowercases_and_removes_punctuation_and_stop_words():
    assert split_words("Now, CUT the onions -- into 4 (four) pieces!!") == ["cut", "onions", "4", "four", "pieces"]
    assert split_words("Don’t over-mix; it's the chef's secret_sauce.") == ["mix", "chef's", "secret", "sauce"]
    assert split_words("Crème brûlée, ÉCLAIR") == ["crème", "brûlée", "éclair"]
    assert split_words("ﬁne ＡＢＣ") == ["fine", "abc"]  # NFKC: ligature and full-width letters
    assert split_words("") == [] and split_words("the of and") == []
    assert split_words("the cat", stop_words=()) == ["the", "cat"]


def test_stop_word_list_is_nltk_english():
    # NLTK's English list: 179 words, contractions included, numerals and content words not.
    assert len(DEFAULT_STOP_WORDS) == 179
    assert {"i", "the", "don't", "shouldn't", "ourselves", "y", "ma", "won"} <= DEFAULT_STOP_WORDS
    assert not {"one", "two", "cut", "cook", "never", "could", "would"} & DEFAULT_STOP_WORDS
    assert all(word == word.lower() and " " not in word for word in DEFAULT_STOP_WORDS)


# ----------------------------------------------------------------------------------------------------- vocabulary

CORPUS = ["Cut the onions.", "Then fry the ONIONS and the garlic!", "garlic, garlic", "add salt", "Add pepper"]


def test_build_vocabulary_frequency_order_ties_and_limits():
    # counts: garlic 3, onions 2, add 2, cut 1, fry 1, pepper 1, salt 1 ("then", "the", "and" are stop words)
    vocab = build_vocabulary(CORPUS)
    assert vocab.words == ["<pad>", "<unk>", "garlic", "add", "onions", "cut", "fry", "pepper", "salt"]
    assert build_vocabulary(CORPUS, min_count=2).words == ["<pad>", "<unk>", "garlic", "add", "onions"]
    assert build_vocabulary(CORPUS, max_size=4).words == ["<pad>", "<unk>", "garlic", "add"]
    shuffled = CORPUS[:]
    random.Random(1).shuffle(shuffled)
    assert build_vocabulary(shuffled) == vocab
    assert len(vocab) == 9 and "garlic" in vocab and "the" not in vocab and "<pad>" in vocab
    assert vocab.id("garlic") == 2 and vocab.id("nope") == UNK_ID and vocab.word(PAD_ID) == "<pad>"
    with pytest.raises(ValueError):
        build_vocabulary(CORPUS, max_size=1)


@pytest.mark.parametrize("name", ["vocab.txt", "vocab.json"])
def test_vocabulary_save_load_round_trip(tmp_path, name):
    vocab = build_vocabulary(CORPUS + ["naïve café"])
    path = tmp_path / name
    vocab.save(path)
    assert Vocabulary.load(path) == vocab
    assert [p.name for p in tmp_path.iterdir()] == [name]  # written through a temporary file, nothing left over
    if name.endswith(".txt"):
        assert path.read_text(encoding="utf-8").splitlines()[:3] == ["<pad>", "<unk>", "garlic"]
    else:
        assert json.loads(path.read_text(encoding="utf-8"))["garlic"] == 2


def test_vocabulary_load_plain_word_list_and_errors(tmp_path):
    (tmp_path / "words.txt").write_text("apple\nbanana\n\n", encoding="utf-8")
    assert Vocabulary.load(tmp_path / "words.txt").words == ["<pad>", "<unk>", "apple", "banana"]
    bad = {
        "dup.txt": "<pad>\n<unk>\napple\napple\n",
        "late_special.txt": "apple\n<pad>\n<unk>\n",
        "space.txt": "<pad>\n<unk>\ntwo words\n",
        "gap.json": json.dumps({"<pad>": 0, "<unk>": 1, "a": 3}),
        "order.json": json.dumps({"a": 0, "<pad>": 1, "<unk>": 2}),
        "broken.json": "{",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            Vocabulary.load(tmp_path / name)


# ----------------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_encode_pads_truncates_and_marks_unknown():
    vocab = build_vocabulary(CORPUS)
    tokenizer = Tokenizer(vocab)
    ids = tokenizer.encode("Cut the GARLIC, then add chili.")
    assert ids.dtype == np.int64 and ids.shape == (16,)
    assert ids.tolist() == [vocab.id("cut"), vocab.id("garlic"), vocab.id("add"), UNK_ID] + [PAD_ID] * 12
    assert tokenizer.decode(ids) == ["cut", "garlic", "add", "<unk>"]
    assert Tokenizer(vocab, drop_unknown=True).encode("chili garlic").tolist()[:2] == [vocab.id("garlic"), PAD_ID]
    long = " ".join(["garlic", "salt"] * 20)
    assert Tokenizer(vocab, max_words=5).encode(long).tolist() == [2, 8, 2, 8, 2]
    assert tokenizer.encode("the and of").tolist() == [PAD_ID] * 16


def test_encode_batch_stacks_encode():
    tokenizer = Tokenizer(build_vocabulary(CORPUS), max_words=6)
    texts = ["fry garlic", "", "salt pepper add cut onions garlic fry", "unknown words only"]
    batch = tokenizer.encode_batch(texts)
    assert batch.shape == (4, 6) and batch.dtype == np.int64
    np.testing.assert_array_equal(batch, np.stack([tokenizer.encode(t) for t in texts]))
    assert tokenizer.encode_batch([]).shape == (0, 6)


# ----------------------------------------------------------------------------------------------------- word vectors

FILE_WORDS = ["garlic", "Onions", "onions_x", "Salt", "salt", "pepper", "garlic", "café", "</s>", "<unk>"]


def _file_vectors(dim: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(len(FILE_WORDS), dim)).astype(np.float32)


def _write_binary(path, words, vectors, newline=True):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(f"{len(words)} {vectors.shape[1]}\n".encode())
        for word, vector in zip(words, vectors):
            f.write(word.encode("utf-8") + b" " + struct.pack(f"<{len(vector)}f", *vector))
            f.write(b"\n" if newline else b"")


def _write_text(path, words, vectors, header=True):
    lines = [f"{len(words)} {vectors.shape[1]}"] if header else []
    lines += [word + " " + " ".join(repr(float(v)) for v in vector) for word, vector in zip(words, vectors)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _expected(vocab, vectors):
    """The matrix the rules give: exact match, else first case-insensitive match, duplicates -> first."""
    rows = {"garlic": 0, "onions": 1, "salt": 4, "pepper": 5, "café": 7}
    matrix = np.zeros((len(vocab), vectors.shape[1]), np.float32)
    for word, row in rows.items():
        if word in vocab:
            matrix[vocab.id(word)] = vectors[row]
    return matrix


VOCAB = Vocabulary(["garlic", "onions", "salt", "pepper", "café", "chili"])


@pytest.mark.parametrize("backend", ["stream", pytest.param("gensim", marks=pytest.mark.skipif(
    not HAS_GENSIM, reason="gensim not installed (optional extra 'word2vec')"))])
@pytest.mark.parametrize("layout", ["bin", "bin_no_newline", "bin.gz", "txt", "txt_no_header", "vec"])
def test_word_vectors_formats(tmp_path, backend, layout):
    vectors = _file_vectors()
    if layout.startswith("bin"):
        path = tmp_path / ("v.bin.gz" if layout == "bin.gz" else "v.bin")
        _write_binary(path, FILE_WORDS, vectors, newline=layout != "bin_no_newline")
    else:
        path = tmp_path / ("v.vec" if layout == "vec" else "v.txt")
        _write_text(path, FILE_WORDS, vectors, header=layout != "txt_no_header")
    result = read_word_vectors(path, VOCAB, backend=backend)
    np.testing.assert_array_equal(result.matrix, _expected(VOCAB, vectors))
    assert result.matrix.dtype == np.float32 and result.matrix.shape == (len(VOCAB), 5)
    assert (result.num_found, result.num_words, result.missing) == (5, 6, ["chili"])
    assert result.coverage == pytest.approx(5 / 6)
    assert not result.matrix[PAD_ID].any() and not result.matrix[UNK_ID].any()  # the file's "<unk>" is not used


@pytest.mark.skipif(not HAS_GENSIM, reason="gensim not installed (optional extra 'word2vec')")
@pytest.mark.parametrize("suffix", [".bin", ".txt"])
def test_gensim_and_streaming_readers_agree_on_a_larger_file(tmp_path, suffix):
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(3000)] + ["Mixed", "MIXED", "mixed2", "Mixed2"]
    vectors = rng.normal(size=(len(words), 16)).astype(np.float32)
    path = tmp_path / f"big{suffix}"
    (_write_binary if suffix == ".bin" else _write_text)(path, words, vectors)
    vocab = Vocabulary([f"w{i}" for i in range(0, 4000, 7)] + ["mixed", "mixed2"])
    for missing in ("zeros", "random"):
        by_gensim = load_word_vectors(path, vocab, missing=missing, seed=3, backend="gensim")
        by_stream = load_word_vectors(path, vocab, missing=missing, seed=3, backend="stream")
        np.testing.assert_array_equal(by_gensim, by_stream)
    np.testing.assert_array_equal(by_stream[vocab.id("mixed")], vectors[words.index("Mixed")])
    np.testing.assert_array_equal(by_stream[vocab.id("w7")], vectors[7])


def test_missing_rows_random_is_seeded_and_scaled(tmp_path):
    vectors = _file_vectors(dim=64)
    path = tmp_path / "v.txt"
    _write_text(path, FILE_WORDS, vectors)
    a = load_word_vectors(path, VOCAB, missing="random", seed=0, backend="stream")
    b = load_word_vectors(path, VOCAB, missing="random", seed=0, backend="stream")
    c = load_word_vectors(path, VOCAB, missing="random", seed=1, backend="stream")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[VOCAB.id("chili")], c[VOCAB.id("chili")])
    assert not a[PAD_ID].any() and a[UNK_ID].any() and a[VOCAB.id("chili")].any()
    np.testing.assert_array_equal(a[VOCAB.id("garlic")], vectors[0])
    found_std = np.std(vectors[[0, 1, 4, 5, 7]])
    assert 0.5 * found_std < np.std(a[[UNK_ID, VOCAB.id("chili")]]) < 2 * found_std


def test_word_vector_errors(tmp_path):
    vectors = _file_vectors()
    _write_binary(tmp_path / "v.bin", FILE_WORDS, vectors)
    with pytest.raises(ValueError, match="5 dimensions, expected 300"):
        load_word_vectors(tmp_path / "v.bin", VOCAB, dim=300, backend="stream")
    data = (tmp_path / "v.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) - 30])
    with pytest.raises(ValueError, match=r"cut\.bin: truncated"):
        load_word_vectors(tmp_path / "cut.bin", VOCAB, backend="stream")
    (tmp_path / "bad.txt").write_text("2 3\ngarlic 1 2 3\nsalt 1 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.txt: line 3: 2 values, expected 3"):
        load_word_vectors(tmp_path / "bad.txt", VOCAB, backend="stream")
    (tmp_path / "nan.txt").write_text("garlic 1 2 x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"nan\.txt: line 1: a value is not a number"):
        load_word_vectors(tmp_path / "nan.txt", VOCAB, backend="stream")
    (tmp_path / "v.npy").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown word-vector format"):
        load_word_vectors(tmp_path / "v.npy", VOCAB)
    with pytest.raises(FileNotFoundError):
        load_word_vectors(tmp_path / "none.bin", VOCAB)


# ----------------------------------------------------------------------------------------------------- mmv vocab


def test_vocab_command_reads_every_corpus_format(tmp_path, capsys):
    from mmv.cli.main import main

    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.vtt").write_text("WEBVTT\n\n00:01.000 --> 00:02.000\nCut the onions\n", encoding="utf-8")
    (corpus / "b.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nfry the onions\n", encoding="utf-8")
    (corpus / "sub" / "c.csv").write_text("start,end,text\n0,1,garlic garlic\n", encoding="utf-8")
    (corpus / "sub" / "raw.json").write_text(json.dumps({"v1": {"start": [0], "end": [1], "text": ["add salt"]},
                                                         "v2": {"start": [0], "end": [1], "text": ["add garlic"]}}))
    (corpus / "bad.vtt").write_text("not a caption file", encoding="utf-8")
    (corpus / "ignored.md").write_text("words that are not read", encoding="utf-8")
    extra = tmp_path / "extra.txt"
    extra.write_text("Onions, garlic!\npepper\n", encoding="utf-8")
    out = corpus / "vocab.txt"  # inside the corpus: must not be read back as text on a second run
    for _ in range(2):
        assert main(["vocab", str(corpus), str(extra), "--out", str(out), "--min-count", "1"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (summary["files"], summary["failed"], summary["sentences"]) == (6, 1, 7)
    texts = ["Cut the onions", "fry the onions", "garlic garlic", "add salt", "add garlic", "Onions, garlic!", "pepper"]
    assert Vocabulary.load(out) == build_vocabulary(texts)
    assert summary["failures"] == {"NarrationError": [str(corpus / "bad.vtt")]}
    assert summary["token_coverage"] == 1.0 and summary["vocabulary_size"] == len(build_vocabulary(texts))
    assert main(["vocab", str(corpus), "--out", str(tmp_path / "small.txt"), "--max-size", "3"]) == 0
    assert Vocabulary.load(tmp_path / "small.txt").words == ["<pad>", "<unk>", "garlic"]
