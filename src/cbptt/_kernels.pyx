"""Python wrappers of the engine's kernels, for the tests only: the vectorised functions
(_core/vmath.h; tests/core/test_vmath.py), the panel kernels (_core/panels.h;
test_products.py), the cell step kernels (_core/cells.pxd over _core/cell_steps.h;
test_gates.py) and the loss kernels (_core/losses.pxd; test_losses.py). The kernels are
``cdef inline`` functions that the engine calls on raw pointers, unreachable from Python.

Each wrapper checks its arrays (C-contiguous, of the first array's dtype, float32 or float64,
and the kernel's shapes; ValueError naming the argument otherwise), calls the kernel once on
them with the GIL released, and returns what the kernel wrote. What a kernel changes in place
changes here in place too (the forward step turns its pre-activations into activations; the
LSTM and GRU backward steps update the carried gradients), so that tests see the semantics the
engine relies on.
"""
import numpy as np

cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t

from ._core.cells cimport (elman_backward, elman_forward, gru_backward, gru_forward,
                      lstm_backward, lstm_forward)
from ._core.losses cimport cross_entropy_loss, mse_loss
from ._core.cells cimport v_sigmoid, v_tanh
from ._core.products cimport (CBPTT_PANEL_F32, CBPTT_PANEL_F64, cbptt_pack_f32, cbptt_pack_f64,
                              cbptt_panel_gemm_f32, cbptt_panel_gemm_f64,
                              cbptt_panels_supported, cbptt_wgrad_f32, cbptt_wgrad_f64)

cnp.import_array()

# gate blocks per cell: pre-activations (rows, G*H)
GATES = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3}
# the state arguments each cell's kernels take, beyond gates, bias and dh (and dh_inject, da)
_FORWARD_ARGS = {"tanh": (), "relu": (), "lstm": ("c_prev",), "gru": ("h_prev", "rec", "b_hh")}
_BACKWARD_ARGS = {"tanh": (), "relu": (), "lstm": ("c_prev", "c", "dc"), "gru": ("h_prev", "hn")}


cdef object _checked(object array, str name, tuple shape, object dtype, bint writable=False):
    """array when it is a C-contiguous ndarray of dtype and shape (and writable if asked);
    ValueError naming it otherwise."""
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape \
            or not array.flags.c_contiguous or (writable and not array.flags.writeable):
        got = (f"{array.dtype} {array.shape}{'' if array.flags.c_contiguous else ', strided'}"
               f"{'' if array.flags.writeable else ', read-only'}"
               if isinstance(array, np.ndarray) else type(array).__name__)
        raise ValueError(f"{name} must be a C-contiguous{' writable' if writable else ''} "
                         f"{np.dtype(dtype).name} array of shape {shape}, got {got}")
    return array


cdef tuple _cell_shape(str cell, object gates):
    """(rows, H, dtype) of a cell's gates (rows, G*H), float32 or float64."""
    if cell not in GATES:
        raise ValueError(f"cell must be one of {sorted(GATES)}, got {cell!r}")
    if not isinstance(gates, np.ndarray) or gates.ndim != 2 or \
            gates.dtype not in (np.float32, np.float64):
        raise ValueError(f"gates must be a float32 or float64 array of shape (rows, "
                         f"{GATES[cell]} * H), got {getattr(gates, 'shape', type(gates))}")
    rows, width = gates.shape
    if width == 0 or width % GATES[cell]:
        raise ValueError(f"gates of a {cell} cell must have {GATES[cell]} * H columns (H >= 1), "
                         f"got {width}")
    return rows, width // GATES[cell], gates.dtype


cdef dict _states(str cell, dict given, tuple allowed, tuple shapes, object dtype):
    """The cell's state arguments, checked (shapes[i] for allowed[i]); ValueError for one
    missing or one that the cell's kernel does not take."""
    for name, value in given.items():
        if value is not None and name not in allowed:
            raise ValueError(f"{name} is not an argument of the {cell} kernels")
    states = {}
    for name, shape in zip(allowed, shapes):
        if given[name] is None:
            raise ValueError(f"the {cell} kernels need {name}, an array of shape {shape}")
        states[name] = _checked(given[name], name, shape, dtype, writable=name == "dc")
    return states


