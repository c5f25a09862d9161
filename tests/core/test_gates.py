"""The cell step kernels (_core/cells.pxd over _core/cell_steps.h), one forward and one backward step of each
cell through cbptt._kernels, against NumPy twins written here in float64 from _core/cells.pxd's
equations (PyTorch's): float64 to 1e-12 and float32 to 8 ulps of the magnitudes that enter
each value; on one row, on H that is not a multiple of the vector width (16 float32, 8
float64 lanes with AVX-512), on pre-activations far into sigmoid's and tanh's saturated
branches. The backward steps are also the gradients of the forward steps (central finite
differences in float64), and what the kernels change in place is checked."""
import numpy as np
import pytest

from cbptt import _kernels

from helpers import CELLS, GATES

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 8 * np.finfo(np.float32).eps}
SIZES = [(1, 1), (1, 7), (5, 16), (3, 33)]          # (rows, H)


def sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def assert_within(got, want, scale, dtype, name):
    """|got - want| <= TOL[dtype] * scale elementwise: the error of a result is measured in
    units of the magnitudes that went into it (scale >= 1 for values of sigmoid and tanh)."""
    err = np.abs(got.astype(np.float64) - want)
    bound = TOL[dtype] * scale + np.finfo(dtype).tiny
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert np.all(err <= bound), (f"{name}: error {err[worst]:.3g} > bound {bound[worst]:.3g} "
                                  f"at {worst}: got {got[worst]!r}, want {want[worst]!r}")


def blocks(a, count):
    """The count gate blocks of a (..., count * H) array."""
    return np.split(a, count, axis=-1)


def forward_twin(cell, x, bias, c_prev=None, h_prev=None, rec=None, b_hh=None):
    """(values, scales) of one forward step, both dicts of float64 arrays: "gates" (the
    activations), "h", and "c" (lstm) or "hn" (gru). A scale bounds the magnitudes that
    enter a value: |terms| summed, times the function's slope where a sigmoid or a tanh
    follows, plus 1 for the result's own rounding."""
    x, bias = x.astype(np.float64), bias.astype(np.float64)
    mag = np.abs(x) + np.abs(bias)
    if cell in ("tanh", "relu"):
        a = x + bias
        h = np.maximum(a, 0) if cell == "relu" else np.tanh(a)
        slope = (a > 0) if cell == "relu" else 1 - h * h
        scale = 1 + slope * mag
        return dict(gates=h, h=h), dict(gates=scale, h=scale)
    if cell == "lstm":
        c_prev = c_prev.astype(np.float64)
        (i, f, g, o), (mi, mf, mg, mo) = blocks(x + bias, 4), blocks(mag, 4)
        i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
        si, sf, sg, so = (1 + i * (1 - i) * mi, 1 + f * (1 - f) * mf, 1 + (1 - g * g) * mg,
                          1 + o * (1 - o) * mo)
        c = f * c_prev + i * g
        sc = sf * np.abs(c_prev) + si * np.abs(g) + sg * np.abs(i) + np.abs(c)
        tc = np.tanh(c)
        h = o * tc
        sh = so * np.abs(tc) + np.abs(o) * (1 + (1 - tc * tc) * sc)
        return (dict(gates=np.hstack([i, f, g, o]), c=c, h=h),
                dict(gates=np.hstack([si, sf, sg, so]), c=sc, h=sh))
    h_prev, rec, b_hh = (a.astype(np.float64) for a in (h_prev, rec, b_hh))
    xr, xz, xn = blocks(x, 3)
    qr, qz, qn = blocks(rec, 3)
    (br, bz, bn), (hr, hz, hnb) = blocks(bias, 3), blocks(b_hh, 3)
    r, z = sigmoid(xr + qr + hr + br), sigmoid(xz + qz + hz + bz)
    sr = 1 + r * (1 - r) * (abs(xr) + abs(qr) + abs(hr) + abs(br))
    sz = 1 + z * (1 - z) * (abs(xz) + abs(qz) + abs(hz) + abs(bz))
    hn = qn + hnb
    shn = abs(qn) + abs(hnb)
    n = np.tanh(xn + r * hn + bn)
    sn = 1 + (1 - n * n) * (abs(xn) + sr * abs(hn) + abs(r) * shn + abs(bn))
    h = (1 - z) * n + z * h_prev
    sh = sz * (abs(n) + abs(h_prev)) + abs(1 - z) * sn + abs(z * h_prev) + abs(h)
    return (dict(gates=np.hstack([r, z, n]), h=h, hn=hn),
            dict(gates=np.hstack([sr, sz, sn]), h=sh, hn=1 + shn))


