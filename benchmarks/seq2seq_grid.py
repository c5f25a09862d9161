"""What the seq2seq rows of the benchmark time: an encoder-decoder of one shape, per cell, one
training step (teacher forced, cross-entropy, SGD) and decoding (greedy and beam search), and the
parameters and data every contender of a row starts from.

The model: an encoder RNN(I, H, no head) whose state after the last source step is the initial
state of a decoder RNN(J, H, O) with a linear head; the loss is the mean cross-entropy over the
B * U targets (every sequence full length). Inputs are one-hot floats, as a user without token ids
would hand them: X (B, T, I) of random ids, Y_in (B, U, J) the one-hot of START followed by the
targets shifted right, Y_out (B, U) int64 ids.
"""
from dataclasses import dataclass

import numpy as np

import cbptt

from .grid import GATES, LR


@dataclass(frozen=True)
class Seq2SeqShape:
    """B sequences of T source steps (I inputs) to U target steps (J inputs, O outputs),
    hidden size H; generation emits N ids per sequence."""
    name: str
    B: int
    T: int
    U: int
    I: int
    J: int
    O: int
    H: int
    N: int

    def __str__(self):
        return f"{self.name} ({self.B}, {self.T}, {self.U}, {self.I}, {self.J}, {self.O}, {self.H})"


SEQ2SEQ_SHAPES = [
    Seq2SeqShape("s2s", 32, 30, 12, 64, 64, 64, 256, 12),       # issue 18's shape
    Seq2SeqShape("s2s-tiny", 4, 6, 4, 8, 8, 8, 16, 4),          # --quick and the smoke test
]
SEQ2SEQ_CELLS = ["lstm", "gru"]
# Row kinds (the "trainer" column): one training step, or one generate call of B sequences.
BEAM = 5
KINDS = {"seq2seq": 0, "greedy": 1, f"beam-{BEAM}": BEAM}       # name -> beam width (0: training)
LOSS = "cross_entropy"
START = 0                                                       # the start id fed to the decoder first


@dataclass(frozen=True)
class Seq2SeqCase:
    """One seq2seq row: a shape, a cell, a kind (training or decoding) and a dtype."""
    shape: Seq2SeqShape
    cell: str
    trainer: str            # a key of KINDS
    dtype: type
    seed: int = 0

    @property
    def gates(self):
        return GATES[self.cell]

    @property
    def beam(self):
        """0 for a training row, else the beam width (1: greedy)."""
        return KINDS[self.trainer]

    @property
    def sequences(self):
        """Sequences one step of the row handles (B)."""
        return self.shape.B

    def recurrent_rows(self):
        """Rows of the recurrent product (B x H) @ (H x G*H) per step: B*k while decoding a beam."""
        return self.shape.B * max(self.beam, 1)

    def flops(self):
        """FLOPs by the model of docs/MATHS.md (one-hot inputs counted as dense products).
        Training: 3 x (encoder forward + decoder forward), forward = 2*B*steps*(inputs + H)*G*H,
        plus the head's 2*B*U*H*O. Decoding: the encoder's forward, then N steps of the decoder
        and its head over B*k rows."""
        s, G = self.shape, self.gates
        encoder = 2 * s.B * s.T * (s.I + s.H) * G * s.H
        if not self.beam:
            decoder = 2 * s.B * s.U * ((s.J + s.H) * G * s.H + s.H * s.O)
            return 3 * (encoder + decoder)
        rows = s.B * self.beam
        return encoder + 2 * rows * s.N * ((s.J + s.H) * G * s.H + s.H * s.O)

    def problem(self):
        return make_problem(self)


def cases(shapes, cells, kinds, dtype):
    """The seq2seq rows: shapes x cells x kinds."""
    return [Seq2SeqCase(shape, cell, kind, dtype)
            for shape in shapes for cell in cells for kind in kinds]


def make_problem(case):
    """(params, X, Y_in, Y_out): params {"encoder": state_dict, "decoder": state_dict} from
    cbptt's own (PyTorch) initialisation; the one-hot data in the row's dtype."""
    s = case.shape
    encoder, decoder = build_halves(case)
    params = {"encoder": encoder.state_dict(), "decoder": decoder.state_dict()}
    rng = np.random.default_rng(case.seed)
    source = rng.integers(0, s.I, (s.B, s.T))
    Y_out = rng.integers(0, s.O, (s.B, s.U)).astype(np.int64)
    previous = np.concatenate([np.full((s.B, 1), START), Y_out[:, :-1]], axis=1)
    X = np.eye(s.I, dtype=case.dtype)[source]
    Y_in = np.eye(s.J, dtype=case.dtype)[previous]
    return params, X, Y_in, Y_out


def build_halves(case, params=None):
    """The encoder RNN(I, H, None) and decoder RNN(J, H, O) of a row, holding ``params`` if given."""
    s = case.shape
    encoder = cbptt.RNN(s.I, s.H, None, cell=case.cell, dtype=case.dtype, seed=case.seed)
    decoder = cbptt.RNN(s.J, s.H, s.O, cell=case.cell, dtype=case.dtype, seed=case.seed + 1)
    if params is not None:
        encoder.load_state_dict(params["encoder"])
        decoder.load_state_dict(params["decoder"])
    return encoder, decoder


def build_cbptt(case, params):
    """cbptt.Seq2Seq of the row's halves, SGD (lr 0.01, no momentum), cross-entropy."""
    encoder, decoder = build_halves(case, params)
    return cbptt.Seq2Seq(encoder, decoder, loss=LOSS, optimizer=cbptt.SGD(lr=LR))
