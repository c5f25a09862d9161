"""The model: parameter names and order, state dicts, files, initialisation, inference."""
import json

import numpy as np
import pytest

import cbptt

from helpers import CELLS, GATES

I, H, O, B, T = 3, 5, 2, 3, 6


def torch_keys(num_layers):
    keys = []
    for layer in range(num_layers):
        keys += [f"weight_ih_l{layer}", f"weight_hh_l{layer}", f"bias_ih_l{layer}",
                 f"bias_hh_l{layer}"]
    return keys + ["head.weight", "head.bias"]


def expected_shapes(num_layers, gates=1):
    shapes = {}
    for layer in range(num_layers):
        shapes[f"weight_ih_l{layer}"] = (gates * H, I if layer == 0 else H)
        shapes[f"weight_hh_l{layer}"] = (gates * H, H)
        shapes[f"bias_ih_l{layer}"] = (gates * H,)
        shapes[f"bias_hh_l{layer}"] = (gates * H,)
    shapes["head.weight"] = (O, H)
    shapes["head.bias"] = (O,)
    return shapes


def data(seed=0, dtype=np.float64, num_layers=1, batch=B, steps=T):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, steps, I)).astype(dtype)
    h0 = (0.5 * rng.normal(size=(num_layers, batch, H))).astype(dtype)
    return X, h0


# ----------------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_keys_order_and_shapes(num_layers, cell, dtype):
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=num_layers, dtype=dtype, seed=0)
    state = model.state_dict()
    assert list(state) == torch_keys(num_layers)
    assert {k: v.shape for k, v in state.items()} == expected_shapes(num_layers, GATES[cell])
    assert all(v.dtype == np.dtype(dtype) for v in state.values())
    assert [name for name, _ in model.named_parameters()] == torch_keys(num_layers)
    # the flat buffer is the state dict concatenated in that order
    flat = np.concatenate([v.ravel() for v in state.values()])
    assert flat.tobytes() == model.params.tobytes()
    assert model.num_parameters == flat.size


def test_state_dict_returns_copies():
    model = cbptt.RNN(I, H, O, num_layers=2, seed=0)
    before = model.params.copy()
    state = model.state_dict()
    for value in state.values():
        value[...] = 7.0
    state["weight_ih_l0"] = np.zeros(1)
    assert model.params.tobytes() == before.tobytes()
    assert all(not np.shares_memory(v, model.params) for v in model.state_dict().values())
    assert model.state_dict()["head.bias"].flags.writeable


def test_named_parameters_are_views_into_params():
    model = cbptt.RNN(I, H, O, num_layers=2, seed=0)
    views = dict(model.named_parameters())
    views["bias_hh_l1"][...] = 0.25
    np.testing.assert_array_equal(model.state_dict()["bias_hh_l1"], 0.25)


@pytest.mark.parametrize("num_layers", [1, 3])
def test_load_state_dict_round_trip(num_layers):
    src = cbptt.RNN(I, H, O, num_layers=num_layers, seed=1)
    dst = cbptt.RNN(I, H, O, num_layers=num_layers, seed=2)
    assert src.params.tobytes() != dst.params.tobytes()
    state = src.state_dict()
    dst.load_state_dict(state)
    assert dst.params.tobytes() == src.params.tobytes()
    X, h0 = data(num_layers=num_layers)
    np.testing.assert_array_equal(dst.predict(X, h0), src.predict(X, h0))
    # loading copies: the dict's arrays stay independent of the model
    state["head.bias"][...] = 9.0
    assert dst.params.tobytes() == src.params.tobytes()
    # the views still write through after a load
    dict(dst.named_parameters())["head.bias"][...] = 1.5
    np.testing.assert_array_equal(dst.params[-O:], 1.5)