def backward_twin(cell, acts, dh, dh_inject, c_prev=None, c=None, dc=None, h_prev=None,
                  hn=None, absolute=False):
    """One backward step in float64 (_core/cells.pxd's equations): "da" and, for lstm, "dc" and
    "dh" (dh + dh_inject), for gru, "da_n" and "dh" ((dh + dh_inject) z). With absolute=True
    every input is replaced by its magnitude and every difference by a sum (tanh(c) by
    1 + |tanh(c)|): the magnitudes that enter each value, its error's scale."""
    sub = np.add if absolute else np.subtract
    inputs = [acts, dh, dh_inject, c_prev, c, dc, h_prev, hn]
    acts, dh, dh_inject, c_prev, c, dc, h_prev, hn = (
        None if a is None else (np.abs if absolute else np.asarray)(a.astype(np.float64))
        for a in inputs)
    dh = dh if dh_inject is None else dh + dh_inject
    if cell in ("tanh", "relu"):
        slope = (acts > 0) if cell == "relu" else sub(1, acts * acts)
        return dict(da=dh * slope)
    if cell == "lstm":
        i, f, g, o = blocks(acts, 4)
        tc = 1 + np.abs(np.tanh(c)) if absolute else np.tanh(c)
        dcell = dc + dh * o * sub(1, tc * tc)
        da = np.hstack([dcell * g * i * sub(1, i), dcell * c_prev * f * sub(1, f),
                        dcell * i * sub(1, g * g), dh * tc * o * sub(1, o)])
        return dict(da=da, dc=dcell * f, dh=dh)
    r, z, n = blocks(acts, 3)
    dan = dh * sub(1, z) * sub(1, n * n)
    da = np.hstack([dan * hn * r * sub(1, r), dh * sub(h_prev, n) * z * sub(1, z), dan * r])
    return dict(da=da, da_n=dan, dh=dh * z)


def forward_inputs(cell, rows, H, dtype, rng, spread=1.0):
    """Random arguments of gate_forward (pre-activations scaled by spread)."""
    G = GATES[cell]
    args = dict(x=spread * rng.standard_normal((rows, G * H)), bias=rng.standard_normal(G * H))
    if cell == "lstm":
        args["c_prev"] = rng.standard_normal((rows, H))
    if cell == "gru":
        args.update(h_prev=rng.uniform(-1, 1, (rows, H)),
                    rec=spread * rng.standard_normal((rows, 3 * H)),
                    b_hh=rng.standard_normal(3 * H))
    return {name: a.astype(dtype) for name, a in args.items()}


def run_forward(cell, args):
    """gate_forward on copies of args; checks that gates changed in place."""
    args = {name: a.copy() for name, a in args.items()}
    x = args.pop("x")
    out = _kernels.gate_forward(cell, x, **args)
    assert out["gates"] is x
    if cell in ("tanh", "relu"):
        assert out["h"] is x
    return out


def check_forward(cell, args, dtype):
    out = run_forward(cell, args)
    want, scale = forward_twin(cell, **args)
    assert set(out) == set(want)
    for name in want:
        assert out[name].dtype == dtype
        assert_within(out[name], want[name], scale[name], dtype, name)
    return out