cdef inline void* _data(object array):
    return NULL if array is None else cnp.PyArray_DATA(<cnp.ndarray>array)


cdef void _forward(int kind, floating* gates, const floating* bias, const floating* c_prev,
                   const floating* h_prev, const floating* rec, const floating* b_hh,
                   floating* c, floating* h, floating* hn, Py_ssize_t rows,
                   Py_ssize_t hidden) noexcept nogil:
    """kind: 0 tanh, 1 relu, 2 lstm, 3 gru."""
    if kind == 2:
        lstm_forward(gates, bias, c_prev, c, h, rows, hidden)
    elif kind == 3:
        gru_forward(gates, rec, bias, b_hh, h_prev, h, hn, rows, hidden)
    else:
        elman_forward(kind == 1, gates, bias, rows, hidden)


cdef void _backward(int kind, const floating* gates, floating* dh, const floating* dh_inject,
                    const floating* c_prev, const floating* c, floating* dc,
                    const floating* h_prev, const floating* hn, floating* da,
                    floating* da_n, Py_ssize_t rows, Py_ssize_t hidden) noexcept nogil:
    """kind: 0 tanh, 1 relu, 2 lstm, 3 gru."""
    if kind == 2:
        lstm_backward(gates, c_prev, c, dh, dh_inject, dc, da, rows, hidden)
    elif kind == 3:
        gru_backward(gates, hn, h_prev, dh, dh_inject, da, da_n, rows, hidden)
    else:
        elman_backward(kind == 1, gates, dh, dh_inject, da, rows * hidden)


def gate_forward(str cell, gates, bias, *, c_prev=None, h_prev=None, rec=None, b_hh=None):
    """One forward step of a cell's kernel; returns {"gates": gates, "h": h, ...}.

    tanh, relu: gates (rows, H) pre-activations without bias, bias (H,); gates become
    h = act(gates + bias) in place ("h" is gates).
    lstm: gates (rows, 4H) in order i, f, g, o without bias, bias (4H,), c_prev (rows, H);
    gates become the activations in place; new c and h (rows, H).
    gru: gates (rows, 3H) = x W_ih^T (r, z, n), rec (rows, 3H) = h_prev W_hh^T, bias = b_ih
    (3H,), b_hh (3H,), h_prev (rows, H); gates become r, z, n in place; new h and hn (rows, H),
    hn = rec_n + b_hn.
    """
    rows, H, dtype = _cell_shape(cell, gates)
    _checked(gates, "gates", gates.shape, dtype, writable=True)
    _checked(bias, "bias", (GATES[cell] * H,), dtype)
    given = dict(c_prev=c_prev, h_prev=h_prev, rec=rec, b_hh=b_hh)
    shapes = {"c_prev": (rows, H), "h_prev": (rows, H), "rec": (rows, 3 * H), "b_hh": (3 * H,)}
    allowed = _FORWARD_ARGS[cell]
    states = _states(cell, given, allowed, tuple(shapes[name] for name in allowed), dtype)
    out = {"gates": gates, "h": gates}
    if cell in ("lstm", "gru"):
        out["h"] = np.empty((rows, H), dtype)
        out["c" if cell == "lstm" else "hn"] = np.empty((rows, H), dtype)
    cdef int kind = ("tanh", "relu", "lstm", "gru").index(cell)
    cdef void* g = _data(gates)
    cdef void* b = _data(bias)
    cdef void* cp = _data(states.get("c_prev"))
    cdef void* hp = _data(states.get("h_prev"))
    cdef void* r = _data(states.get("rec"))
    cdef void* bh = _data(states.get("b_hh"))
    cdef void* c = _data(out.get("c"))
    cdef void* h = _data(out["h"])
    cdef void* hn = _data(out.get("hn"))
    cdef Py_ssize_t n = rows, hidden = H
    cdef bint is_double = dtype == np.float64
    with nogil:
        if is_double:
            _forward(kind, <double*>g, <double*>b, <double*>cp, <double*>hp, <double*>r,
                     <double*>bh, <double*>c, <double*>h, <double*>hn, n, hidden)
        else:
            _forward(kind, <float*>g, <float*>b, <float*>cp, <float*>hp, <float*>r,
                     <float*>bh, <float*>c, <float*>h, <float*>hn, n, hidden)
    return out


