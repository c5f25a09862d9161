"""Argument checking of the trainers and of model.predict.

Bad input must raise ValueError/TypeError naming the argument (and, for a shape, the shape that
was expected) before any weight or optimiser state moves. Odd but valid input (strided,
read-only, Fortran-ordered, lists, other dtypes) must give exactly what the plain C-contiguous
array of the model's dtype gives. Inputs are never written to.
"""
import re

import numpy as np
import pytest

import cbptt

I, H, O, L, B, T = 3, 4, 3, 2, 2, 5

CONFIGS = [("many_to_many", "mse"), ("many_to_many", "cross_entropy"),
           ("many_to_one", "mse"), ("many_to_one", "cross_entropy")]
CONFIG_IDS = ["m2m-mse", "m2m-ce", "m2o-mse", "m2o-ce"]


# -------------------------------------------------------------------------------------- helpers
def make_trainer(config, dtype=np.float64, cell="tanh"):
    kind, loss = config
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=L, dtype=dtype, seed=0)
    cls = cbptt.ManyToMany if kind == "many_to_many" else cbptt.ManyToOne
    return cls(model, loss=loss, optimizer=cbptt.SGD(lr=0.1, momentum=0.9))


def make_data(config, seed=0, dtype=np.float64):
    """Valid (X, Y, h0) for config: C-contiguous, of dtype (class ids int64). An lstm's c0 is
    make_c0()."""
    kind, loss = config
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, T, I)).astype(dtype)
    out_shape = (B, T, O) if kind == "many_to_many" else (B, O)
    if loss == "mse":
        Y = rng.normal(size=out_shape).astype(dtype)
    else:
        Y = rng.integers(0, O, size=out_shape[:-1])
        Y.flat[0], Y.flat[-1] = 0, O - 1        # both ends of the valid range
    h0 = (0.5 * rng.normal(size=(L, B, H))).astype(dtype)
    return X, Y, h0


def make_c0(seed=0, dtype=np.float64):
    return (0.3 * np.random.default_rng(seed + 100).normal(size=(L, B, H))).astype(dtype)


def y_shape_text(config):
    kind, loss = config
    shape = (B, T, O) if kind == "many_to_many" else (B, O)
    if loss == "cross_entropy":
        shape = shape[:-1]
    return "(" + ", ".join(map(str, shape)) + (",)" if len(shape) == 1 else ")")


SHAPE_TEXT = {"X": f"(batch, steps, {I})", "h0": f"({L}, {B}, {H})", "c0": f"({L}, {B}, {H})"}


def names(message, name):
    """The message names the argument as a word ("X", not part of "max")."""
    return re.search(rf"(?<![\w.']){re.escape(name)}(?![\w'])", message) is not None


def call(trainer, method, X, Y, h0, c0=None):
    state = {"h0": h0} if c0 is None else {"h0": h0, "c0": c0}
    if method == "step":
        return trainer.step(X, Y, **state)
    if method == "loss_and_grad":
        return trainer.loss_and_grad(X, Y, **state)
    if method == "model.predict":
        return trainer.model.predict(X, **state)
    if method == "trainer.predict":
        return trainer.predict(X, **state)
    raise AssertionError(method)


def methods_for(config, arg):
    found = ["step", "loss_and_grad"]
    if arg != "Y":
        found.append("model.predict")
        if config[0] == "many_to_one":
            found.append("trainer.predict")
    return found


def snapshot(trainer):
    opt = trainer.optimizer
    return (trainer.model.params.tobytes(), opt.steps,
            None if opt.buffer is None else opt.buffer.tobytes())


