"""cbptt.ts_files.read_ts on small .ts files written here: values, padding, lengths, labels, and
a one-line DataError for each way a file can be wrong."""
import numpy as np
import pytest

from cbptt.data import DataError
from cbptt.ts_files import read_ts

HEADER = """# a comment
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down flat
@data
"""


def write(tmp_path, text, name="tiny.ts"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_cases_of_different_lengths_padded_with_their_labels(tmp_path):
    path = write(tmp_path, HEADER + "1,2,3:4,5,6:down\n\n-1.5,0.25:0,7:up\n# late comment\n"
                                    "9:8:down\n")
    data = read_ts(path, dtype=np.float32)
    assert data.X.dtype == np.float32 and data.X.shape == (3, 3, 2)
    np.testing.assert_array_equal(data.X[0], [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(data.X[1], [[-1.5, 0], [0.25, 7], [0, 0]])
    np.testing.assert_array_equal(data.X[2], [[9, 8], [0, 0], [0, 0]])
    assert data.lengths.dtype == np.int64 and data.lengths.tolist() == [3, 2, 1]
    assert data.y.tolist() == [1, 0, 1]                  # indices into @classLabel's list
    assert data.classes == ("up", "down", "flat")


def test_default_dtype_is_float64_and_a_univariate_file_has_one_feature(tmp_path):
    header = HEADER.replace("@dimensions 2", "@dimensions 1")
    data = read_ts(write(tmp_path, header + "0.1,0.2:flat\n0.3:up\n"))
    assert data.X.dtype == np.float64 and data.X.shape == (2, 2, 1)
    assert data.X[0, 1, 0] == 0.2 and data.y.tolist() == [2, 0]


@pytest.mark.parametrize("text, message", [
    (HEADER.replace("@data\n", ""), "no @data line"),
    (HEADER.replace("@classLabel true up down flat\n", "") + "1:2:up\n", "@classLabel true"),
    (HEADER.replace("@classLabel true up down flat", "@classLabel false"), "class-labelled"),
    (HEADER.replace("@timeStamps false", "@timeStamps true"), "not supported"),
    (HEADER.replace("@missing false", "@missing true"), "not supported"),
    (HEADER.replace("@dimensions 2", "@dimensions two"), "positive integer"),
    (HEADER, "no cases after @data"),
    (HEADER + "1,2:3,4:sideways\n", "line 10: class label 'sideways'"),
    (HEADER + "1,2:3,4:5,6:up\n", "line 10: 3 dimensions, expected 2"),
    (HEADER + "1,2:3:up\n", "line 10: dimensions of different lengths (2, 1)"),
    (HEADER + "1,?:3,4:up\n", "line 10, dimension 0: missing values"),
    (HEADER + "1,2:3,x:up\n", "line 10, dimension 1: not a comma-separated list"),
    (HEADER + "1,2:3,inf:up\n", "line 10: NaN or Inf"),
    ("1,2:3,4:up\n" + HEADER, "line 1: data before @data"),
])
def test_a_malformed_file_is_one_data_error_naming_it(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        read_ts(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_missing_or_empty_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_ts(tmp_path / "absent.ts")
    with pytest.raises(DataError, match="empty"):
        read_ts(write(tmp_path, ""))