def gate_backward(str cell, gates, dh, *, dh_inject=None, c_prev=None, c=None, dc=None,
                  h_prev=None, hn=None, da=None):
    """One backward step of a cell's kernel from the activations its forward step left in
    gates; returns {"da": da, ...}. dh_inject (rows, H) may be None; da may be given (the
    output, (rows, G*H)), else a new array.

    tanh, relu: gates = h (rows, H); da = (dh + dh_inject) act'; dh is left alone (da may be
    dh or dh_inject: the engine writes it over dh_inject).
    lstm: c_prev, c (rows, H); dh (rows, H) becomes dh + dh_inject in place; dc (rows, H)
    enters as dL/dc_t and leaves as dL/dc_{t-1} (returned as "dc"); da (rows, 4H).
    gru: h_prev, hn (rows, H); dh (rows, H) becomes (dh + dh_inject) z in place; da (rows, 3H)
    the recurrent side's (dar, daz, dhn) and "da_n" (rows, H) the input side's n gradient.
    """
    rows, H, dtype = _cell_shape(cell, gates)
    _checked(gates, "gates", gates.shape, dtype)
    _checked(dh, "dh", (rows, H), dtype, writable=cell in ("lstm", "gru"))
    if dh_inject is not None:
        _checked(dh_inject, "dh_inject", (rows, H), dtype)
    given = dict(c_prev=c_prev, c=c, dc=dc, h_prev=h_prev, hn=hn)
    allowed = _BACKWARD_ARGS[cell]
    states = _states(cell, given, allowed, ((rows, H),) * len(allowed), dtype)
    if da is None:
        da = np.empty(gates.shape, dtype)
    out = {"da": _checked(da, "da", gates.shape, dtype, writable=True)}
    if cell == "lstm":
        out.update(dc=states["dc"], dh=dh)
    elif cell == "gru":
        out.update(da_n=np.empty((rows, H), dtype), dh=dh)
    cdef int kind = ("tanh", "relu", "lstm", "gru").index(cell)
    cdef void* g = _data(gates)
    cdef void* d = _data(dh)
    cdef void* inject = _data(dh_inject)
    cdef void* cp = _data(states.get("c_prev"))
    cdef void* ct = _data(states.get("c"))
    cdef void* dct = _data(states.get("dc"))
    cdef void* hp = _data(states.get("h_prev"))
    cdef void* hnt = _data(states.get("hn"))
    cdef void* a = _data(da)
    cdef void* an = _data(out.get("da_n"))
    cdef Py_ssize_t n = rows, hidden = H
    cdef bint is_double = dtype == np.float64
    with nogil:
        if is_double:
            _backward(kind, <double*>g, <double*>d, <double*>inject, <double*>cp,
                      <double*>ct, <double*>dct, <double*>hp, <double*>hnt, <double*>a,
                      <double*>an, n, hidden)
        else:
            _backward(kind, <float*>g, <float*>d, <float*>inject, <float*>cp, <float*>ct,
                      <float*>dct, <float*>hp, <float*>hnt, <float*>a, <float*>an, n,
                      hidden)
    return out