def assert_rejected_without_side_effects(config, method, bad, exc, fragments, cell="tanh",
                                         name=None):
    """bad(args) -> args with one argument spoiled (args: dict of X, Y, h0, c0). A trainer
    that has already made one step (so its momentum buffer is live) rejects the call with exc,
    whose message names the argument and holds every fragment; it keeps params and optimiser
    state bit for bit, and its next valid step equals that of a twin that never saw the bad
    call."""
    X, Y, h0 = make_data(config)
    c0 = make_c0() if cell == "lstm" else None
    victim, twin = make_trainer(config, cell=cell), make_trainer(config, cell=cell)
    for tr in (victim, twin):
        call(tr, "step", X, Y, h0, c0)
    before = snapshot(victim)
    assert before == snapshot(twin)
    args = bad({"X": X.copy(), "Y": Y.copy(), "h0": h0.copy(),
                "c0": None if c0 is None else c0.copy()})

    with pytest.raises(exc) as info:
        call(victim, method, args["X"], args["Y"], args["h0"], args["c0"])
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    if name is not None:
        assert names(message, name), f"{name!r} not named in {message!r}"

    assert snapshot(victim) == before
    X2, Y2, h02 = make_data(config, seed=1)
    c02 = make_c0(seed=1) if cell == "lstm" else None
    losses = [call(tr, "step", X2, Y2, h02, c02) for tr in (victim, twin)]
    assert losses[0] == losses[1]
    assert snapshot(victim) == snapshot(twin)


def set_at(value):
    """A float64 copy with one entry (in the last row) set to value."""
    def spoil(a):
        a = np.array(a, dtype=np.float64)
        a.flat[a.size - 2] = value
        return a
    return spoil


def ragged(a):
    rows = np.asarray(a).tolist()
    rows[-1] = rows[-1][:-1]         # one row is short
    return rows


# ------------------------------------------------------------------------------- bad X and h0
# (id, spoil(array) -> bad value, exception, expected-shape fragment wanted)
X_CASES = [
    ("ndim1", lambda X: X[0, 0], ValueError, True),
    ("ndim2", lambda X: X[0], ValueError, True),
    ("ndim4", lambda X: X[None], ValueError, True),
    ("input_size_small", lambda X: X[..., :I - 1], ValueError, True),
    ("input_size_big", lambda X: np.concatenate([X, X[..., :1]], axis=-1), ValueError, True),
    ("batch0", lambda X: X[:0], ValueError, True),
    ("steps0", lambda X: X[:, :0], ValueError, True),
    ("batch0_steps0", lambda X: X[:0, :0], ValueError, True),
    ("nan", set_at(np.nan), ValueError, False),
    ("inf", set_at(np.inf), ValueError, False),
    ("-inf", set_at(-np.inf), ValueError, False),
    ("complex", lambda X: X.astype(np.complex128), TypeError, False),
    ("string", lambda X: X.astype(str), TypeError, False),
    ("object", lambda X: X.astype(object), TypeError, False),
    ("bool", lambda X: X > 0, TypeError, False),
    ("ragged", ragged, ValueError, False),
    ("none", lambda X: None, TypeError, False),
    ("scalar", lambda X: 1.0, ValueError, True),
]

H0_CASES = [
    ("ndim2", lambda h: h[0], ValueError, True),
    ("ndim4", lambda h: h[None], ValueError, True),
    ("layers", lambda h: h[:1], ValueError, True),
    ("layers_big", lambda h: np.concatenate([h, h[:1]]), ValueError, True),
    ("batch", lambda h: h[:, :1], ValueError, True),
    ("hidden", lambda h: h[..., :H - 1], ValueError, True),
    ("nan", set_at(np.nan), ValueError, False),
    ("inf", set_at(np.inf), ValueError, False),
    ("complex", lambda h: h.astype(np.complex128), TypeError, False),
    ("string", lambda h: h.astype(str), TypeError, False),
    ("object", lambda h: h.astype(object), TypeError, False),
    ("bool", lambda h: h > 0, TypeError, False),
    ("ragged", ragged, ValueError, False),
]


def _x_params():
    for config, cid in zip(CONFIGS, CONFIG_IDS):
        for method in methods_for(config, "X"):
            for case in X_CASES:
                yield pytest.param(config, method, *case[1:], id=f"{cid}-{method}-{case[0]}")


def _h0_params():
    for config, cid in zip(CONFIGS, CONFIG_IDS):
        for method in methods_for(config, "h0"):
            for case in H0_CASES:
                yield pytest.param(config, method, *case[1:], id=f"{cid}-{method}-{case[0]}")


