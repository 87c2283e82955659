"""``mmv vocab recover``: a model's word→row table found again from the word2vec file its embedding came from, and
such tables (tables of rows) stored with a model and used by the tokenizer.

The word2vec files are written by the tests in both formats, and the model's embedding is built from them with a
known answer: a shuffled subset of the vectors, normalised and scaled copies, all-zero rows, rows of no word, a near
miss below the cosine, a vector two words share and a vector two rows share. The recovered table is compared with
that answer row by row.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mmv
from mmv.cli.main import main as cli_main
from mmv.data.tokenizer import Tokenizer, Vocabulary
from mmv.data.vocab_recovery import embedding_matrix, recover_vocabulary

DIM, ROWS = 300, 1200


def make_word2vec() -> tuple[list[str], np.ndarray]:
    """Words (file order) and their float32 vectors, with the cases the recovery must tell apart."""
    rng = np.random.default_rng(7)
    special = ["</s>", "Paris", "apple", "Apple", "new_york", "U.S.", "café", "the", "twin1", "twin2", "tri1", "tri2",
               "zeroword", "London"]
    words = special[:1] + [f"w{i}" for i in range(2500)] + special[1:]
    vectors = rng.standard_normal((len(words), DIM)).astype(np.float32)
    index = {word: i for i, word in enumerate(words)}
    vectors[index["twin2"]] = vectors[index["twin1"]]  # two words, one vector
    vectors[index["tri2"]] = vectors[index["tri1"]]
    vectors[index["zeroword"]] = 0.0
    return words, vectors


WORDS, VECTORS = make_word2vec()
INDEX = {word: i for i, word in enumerate(WORDS)}


def make_matrix() -> tuple[np.ndarray, dict[int, str], dict[int, str]]:
    """The embedding ``[ROWS, DIM]``, the answer ``{row: word}`` and the kind of each answered row."""
    rng = np.random.default_rng(11)
    rows: list[tuple[np.ndarray, str | None, str | None]] = []  # (vector, word, kind)
    plain = [w for w in WORDS if w.startswith("w")]
    chosen = rng.permutation(len(plain))
    exact, normalised, scaled = chosen[:900], chosen[900:940], chosen[940:960]
    named = ["Paris", "apple", "Apple", "new_york", "U.S.", "café", "the", "</s>", "London"]
    rows += [(VECTORS[INDEX[plain[i]]], plain[i], "exact") for i in exact]
    rows += [(VECTORS[INDEX[w]], w, "exact") for w in named]
    rows += [(VECTORS[INDEX[plain[i]]] / np.linalg.norm(VECTORS[INDEX[plain[i]]]), plain[i], "scaled")
             for i in normalised]
    rows += [(VECTORS[INDEX[plain[i]]] * np.float32(2.5), plain[i], "scaled") for i in scaled]
    rows += [(VECTORS[INDEX["twin1"]], "twin1", "exact")]  # ambiguous: the first in the file wins
    rows += [(VECTORS[INDEX["tri1"]], "tri1", "exact"), (VECTORS[INDEX["tri1"]], "tri2", "exact")]
    near = VECTORS[INDEX[plain[chosen[960]]]] + 0.12 * rng.standard_normal(DIM).astype(np.float32)  # cosine ~0.993
    rows += [(near, None, None), (np.zeros(DIM, np.float32), None, None)]  # a near miss; zeros of a missing word
    while len(rows) < ROWS - 1:
        rows.append((rng.standard_normal(DIM).astype(np.float32), None, None))  # no word's vector
    order = rng.permutation(len(rows)) + 1  # row 0 stays the padding row
    matrix = np.zeros((ROWS, DIM), np.float32)
    answer, kinds = {}, {}
    tri_rows = sorted(int(order[i]) for i, (_, word, _) in enumerate(rows) if word in ("tri1", "tri2"))
    for i, (vector, word, kind) in enumerate(rows):
        matrix[order[i]] = vector
        if word in ("tri1", "tri2"):  # identical rows: the words take them in file order, row order
            word = "tri1" if int(order[i]) == tri_rows[0] else "tri2"
        if word is not None:
            answer[int(order[i])], kinds[int(order[i])] = word, kind
    return matrix, answer, kinds


MATRIX, ANSWER, KINDS = make_matrix()
EXACT = sum(kind == "exact" for kind in KINDS.values())  # 912: 900 plain words, 9 named, twin1, tri1, tri2
SCALED = sum(kind == "scaled" for kind in KINDS.values())  # 60: 40 normalised, 20 times 2.5


def write_binary(path: Path, words=WORDS, vectors=VECTORS, count: int | None = None) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(f"{len(words) if count is None else count} {vectors.shape[1]}\n".encode())
        for word, vector in zip(words, vectors):
            f.write(word.encode() + b" " + vector.astype("<f4").tobytes() + b"\n")
    return path


def write_text(path: Path, digits: str, header: bool = True, words=WORDS, vectors=VECTORS) -> Path:
    """``digits``: ``"%.9g"`` (float32 round trip: exact copies stay exact) or ``"%f"`` (the C tool's six decimals)."""
    lines = [f"{len(words)} {vectors.shape[1]}"] if header else []
    lines += [word + " " + " ".join(digits % v for v in vector) for word, vector in zip(words, vectors)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def expected_table() -> dict[str, int]:
    return {"<pad>": 0, **{word: row for row, word in sorted(ANSWER.items())}}


@pytest.mark.parametrize("layout", ["bin", "bin.gz", "txt_exact", "txt_c_tool", "txt_no_header"])
def test_recovered_table_matches_the_answer_row_by_row(tmp_path: Path, layout: str) -> None:
    if layout.startswith("bin"):
        path = write_binary(tmp_path / f"vectors.{layout}")
    else:
        path = write_text(tmp_path / "vectors.txt", "%f" if layout == "txt_c_tool" else "%.9g",
                          header=layout != "txt_no_header")
    result = recover_vocabulary(MATRIX, path, block_size=700, progress=False)  # several blocks
    found = {row: word for word, row in result.table.items() if word != "<pad>"}
    wrong = {row: (found.get(row), ANSWER.get(row)) for row in range(1, ROWS) if found.get(row) != ANSWER.get(row)}
    assert wrong == {}
    assert result.table == expected_table()
    rounded = layout == "txt_c_tool"  # six decimals: no row is bit-exact any more, all are found up to scale
    assert result.kind == {row: "scaled" if rounded else kind for row, kind in KINDS.items()}
    found = EXACT + SCALED
    assert result.counts() == {"rows": ROWS, "exact": 0 if rounded else EXACT, "scaled": found if rounded else SCALED,
                               "padding": 2, "ambiguous": 1, "not_found": ROWS - found - 2}
    assert result.words_left_out == 1 and result.words_read == len(WORDS)
    assert result.examples["ambiguous"][0] == {"row": result.table["twin1"], "chosen": ["twin1"],
                                               "others": ["twin2"]}
    for word, row in result.table.items():  # every mapping is a copy of the word's vector up to a positive scale
        if word != "<pad>":
            v, r = VECTORS[INDEX[word]].astype(np.float64), MATRIX[row].astype(np.float64)
            assert v @ r / np.linalg.norm(v) / np.linalg.norm(r) >= 0.9999


def test_wrong_dimension_and_truncated_files_are_refused(tmp_path: Path) -> None:
    small = write_binary(tmp_path / "small.bin", vectors=VECTORS[:, :200])
    with pytest.raises(ValueError, match=r"small\.bin: vectors have 200 dimensions, the model's word embedding 300"):
        recover_vocabulary(MATRIX, small, progress=False)
    full = write_binary(tmp_path / "full.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(full[:len(full) // 2])
    with pytest.raises(ValueError, match=rf"cut\.bin: truncated: the header announces {len(WORDS)} words, the file "
                                         r"ends in word \d+"):
        recover_vocabulary(MATRIX, tmp_path / "cut.bin", progress=False)
    packed = gzip.compress(full)
    (tmp_path / "cut.bin.gz").write_bytes(packed[:len(packed) // 2])
    with pytest.raises(ValueError, match=r"cut\.bin\.gz: truncated or corrupt compressed file"):
        recover_vocabulary(MATRIX, tmp_path / "cut.bin.gz", progress=False)
    text = write_text(tmp_path / "full.txt", "%.9g").read_text().splitlines()
    (tmp_path / "cut.txt").write_text("\n".join(text[:1000]) + "\n")
    with pytest.raises(ValueError, match=rf"cut\.txt: truncated: the header announces {len(WORDS)} words, the file "
                                         r"has 999"):
        recover_vocabulary(MATRIX, tmp_path / "cut.txt", progress=False)
    (tmp_path / "mid.txt").write_text("\n".join(text[:500]) + "\n" + text[500][:len(text[500]) // 2])
    with pytest.raises(ValueError, match=r"mid\.txt: line 501: \d+ values, expected 300"):
        recover_vocabulary(MATRIX, tmp_path / "mid.txt", progress=False)


def test_table_of_rows_tokenizes_as_documented(tmp_path: Path) -> None:
    vocab = Vocabulary.from_json(json.dumps({"<pad>": 0, "Paris": 7, "apple": 3, "Apple": 9, "new_york": 4,
                                             "café": 12, "US": 5, "Us": 2}))
    assert vocab.is_rows_table and vocab.pad_id == 0 and vocab.unk_id is None and vocab.max_id == 12
    tokenizer = Tokenizer(vocab, max_words=6)
    # Lower-cased text finds capitalised entries (of several, the lowest row: "us" -> "Us" at 2); unknown words
    # and stop words are left out; "new york" is two words, never the phrase "new_york".
    assert tokenizer.encode("The PARIS café, Apple and new york; us unknown").tolist() == [7, 12, 3, 2, 0, 0]
    assert tokenizer.decode([7, 12, 3, 0]) == ["Paris", "café", "apple"]
    assert Vocabulary.from_json(vocab.to_json()) == vocab and vocab != Vocabulary(["Paris", "apple"])
    padded_elsewhere = Vocabulary.from_rows({"<pad>": 40, "onion": 0})
    assert Tokenizer(padded_elsewhere, max_words=3).encode("onion soup").tolist() == [0, 40, 40]
    for bad, message in [({"a": 1}, "ids 0..N-1"), ({"<pad>": 0, "a": 1, "b": 1}, "both have row 1"),
                         ({"<pad>": 0, "a": -1}, "row number >= 0"), ({"<pad>": 0, "a b": 3}, "without whitespace")]:
        with pytest.raises(ValueError, match=message):
            Vocabulary.from_json(json.dumps(bad))
    with pytest.raises(ValueError, match="saved as .json"):
        vocab.save(tmp_path / "rows.txt")


@pytest.fixture
def released_like_model(tmp_path: Path) -> Path:
    """A small model whose word embedding is MATRIX (300-d, as the released ones), saved as a folder."""
    model = mmv.create_model("mmv_tiny_s3dg", text_backbone_args={"vocab_size": ROWS, "embedding_dim": DIM,
                                                                 "sentence_dim": 256})
    with torch.no_grad():
        model.text_backbone.embed.weight.copy_(torch.from_numpy(MATRIX))
    return mmv.save(model.eval(), tmp_path / "model")


def test_recover_command_stores_the_table_with_the_model(tmp_path, released_like_model, capsys) -> None:
    vectors = write_binary(tmp_path / "vectors.bin")
    out = tmp_path / "vocab.json"
    assert cli_main(["vocab", "recover", str(released_like_model), "--word2vec", str(vectors), "--out", str(out),
                     "--into", str(released_like_model)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: summary[k] for k in ("rows", "exact", "scaled", "padding", "ambiguous", "not_found")} == {
        "rows": ROWS, "exact": EXACT, "scaled": SCALED, "padding": 2, "ambiguous": 1,
        "not_found": ROWS - EXACT - SCALED - 2}
    # Reachable by the tokenizer: all but "new_york", "U.S.", "the", "</s>" and "Apple" (shadowed by "apple").
    assert summary["reachable"] == len(ANSWER) - 5
    assert json.loads(out.read_text(encoding="utf-8")) == expected_table()

    model = mmv.load(released_like_model)
    assert model.preprocess.text.vocabulary == Vocabulary.load(out) and model.preprocess.text.drop_unknown
    sentence = "The Paris café: w17, London and an unknownword!"
    ids = [expected_table()[w] for w in ("Paris", "café", "w17", "London") if w in expected_table()]
    ids += [0] * (16 - len(ids))
    with torch.no_grad():
        hand = torch.nn.functional.normalize(model.encode_text(torch.tensor([ids]), space="vt"), dim=-1)
    torch.testing.assert_close(mmv.embed_text(model, [sentence]), hand, rtol=1e-5, atol=1e-6)

    queries = tmp_path / "queries.txt"
    queries.write_text(sentence + "\n")
    assert cli_main(["embed", str(queries), "--model", str(released_like_model), "--modality", "text", "--space",
                     "vt", "--out", str(tmp_path / "emb"), "--no-progress"]) == 0
    from mmv.eval.embed import read_embeddings

    _, embedded = read_embeddings(tmp_path / "emb")  # as the model gives them: not normalised
    np.testing.assert_allclose(embedded / np.linalg.norm(embedded, axis=1, keepdims=True), hand.numpy(), rtol=1e-4,
                               atol=1e-5)

    # The same table given with --vocab to a model without one, and stored in a single .safetensors file.
    bare = mmv.save(mmv.load(released_like_model), tmp_path / "single.safetensors",
                    preprocess=mmv.Preprocess.released())
    torch.testing.assert_close(mmv.embed_text(mmv.load(bare), [sentence], vocab=out), hand, rtol=1e-5, atol=1e-6)
    from mmv.checkpoint import store_vocabulary

    store_vocabulary(bare, Vocabulary.load(out))
    assert mmv.load(bare).preprocess.text.vocabulary == Vocabulary.load(out)

    # A stored table that no longer matches its record is refused; one naming rows the model lacks, too.
    free_row = next(row for row in range(1, ROWS) if row not in ANSWER)
    (released_like_model / "vocab.json").write_text(json.dumps({**expected_table(), "Paris": free_row}))
    with pytest.raises(ValueError, match="vocab.json: the vocabulary does not match"):
        mmv.load(released_like_model)
    with pytest.raises(ValueError, match=f"names row {ROWS} but the model's word embedding has {ROWS} rows"):
        store_vocabulary(bare, Vocabulary.from_rows({"<pad>": 0, "far": ROWS}))


def test_recover_command_errors_are_one_line(tmp_path, released_like_model, capsys) -> None:
    small = write_binary(tmp_path / "small.bin", vectors=VECTORS[:, :100])
    cases = [  # with the exit status: 1 a file that cannot be used, 2 options that cannot be (docs/cli.md)
        (["recover", str(released_like_model), "--word2vec", str(small), "--out", str(tmp_path / "v.json")], 1),
        (["recover", str(released_like_model), "--out", str(tmp_path / "v.json")], 2),
        (["recover", str(released_like_model), "--word2vec", str(small), "--out", str(tmp_path / "v.txt")], 2),
        (["captions/", "--out", str(tmp_path / "v.txt"), "--word2vec", str(small)], 2),
    ]
    for args, status in cases:
        assert cli_main(["vocab", *args]) == status, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mmv vocab: error: "), (args, err)
    assert not (tmp_path / "v.json").exists()


def test_embedding_matrix_reads_every_kind_of_model(tmp_path, released_like_model) -> None:
    np.testing.assert_array_equal(embedding_matrix(released_like_model), MATRIX)
    single = mmv.save(mmv.load(released_like_model), tmp_path / "m.safetensors")
    np.testing.assert_array_equal(embedding_matrix(single), MATRIX)
    from official_params import make_official_params, tree_path
    from released_pickle import write_released_checkpoint

    params, state = make_official_params(tree_path("s3d"))
    pkl = write_released_checkpoint(params, state, tmp_path / "mmv_s3d.pkl")
    np.testing.assert_array_equal(embedding_matrix(pkl), params["text_audio_video/text_module/~/embed"]["embeddings"])


def test_eval_retrieval_uses_the_stored_table(tmp_path, capsys) -> None:
    """``mmv eval msrvtt`` without --vocab: text->video runs with the table stored by ``--into``, and gives what the
    same table given with --vocab gives."""
    from eval_fixtures import make_msrvtt

    root = make_msrvtt(tmp_path / "msrvtt", num_videos=4)  # captions "word0 word1", "word1 word2", ...
    rng = np.random.default_rng(3)
    words = [f"word{i}" for i in range(5)] + [f"other{i}" for i in range(20)]
    vectors = rng.standard_normal((len(words), DIM)).astype(np.float32)
    w2v = write_binary(tmp_path / "small.bin", words=words, vectors=vectors)
    model = mmv.create_model("mmv_tiny_s3dg", text_backbone_args={"vocab_size": 64, "embedding_dim": DIM,
                                                                 "sentence_dim": 256})
    matrix = rng.standard_normal((64, DIM)).astype(np.float32)
    matrix[0] = 0
    matrix[10:15] = vectors[:5]  # word0..word4 at rows 10..14
    with torch.no_grad():
        model.text_backbone.embed.weight.copy_(torch.from_numpy(matrix))
    folder = mmv.save(model.eval(), tmp_path / "model")
    table = tmp_path / "table.json"
    assert cli_main(["vocab", "recover", str(folder), "--word2vec", str(w2v), "--out", str(table),
                     "--into", str(folder)]) == 0
    assert json.loads(table.read_text()) == {"<pad>": 0, **{f"word{i}": 10 + i for i in range(5)}}
    flags = ["--data", str(root), "--directions", "text->video", "--frames", "4", "--fps", "10", "--min-resize", "32",
             "--crop", "32", "--windows", "1", "--no-progress", "--cache", "none"]
    assert cli_main(["eval", "msrvtt", "--model", str(folder), "--out", str(tmp_path / "stored"), *flags]) == 0
    assert "skipping" not in capsys.readouterr().out
    assert cli_main(["eval", "msrvtt", "--model", str(folder), "--out", str(tmp_path / "given"), "--vocab", str(table),
                     *flags]) == 0
    stored, given = (json.loads((tmp_path / run / "msrvtt.json").read_text()) for run in ("stored", "given"))
    assert stored["directions"]["text->video"]["num_queries"] == 4  # run, not skipped for want of a vocabulary
    assert stored["directions"] == given["directions"]