def test_load_state_dict_accepts_lists_other_dtypes_and_layouts():
    src = cbptt.RNN(I, H, O, seed=1)
    state = src.state_dict()
    odd = {k: (np.asfortranarray(v) if v.ndim == 2 else v.tolist()) for k, v in state.items()}
    dst = cbptt.RNN(I, H, O, seed=2)
    dst.load_state_dict(odd)
    assert dst.params.tobytes() == src.params.tobytes()
    dst32 = cbptt.RNN(I, H, O, dtype=np.float32, seed=2)
    dst32.load_state_dict(state)
    np.testing.assert_array_equal(dst32.params, src.params.astype(np.float32))


def _bad_state_cases(num_layers):
    """(id, make_bad(good_state) -> state with the bad entry LAST, exc, fragments)."""
    keys = torch_keys(num_layers)
    last = keys[-1]

    def missing(key):
        def make(state):
            del state[key]
            return state
        return make

    def extra(state):
        state["weight_ih_l9"] = np.zeros((H, H))
        return state

    def reshape(key, shape):
        def make(state):
            value = np.zeros(shape)
            del state[key]
            state[key] = value          # re-inserted: last in dict order
            return state
        return make

    def poison(key, value):
        def make(state):
            bad = state.pop(key).copy()
            bad.flat[-1] = value
            state[key] = bad
            return state
        return make

    cases = [
        ("missing_first", missing(keys[0]), [keys[0]]),
        ("missing_last", missing(last), [last]),
        ("extra", extra, ["weight_ih_l9"]),
        ("wrong_shape_head_bias", reshape(last, (O + 1,)), [last, f"({O},)", f"({O + 1},)"]),
        ("wrong_shape_transposed", reshape("weight_ih_l0", (I, H)),
         ["weight_ih_l0", f"({H}, {I})", f"({I}, {H})"]),
        ("wrong_ndim", reshape("bias_ih_l0", (1, H)), ["bias_ih_l0", f"({H},)", f"(1, {H})"]),
        ("nan", poison(last, np.nan), [last]),
        ("inf", poison("weight_hh_l0", np.inf), ["weight_hh_l0"]),
    ]
    if num_layers > 1:
        cases.append((f"wrong_shape_l{num_layers - 1}",
                      reshape(f"weight_hh_l{num_layers - 1}", (H, H + 1)),
                      [f"weight_hh_l{num_layers - 1}", f"({H}, {H})", f"({H}, {H + 1})"]))
    return [pytest.param(num_layers, make, fragments, id=f"L{num_layers}-{cid}")
            for cid, make, fragments in cases]


@pytest.mark.parametrize("num_layers,make_bad,fragments",
                         _bad_state_cases(1) + _bad_state_cases(3))
def test_load_state_dict_rejects_and_loads_nothing(num_layers, make_bad, fragments):
    model = cbptt.RNN(I, H, O, num_layers=num_layers, seed=0)
    before = model.params.copy()
    # every good entry differs from the model's, so a half load would show
    bad = make_bad(cbptt.RNN(I, H, O, num_layers=num_layers, seed=1).state_dict())
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert model.params.tobytes() == before.tobytes()


@pytest.mark.parametrize("value,exc", [
    ([[0.0, 1.0], [2.0]], ValueError),                  # ragged
    (np.array([True, False]), TypeError),
    (np.array(["a", "b"]), TypeError),
    (np.array([1 + 1j, 0]), TypeError),
])
def test_load_state_dict_bad_values_name_the_key(value, exc):
    model = cbptt.RNN(I, H, O, seed=0)
    before = model.params.copy()
    state = model.state_dict()
    del state["head.bias"]
    state["head.bias"] = value
    for key in ("head.weight",):        # an earlier key that would change if half loaded
        state[key] = state[key] + 1.0
    with pytest.raises(exc, match="head.bias"):
        model.load_state_dict(state)
    assert model.params.tobytes() == before.tobytes()


def test_load_state_dict_rejects_non_mapping():
    model = cbptt.RNN(I, H, O, seed=0)
    with pytest.raises(TypeError):
        model.load_state_dict(list(model.state_dict().values()))


# ----------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("cell,num_layers,dtype", [("tanh", 1, np.float64),
                                                   ("relu", 3, np.float32),
                                                   ("tanh", 2, np.float32),
                                                   ("lstm", 2, np.float64),
                                                   ("gru", 1, np.float32)])