@pytest.mark.parametrize("config,method,spoil,exc,shape_msg", list(_x_params()))
def test_bad_X_rejected(config, method, spoil, exc, shape_msg):
    fragments = [SHAPE_TEXT["X"]] if shape_msg else []
    assert_rejected_without_side_effects(
        config, method, lambda a: dict(a, X=spoil(a["X"])), exc, fragments, name="X")


@pytest.mark.parametrize("config,method,spoil,exc,shape_msg", list(_h0_params()))
def test_bad_h0_rejected(config, method, spoil, exc, shape_msg):
    fragments = [SHAPE_TEXT["h0"]] if shape_msg else []
    assert_rejected_without_side_effects(
        config, method, lambda a: dict(a, h0=spoil(a["h0"])), exc, fragments, name="h0")


def _lstm_state_params():
    for config, cid in zip(CONFIGS, CONFIG_IDS):
        if cid not in ("m2m-mse", "m2o-ce"):
            continue
        for method in methods_for(config, "c0"):
            for arg in ("h0", "c0"):
                for case in H0_CASES:
                    yield pytest.param(config, method, arg, *case[1:],
                                       id=f"{cid}-{method}-{arg}-{case[0]}")


@pytest.mark.parametrize("config,method,arg,spoil,exc,shape_msg", list(_lstm_state_params()))
def test_bad_lstm_state_rejected(config, method, arg, spoil, exc, shape_msg):
    """h0 and c0 of an lstm model: each is checked on its own and named."""
    fragments = [SHAPE_TEXT[arg]] if shape_msg else []
    assert_rejected_without_side_effects(
        config, method, lambda a: dict(a, **{arg: spoil(a[arg])}), exc, fragments,
        cell="lstm", name=arg)


@pytest.mark.parametrize("cell", ["tanh", "relu", "gru"])
@pytest.mark.parametrize("method", ["step", "loss_and_grad", "model.predict",
                                    "trainer.predict"])
def test_c0_refused_for_cells_without_a_cell_state(cell, method):
    config = ("many_to_one", "mse")
    assert_rejected_without_side_effects(
        config, method, lambda a: dict(a, c0=make_c0()), ValueError, [cell], cell=cell,
        name="c0")


# ------------------------------------------------------------------------------------- bad Y
def _first_row_set(value, dtype=None):
    def spoil(Y):
        Y = np.array(Y, dtype=dtype if dtype is not None else Y.dtype)
        Y.flat[1] = value
        return Y
    return spoil