@pytest.mark.parametrize("rows, H", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_step_matches_the_twin(cell, dtype, rows, H):
    rng = np.random.default_rng(rows * 100 + H)
    check_forward(cell, forward_inputs(cell, rows, H, dtype, rng), dtype)


SATURATING = np.array([-1000.0, -745.0, -710.0, -104.0, -89.0, -88.0, -40.0, -20.0, -9.0,
                       -0.625, 0.625, 9.0, 20.0, 40.0, 88.0, 89.0, 104.0, 710.0, 745.0,
                       1000.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_step_far_into_the_saturated_branches(cell, dtype):
    """Pre-activations past exp's overflow in float32 (88.7) and float64 (709.8), past where
    sigmoid underflows and tanh rounds to +-1: finite, within [-1, 1], and the twin's."""
    rng = np.random.default_rng(1)
    H = 21
    args = forward_inputs(cell, 4, H, dtype, rng)
    args["x"] = rng.choice(SATURATING, args["x"].shape).astype(dtype)
    if cell == "gru":
        args["rec"] = rng.choice(SATURATING, args["rec"].shape).astype(dtype)
    out = check_forward(cell, args, dtype)
    assert all(np.all(np.isfinite(value)) for value in out.values())
    if cell != "relu":
        assert np.all(np.abs(out["gates"]) <= 1)


def backward_inputs(cell, rows, H, dtype, rng, inject=True):
    """Random arguments of gate_backward: activations from the twin's forward step."""
    args = forward_inputs(cell, rows, H, np.float64, rng)
    values, _ = forward_twin(cell, **args)
    back = dict(acts=values["gates"], dh=rng.standard_normal((rows, H)),
                dh_inject=rng.standard_normal((rows, H)) if inject else None)
    if cell == "lstm":
        back.update(c_prev=args["c_prev"], c=values["c"], dc=rng.standard_normal((rows, H)))
    if cell == "gru":
        back.update(h_prev=args["h_prev"], hn=values["hn"])
    return {name: None if a is None else a.astype(dtype) for name, a in back.items()}


def run_backward(cell, args):
    """gate_backward on copies of args; returns its outputs and the copies it was given."""
    given = {name: None if a is None else a.copy() for name, a in args.items()}
    call = dict(given)
    out = _kernels.gate_backward(cell, call.pop("acts"), call.pop("dh"), **call)
    return out, given


@pytest.mark.parametrize("inject", [True, False])
@pytest.mark.parametrize("rows, H", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_backward_step_matches_the_twin(cell, dtype, rows, H, inject):
    rng = np.random.default_rng(rows * 100 + H + 7)
    args = backward_inputs(cell, rows, H, dtype, rng, inject)
    out, given = run_backward(cell, args)
    want = backward_twin(cell, **args)
    scale = backward_twin(cell, **args, absolute=True)
    assert set(out) == set(want) | ({"da_n"} if cell == "gru" else set())
    for name in want:
        assert out[name].dtype == dtype
        assert_within(out[name], want[name], scale[name], dtype, name)
    if cell == "lstm":                     # dh and dc are updated in place
        assert out["dh"] is given["dh"] and out["dc"] is given["dc"]
    elif cell == "gru":
        assert out["dh"] is given["dh"]
    else:                                  # Elman's dh is only read
        np.testing.assert_array_equal(given["dh"], args["dh"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["tanh", "relu"])
def test_elman_backward_writes_over_its_injected_gradient(cell, dtype):
    """The engine passes the same buffer as dh_inject and da (the chunk's inject, consumed)."""
    rng = np.random.default_rng(3)
    args = backward_inputs(cell, 3, 19, dtype, rng)
    want = backward_twin(cell, **args)["da"]
    inject = args["dh_inject"].copy()
    out = _kernels.gate_backward(cell, args["acts"], args["dh"], dh_inject=inject, da=inject)
    assert out["da"] is inject
    assert_within(inject, want, backward_twin(cell, **args, absolute=True)["da"], dtype, "da")


@pytest.mark.parametrize("cell", CELLS)
def test_backward_step_is_the_gradient_of_the_forward_step(cell):
    """float64: central differences of L = <wh, h> (+ <wc, c> for lstm) through gate_forward,
    w.r.t. every input of the forward step, against what gate_backward returns for dh = wh
    (and dc = wc)."""
    rng = np.random.default_rng(5)
    rows, H = 2, 3
    args = forward_inputs(cell, rows, H, np.float64, rng)
    wh, wc = rng.standard_normal((rows, H)), rng.standard_normal((rows, H))

    def loss(changed):
        out = run_forward(cell, changed)
        return np.sum(wh * out["h"]) + (np.sum(wc * out["c"]) if cell == "lstm" else 0)

    def numeric(name, eps=1e-6):
        grad = np.zeros_like(args[name])
        for index in np.ndindex(grad.shape):
            plus, minus = dict(args), dict(args)
            plus[name], minus[name] = args[name].copy(), args[name].copy()
            plus[name][index] += eps
            minus[name][index] -= eps
            grad[index] = (loss(plus) - loss(minus)) / (2 * eps)
        return grad

    out = run_forward(cell, args)
    states = {"lstm": dict(c_prev=args.get("c_prev"), c=out.get("c"), dc=wc.copy()),
              "gru": dict(h_prev=args.get("h_prev"), hn=out.get("hn"))}.get(cell, {})
    back = _kernels.gate_backward(cell, out["gates"], wh.copy(), **states)
    da = back["da"]
    want = {"x": da, "bias": da.sum(axis=0)}
    if cell == "lstm":
        want["c_prev"] = back["dc"]
    if cell == "gru":
        x_side = np.hstack([da[:, :2 * H], back["da_n"]])     # dL/dx (r, z, n), dL/db_ih
        want.update(x=x_side, bias=x_side.sum(axis=0), rec=da, b_hh=da.sum(axis=0),
                    h_prev=back["dh"])                        # dh: the direct part, dh z
    assert set(want) == set(args)
    for name, grad in want.items():
        np.testing.assert_allclose(grad, numeric(name), rtol=1e-7, atol=1e-9, err_msg=name)


def test_the_wrappers_refuse_what_the_kernels_cannot_take():
    x, bias = np.zeros((2, 8)), np.zeros(8)
    c_prev = np.zeros((2, 2))
    cases = [
        (lambda: _kernels.gate_forward("elman", x, bias), "cell must be one of"),
        (lambda: _kernels.gate_forward("lstm", x, bias), "lstm kernels need c_prev"),
        (lambda: _kernels.gate_forward("lstm", x, bias, c_prev=c_prev, h_prev=c_prev),
         "h_prev is not an argument of the lstm kernels"),
        (lambda: _kernels.gate_forward("tanh", x, bias.astype(np.float32)),
         r"bias must be a C-contiguous float64 array of shape \(8,\), got float32"),
        (lambda: _kernels.gate_forward("gru", x, bias), r"3 \* H columns"),
        (lambda: _kernels.gate_forward("tanh", x.astype(np.int64), bias), "float32 or float64"),
        (lambda: _kernels.gate_forward("tanh", np.zeros((8, 2)).T, bias), "strided"),
        (lambda: _kernels.gate_backward("tanh", x, np.zeros((2, 7))), r"dh must .* \(2, 8\)"),
    ]
    for call, message in cases:
        before = x.copy()
        with pytest.raises(ValueError, match=message):
            call()
        np.testing.assert_array_equal(x, before)
    read_only = np.zeros((2, 2))
    read_only.setflags(write=False)
    with pytest.raises(ValueError, match="dc must be a C-contiguous writable .* read-only"):
        _kernels.gate_backward("lstm", x, np.zeros((2, 2)), c_prev=c_prev, c=c_prev,
                               dc=read_only)