cdef double _loss(bint mse, const floating* pred, const void* target, const floating* weight,
                  Py_ssize_t steps, Py_ssize_t first, Py_ssize_t count, Py_ssize_t batch,
                  Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t width, double scale,
                  floating* dpred) noexcept nogil:
    if mse:
        return mse_loss(pred, <const floating*>target, weight, steps, first, count, batch,
                        row0, rows, width, scale, dpred)
    return cross_entropy_loss(pred, <const int64_t*>target, weight, steps, first, count, batch,
                              row0, rows, width, scale, dpred)


def loss(str kind, pred, target, weight=None, double scale=1.0, *, Py_ssize_t first=0,
         Py_ssize_t row0=0, rows=None, dpred=None):
    """(value, dpred) of a loss kernel over the steps [first, first + count) and the batch
    rows [row0, row0 + rows) (all rows after row0 by default).

    pred (count, batch, width) time-major, the predictions of those steps; target batch-first
    over all the steps: (batch, steps, width) of pred's dtype for "mse", (batch, steps) int64
    class ids in [0, width) for "cross_entropy"; weight (batch, steps) of pred's dtype or
    None. value = scale * sum of the rows' (weighted) losses; dpred, its gradient w.r.t. pred,
    is written in those rows only (given, or a new array of zeros).
    """
    if kind not in ("mse", "cross_entropy"):
        raise ValueError(f"kind must be 'mse' or 'cross_entropy', got {kind!r}")
    if not isinstance(pred, np.ndarray) or pred.ndim != 3 or \
            pred.dtype not in (np.float32, np.float64):
        raise ValueError(f"pred must be a float32 or float64 array of shape (count, batch, "
                         f"width), got {getattr(pred, 'shape', type(pred))}")
    count, batch, width = pred.shape
    dtype = pred.dtype
    _checked(pred, "pred", pred.shape, dtype)
    if width < 1:
        raise ValueError("pred must have a width of at least 1")
    cdef bint mse = kind == "mse"
    if not isinstance(target, np.ndarray) or target.ndim != (3 if mse else 2) \
            or target.shape[0] != batch:
        raise ValueError(f"target must have the shape (batch={batch}, steps"
                         f"{', ' + str(width) if mse else ''}), got "
                         f"{getattr(target, 'shape', type(target))}")
    steps = target.shape[1]
    _checked(target, "target", (batch, steps, width) if mse else (batch, steps),
             dtype if mse else np.int64)
    if not mse and target.size and (target.min() < 0 or target.max() >= width):
        raise ValueError(f"target class ids must lie in [0, {width}), got "
                         f"[{target.min()}, {target.max()}]")
    if weight is not None:
        _checked(weight, "weight", (batch, steps), dtype)
    if rows is None:
        rows = batch - row0
    if not 0 <= first <= first + count <= steps:
        raise ValueError(f"the steps [first, first + count) = [{first}, {first + count}) must "
                         f"lie within target's {steps} steps")
    if not (0 <= row0 and 0 <= rows and row0 + rows <= batch):
        raise ValueError(f"the rows [row0, row0 + rows) = [{row0}, {row0 + rows}) must lie "
                         f"within the batch of {batch}")
    if dpred is None:
        dpred = np.zeros_like(pred)
    _checked(dpred, "dpred", pred.shape, dtype, writable=True)
    cdef void* p = _data(pred)
    cdef void* y = _data(target)
    cdef void* w = _data(weight)
    cdef void* g = _data(dpred)
    cdef Py_ssize_t n_steps = steps, n_count = count, n_batch = batch, n_rows = rows
    cdef Py_ssize_t n_width = width
    cdef double value
    cdef bint is_double = dtype == np.float64
    with nogil:
        if is_double:
            value = _loss(mse, <double*>p, y, <double*>w, n_steps, first, n_count, n_batch,
                          row0, n_rows, n_width, scale, <double*>g)
        else:
            value = _loss(mse, <float*>p, y, <float*>w, n_steps, first, n_count, n_batch,
                          row0, n_rows, n_width, scale, <float*>g)
    return value, dpred


