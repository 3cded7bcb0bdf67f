"""Vectors and tables: reading .npy, .npz and .csv files and Python arrays, the checks on them, and standardising."""

import os

import numpy as np
import pytest
import torch

from iic.data.vectors import Standardiser, VectorSet, read_vectors, vectors_from_array
from iic.errors import IICError


def message(call, *args, **kwargs) -> str:
    with pytest.raises(IICError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


class FakeFrame:
    """What vectors_from_array uses of a pandas DataFrame, so that the tests need no pandas."""

    def __init__(self, columns, rows):
        self.columns, self.rows = columns, rows

    def to_numpy(self):
        return np.array(self.rows, dtype=object if any(isinstance(v, str) for r in self.rows for v in r) else None)


# --- round trips -------------------------------------------------------------------------------------------------

def test_npy_round_trip(tmp_path):
    array = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    np.save(tmp_path / "v.npy", array)
    train, test = read_vectors(tmp_path / "v.npy")
    assert test is None and train.labels is None and train.class_names is None
    assert train.features.dtype == np.float32 and train.features.shape == (4, 3) and len(train) == 4
    np.testing.assert_array_equal(train.features, array.astype(np.float32))
    assert train.feature_names == ["x0", "x1", "x2"] and train.num_classes == 0


def test_npz_x_and_text_y(tmp_path):
    np.savez(tmp_path / "v.npz", x=np.eye(3, dtype=np.int32), y=np.array(["dog", "cat", "dog"]))
    train, test = read_vectors(tmp_path / "v.npz")
    assert test is None
    np.testing.assert_array_equal(train.features, np.eye(3, dtype=np.float32))
    assert train.class_names == ["cat", "dog"] and train.labels.tolist() == [1, 0, 1] and train.num_classes == 2
    assert train.labels.dtype == np.int64 and train.feature_names == ["x0", "x1", "x2"]


def test_npz_train_and_test_share_class_ids(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(3, 2)), rng.normal(size=(2, 2))
    np.savez(tmp_path / "v.npz", x_train=x_train, y_train=[7, 5, 7], x_test=x_test, y_test=np.array([[9], [5]]))
    train, test = read_vectors(tmp_path / "v.npz")
    assert train.class_names == test.class_names == ["5", "7", "9"]
    assert train.labels.tolist() == [1, 0, 1] and test.labels.tolist() == [2, 0]
    np.testing.assert_array_equal(test.features, x_test.astype(np.float32))


def test_npz_splits_without_labels(tmp_path):
    np.savez(tmp_path / "v.npz", x_train=np.ones((3, 2)), x_test=np.zeros((1, 2)))
    train, test = read_vectors(tmp_path / "v.npz")
    assert (len(train), len(test)) == (3, 1) and train.labels is None and test.labels is None


def test_csv_with_a_text_label_column(tmp_path):
    path = write_csv(tmp_path / "t.csv", "height, species ,width\n1.5,dog,2\n-3e2, cat ,4\n\n5,dog,6.25\n")
    train, test = read_vectors(path, label="species")
    assert test is None and train.feature_names == ["height", "width"]
    np.testing.assert_array_equal(train.features, np.array([[1.5, 2], [-300, 4], [5, 6.25]], np.float32))
    assert train.class_names == ["cat", "dog"] and train.labels.tolist() == [1, 0, 1]


def test_csv_number_labels_sort_by_value(tmp_path):
    path = write_csv(tmp_path / "t.csv", "a,b,y\n1,2,10\n3,4,9\n5,6,2.0\n7,8,9\n")
    train, _ = read_vectors(path, label="y")
    assert train.class_names == ["2", "9", "10"] and train.labels.tolist() == [2, 1, 0, 1]


def test_csv_without_a_label_column_is_all_features(tmp_path):
    path = write_csv(tmp_path / "t.csv", "\ufeffa,b,y\n1,2,3\n4,5,6\n")  # with the byte-order mark Excel writes
    train, _ = read_vectors(path)
    assert train.feature_names == ["a", "b", "y"] and train.labels is None and train.features.shape == (2, 3)


def test_arrays_tensors_and_frames():
    from_array = vectors_from_array(np.arange(6).reshape(3, 2), labels=["b", "a", "b"])
    assert from_array.class_names == ["a", "b"] and from_array.labels.tolist() == [1, 0, 1]
    assert from_array.feature_names == ["x0", "x1"] and from_array.features.dtype == np.float32
    tensor = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).requires_grad_()
    from_tensor = vectors_from_array(tensor, labels=torch.tensor([3, -1]))
    np.testing.assert_array_equal(from_tensor.features, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert from_tensor.class_names == ["-1", "3"] and from_tensor.labels.tolist() == [1, 0]
    frame = vectors_from_array(FakeFrame(["age", 7], [[30, 1.5], [40, 2.5]]), labels=[True, False])
    assert frame.feature_names == ["age", "7"] and frame.features.tolist() == [[30, 1.5], [40, 2.5]]
    assert frame.class_names == ["0", "1"] and frame.labels.tolist() == [1, 0]
    mixed = vectors_from_array(np.zeros((4, 1)), labels=np.array([2, "b", 1.5, (1, 2)], dtype=object))
    assert mixed.class_names == ["(1, 2)", "1.5", "2", "b"] and mixed.labels.tolist() == [2, 3, 1, 0]


def test_a_frame_with_a_text_column():
    frame = FakeFrame(["age", "city"], [[30, 1.5], [40, "Paris"]])
    assert message(vectors_from_array, frame, source="people") == ("people: column 'city', row 1: 'Paris' is not a "
                                                                     "number")


# --- errors ------------------------------------------------------------------------------------------------------

BAD_FILES = [
    ("v.txt", lambda p: p.write_text("1 2"), None, "{path}: unknown file type '.txt': give an .npy, .npz or .csv file"),
    ("v.npy", lambda p: None, None, "no such file: {path}"),
    ("v.npy", lambda p: np.save(p, np.zeros((2, 2))), "y",
     "{path}: a label column ('y') is for .csv files; an .npy file's labels are none (an .npz can hold them: x and y)"),
    ("v.npy", lambda p: np.save(p, np.arange(3.0)), None,
     "{path}: got a 1-D array of shape (3,): give an N × D array; one sample per row (a single feature is "
     "x.reshape(-1, 1))"),
    ("v.npy", lambda p: np.save(p, np.zeros((2, 2, 2))), None,
     "{path}: expected an N × D array (one sample per row), got shape (2, 2, 2)"),
    ("v.npy", lambda p: np.save(p, np.zeros((0, 3))), None, "{path}: contains no samples (shape (0, 3))"),
    ("v.npy", lambda p: np.save(p, np.zeros((3, 0))), None, "{path}: samples have no features (shape (3, 0))"),
    ("v.npy", lambda p: np.save(p, np.ones((2, 2), np.complex64)), None,
     "{path}: features must be real numbers, got dtype complex64"),
    ("v.npy", lambda p: np.save(p, np.array([["a", "b"]])), None,
     "{path}: features must be real numbers, got dtype <U1"),
    ("v.npy", lambda p: np.save(p, np.array([[0, 1], [2, np.nan]])), None,
     "{path}: column 'x1', row 1: nan is not a finite number (remove or fill in NaN and infinite values)"),
    ("v.npy", lambda p: np.save(p, np.array([[0, 1], [-np.inf, 3]])), None,
     "{path}: column 'x0', row 1: -inf is not a finite number (remove or fill in NaN and infinite values)"),
    ("v.npy", lambda p: np.save(p, np.array([[0, 1e300]])), None,
     "{path}: column 'x1', row 0: 1e+300 is beyond the float32 range (±3.4e+38): rescale this feature"),
    ("v.npy", lambda p: np.savez(p.open("wb"), x=np.zeros((2, 2))), None,  # savez would add .npz to a name
     "{path} is an .npz archive (numpy.savez), not a single .npy array: name it .npz"),
    ("v.npz", lambda p: np.savez(p, x=np.zeros((2, 2)), y=np.zeros(3)), None,
     "v.npz:y: 3 labels for 2 samples: give one label per sample"),
    ("v.npz", lambda p: np.savez(p, x=np.zeros((2, 2)), y=[0.0, np.nan]), None,
     "v.npz:y: label 1 is nan: give every sample a label, or no labels"),
    ("v.npz", lambda p: np.savez(p, x_train=np.zeros((2, 2)), y_train=np.zeros((2, 2))), None,
     "v.npz:y_train: expected 2 labels (one per sample), got shape (2, 2)"),
    ("v.npz", lambda p: np.savez(p, features=np.zeros((2, 2))), None,
     "{path} has no 'x' or 'x_train' array (found: features)"),
    ("v.npz", lambda p: np.savez(p, x=np.zeros((2, 2)), x_train=np.zeros((2, 2))), None,
     "{path} mixes 'x' with 'x_train': name the arrays x and y, or x_train, y_train, x_test and y_test"),
    ("v.npz", lambda p: np.savez(p, x_train=np.zeros((2, 2)), x_test=np.zeros((2, 3))), None,
     "{path}: x_test has 3 features and x_train 2: give both splits the same features"),
    ("v.npz", lambda p: np.savez(p, x_train=np.zeros((2, 2)), y_train=[0, 1], x_test=np.zeros((1, 2))), None,
     "{path} has y_train but no y_test: give labels for both splits or for neither"),
    ("v.npz", lambda p: np.savez(p, x_train=np.zeros((2, 2)), y_train=[0, 1], x_test=np.zeros((1, 2)),
                                 y_test=["a"]), None,
     "v.npz:y_train holds numbers and v.npz:y_test text: give labels of one kind"),
    ("t.csv", lambda p: write_csv(p, "a,b\n1,2\n3,x\n"), None,
     "{path}: column 'b', row 3: 'x' is not a number (if it holds labels, name it: --label-column b)"),
    ("t.csv", lambda p: write_csv(p, "a,b\n1,2\n\n ,4\n"), None, "{path}: column 'a', row 4: is empty"),
    ("t.csv", lambda p: write_csv(p, "a,y\n1,2\n3,\n"), "y", "{path}: column 'y', row 3: is empty"),
    ("t.csv", lambda p: write_csv(p, "a,b\n1,2\n3,inf\n"), None,
     "{path}: column 'b', row 3: inf is not a finite number (remove or fill in NaN and infinite values)"),
    ("t.csv", lambda p: write_csv(p, "a,b\n1,2\n\n3,NaN\n"), None,
     "{path}: column 'b', row 4: nan is not a finite number (remove or fill in NaN and infinite values)"),
    ("t.csv", lambda p: write_csv(p, "a,b\n1,2\n3\n"), None,
     "{path}: row 3 has 1 cell, the header row 2: give every row one cell per column"),
    ("t.csv", lambda p: write_csv(p, "a,b\n1,2,\n"), None,
     "{path}: row 2 has 3 cells, the header row 2: give every row one cell per column"),
    ("t.csv", lambda p: write_csv(p, "a,b\n\n"), None, "{path} has a header row but no data rows"),
    ("t.csv", lambda p: write_csv(p, ""), None,
     "{path} has no header row: give a first row of column names, then one row per sample"),
    ("t.csv", lambda p: write_csv(p, ",a\n0,1\n"), None,
     "{path}: column 1 has no name in the header row (an index written by DataFrame.to_csv? save with index=False, "
     "or name the column)"),
    ("t.csv", lambda p: write_csv(p, "a,b,a\n1,2,3\n"), None,
     "{path}: column name 'a' appears more than once in the header row"),
    ("t.csv", lambda p: write_csv(p, ",".join(f"c{i}" for i in range(10)) + "\n" + ",".join("0" * 10) + "\n"),
     "label", "{path} has no column 'label' to take labels from (columns: 'c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', "
              "'c7', … (10 columns))"),
    ("t.csv", lambda p: write_csv(p, "y\ncat\n"), "y", "{path}: samples have no features (shape (1, 0))"),
    ("t.csv", lambda p: p.write_bytes(b"a,b\n1,\xff\n"), None,
     'cannot read {path}: it is not UTF-8 text (it holds the byte 0xff): save it as UTF-8 ("CSV UTF-8" in a '
     'spreadsheet)'),
]


@pytest.mark.parametrize("name, write, label, expected", BAD_FILES, ids=[f"{i}-{case[0]}"
                                                                         for i, case in enumerate(BAD_FILES)])
def test_bad_files(tmp_path, name, write, label, expected):
    path = tmp_path / name
    write(path)
    assert message(read_vectors, path, label=label) == expected.format(path=path)


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "d.csv").mkdir()
    assert message(read_vectors, tmp_path / "d.csv") == f"{tmp_path / 'd.csv'} is a directory: give an .npy, .npz " \
                                                         "or .csv file"