MSE_Y_CASES = [
    ("ndim_low", lambda Y: Y[..., 0], ValueError, True),
    ("ndim_high", lambda Y: Y[None], ValueError, True),
    ("batch", lambda Y: Y[:1], ValueError, True),
    ("batch_big", lambda Y: np.concatenate([Y, Y[:1]]), ValueError, True),
    ("output_size", lambda Y: Y[..., :O - 1], ValueError, True),
    ("output_size_big", lambda Y: np.concatenate([Y, Y[..., :1]], axis=-1), ValueError, True),
    ("nan", _first_row_set(np.nan), ValueError, False),
    ("inf", _first_row_set(np.inf), ValueError, False),
    ("complex", lambda Y: Y.astype(np.complex128), TypeError, False),
    ("string", lambda Y: Y.astype(str), TypeError, False),
    ("object", lambda Y: Y.astype(object), TypeError, False),
    ("bool", lambda Y: Y > 0, TypeError, False),
    ("ragged", ragged, ValueError, False),
    ("none", lambda Y: None, TypeError, False),
]
MSE_Y_M2M_CASES = [
    ("steps", lambda Y: Y[:, :T - 1], ValueError, True),
    ("steps_big", lambda Y: np.concatenate([Y, Y[:, :1]], axis=1), ValueError, True),
]
CE_Y_CASES = [
    ("ndim_high", lambda Y: Y[..., None], ValueError, True),
    ("ndim_higher", lambda Y: Y[None, ..., None], ValueError, True),
    ("batch", lambda Y: Y[:1], ValueError, True),
    ("batch_big", lambda Y: np.concatenate([Y, Y[:1]]), ValueError, True),
    ("negative", _first_row_set(-1), ValueError, False),
    ("equal_output_size", _first_row_set(O), ValueError, False),
    ("above_output_size", _first_row_set(O + 4), ValueError, False),
    ("float_out_of_range", _first_row_set(float(O), np.float64), ValueError, False),
    ("huge_uint64", _first_row_set(2 ** 64 - 1, np.uint64), ValueError, False),
    ("non_integral", _first_row_set(0.5, np.float64), TypeError, False),
    ("nan", _first_row_set(np.nan, np.float64), (ValueError, TypeError), False),
    ("inf", _first_row_set(np.inf, np.float64), (ValueError, TypeError), False),
    ("bool", lambda Y: Y > 0, TypeError, False),
    ("string", lambda Y: Y.astype(str), TypeError, False),
    ("object", lambda Y: Y.astype(object), TypeError, False),
    ("complex", lambda Y: Y.astype(np.complex128), TypeError, False),
    ("none", lambda Y: None, TypeError, False),
]
CE_Y_M2O_CASES = [("ndim_low", lambda Y: Y[0], ValueError, True)]
CE_Y_M2M_CASES = [
    ("ndim_low", lambda Y: Y[:, 0], ValueError, True),
    ("steps", lambda Y: Y[:, :T - 1], ValueError, True),
    ("steps_big", lambda Y: np.concatenate([Y, Y[:, :1]], axis=1), ValueError, True),
    ("ragged", ragged, ValueError, False),
]


def _y_params():
    for config, cid in zip(CONFIGS, CONFIG_IDS):
        kind, loss = config
        if loss == "mse":
            cases = MSE_Y_CASES + (MSE_Y_M2M_CASES if kind == "many_to_many" else [])
        else:
            cases = CE_Y_CASES + (CE_Y_M2M_CASES if kind == "many_to_many" else CE_Y_M2O_CASES)
        for method in methods_for(config, "Y"):
            for case in cases:
                yield pytest.param(config, method, *case[1:], id=f"{cid}-{method}-{case[0]}")


@pytest.mark.parametrize("config,method,spoil,exc,shape_msg", list(_y_params()))
def test_bad_Y_rejected(config, method, spoil, exc, shape_msg):
    fragments = [y_shape_text(config)] if shape_msg else []
    assert_rejected_without_side_effects(
        config, method, lambda a: dict(a, Y=spoil(a["Y"])), exc, fragments, name="Y")


@pytest.mark.parametrize("kind", ["many_to_many", "many_to_one"])
@pytest.mark.parametrize("value", [-1, O, O + 4, 2 ** 64 - 1])
def test_class_id_range_message_reports_the_values_given(kind, value):
    """The range error states the valid range and the ids actually passed (no int64 wrap)."""
    config = (kind, "cross_entropy")
    X, Y, h0 = make_data(config)
    Y = Y.astype(np.uint64) if value > 0 else Y
    Y.flat[1] = value
    with pytest.raises(ValueError) as info:
        make_trainer(config).loss_and_grad(X, Y)
    message = str(info.value)
    assert f"[0, {O})" in message and str(value) in message, message


# ------------------------------------------------------------------------- odd but valid input
def _strided(a, axis):
    """A non-contiguous view holding a's values (every second element along axis)."""
    a = np.asarray(a)
    shape = list(a.shape)
    shape[axis] *= 2
    big = np.full(shape, 99, a.dtype)
    index = [slice(None)] * a.ndim
    index[axis] = slice(None, None, 2)
    big[tuple(index)] = a
    view = big[tuple(index)]
    assert not view.flags.c_contiguous
    return view


def _negative_strides(a):
    view = np.ascontiguousarray(np.asarray(a)[..., ::-1])[..., ::-1]
    assert view.strides[-1] < 0
    return view