# the vectorised functions and the panel kernels alone

def activation(str name, array):
    """sigmoid or tanh of a C-contiguous float32/float64 array, in place, through the cell
    kernels' vectorised functions (_core/vmath.h): for tests."""
    if not isinstance(array, np.ndarray) or array.dtype not in (np.float32, np.float64):
        raise TypeError("array: expected a float32 or float64 ndarray")
    _checked(array, "array", array.shape, array.dtype, writable=True)
    cdef void* data = _data(array)
    cdef Py_ssize_t count = array.size
    cdef bint is_double = array.dtype == np.float64
    if name not in ("sigmoid", "tanh"):
        raise ValueError(f"name must be 'sigmoid' or 'tanh', got {name!r}")
    with nogil:
        if is_double:
            if name == "sigmoid":
                v_sigmoid(<double*>data, <double*>NULL, <double*>data, count)
            else:
                v_tanh(<double*>data, <double*>NULL, <double*>data, count)
        elif name == "sigmoid":
            v_sigmoid(<float*>data, <float*>NULL, <float*>data, count)
        else:
            v_tanh(<float*>data, <float*>NULL, <float*>data, count)
    return array


def weight_gradient(a, b, double beta, c, sums=None):
    """c = a.T @ b + beta c (and, if given, sums = a's column sums + beta sums) through the
    weight-gradient kernel of _core/panels.h: for tests. a (k, m), b (k, n), c (m, n), sums (m,),
    C-contiguous of one float dtype."""
    if not cbptt_panels_supported():
        raise RuntimeError("this processor has no AVX-512F")
    cdef cnp.ndarray A = a, B = b, C = c
    cdef cnp.ndarray S = None if sums is None else sums
    if A.dtype == np.float32:
        cbptt_wgrad_f32(A.shape[1], B.shape[1], A.shape[0], <float*>A.data, A.shape[1],
                        <float*>B.data, B.shape[1], <float>beta, <float*>C.data, C.shape[1],
                        NULL if S is None else <float*>S.data)
    else:
        cbptt_wgrad_f64(A.shape[1], B.shape[1], A.shape[0], <double*>A.data, A.shape[1],
                        <double*>B.data, B.shape[1], beta, <double*>C.data, C.shape[1],
                        NULL if S is None else <double*>S.data)


def panel_product(a, b, bint trans, double beta, c, Py_ssize_t first, Py_ssize_t count):
    """c[:, first:first+count] = a @ op(b)[:, first:first+count] + beta c[:, first:first+count]
    through the packed-panel product (op(b) = b.T with trans), first a multiple of the panel
    width: the kernel alone, for tests. a, b, c C-contiguous of one float dtype."""
    if not cbptt_panels_supported():
        raise RuntimeError("this processor has no AVX-512F")
    cdef cnp.ndarray A = a, B = b, C = c
    k = A.shape[1]
    n = B.shape[0] if trans else B.shape[1]
    dtype = C.dtype
    width = CBPTT_PANEL_F32 if dtype == np.float32 else CBPTT_PANEL_F64
    if first % width or not 0 <= first <= first + count <= n:
        raise ValueError(f"first must be a multiple of {width} and the block inside {n} columns")
    cdef cnp.ndarray panels = np.empty(k * (-(-n // width) * width), dtype=dtype)
    if dtype == np.float32:
        cbptt_pack_f32(<float*>B.data, B.shape[1], trans, k, first, count, <float*>panels.data)
        cbptt_panel_gemm_f32(A.shape[0], k, <float*>A.data, k, <float*>panels.data, first,
                             count, <float>beta, <float*>C.data, C.shape[1])
    else:
        cbptt_pack_f64(<double*>B.data, B.shape[1], trans, k, first, count, <double*>panels.data)
        cbptt_panel_gemm_f64(A.shape[0], k, <double*>A.data, k, <double*>panels.data, first,
                             count, beta, <double*>C.data, C.shape[1])