@pytest.mark.parametrize("array, labels, expected", [
    ([1.0, 2.0], None, "mine: got a 1-D array of shape (2,): give an N × D array; one sample per row (a single "
                       "feature is x.reshape(-1, 1))"),
    ([[1, 2], [3]], None, "mine: cannot be read as an N × D array (rows of different lengths?)"),
    (np.zeros((3, 2)), [1, 2], "mine: 2 labels for 3 samples: give one label per sample"),
    (np.zeros((2, 2)), [1, None], "mine: label 1 is None: give every sample a label, or no labels"),
    (np.zeros((2, 2)), [[1], [2, 3]], "mine: expected 2 labels (one per sample), got nested lists"),
    (np.array([[1, 2], [3, np.nan]], np.float32), None,
     "mine: column 'x1', row 1: nan is not a finite number (remove or fill in NaN and infinite values)"),
    (FakeFrame(["a", "b"], [[1, None]]), None, "mine: column 'b', row 0: None is not a number"),
])
def test_bad_arrays(array, labels, expected):
    assert message(vectors_from_array, array, labels, source="mine") == expected


def test_object_arrays_are_never_unpickled(tmp_path):
    sentinel = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(sentinel),)

    np.save(tmp_path / "v.npy", np.array([[Payload()]], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "v.npz", x=np.array([[Payload()]], dtype=object))
    np.savez(tmp_path / "labels.npz", x=np.zeros((1, 1)), y=np.array([Payload()], dtype=object))
    assert message(read_vectors, tmp_path / "v.npy") == (f"{tmp_path / 'v.npy'} holds Python objects, which are never "
                                                         "read (they would be unpickled): save a numeric N × D array")
    for name, key in (("v.npz", "x"), ("labels.npz", "y")):
        assert message(read_vectors, tmp_path / name) == (
            f"{tmp_path / name}: {key} holds Python objects, which are never read (they would be unpickled): "
            "save numeric arrays, or text labels as a str array")
    assert not sentinel.exists()
    np.load(tmp_path / "v.npy", allow_pickle=True)  # the payload is live: unpickling it does run it
    assert sentinel.exists()


# --- standardising -----------------------------------------------------------------------------------------------

def test_standardiser_centres_and_scales_with_the_training_statistics():
    rng = np.random.default_rng(1)
    train = (rng.normal(size=(500, 3)) * [1, 10, 0.1] + [0, -5, 50]).astype(np.float32)
    standardiser = Standardiser.fit(train, ["a", "b", "c"])
    assert standardiser.mean.dtype == standardiser.std.dtype == np.float32
    scaled = standardiser.transform(train)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-3)
    other = np.array([[0, -5, 50], [1, 5, 50.1]], np.float32)
    expected = (other - train.astype(np.float64).mean(axis=0)) / train.astype(np.float64).std(axis=0)
    np.testing.assert_allclose(standardiser.transform(other), expected, rtol=1e-3, atol=2e-3)
    assert message(standardiser.transform, np.zeros((2, 2))) == ("expected 3 features per sample (as in training: "
                                                                  "a, b, c), got shape (2, 2)")


