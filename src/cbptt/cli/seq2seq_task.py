"""What a ``--mode seq2seq`` run trains on: an encoder-decoder (``cbptt.Seq2Seq``) of a file of
``source<TAB>target`` lines, character level (``cbptt.pairs``): the pairs, their vocabularies,
the batches of an epoch (padded, with lengths), the trainer and the held-out metrics (exact
match of greedy outputs, per-character loss)."""
import numpy as np

from .. import data, pairs
from ..data import DataError
from ..model import RNN
from ..seq2seq import Seq2Seq
from .tasks import _Task


class Seq2SeqTask(_Task):
    """Source strings to target strings: the encoder reads each source (then STOP), the
    decoder starts from its state and is trained with teacher forcing (cross-entropy) to
    write the target then STOP. The held-out tail of the file (``--val``) is scored by the
    exact match of greedy outputs and the per-character loss (nats, STOP counted)."""

    kind = "seq2seq"
    metric = "val_exact_match"
    loss = "cross_entropy"

    def __init__(self, config):
        self.config = c = config
        all_pairs = pairs.read_pairs(c["data"])
        if "source_vocab" not in c:
            c["source_vocab"] = pairs.Vocabulary.of_texts(s for s, _ in all_pairs).chars
            c["target_vocab"] = pairs.Vocabulary.of_texts(t for _, t in all_pairs).chars
            c["max_target"] = max(len(t) for _, t in all_pairs)
        self.source_vocab = pairs.Vocabulary(c["source_vocab"])
        self.target_vocab = pairs.Vocabulary(c["target_vocab"])
        cut = data.holdout_start(len(all_pairs), c["val"])
        self.train, self.val = all_pairs[:cut], all_pairs[cut:]
        if not self.train:
            raise DataError(f"{c['data']}: no pairs left to train on ({len(all_pairs)} lines, "
                            f"--val {c['val']:g}); use a smaller --val")
        if c["val"] > 0 and not self.val:
            raise DataError(f"{c['data']}: --val {c['val']:g} of {len(all_pairs)} lines holds "
                            f"no pair out; use --val 0 or a larger --val")
        self.input_size = self.source_vocab.size
        self.output_size = self.target_vocab.size
        self.longest_source = max(len(s) for s, _ in all_pairs) + 1     # with its STOP
        self.longest_target = max(len(t) for _, t in all_pairs) + 1

    def describe(self):
        return (f"{len(self.train) + len(self.val)} pairs, source vocabulary "
                f"{len(self.source_vocab.chars)} characters, target vocabulary "
                f"{len(self.target_vocab.chars)} (+ pad, start, stop); sources up to "
                f"{self.longest_source - 1}, targets up to {self.longest_target - 1} "
                f"characters; {len(self.val)} held-out pairs")

    # -- the model ----------------------------------------------------------------------------
    def model_shapes(self, config):
        """(cell, layers, input size, hidden, output size) of the encoder and the decoder."""
        c = config
        return [(c["cell"], c["layers"], self.input_size, c["hidden"], 0),
                (c["cell"], c["layers"], self.output_size, c["hidden"], self.output_size)]

    def step_models(self, config, ranks=1):
        (encoder, decoder), batch = self.model_shapes(config), -(-config["batch"] // ranks)
        return [(encoder, batch, self.longest_source, True),
                (decoder, batch, self.longest_target, False)]

    def make_model(self, config, dtype):
        """The encoder (no head) and the decoder, seeded with seed and seed + 1."""
        c = config
        kw = dict(cell=c["cell"], num_layers=c["layers"], dtype=dtype,
                  dropout=c.get("dropout") or 0.0,
                  recurrent_dropout=c.get("recurrent_dropout") or 0.0)
        return (RNN(self.input_size, c["hidden"], None, seed=c["seed"], **kw),
                RNN(self.output_size, c["hidden"], self.output_size, seed=c["seed"] + 1,
                    **kw))

    def make_trainer(self, model, optimizer, clip):
        return Seq2Seq(*model, loss=self.loss, optimizer=optimizer, clip_norm=clip,
                       seed=self.config["seed"], memory_limit=self.config.get("memory_limit"))

    def trained_model(self, model, trainer):
        return trainer          # a checkpoint holds the Seq2Seq (both halves)

    # -- batches ------------------------------------------------------------------------------
    @property
    def sequences(self):
        return len(self.train)

    def fit_data(self):
        """(arrays, keyword arrays) that ``fit`` trains on: the training pairs as (X, Y_in,
        Y_out) token ids padded to the longest source and target, and their lengths. Token
        ids: the one-hot inputs are never made (the engine gathers W_ih's columns)."""
        X, src_lengths = pairs.encode_sources([s for s, _ in self.train], self.source_vocab,
                                              ids=True)
        Y_in, Y_out, tgt_lengths = pairs.encode_targets([t for _, t in self.train],
                                                        self.target_vocab, ids=True)
        return [X, Y_in, Y_out], {"src_lengths": src_lengths, "tgt_lengths": tgt_lengths}

    # -- held-out metrics ---------------------------------------------------------------------
    def translate(self, s2s, sources, beam=1):
        """Outputs for source strings (``max_target + 1`` decoding steps)."""
        return pairs.translate(s2s, sources, self.source_vocab, self.target_vocab,
                               self.config["max_target"] + 1, beam)

    def evaluate(self, s2s, chunk=256):
        """(held-out loss in nats per target character, STOP included; the fraction of
        held-out pairs whose greedy output is exactly the target)."""
        total, count = 0.0, 0
        for i in range(0, len(self.val), chunk):
            part = self.val[i:i + chunk]
            X, src_lengths = pairs.encode_sources([s for s, _ in part], self.source_vocab,
                                                  s2s.encoder.dtype, ids=True)
            Y_in, Y_out, tgt_lengths = pairs.encode_targets([t for _, t in part],
                                                            self.target_vocab,
                                                            s2s.encoder.dtype, ids=True)
            logp = data.log_softmax(s2s.predict(X, Y_in, src_lengths).astype(np.float64))
            picked = np.take_along_axis(logp, Y_out[..., None], axis=-1)[..., 0]
            valid = np.arange(Y_out.shape[1]) < tgt_lengths[:, None]
            total -= float(picked[valid].sum())
            count += int(tgt_lengths.sum())
        outputs = self.translate(s2s, [s for s, _ in self.val])
        exact = float(np.mean([out == t for out, (_, t) in zip(outputs, self.val)]))
        return total / count, exact

    def gradient_flow(self, model):
        return None             # flow.csv holds a single model's gradient flow
