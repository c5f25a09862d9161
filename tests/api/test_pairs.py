"""cbptt.pairs: reading source<TAB>target files, the vocabularies, batches of strings as the
arrays a Seq2Seq takes, and id rows back to strings."""
import numpy as np
import pytest

import cbptt
from cbptt import pairs
from cbptt.pairs import PAD, START, STOP, Vocabulary


def test_vocabulary_reserves_pad_start_stop_then_sorted_characters():
    vocab = Vocabulary.of_texts(["ba", "c", ""])
    assert vocab.chars == "abc" and vocab.size == 6
    assert (PAD, START, STOP) == (0, 1, 2)
    assert vocab.ids("cab").tolist() == [5, 3, 4]
    assert vocab.ids("").dtype == np.int64 and vocab.ids("").shape == (0,)
    assert [vocab.name(i) for i in range(6)] == ["<pad>", "<start>", "<stop>", "a", "b", "c"]
    assert vocab == Vocabulary("abc") and vocab != Vocabulary("acb")


def test_unknown_characters_and_repeated_ones_are_refused():
    vocab = Vocabulary("ab")
    with pytest.raises(ValueError, match=r"source 'abz' holds 'z', which is not in the "
                                         r"vocabulary of 2 characters"):
        vocab.ids("abz", "source 'abz'")
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary("aba")
    with pytest.raises(TypeError, match="str"):
        Vocabulary(["a"])
    with pytest.raises(ValueError, match=r"sources\[1\] 'x'"):
        pairs.encode_sources(["a", "x"], vocab)


def test_sources_are_one_hot_with_stop_and_zero_padding():
    vocab = Vocabulary("ab")                       # a = 3, b = 4, size 5
    X, lengths = pairs.encode_sources(["ab", "", "b"], vocab, np.float64)
    assert X.dtype == np.float64 and X.shape == (3, 3, 5)
    assert lengths.tolist() == [3, 1, 2] and lengths.dtype == np.int64
    expected = np.zeros((3, 3, 5))
    for b, ids in enumerate([[3, 4, STOP], [STOP], [4, STOP]]):
        for t, i in enumerate(ids):
            expected[b, t, i] = 1
    np.testing.assert_array_equal(X, expected)
    X32, _ = pairs.encode_sources(["ab"], vocab)
    assert X32.dtype == np.float32
    with pytest.raises(TypeError, match="float32 or float64"):
        pairs.encode_sources(["ab"], vocab, np.int32)


def test_targets_are_start_shifted_inputs_and_stop_terminated_ids():
    vocab = Vocabulary("-0123456789")              # '-' = 3, '0' = 4, ..., '9' = 13
    Y_in, Y_out, lengths = pairs.encode_targets(["10", "7", ""], vocab, np.float32)
    assert lengths.tolist() == [3, 2, 1]
    np.testing.assert_array_equal(Y_out, [[5, 4, STOP], [11, STOP, PAD], [STOP, PAD, PAD]])
    assert Y_in.shape == (3, 3, 14) and Y_in.dtype == np.float32
    inputs = [[START, 5, 4], [START, 11], [START]]
    for b, ids in enumerate(inputs):
        assert np.argmax(Y_in[b, :len(ids)], axis=1).tolist() == ids
        assert Y_in[b].sum() == len(ids)           # one-hot rows, zero after the length
    # the decoder's input at u is its target at u - 1 (teacher forcing)
    np.testing.assert_array_equal(np.argmax(Y_in[0, 1:], 1), Y_out[0, :-1])


def test_decode_stops_at_stop_and_skips_pad_and_start():
    vocab = Vocabulary("xy")
    rows = np.array([[3, 4, STOP, 3, 3], [START, 4, PAD, 4, 4], [STOP, 3, 3, 3, 3]])
    assert pairs.decode(rows, vocab) == ["xy", "yyy", ""]
    with pytest.raises(ValueError, match=r"id 7 is outside the vocabulary \[0, 5\)"):
        vocab.text([3, 7])