@pytest.mark.parametrize("as_str", [False, True])
def test_save_load_round_trip(tmp_path, cell, num_layers, dtype, as_str):
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=num_layers, dtype=dtype, seed=3)
    path = tmp_path / "model.npz"
    model.save(str(path) if as_str else path)
    loaded = cbptt.load(str(path) if as_str else path)
    assert loaded.config() == model.config()
    assert loaded.dtype == model.dtype == np.dtype(dtype)
    assert loaded.params.dtype == np.dtype(dtype)
    assert loaded.params.tobytes() == model.params.tobytes()
    X, h0 = data(num_layers=num_layers)
    out_a, hf_a = model.predict(X, h0, return_state=True)
    out_b, hf_b = loaded.predict(X, h0, return_state=True)
    assert out_a.tobytes() == out_b.tobytes()
    assert np.asarray(hf_a).tobytes() == np.asarray(hf_b).tobytes()


def test_save_without_suffix_loads_from_the_same_path(tmp_path):
    """np.savez appends '.npz'; load(path) with the path given to save must still work."""
    model = cbptt.RNN(I, H, O, seed=0)
    model.save(tmp_path / "model")
    assert (tmp_path / "model.npz").exists()
    for path in (tmp_path / "model", tmp_path / "model.npz"):
        assert cbptt.load(path).params.tobytes() == model.params.tobytes()


def test_saved_file_is_plain_npz(tmp_path):
    """No pickles: the file opens with allow_pickle=False and its header is JSON."""
    model = cbptt.RNN(I, H, O, num_layers=2, dtype=np.float32, seed=0)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        header = json.loads(str(f["__config__"]))
        assert {k: header[k] for k in model.config()} == model.config()
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(f[f"param:{name}"], value)


def test_load_non_cbptt_npz_raises_value_error(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(ValueError, match="cbptt"):
        cbptt.load(path)


@pytest.mark.parametrize("kind", ["npy", "text", "bad_json", "json_list", "missing_fields",
                                  "bad_dtype", "missing_param", "bad_param_shape"])
def test_load_bad_files_raise_value_error(tmp_path, kind):
    path = tmp_path / "bad.npz"
    good = cbptt.RNN(I, H, O, seed=0)
    params = {f"param:{k}": v for k, v in good.state_dict().items()}
    config = dict(good.config(), format_version=1)
    if kind == "npy":
        path = tmp_path / "bad.npy"
        np.save(path, np.zeros(3))
    elif kind == "text":
        path.write_text("not a model")
    elif kind == "bad_json":
        np.savez(path, __config__=np.array("{not json"), **params)
    elif kind == "json_list":
        np.savez(path, __config__=np.array("[1, 2]"), **params)
    elif kind == "missing_fields":
        np.savez(path, __config__=np.array(json.dumps({"input_size": I})), **params)
    elif kind == "bad_dtype":
        np.savez(path, __config__=np.array(json.dumps(dict(config, dtype="int32"))), **params)
    elif kind == "missing_param":
        del params["param:head.bias"]
        np.savez(path, __config__=np.array(json.dumps(config)), **params)
    elif kind == "bad_param_shape":
        params["param:head.bias"] = np.zeros(O + 1)
        np.savez(path, __config__=np.array(json.dumps(config)), **params)
    with pytest.raises(ValueError):
        cbptt.load(path)


# ------------------------------------------------------------------------------ initialisation
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_seed_reproducibility(dtype):
    a = cbptt.RNN(I, H, O, num_layers=2, dtype=dtype, seed=42)
    b = cbptt.RNN(I, H, O, num_layers=2, dtype=dtype, seed=42)
    c = cbptt.RNN(I, H, O, num_layers=2, dtype=dtype, seed=43)
    assert a.params.tobytes() == b.params.tobytes()
    assert not np.array_equal(a.params, c.params)
    a.reset_parameters(43)
    assert a.params.tobytes() == c.params.tobytes()


def test_no_seed_gives_different_models():
    a, b = cbptt.RNN(I, H, O), cbptt.RNN(I, H, O)
    assert not np.array_equal(a.params, b.params)


@pytest.mark.parametrize("hidden", [1, 4, 37])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
def test_init_bounds(hidden, dtype, cell):
    model = cbptt.RNN(I, hidden, O, cell=cell, num_layers=2, dtype=dtype, seed=0)
    bound = dtype(1.0 / np.sqrt(hidden))      # rounding to float32 is monotonic
    for name, value in model.named_parameters():
        assert np.all(np.abs(value) <= bound), name
        assert np.all(np.isfinite(value))
    # and actually spread over the interval, not e.g. all zeros or all positive
    assert model.params.min() < -0.5 * bound and model.params.max() > 0.5 * bound


# ------------------------------------------------------------------------------------ inference
@pytest.mark.parametrize("cell", CELLS)
def test_float32_model_close_to_float64(cell):
    m64 = cbptt.RNN(I, H, O, cell=cell, num_layers=2, dtype=np.float64, seed=0)
    m32 = cbptt.RNN(I, H, O, cell=cell, num_layers=2, dtype=np.float32, seed=99)
    m32.load_state_dict(m64.state_dict())
    X, h0 = data(num_layers=2)
    out64, hf64 = m64.predict(X, h0, return_state=True)
    out32, hf32 = m32.predict(X, h0, return_state=True)
    assert out32.dtype == np.asarray(hf32).dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(hf32), np.asarray(hf64), rtol=1e-4, atol=1e-6)


