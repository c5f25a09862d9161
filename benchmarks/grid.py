"""What the step benchmark times: the shapes, cells and trainers of the grid, the FLOP model, and the
parameters and data every contender of a row starts from."""
from dataclasses import dataclass

import numpy as np

import cbptt


@dataclass(frozen=True)
class Shape:
    name: str
    B: int
    T: int
    I: int
    H: int
    O: int

    def __str__(self):
        return f"{self.name} ({self.B}, {self.T}, {self.I}, {self.H}, {self.O})"


SHAPES = [
    Shape("small", 1, 100, 8, 32, 1),
    Shape("medium", 16, 100, 32, 128, 8),
    Shape("large", 64, 50, 128, 512, 32),
    Shape("long", 8, 1000, 16, 64, 4),
]
CELLS = ["tanh", "lstm", "gru"]
GATES = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3}
# Trainer names as used on the command line and in the tables -> the cbptt class.
TRAINERS = {"many-to-many": "ManyToMany", "many-to-one": "ManyToOne", "truncated": "Truncated"}
TRUNCATED_K = 25                 # cbptt.Truncated(k1=k2=25): torch's "detach every 25 steps"
TRUNCATED_SHAPES = ("long",)     # truncated BPTT only makes sense on the long stream
LOSS = "mse"
LR = 0.01
NUM_LAYERS = 1


@dataclass(frozen=True)
class Case:
    """One row of the grid: a shape, a cell, a trainer and a dtype."""
    shape: Shape
    cell: str
    trainer: str            # a key of TRAINERS
    dtype: type
    seed: int = 0

    @property
    def gates(self):
        return GATES[self.cell]

    def recurrent_rows(self):
        """Rows of the product cbptt runs once per time step, (B x H) @ (H x G*H)."""
        return self.shape.B

    def problem(self):
        return make_problem(self)

    def blocks(self):
        """(window steps, output steps) of every update in one step() call. One update over the
        whole sequence, except for truncated BPTT: ceil(T / k1) blocks, each recomputing a window
        of k2 steps (the block itself plus k2 - k1 earlier ones, in the steady state of a stream
        that continues across calls) and taking the loss on its own steps."""
        T = self.shape.T
        if self.trainer != "truncated":
            return [(T, T if self.trainer == "many-to-many" else 1)]
        k1 = k2 = TRUNCATED_K
        return [(min(T - s, k1) + (k2 - k1), min(T - s, k1)) for s in range(0, T, k1)]

    def flops(self):
        """FLOPs of one training step by the model of docs/MATHS.md: per update,
        forward = 2*B*T*(I + H)*G*H (per layer; layers above the first read H inputs) + 2*B*T_out*H*O,
        and an update counts 3 x forward. Truncated BPTT counts the forward of every window."""
        s, G = self.shape, self.gates
        total = 0
        for window, outputs in self.blocks():
            forward = sum(2 * s.B * window * ((s.I if l == 0 else s.H) + s.H) * G * s.H
                          for l in range(NUM_LAYERS))
            forward += 2 * s.B * outputs * s.H * s.O
            total += 3 * forward
        return total

    def backward_floor_bytes(self):
        """What a full-BPTT update must keep for the backward pass (docs/MATHS.md): per layer
        T*B*H elements (Elman: h), 5*T*B*H (GRU: r, z, n, hn + h), 6*T*B*H (LSTM: i, f, g, o, c + h),
        over the longest window of the step."""
        per_step = {"tanh": 1, "relu": 1, "gru": 5, "lstm": 6}[self.cell]
        window = max(w for w, _ in self.blocks())
        return per_step * window * self.shape.B * self.shape.H * NUM_LAYERS * np.dtype(self.dtype).itemsize


def cases(shapes, cells, trainers, dtype):
    """The rows: shapes x cells x trainers, with truncated BPTT only on TRUNCATED_SHAPES."""
    return [Case(shape, cell, trainer, dtype)
            for shape in shapes for cell in cells for trainer in trainers
            if trainer != "truncated" or shape.name in TRUNCATED_SHAPES]


def make_problem(case):
    """The initial parameters (torch state_dict keys plus head.*) and the data every contender of a
    row starts from: cbptt's own (PyTorch) initialisation, X and Y standard normal in the row's dtype."""
    s = case.shape
    params = cbptt.RNN(s.I, s.H, s.O, cell=case.cell, num_layers=NUM_LAYERS, dtype=case.dtype,
                       seed=case.seed).state_dict()
    rng = np.random.default_rng(case.seed)
    X = rng.normal(size=(s.B, s.T, s.I)).astype(case.dtype)
    y_shape = (s.B, s.O) if case.trainer == "many-to-one" else (s.B, s.T, s.O)
    Y = rng.normal(size=y_shape).astype(case.dtype)
    return params, X, Y


def build_cbptt(case, params):
    """The cbptt model of a row, holding ``params``, and its trainer (SGD, no momentum)."""
    s = case.shape
    model = cbptt.RNN(s.I, s.H, s.O, cell=case.cell, num_layers=NUM_LAYERS, dtype=case.dtype, seed=case.seed)
    model.load_state_dict(params)
    cls = getattr(cbptt, TRAINERS[case.trainer])
    kw = dict(loss=LOSS, optimizer=cbptt.SGD(lr=LR))
    if case.trainer == "truncated":
        kw.update(k1=TRUNCATED_K, k2=TRUNCATED_K)
    return model, cls(model, **kw)
