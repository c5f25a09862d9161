"""The flat parameter layout every engine reads: per layer weight_ih (G*H, in), weight_hh
(G*H, H), bias_ih, bias_hh, then head.weight (O, H) and head.bias (O,), PyTorch's state_dict
order (offsets from _core/shape.pxd's layer_offset)."""
from ._core.shape cimport Shape, layer_offset

GATES = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3}


cdef int _fill_shape(Shape* s, str cell, Py_ssize_t num_layers, Py_ssize_t input_size,
                     Py_ssize_t hidden_size, Py_ssize_t output_size) except -1:
    """The fields of s the layout reads."""
    if cell not in GATES:
        raise ValueError(f"cell must be one of {sorted(GATES)}, got {cell!r}")
    if min(num_layers, input_size, hidden_size) < 1 or output_size < 0:
        raise ValueError("every size must be at least 1 (output_size: 0 for no head)")
    s.gate_count = GATES[cell]
    s.num_layers = num_layers
    s.input_size = input_size
    s.hidden_size = hidden_size
    return 0


def param_layout(str cell, Py_ssize_t num_layers, Py_ssize_t input_size,
                 Py_ssize_t hidden_size, Py_ssize_t output_size):
    """[(name, shape, offset)] of every parameter in the flat buffer, in state_dict order
    (output_size 0: no head, no head.* entries)."""
    cdef Shape s
    _fill_shape(&s, cell, num_layers, input_size, hidden_size, output_size)
    layout = []
    cdef Py_ssize_t layer, offset, in_size
    cdef Py_ssize_t gh = s.gate_count * hidden_size
    for layer in range(num_layers):
        offset = layer_offset(&s, layer)
        in_size = input_size if layer == 0 else hidden_size
        layout.append((f"weight_ih_l{layer}", (gh, in_size), offset))
        layout.append((f"weight_hh_l{layer}", (gh, hidden_size), offset + gh * in_size))
        layout.append((f"bias_ih_l{layer}", (gh,), offset + gh * (in_size + hidden_size)))
        layout.append((f"bias_hh_l{layer}", (gh,), offset + gh * (in_size + hidden_size + 1)))
    offset = layer_offset(&s, num_layers)
    if output_size == 0:
        return layout
    layout.append(("head.weight", (output_size, hidden_size), offset))
    layout.append(("head.bias", (output_size,), offset + output_size * hidden_size))
    return layout


def param_count(str cell, Py_ssize_t num_layers, Py_ssize_t input_size,
                Py_ssize_t hidden_size, Py_ssize_t output_size):
    """Number of entries in the flat parameter buffer."""
    cdef Shape s
    _fill_shape(&s, cell, num_layers, input_size, hidden_size, output_size)
    return layer_offset(&s, num_layers) + output_size * (hidden_size + 1)
