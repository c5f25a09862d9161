"""What the rows of issue 19 time (models for classifying and tagging sequences): their shapes,
cells and trainers, the FLOP model, and the parameters and data every contender of a row starts
from. Three kinds of row, one training step each (forward, BPTT, one SGD update):

- ``bidirectional``: many-to-one on a bidirectional layer, the grid's medium and long shapes
  (grid.py), every cell, mse on (B, O) standard-normal targets; the head reads [the forward
  state after the last step, the reverse state after step 0] (torch's ``h_n[-2:]``), every
  sequence full length.
- ``embedding``: many-to-many on token ids through an embedding table (V, E), cross-entropy
  on a tag per step (O = 17: the size of the Universal Dependencies part-of-speech tag set).
- ``ids``: the character model, many-to-many next-character cross-entropy over V = 96
  characters, read as token ids by one contender and as one-hot floats by the other.
"""
from dataclasses import dataclass

import numpy as np

import cbptt

from .grid import GATES, LR

TAGS = 17                       # the embedding rows' O: a tagger's classes (UD's part-of-speech tags)


@dataclass(frozen=True)
class ClassifyShape:
    """B sequences of T steps, I inputs (the embedding rows: E, the table's width; the ids
    rows: V, the one-hot width), hidden size H, O outputs; V the vocabulary of token ids (0:
    float inputs)."""
    name: str
    kind: str               # "bidirectional", "embedding" or "ids"
    B: int
    T: int
    I: int
    H: int
    O: int
    V: int = 0

    def __str__(self):
        vocabulary = f", V {self.V}" if self.V else ""
        return f"{self.name} ({self.B}, {self.T}, {self.I}, {self.H}, {self.O}{vocabulary})"


CLASSIFY_SHAPES = [
    ClassifyShape("bidir-medium", "bidirectional", 16, 100, 32, 128, 8),     # grid.py's medium
    ClassifyShape("bidir-long", "bidirectional", 8, 1000, 16, 64, 4),        # grid.py's long
    ClassifyShape("embed", "embedding", 32, 50, 128, 256, TAGS, 10_000),
    ClassifyShape("ids", "ids", 32, 64, 96, 128, 96, 96),
    # --quick and the tests
    ClassifyShape("bidir-tiny", "bidirectional", 3, 5, 4, 6, 2),
    ClassifyShape("embed-tiny", "embedding", 3, 5, 4, 6, 5, 20),
    ClassifyShape("ids-tiny", "ids", 3, 5, 7, 6, 7, 7),
]
# --shapes names that stand for several shapes
SHAPE_GROUPS = {"bidir": ["bidir-medium", "bidir-long"]}
# kind -> (its trainer, its loss, its cells)
KINDS = {"bidirectional": ("many-to-one", "mse", ("tanh", "lstm", "gru")),
         "embedding": ("many-to-many", "cross_entropy", ("lstm", "gru")),
         "ids": ("many-to-many", "cross_entropy", ("lstm",))}
ROW_NAMES = {"bidirectional": "bidirectional many-to-one", "embedding": "embedding many-to-many",
             "ids": "ids many-to-many"}


@dataclass(frozen=True)
class ClassifyCase:
    """One row: a shape (which fixes the kind, trainer and loss), a cell and a dtype."""
    shape: ClassifyShape
    cell: str
    dtype: type
    seed: int = 0

    @property
    def kind(self):
        return self.shape.kind

    @property
    def trainer(self):
        return KINDS[self.kind][0]

    @property
    def loss(self):
        return KINDS[self.kind][1]

    @property
    def gates(self):
        return GATES[self.cell]

    def recurrent_rows(self):
        """Rows of the product run once per step and direction, (B x H) @ (H x G*H)."""
        return self.shape.B

    def flops(self):
        """FLOPs of one training step by the model of docs/MATHS.md: 3 x forward, forward =
        directions * 2*B*T*(I + H)*G*H + 2*B*T_out*width*O (width 2H bidirectional; T_out 1
        many-to-one). The ids rows count the one-hot input as a dense product (I = V), so both
        of their contenders are credited the same work; the embedding's lookup counts nothing."""
        s, G = self.shape, self.gates
        directions = 2 if self.kind == "bidirectional" else 1
        outputs = 1 if self.trainer == "many-to-one" else s.T
        forward = directions * 2 * s.B * s.T * (s.I + s.H) * G * s.H
        forward += 2 * s.B * outputs * directions * s.H * s.O
        return 3 * forward

    def problem(self):
        return make_problem(self)


def cases(shapes, cells, trainers, dtype):
    """The rows: shapes x the cells of each shape's kind, if its trainer is among ``trainers``."""
    return [ClassifyCase(shape, cell, dtype)
            for shape in shapes if KINDS[shape.kind][0] in trainers
            for cell in cells if cell in KINDS[shape.kind][2]]


def build_model(case, params=None):
    """The cbptt model of a row (holding ``params`` if given): bidirectional, with an
    embedding table, or reading V-wide inputs."""
    s = case.shape
    kw = dict(cell=case.cell, dtype=case.dtype, seed=case.seed)
    if case.kind == "bidirectional":
        kw.update(bidirectional=True)
    elif case.kind == "embedding":
        kw.update(vocab_size=s.V)
    model = cbptt.RNN(s.I, s.H, s.O, **kw)
    if params is not None:
        model.load_state_dict(params)
    return model


def make_problem(case):
    """(params, X, Y): the model's state_dict (cbptt's own, PyTorch-style, initialisation);
    bidirectional rows X (B, T, I) and Y (B, O) standard normal in the row's dtype; the others
    X int64 token ids (B, T) and Y int64 class ids (B, T)."""
    s = case.shape
    params = build_model(case).state_dict()
    rng = np.random.default_rng(case.seed)
    if case.kind == "bidirectional":
        X = rng.normal(size=(s.B, s.T, s.I)).astype(case.dtype)
        Y = rng.normal(size=(s.B, s.O)).astype(case.dtype)
    else:
        X = rng.integers(0, s.V, (s.B, s.T)).astype(np.int64)
        Y = rng.integers(0, s.O, (s.B, s.T)).astype(np.int64)
    return params, X, Y


def one_hot(X, case):
    """Token ids (B, T) as the one-hot floats (B, T, V) in the row's dtype."""
    return np.eye(case.shape.V, dtype=case.dtype)[X]


def build_cbptt(case, params):
    """The model of a row, holding ``params``, and its trainer (SGD lr 0.01, no momentum)."""
    model = build_model(case, params)
    cls = cbptt.ManyToOne if case.trainer == "many-to-one" else cbptt.ManyToMany
    return model, cls(model, loss=case.loss, optimizer=cbptt.SGD(lr=LR))