def _readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def _fortran(a):
    f = np.asfortranarray(a)
    assert a.ndim < 2 or not f.flags.c_contiguous
    return f


# name -> (make_odd(X, Y, h0) -> (X, Y, h0)); every variant holds the same values as the plain data
SAME_VALUE_VARIANTS = {
    "strided_X_steps": lambda X, Y, h0: (_strided(X, 1), Y, h0),      # X[:, ::2]
    "strided_all": lambda X, Y, h0: (_strided(X, 2), _strided(Y, -1), _strided(h0, 1)),
    "negative_strides": lambda X, Y, h0: (_negative_strides(X), _negative_strides(Y),
                                          _negative_strides(h0)),
    "readonly": lambda X, Y, h0: (_readonly(X), _readonly(Y), _readonly(h0)),
    "fortran": lambda X, Y, h0: (_fortran(X), _fortran(Y), _fortran(h0)),
    "lists": lambda X, Y, h0: (X.tolist(), Y.tolist(), h0.tolist()),
    "transposed_copy_back": lambda X, Y, h0: (X.transpose(1, 0, 2).copy().transpose(1, 0, 2),
                                              Y, h0),
}


def assert_same_results(config, odd, plain, dtype=np.float64, cell="tanh"):
    """loss_and_grad, step and predict give bit-identical results for odd and plain input.
    odd, plain: (X, Y, h0) or, for lstm, (X, Y, h0, c0)."""
    def state(args):
        return {"h0": args[2], "c0": args[3]} if len(args) > 3 else {"h0": args[2]}

    tr = make_trainer(config, dtype, cell)
    loss_p, grads_p, final_p = tr.loss_and_grad(*plain[:2], **state(plain), return_state=True)
    loss_o, grads_o, final_o = tr.loss_and_grad(*odd[:2], **state(odd), return_state=True)
    assert loss_o == loss_p
    assert grads_o.keys() == grads_p.keys()
    for key in grads_p:
        assert grads_o[key].dtype == grads_p[key].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(grads_o[key], grads_p[key], err_msg=key)
    np.testing.assert_array_equal(np.asarray(final_o), np.asarray(final_p))

    out_p = tr.model.predict(plain[0], **state(plain))
    out_o = tr.model.predict(odd[0], **state(odd))
    assert out_o.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out_o, out_p)
    if config[0] == "many_to_one":
        np.testing.assert_array_equal(tr.predict(odd[0], **state(odd)),
                                      tr.predict(plain[0], **state(plain)))

    a, b = make_trainer(config, dtype, cell), make_trainer(config, dtype, cell)
    for _ in range(2):
        assert a.step(*odd[:2], **state(odd)) == b.step(*plain[:2], **state(plain))
    assert snapshot(a) == snapshot(b)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("variant", list(SAME_VALUE_VARIANTS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_odd_layouts_give_identical_results(config, variant, dtype):
    plain = make_data(config, dtype=dtype)
    odd = SAME_VALUE_VARIANTS[variant](*[x.copy() for x in plain])
    assert_same_results(config, odd, plain, dtype)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[3]], ids=[CONFIG_IDS[0], CONFIG_IDS[3]])
