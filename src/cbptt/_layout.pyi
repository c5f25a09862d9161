"""Type stubs for the flat parameter layout."""
GATES: dict[str, int]

def param_layout(cell: str, num_layers: int, input_size: int, hidden_size: int,
                 output_size: int) -> list[tuple[str, tuple[int, ...], int]]: ...
def param_count(cell: str, num_layers: int, input_size: int, hidden_size: int,
                output_size: int) -> int: ...