def _split_state(cell, state):
    """predict's state as (h, c): c is None except for lstm, whose state is the pair."""
    return tuple(state) if cell == "lstm" else (state, None)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("split", [1, 2, T - 1])
@pytest.mark.parametrize("with_h0", [False, True])
def test_predict_state_carries_across_halves(cell, num_layers, split, with_h0):
    """Running X in two pieces, the first's final state as the second's initial state, gives
    the outputs and final state of one run over X."""
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=num_layers, seed=0)
    X, h0 = data(num_layers=num_layers)
    c0 = 0.3 * h0[::-1].copy() if cell == "lstm" and with_h0 else None
    h0 = h0 if with_h0 else None
    out, state = model.predict(X, h0, c0=c0, return_state=True)
    h_final, c_final = _split_state(cell, state)
    assert out.shape == (B, T, O) and h_final.shape == (num_layers, B, H)
    out1, mid = model.predict(X[:, :split], h0, c0=c0, return_state=True)
    h_mid, c_mid = _split_state(cell, mid)
    out2, end = model.predict(X[:, split:], h_mid, c0=c_mid, return_state=True)
    h_end, c_end = _split_state(cell, end)
    np.testing.assert_allclose(np.concatenate([out1, out2], axis=1), out, rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(h_end, h_final, rtol=1e-12, atol=1e-14)
    if cell == "lstm":
        assert c_final.shape == (num_layers, B, H)
        np.testing.assert_allclose(c_end, c_final, rtol=1e-12, atol=1e-14)
    # the last step's h of the top layer is what the head read at the last step
    head_w, head_b = model.state_dict()["head.weight"], model.state_dict()["head.bias"]
    np.testing.assert_allclose(h_final[-1] @ head_w.T + head_b, out[:, -1], rtol=1e-12,
                               atol=1e-14)
    # return_state=False gives the same outputs
    np.testing.assert_array_equal(model.predict(X, h0, c0=c0), out)


def test_zero_h0_equals_no_h0():
    model = cbptt.RNN(I, H, O, num_layers=2, seed=0)
    X, h0 = data(num_layers=2)
    np.testing.assert_array_equal(model.predict(X, np.zeros_like(h0)), model.predict(X))


def test_predict_rows_are_independent():
    """Each sequence's output depends only on its own row (batch of 1 vs batch of B)."""
    model = cbptt.RNN(I, H, O, num_layers=2, seed=0)
    X, h0 = data(num_layers=2)
    full = model.predict(X, h0)
    for b in range(B):
        np.testing.assert_allclose(model.predict(X[b:b + 1], h0[:, b:b + 1]), full[b:b + 1],
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("with_h0", [False, True])
def test_many_to_one_predict_is_last_step(loss, with_h0):
    model = cbptt.RNN(I, H, O, num_layers=2, seed=0)
    trainer = cbptt.ManyToOne(model, loss=loss)
    X, h0 = data(num_layers=2)
    h0 = h0 if with_h0 else None
    last = trainer.predict(X, h0)
    assert last.shape == (B, O)
    np.testing.assert_array_equal(last, model.predict(X, h0)[:, -1, :])


# ---------------------------------------------------------------------------------------- torch
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("with_h0", [False, True])
def test_predict_matches_torch(cell, num_layers, with_h0):
    torch = pytest.importorskip("torch")
    model = cbptt.RNN(I, H, O, cell=cell, num_layers=num_layers, seed=5)
    if cell in ("tanh", "relu"):
        rnn = torch.nn.RNN(I, H, num_layers=num_layers, nonlinearity=cell, batch_first=True,
                           dtype=torch.float64)
    else:
        cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
        rnn = cls(I, H, num_layers=num_layers, batch_first=True, dtype=torch.float64)
    head = torch.nn.Linear(H, O, dtype=torch.float64)
    state = model.state_dict()
    rnn.load_state_dict({k: torch.from_numpy(state[k]) for k in rnn.state_dict()})
    head.load_state_dict({"weight": torch.from_numpy(state["head.weight"]),
                          "bias": torch.from_numpy(state["head.bias"])})
    assert list(rnn.state_dict()) == list(state)[:-2]

    X, h0 = data(num_layers=num_layers)
    c0 = 0.5 * h0[:, ::-1].copy() if cell == "lstm" else None
    with torch.no_grad():
        if not with_h0:
            seq, final = rnn(torch.from_numpy(X))
        elif cell == "lstm":
            seq, final = rnn(torch.from_numpy(X), (torch.from_numpy(h0), torch.from_numpy(c0)))
        else:
            seq, final = rnn(torch.from_numpy(X), torch.from_numpy(h0))
        expected = head(seq).numpy()
    out, state = model.predict(X, h0 if with_h0 else None, c0=c0 if with_h0 else None,
                               return_state=True)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-13)
    if cell == "lstm":
        for ours, theirs in zip(state, final):
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, atol=1e-13)
    else:
        np.testing.assert_allclose(state, final.numpy(), rtol=1e-12, atol=1e-13)