@pytest.mark.parametrize("variant", ["strided_all", "negative_strides", "readonly", "fortran",
                                     "lists", "float32_inputs"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_odd_layouts_other_cells(config, variant, cell):
    """The same for the gated cells, c0 included for lstm (converted like h0)."""
    X, Y, h0 = make_data(config)
    plain = (X, Y, h0) + ((make_c0(),) if cell == "lstm" else ())
    if variant == "float32_inputs":
        odd = tuple(a if a is Y and config[1] == "cross_entropy" else a.astype(np.float32)
                    for a in plain)
        plain = tuple(a if a is Y and config[1] == "cross_entropy"
                      else a.astype(np.float32).astype(np.float64) for a in plain)
    elif variant == "strided_all":
        odd = (_strided(X, 1),) + tuple(_strided(a, -1) for a in plain[1:])
    else:
        make = {"negative_strides": _negative_strides, "readonly": _readonly,
                "fortran": _fortran, "lists": lambda a: a.tolist()}[variant]
        odd = tuple(make(a.copy()) for a in plain)
    assert_same_results(config, odd, plain, cell=cell)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_float32_input_to_float64_model(config):
    X, Y, h0 = make_data(config, dtype=np.float32)
    assert X.dtype == np.float32
    plain = (X.astype(np.float64), Y.astype(np.float64) if config[1] == "mse" else Y,
             h0.astype(np.float64))
    assert_same_results(config, (X, Y, h0), plain, np.float64)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_float64_input_to_float32_model(config):
    """Converted once to float32: the same as feeding the float32 arrays to the float32 model."""
    X, Y, h0 = make_data(config, dtype=np.float64)
    plain = (X.astype(np.float32), Y.astype(np.float32) if config[1] == "mse" else Y,
             h0.astype(np.float32))
    assert_same_results(config, (X, Y, h0), plain, np.float32)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_integer_valued_inputs(config):
    """Integer X / h0 / mse targets are read as numbers."""
    rng = np.random.default_rng(3)
    X, Y, h0 = make_data(config)
    Xi = rng.integers(-2, 3, size=X.shape)
    h0i = rng.integers(-1, 2, size=h0.shape).astype(np.int32)
    Yi = rng.integers(-2, 3, size=Y.shape).astype(np.int16) if config[1] == "mse" else Y
    plain = (Xi.astype(np.float64), Yi.astype(np.float64) if config[1] == "mse" else Y,
             h0i.astype(np.float64))
    assert_same_results(config, (Xi, Yi, h0i), plain)


@pytest.mark.parametrize("kind", ["many_to_many", "many_to_one"])
@pytest.mark.parametrize("ids", ["float64", "float32", "int32", "uint8", "int16", "list",
                                 "float_list"])
def test_class_id_dtypes(kind, ids):
    config = (kind, "cross_entropy")
    X, Y, h0 = make_data(config)
    if ids == "list":
        odd = Y.tolist()
    elif ids == "float_list":
        odd = Y.astype(float).tolist()
    else:
        odd = Y.astype(ids)
    assert_same_results(config, (X, odd, h0), (X, Y, h0))


# --------------------------------------------------------------------------- inputs untouched
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("data_dtype", [np.float64, np.float32], ids=["data-f64", "data-f32"])
@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_inputs_are_never_modified(config, dtype, data_dtype, cell):
    X, Y, h0 = make_data(config, dtype=data_dtype)
    c0 = make_c0(dtype=data_dtype) if cell == "lstm" else None
    inputs = (X, Y, h0) if c0 is None else (X, Y, h0, c0)
    originals = [a.copy() for a in inputs]
    tr = make_trainer(config, dtype, cell)
    st = {"h0": h0} if c0 is None else {"h0": h0, "c0": c0}

    results = [tr.step(X, Y, **st, return_state=True),
               tr.step(X, Y),
               tr.loss_and_grad(X, Y, **st, return_state=True),
               tr.loss_and_grad(X, Y),
               tr.model.predict(X, **st, return_state=True),
               tr.model.predict(X)]
    if config[0] == "many_to_one":
        results.append(tr.predict(X, **st))

    for a, original in zip(inputs, originals):
        assert a.dtype == original.dtype
        assert a.tobytes() == original.tobytes()

    def arrays(obj):
        if isinstance(obj, np.ndarray):
            yield obj
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from arrays(v)
        elif isinstance(obj, tuple):
            for v in obj:
                yield from arrays(v)

    for result in results:        # no output is a view of an input
        for out in arrays(result):
            for a in inputs:
                assert not np.shares_memory(out, a)


def test_returned_arrays_are_fresh():
    """Mutating what loss_and_grad / predict return does not change the next results."""
    config = CONFIGS[0]
    X, Y, h0 = make_data(config)
    tr = make_trainer(config)
    loss, grads, hf = tr.loss_and_grad(X, Y, h0=h0, return_state=True)
    out = tr.model.predict(X, h0=h0)
    kept = {k: v.copy() for k, v in grads.items()}, hf.copy(), out.copy()
    for v in list(grads.values()) + [hf, out]:
        v[...] = 123.0
    loss2, grads2, hf2 = tr.loss_and_grad(X, Y, h0=h0, return_state=True)
    assert loss2 == loss
    for k in kept[0]:
        np.testing.assert_array_equal(grads2[k], kept[0][k])
    np.testing.assert_array_equal(hf2, kept[1])
    np.testing.assert_array_equal(tr.model.predict(X, h0=h0), kept[2])


# ---------------------------------------------------------------------------- constructor errors
SIZE_ARGS = ["input_size", "hidden_size", "output_size", "num_layers"]


def _rnn_kwargs(**change):
    kwargs = dict(input_size=I, hidden_size=H, output_size=O, num_layers=1)
    kwargs.update(change)
    return kwargs


@pytest.mark.parametrize("arg", SIZE_ARGS)
@pytest.mark.parametrize("value,exc", [(0, ValueError), (-1, ValueError), (2.5, TypeError),
                                       (True, TypeError), (False, TypeError),
                                       ("3", TypeError), (None, TypeError),
                                       (3.0, TypeError)])
def test_rnn_rejects_bad_sizes(arg, value, exc):
    if arg == "output_size" and value is None:
        assert not cbptt.RNN(**_rnn_kwargs(output_size=None)).has_head   # a headless model
        return
    with pytest.raises(exc) as info:
        cbptt.RNN(**_rnn_kwargs(**{arg: value}))
    assert arg in str(info.value)


@pytest.mark.parametrize("arg", SIZE_ARGS)
def test_rnn_accepts_numpy_integers(arg):
    model = cbptt.RNN(**_rnn_kwargs(**{arg: np.int64(2)}))
    assert getattr(model, arg) == 2 and type(getattr(model, arg)) is int


@pytest.mark.parametrize("cell", ["sigmoid", "TANH", "", None, "elman"])
def test_rnn_rejects_unknown_cell(cell):
    with pytest.raises(ValueError, match="cell"):
        cbptt.RNN(I, H, O, cell=cell)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.int64, np.complex128, "int32",
                                   "float16", bool, object, "not-a-dtype"])
