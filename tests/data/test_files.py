"""CSV, NPZ and IDX loaders, including the errors that name file, line and column."""
import gzip
import struct

import numpy as np
import pytest

from gradlab.data import DataFormatError, load_csv, load_dataset, load_idx, load_npz, read_idx


def _write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_with_header_label_by_name_and_index(tmp_path):
    path = _write(tmp_path, "a,label,b\n1,0,2\n3,1,4\n5,2,6\n")
    X, y = load_csv(path, label="label")
    assert X.tolist() == [[1, 2], [3, 4], [5, 6]] and y.tolist() == [0, 1, 2]
    assert X.dtype == np.float32 and y.dtype == np.int64
    X2, y2 = load_csv(path, label=1)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)


def test_csv_without_header_defaults_to_last_column(tmp_path):
    X, y = load_csv(_write(tmp_path, "0.5,1.5,1\n2.5,3.5,0\n"))
    assert X.tolist() == [[0.5, 1.5], [2.5, 3.5]] and y.tolist() == [1, 0]


def test_csv_ragged_row_names_file_and_line(tmp_path):
    path = _write(tmp_path, "x,y,label\n1,2,0\n3,4\n")
    with pytest.raises(DataFormatError, match=r"data\.csv, line 3: expected 3 columns, found 2"):
        load_csv(path)


def test_csv_non_numeric_cell_names_line_and_column(tmp_path):
    path = _write(tmp_path, "x,y,label\n1,2,0\n3,abc,1\n")
    with pytest.raises(DataFormatError, match=r"line 3, column 2 \('y'\): 'abc' is not a number"):
        load_csv(path)


def test_csv_non_integer_label_is_a_clear_error(tmp_path):
    path = _write(tmp_path, "1,2,0\n3,4,0.5\n")
    with pytest.raises(DataFormatError, match=r"line 2, column 3: label 0\.5 is not a "
                                              r"non-negative integer class index"):
        load_csv(path)
    X, y = load_csv(path, task="regression")
    assert y.dtype == np.float32 and y.tolist() == [0.0, 0.5]


def test_csv_unknown_label_name_lists_columns(tmp_path):
    path = _write(tmp_path, "x,y,target\n1,2,0\n")
    with pytest.raises(DataFormatError, match="no column named 'label'; the columns are x, y, "
                                              "target"):
        load_csv(path, label="label")


def test_csv_non_utf8_and_missing_and_directory(tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("caf\xe9,1\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match="not UTF-8"):
        load_csv(str(bad))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_csv(str(tmp_path / "nope.csv"))
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_csv(str(tmp_path))


def test_csv_nan_cell_is_refused(tmp_path):
    with pytest.raises(DataFormatError, match="line 1, column 2: value nan is not finite"):
        load_csv(_write(tmp_path, "1,nan,0\n"))


def test_csv_value_beyond_float32_is_refused_with_its_place(tmp_path):
    # float32 would turn it into inf (NumPy only warns)
    path = _write(tmp_path, "a,b,label\n1,2,0\n3,-1e39,1\n5,1e300,1\n")
    with pytest.raises(DataFormatError, match=r"line 3, column 2: value -1e\+39 is beyond "
                                              r"float32's range.*\(2 such values\); rescale"):
        load_csv(path, label="label")
    # A regression target is a float32 too; a large class label has its own message
    with pytest.raises(DataFormatError, match="line 2, column 2: value 1e\\+40 is beyond"):
        load_csv(_write(tmp_path, "x,t\n1,1e40\n", "reg.csv"), task="regression")
    with pytest.raises(DataFormatError, match="far too large for a class index"):
        load_csv(_write(tmp_path, "x,t\n1,1e40\n", "cls.csv"))
    X, _ = load_csv(_write(tmp_path, "x,t\n3e38,0\n-3e38,1\n", "edge.csv"))
    assert np.isfinite(X).all()


def test_npz_default_and_explicit_keys(tmp_path):
    path = str(tmp_path / "d.npz")
    np.savez(path, X=np.ones((4, 2, 2)), y=np.array([0, 1, 1, 0]))
    X, y = load_npz(path)
    assert X.shape == (4, 4) and y.tolist() == [0, 1, 1, 0] and y.dtype == np.int64
    np.savez(path, feats=np.ones((2, 3)), cls=np.array([1.0, 2.5]))
    with pytest.raises(DataFormatError, match="no feature array found"):
        load_npz(path)
    with pytest.raises(DataFormatError, match=r"cls\[1\]: label 2\.5 is not"):
        load_npz(path, x_key="feats", y_key="cls")


def _idx(path, array, code):
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", s)
                                                        for s in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def test_idx_directory_with_train_and_test(tmp_path):
    imgs = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2) * 20
    _idx(tmp_path / "train-images-idx3-ubyte", imgs, 0x08)
    _idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 0, 2], np.uint8), 0x08)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs[:2], 0x08)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([2, 2], np.uint8), 0x08)
    (X, y), test = load_idx(str(tmp_path))
    assert X.shape == (3, 4) and np.allclose(X[1], imgs[1].ravel() / 255.0)
    assert y.tolist() == [1, 0, 2] and test[1].tolist() == [2, 2]
    X2, y2, test2 = load_dataset(f"idx:{tmp_path}")
    assert np.array_equal(X, X2) and test2[0].shape == (2, 4)


def test_idx_rejects_bad_magic_and_size(tmp_path):
    path = tmp_path / "x-idx"
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataFormatError, match="bad magic"):
        read_idx(str(path))
    _idx(path, np.zeros((2, 2), np.uint8), 0x08)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataFormatError, match=r"shape \(2, 2\) \(4 bytes\) but the file holds 3"):
        read_idx(str(path))


def test_load_dataset_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="valid choices: digits, spirals, moons, circles, "
                                         "csv:PATH, npz:PATH, idx:DIR"):
        load_dataset("mnist")