def test_a_constant_feature_is_refused():
    features = np.array([[1, 2.5, 0], [2, 2.5, 0], [3, 2.5, 0]], np.float32)
    assert message(Standardiser.fit, features, ["x1", "x3", "x4"]) == (
        "feature 'x3' is constant (every sample 2.5): it carries nothing to cluster on; remove it")
    assert message(Standardiser.fit, features[:, [0, 2]]) == (
        "feature 'x1' is constant (every sample 0): it carries nothing to cluster on; remove it")


def test_standardiser_state_round_trip():
    rng = np.random.default_rng(2)
    train = rng.normal(3, 2, size=(50, 4)).astype(np.float32)
    standardiser = Standardiser.fit(train)
    state = standardiser.state_dict()
    assert all(type(value) is list for value in state.values())  # plain values: no pickled objects in a checkpoint
    loaded = Standardiser.from_state(state)
    assert loaded.feature_names == ["x0", "x1", "x2", "x3"]
    np.testing.assert_array_equal(loaded.transform(train), standardiser.transform(train))
    as_tensors = {**state, "mean": torch.tensor(state["mean"]), "std": torch.tensor(state["std"])}
    np.testing.assert_array_equal(Standardiser.from_state(as_tensors).transform(train), standardiser.transform(train))
    assert message(Standardiser.from_state, {**state, "std": state["std"][:3]}) == (
        "the checkpoint's standardiser state is damaged: (4,) means, (3,) stds and 4 feature names")
    assert message(Standardiser.from_state, {**state, "std": [0.0] * 4}) == (
        "the checkpoint's standardiser state is damaged: its means and stds must be finite and its stds positive")
    assert message(Standardiser.from_state, {"mean": []}).startswith(
        "the checkpoint's standardiser state is damaged: KeyError")


def test_vector_set_counts_classes():
    assert VectorSet(np.zeros((3, 1), np.float32), np.array([0, 2, 1]), None, ["x0"]).num_classes == 3


def test_a_networks_silent_unit_is_centred_not_refused_when_constant_ok():
    features = np.array([[0.0, 1.0], [0.0, 3.0], [0.0, 5.0]], dtype=np.float32)
    with pytest.raises(IICError, match="constant"):
        Standardiser.fit(features)
    fitted = Standardiser.fit(features, constant_ok=True)
    assert fitted.std.tolist() == [1.0, pytest.approx(1.633, abs=1e-3)]
    assert np.isfinite(fitted.transform(features)).all() and (fitted.transform(features)[:, 0] == 0).all()