def test_rnn_rejects_bad_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        cbptt.RNN(I, H, O, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, "float32", np.dtype("float64"), "f8", float])
def test_rnn_accepts_float_dtypes(dtype):
    assert cbptt.RNN(I, H, O, dtype=dtype).params.dtype in (np.float32, np.float64)


@pytest.mark.parametrize("cls", [cbptt.ManyToMany, cbptt.ManyToOne])
@pytest.mark.parametrize("loss", ["l1", "MSE", "crossentropy", "", None])
def test_trainer_rejects_unknown_loss(cls, loss):
    with pytest.raises(ValueError, match="loss"):
        cls(cbptt.RNN(I, H, O), loss=loss)


@pytest.mark.parametrize("cls", [cbptt.ManyToMany, cbptt.ManyToOne])
@pytest.mark.parametrize("clip", [0, 0.0, -1.0, float("nan"), -np.inf])
def test_trainer_rejects_bad_clip_norm(cls, clip):
    with pytest.raises(ValueError, match="clip_norm"):
        cls(cbptt.RNN(I, H, O), clip_norm=clip)


@pytest.mark.parametrize("cls", [cbptt.ManyToMany, cbptt.ManyToOne])
@pytest.mark.parametrize("optimizer", ["sgd", object(), cbptt.SGD, 0.1, {"lr": 0.1}])
def test_trainer_rejects_non_optimizer(cls, optimizer):
    with pytest.raises(TypeError, match="optimizer"):
        cls(cbptt.RNN(I, H, O), optimizer=optimizer)


@pytest.mark.parametrize("cls", [cbptt.ManyToMany, cbptt.ManyToOne])
@pytest.mark.parametrize("model", [None, "rnn", object()])
def test_trainer_rejects_non_model(cls, model):
    with pytest.raises(TypeError, match="model"):
        cls(model)
