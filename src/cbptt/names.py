"""The names the API and the command accept, defined once for the Python side: cells, losses,
dtypes and optimisers. (The compiled engine maps cell and loss names to its own codes in
_engine.pyx; tests/api/test_model.py checks that both sides know the same names.)"""

CELLS = ("tanh", "relu", "lstm", "gru")     # Elman (tanh, relu), LSTM, GRU
LOSSES = ("mse", "cross_entropy")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("adam", "sgd")