def test_torch_initialised_weights_load():
    """A torch state dict (as NumPy) plus the head loads directly."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rnn = torch.nn.RNN(I, H, num_layers=2, batch_first=True, dtype=torch.float64)
    head = torch.nn.Linear(H, O, dtype=torch.float64)
    state = {k: v.numpy() for k, v in rnn.state_dict().items()}
    state.update({f"head.{k}": v.numpy() for k, v in head.state_dict().items()})
    model = cbptt.RNN(I, H, O, num_layers=2, seed=1)
    model.load_state_dict(state)
    X, _ = data(num_layers=2)
    with torch.no_grad():
        expected = head(rnn(torch.from_numpy(X))[0]).numpy()
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12, atol=1e-13)


def test_the_python_names_are_the_engines():
    from cbptt import _engine, names
    assert set(names.CELLS) == set(_engine.CELLS) == set(_engine.GATES)
    assert set(names.LOSSES) == set(_engine.LOSSES)
    assert cbptt.LOSSES == names.LOSSES
    for cell in names.CELLS:
        for dtype in names.DTYPES:
            assert cbptt.RNN(2, 3, 1, cell=cell, dtype=dtype).dtype == np.dtype(dtype)
    with pytest.raises(ValueError, match=r"cell must be one of \('tanh', 'relu', 'lstm', 'gru'\)"):
        cbptt.RNN(2, 3, 1, cell="elman")