def test_round_trip_through_targets():
    vocab = Vocabulary.of_texts(["1998-03-03", "2049-12-31"])
    texts = ["1998-03-03", "2049-12-31", "1"]
    _, Y_out, _ = pairs.encode_targets(texts, vocab)
    assert pairs.decode(Y_out, vocab) == texts


def test_read_pairs(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_bytes("3/3/98\t1998-03-03\r\n\nMarch 1, 2000\t2000-03-01\n\tempty source\n"
                     "é\t\n".encode("utf-8"))
    assert pairs.read_pairs(path) == [("3/3/98", "1998-03-03"),
                                      ("March 1, 2000", "2000-03-01"),
                                      ("", "empty source"), ("é", "")]


@pytest.mark.parametrize("content, message", [
    ("a\tb\nno tab here\n", r"p.tsv, line 2: expected source<TAB>target, got 0 tabs in "
                            r"'no tab here'"),
    ("a\tb\tc\n", r"p.tsv, line 1: expected source<TAB>target, got 2 tabs"),
    ("\n\n", "holds no source<TAB>target lines"),
    ("", "the file is empty"),
])
def test_malformed_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "p.tsv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        pairs.read_pairs(path)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        pairs.read_pairs(tmp_path / "missing.tsv")
    path = tmp_path / "latin.tsv"
    path.write_bytes(b"caf\xe9\tx\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        pairs.read_pairs(path)


def test_a_batch_trains_a_seq2seq_and_padding_changes_nothing():
    """The arrays are what Seq2Seq takes: a batch padded by a longer neighbour has the loss
    of the sequence alone."""
    src, tgt = Vocabulary("abc"), Vocabulary("xy")
    enc = cbptt.RNN(src.size, 5, None, cell="gru", dtype=np.float64, seed=0)
    dec = cbptt.RNN(tgt.size, 5, tgt.size, cell="gru", dtype=np.float64, seed=1)
    s2s = cbptt.Seq2Seq(enc, dec, loss="cross_entropy")
    X, src_len = pairs.encode_sources(["ab"], src, np.float64)
    Y_in, Y_out, tgt_len = pairs.encode_targets(["x"], tgt, np.float64)
    alone = s2s.loss_and_grad(X, Y_in, Y_out, src_len, tgt_len)[0]
    X, src_len = pairs.encode_sources(["ab", "cabca"], src, np.float64)
    Y_in, Y_out, tgt_len = pairs.encode_targets(["x", "yyxy"], tgt, np.float64)
    both = [s2s.loss_and_grad(X[i:i + 1], Y_in[i:i + 1], Y_out[i:i + 1], src_len[i:i + 1],
                              tgt_len[i:i + 1])[0] for i in range(2)]
    assert both[0] == pytest.approx(alone, rel=1e-12, abs=0)
    ids = s2s.generate(X, src_len, start=START, steps=6, stop_id=STOP)
    assert ids.shape == (2, 6)
    assert all(set(text) <= set("xy") for text in pairs.decode(ids, tgt))


def test_ids_are_the_one_hot_rows():
    vocab = pairs.Vocabulary.of_texts(["abc", "ca"])
    X, lengths = pairs.encode_sources(["ab", "c", ""], vocab, np.float64)
    ids, same = pairs.encode_sources(["ab", "c", ""], vocab, ids=True)
    np.testing.assert_array_equal(same, lengths)
    valid = np.arange(ids.shape[1]) < lengths[:, None]
    np.testing.assert_array_equal(np.eye(vocab.size)[ids][valid], X[valid])
    Y_in, Y_out, tgt = pairs.encode_targets(["ab", "c"], vocab)
    Y_ids, Y_out2, tgt2 = pairs.encode_targets(["ab", "c"], vocab, ids=True)
    valid = np.arange(Y_ids.shape[1]) < tgt[:, None]
    np.testing.assert_array_equal(np.eye(vocab.size)[Y_ids][valid], Y_in[valid])
    np.testing.assert_array_equal(Y_out2, Y_out)
