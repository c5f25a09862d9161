"""Character-level sequence pairs for an encoder-decoder (``cbptt.Seq2Seq``): a text file of
``source<TAB>target`` lines, a vocabulary per side, and batches of strings as arrays.

One vocabulary per side, not one shared: the encoder's input size I is the size of the source
alphabet and the decoder's J = O (``Seq2Seq.generate`` feeds each output back in, so the
decoder's input and output classes are one set) that of the target alphabet. Where the target
alphabet is much smaller than the source's (dates to ISO form: 14 classes against ~60) the
decoder's head and every decoding step stay small; where both sides share their characters
the two vocabularies are simply equal.

Every vocabulary reserves ``PAD`` (0), ``START`` (1) and ``STOP`` (2); the characters follow
from id 3, in the order given (``Vocabulary.of_texts``: sorted). A batch:

- sources: X (B, T, I) one-hot of each source followed by STOP (so an empty source is one
  step long), ``src_lengths`` = len(source) + 1, T the longest; rows after a length are 0;
- targets: Y_in (B, U, J) one-hot of START + target (the decoder's inputs, teacher forced),
  Y_out (B, U) ids of target + STOP, ``tgt_lengths`` = len(target) + 1, U the longest; Y_out
  is PAD after a length (the loss ignores it: ``tgt_lengths``).
"""
import numpy as np

from ._checks import check_dtype
from .data import DataError, read_text

PAD, START, STOP = 0, 1, 2
RESERVED = 3
_RESERVED_NAMES = ("<pad>", "<start>", "<stop>")

__all__ = ["PAD", "START", "STOP", "RESERVED", "Vocabulary", "read_pairs", "encode_sources",
           "encode_targets", "decode", "translate"]


class Vocabulary:
    """The classes of one side: the reserved PAD, START, STOP (ids 0-2), then ``chars``
    (distinct characters, ids 3, 4, ...). ``size`` = len(chars) + 3."""

    def __init__(self, chars):
        if not isinstance(chars, str):
            raise TypeError(f"chars must be a str of distinct characters, got "
                            f"{type(chars).__name__}")
        if len(set(chars)) != len(chars):
            raise ValueError(f"chars must be distinct characters, got {chars!r}")
        self.chars = chars
        self._ids = {ch: RESERVED + i for i, ch in enumerate(chars)}

    @classmethod
    def of_texts(cls, texts):
        """The vocabulary of the sorted distinct characters of ``texts`` (strings)."""
        return cls("".join(sorted(set().union(*map(set, texts)))))

    @property
    def size(self):
        return RESERVED + len(self.chars)

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and other.chars == self.chars

    def __repr__(self):
        return f"Vocabulary({self.chars!r})"

    def ids(self, text, what="text"):
        """The ids (int64, len(text),) of the characters of ``text``; ValueError naming
        ``what`` and the first character outside the vocabulary."""
        try:
            return np.fromiter((self._ids[ch] for ch in text), np.int64, len(text))
        except KeyError as exc:
            raise DataError(f"{what} holds {exc.args[0]!r}, which is not in the vocabulary of "
                            f"{len(self.chars)} characters") from None

    def text(self, ids):
        """The characters of ``ids`` up to the first STOP (exclusive); PAD and START are
        skipped; ValueError for an id outside [0, size)."""
        out = []
        for i in ids:
            i = int(i)
            if i == STOP:
                break
            if not 0 <= i < self.size:
                raise ValueError(f"id {i} is outside the vocabulary [0, {self.size})")
            if i >= RESERVED:
                out.append(self.chars[i - RESERVED])
        return "".join(out)

    def name(self, i):
        """A class's readable name: its character, or <pad>, <start>, <stop>."""
        return _RESERVED_NAMES[i] if i < RESERVED else self.chars[i - RESERVED]


def read_pairs(path):
    """The (source, target) pairs of a UTF-8 text file of ``source<TAB>target`` lines, in
    file order. Empty lines are skipped, a line ending (LF or CRLF) is not part of the target;
    a line without exactly one TAB is a DataError (a ValueError) naming the file and line, as
    is a missing, empty or non-UTF-8 file."""
    text = read_text(path)
    pairs = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            shown = line if len(line) <= 40 else line[:37] + "..."
            raise DataError(f"{path}, line {number}: expected source<TAB>target, got "
                            f"{len(fields) - 1} tabs in {shown!r}")
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise DataError(f"{path} holds no source<TAB>target lines")
    return pairs


def _batch_ids(texts, vocab, what):
    """(ids (B, L) int64 padded with PAD, lengths (B,) int64) of each text + STOP."""
    rows = []
    for b, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what} must be strings, got {type(text).__name__} at {b}")
        rows.append(vocab.ids(text, f"{what}[{b}] {text!r}"))
    if not rows:
        raise ValueError(f"{what}: expected at least one string, got none")
    lengths = np.array([len(r) + 1 for r in rows], np.int64)
    ids = np.full((len(rows), int(lengths.max())), PAD, np.int64)
    for b, r in enumerate(rows):
        ids[b, :len(r)] = r
        ids[b, len(r)] = STOP
    return ids, lengths


def _one_hot(ids, lengths, size, dtype):
    """(B, L, size) one-hot of ids, zero rows after each length."""
    out = np.zeros(ids.shape + (size,), dtype)
    valid = np.arange(ids.shape[1]) < lengths[:, None]
    b, t = np.nonzero(valid)
    out[b, t, ids[b, t]] = 1
    return out


def encode_sources(texts, vocab, dtype=np.float32, ids=False):
    """The encoder's inputs of a batch of strings: (X (B, T, I), src_lengths (B,) int64),
    each source followed by STOP, T = the longest length, I = vocab.size; ids=True: X as
    token ids (B, T) (PAD after each length), which a Seq2Seq reads as the one-hot rows."""
    rows, lengths = _batch_ids(texts, vocab, "sources")
    dtype = check_dtype(dtype)
    return (rows if ids else _one_hot(rows, lengths, vocab.size, dtype)), lengths


def encode_targets(texts, vocab, dtype=np.float32, ids=False):
    """The decoder's side of a batch of strings: (Y_in (B, U, J) one-hot of START + target,
    Y_out (B, U) int64 ids of target + STOP (PAD after), tgt_lengths (B,) int64),
    U = the longest length + 1, J = vocab.size; ids=True: Y_in as token ids (B, U)."""
    out_ids, lengths = _batch_ids(texts, vocab, "targets")
    in_ids = np.concatenate([np.full((len(lengths), 1), START, np.int64), out_ids[:, :-1]], 1)
    dtype = check_dtype(dtype)
    return (in_ids if ids else _one_hot(in_ids, lengths, vocab.size, dtype)), out_ids, lengths


def decode(rows, vocab):
    """The strings of id rows (B, N) (``Seq2Seq.generate``'s output), each up to its first
    STOP."""
    return [vocab.text(row) for row in np.asarray(rows)]


def translate(s2s, texts, source_vocab, target_vocab, steps, beam=1, chunk=256):
    """The outputs of a cross-entropy ``Seq2Seq`` for source strings: ``steps`` decoding
    steps (room for the STOP) from START, greedy (beam=1) or beam search, ``chunk`` sources
    per call; a list of strings."""
    texts = list(texts)
    out = []
    for i in range(0, len(texts), chunk):
        X, lengths = encode_sources(texts[i:i + chunk], source_vocab, s2s.encoder.dtype,
                                    ids=True)
        ids = s2s.generate(X, lengths, start=START, steps=steps, stop_id=STOP, beam=beam)
        out += decode(ids, target_vocab)
    return out
