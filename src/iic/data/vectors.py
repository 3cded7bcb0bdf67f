"""Vectors and tables to cluster, held in memory as float32 N × D arrays (one sample per row).

Files: ``.npy``, one N × D numeric array (no labels); ``.npz``, an ``x`` array with optional ``y`` labels, or
``x_train``/``y_train`` with optional ``x_test``/``y_test`` (as for images); ``.csv``, a header row of column names,
then one row per sample, every column a number except the optional label column. From Python: numpy arrays, torch
tensors, or a DataFrame. Labels (only ever used for evaluation) may be any numbers or strings: they become class ids
0…C−1, the same for both splits, with their values as class names. No file is ever unpickled.
"""

import csv
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iic.data.npz import npz_splits, open_npz
from iic.errors import IICError, brief

SUFFIXES = (".npy", ".npz", ".csv")
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class VectorSet:
    features: np.ndarray  # float32 N × D
    labels: np.ndarray | None  # int64 N class ids 0…C−1, or None when unlabelled
    class_names: list[str] | None
    feature_names: list[str]

    def __len__(self) -> int:
        return len(self.features)

    @property
    def num_classes(self) -> int:
        return (len(self.class_names) if self.class_names
                else int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else 0)


# --- checks shared by every source -------------------------------------------------------------------------------

def default_feature_names(count: int) -> list[str]:
    return [f"x{i}" for i in range(count)]


def features_from_array(array: Any, source: str, feature_names: list[str] | None = None,
                        row_numbers: list[int] | None = None) -> np.ndarray:
    """``array`` as a float32 N × D array, or one IICError naming ``source`` (and, for a bad value, its column and
    row: ``row_numbers`` are the rows as the user sees them, e.g. a CSV's lines; the array's rows otherwise)."""
    try:
        array = np.asarray(array)
    except ValueError:  # nested lists of unequal lengths
        raise IICError(f"{source}: cannot be read as an N × D array (rows of different lengths?)") from None
    shape = array.shape
    if array.ndim == 1:
        raise IICError(f"{source}: got a 1-D array of shape {shape}: give an N × D array; one sample per row "
                       f"(a single feature is x.reshape(-1, 1))")
    if array.ndim != 2:
        raise IICError(f"{source}: expected an N × D array (one sample per row), got shape {shape}")
    if shape[0] == 0:
        raise IICError(f"{source}: contains no samples (shape {shape})")
    if shape[1] == 0:
        raise IICError(f"{source}: samples have no features (shape {shape})")
    names = feature_names or default_feature_names(shape[1])

    def where(row: int, column: int) -> str:
        return f"{source}: column {names[column]!r}, row {row_numbers[row] if row_numbers else row}"

    if array.dtype == object:  # a DataFrame with mixed columns: every cell must be a number, strings included
        for row, column in np.ndindex(shape):
            cell = array[row, column]
            if not isinstance(cell, numbers.Real):
                raise IICError(f"{where(row, column)}: {brief(cell)} is not a number")
        array = array.astype(np.float64)
    if array.dtype == np.bool_:
        array = array.astype(np.float32)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise IICError(f"{source}: features must be real numbers, got dtype {brief(str(array.dtype))[1:-1]}")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise IICError(f"{where(row, column)}: {array[row, column]} is not a finite number "
                           f"(remove or fill in NaN and infinite values)")
    with np.errstate(over="ignore"):
        features = np.ascontiguousarray(array, dtype=np.float32)
    overflow = ~np.isfinite(features)
    if overflow.any():  # finite as float64 (or int), too large as float32
        row, column = np.argwhere(overflow)[0]
        raise IICError(f"{where(row, column)}: {array[row, column]:g} is beyond the float32 range "
                       f"(±{FLOAT32_MAX:.3g}): rescale this feature")
    return features


def label_values(labels: Any, count: int, source: str) -> np.ndarray:
    """``labels`` as a 1-D array of ``count`` numbers (int64 when all are whole) or strings."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    try:
        array = np.asarray(labels)
    except ValueError:  # nested lists of unequal lengths
        raise IICError(f"{source}: expected {count} labels (one per sample), got nested lists") from None
    if array.ndim == 2 and array.shape[1] == 1:  # a column, as Keras' datasets give them
        array = array[:, 0]
    if array.ndim != 1:
        raise IICError(f"{source}: expected {count} labels (one per sample), got shape {array.shape}")
    if len(array) != count:
        raise IICError(f"{source}: {len(array)} labels for {count} samples: give one label per sample")
    if array.dtype == object:  # Python values: let numpy find their common type; what stays objects is text
        if any(value is None for value in array):
            row = next(i for i, value in enumerate(array) if value is None)
            raise IICError(f"{source}: label {row} is None: give every sample a label, or no labels")
        try:
            array = np.asarray(array.tolist())
        except ValueError:  # values numpy cannot line up (lists of different lengths): their text, then
            array = np.array([str(value) for value in array])
        if array.dtype == object:
            array = np.array([str(value) for value in array])
    if array.dtype.kind == "S":
        array = np.char.decode(array, "utf-8", "replace")
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            row = int(np.flatnonzero(~np.isfinite(array))[0])
            raise IICError(f"{source}: label {row} is {array[row]}: give every sample a label, or no labels")
        if (array == np.round(array)).all() and np.abs(array).max() < 2**63:
            array = array.astype(np.int64)
    if np.issubdtype(array.dtype, np.complexfloating) or not (np.issubdtype(array.dtype, np.number)
                                                              or array.dtype.kind == "U"):
        array = np.array([str(value) for value in array])
    return array


def class_ids(splits: list[np.ndarray], sources: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """Label values (from ``label_values``) as class ids 0…C−1 by one mapping for all splits, in the values' order
    (numbers by value: 2 before 10), and the values as class names."""
    texts = [split.dtype.kind == "U" for split in splits]
    if any(texts) and not all(texts):
        raise IICError(f"{sources[texts.index(False)]} holds numbers and {sources[texts.index(True)]} text: "
                       "give labels of one kind")
    values = np.unique(np.concatenate(splits))
    ids = [np.searchsorted(values, split).astype(np.int64) for split in splits]
    return ids, [str(value.item()) for value in values]


# --- from Python -------------------------------------------------------------------------------------------------

def vectors_from_array(array: Any, labels: Any = None, source: str = "vectors") -> VectorSet:
    """A VectorSet from a numpy array, a torch tensor or a DataFrame (its columns name the features), with optional
    labels of any values (one per sample)."""
    feature_names = None
    if hasattr(array, "columns"):  # a pandas DataFrame, without importing pandas
        feature_names = [str(name) for name in array.columns]
        array = array.to_numpy()
    elif isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        if array.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16
            array = array.float()
        array = array.numpy()
    features = features_from_array(array, source, feature_names)
    feature_names = feature_names or default_feature_names(features.shape[1])
    if labels is None:
        return VectorSet(features, None, None, feature_names)
    (ids,), names = class_ids([label_values(labels, len(features), source)], [source])
    return VectorSet(features, ids, names, feature_names)


# --- files -------------------------------------------------------------------------------------------------------

def read_vectors(path: str | Path, label: str | None = None) -> tuple[VectorSet, VectorSet | None]:
    """The train split and the test split (None if the file has none) of an ``.npy``, ``.npz`` or ``.csv`` file;
    ``label`` names a CSV's label column (without it, every column is a feature and there are no labels)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise IICError(f"{path}: unknown file type {suffix or '(no suffix)'!r}: give an .npy, .npz or .csv file")
    if path.is_dir():
        raise IICError(f"{path} is a directory: give an .npy, .npz or .csv file")
    if not path.is_file():
        raise IICError(f"no such file: {path}")
    if label is not None and suffix != ".csv":
        held = "its y arrays" if suffix == ".npz" else "none (an .npz can hold them: x and y)"
        raise IICError(f"{path}: a label column ({label!r}) is for .csv files; an {suffix} file's labels are {held}")
    if suffix == ".npy":
        return read_npy(path), None
    if suffix == ".npz":
        return read_npz(path)
    return read_csv(path, label), None


def read_npy(path: Path) -> VectorSet:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as exc:
        raise IICError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic.startswith(b"PK"):
        raise IICError(f"{path} is an .npz archive (numpy.savez), not a single .npy array: name it .npz")
    if magic != b"\x93NUMPY":
        raise IICError(f"{path} is not an .npy array (as numpy.save writes)")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # numpy refuses before unpickling anything
            raise IICError(f"{path} holds Python objects, which are never read (they would be unpickled): "
                           "save a numeric N × D array") from None
        raise IICError(f"cannot read {path} as an .npy array: {brief(str(exc))[1:-1]}") from None
    except (OSError, EOFError) as exc:
        raise IICError(f"cannot read {path} as an .npy array: {exc.__class__.__name__}: {brief(str(exc))[1:-1]}"
                       ) from None
    return vectors_from_array(array, source=str(path))


PLAIN_KEYS = ("x", "y")
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path) -> tuple[VectorSet, VectorSet | None]:
    """``x`` (and optional ``y``), or ``x_train``/``y_train`` with optional ``x_test``/``y_test``."""
    with open_npz(path) as npz:
        keys = sorted(npz.files)
        arrays = {}
        for key in (key for key in PLAIN_KEYS + SPLIT_KEYS if key in keys):
            try:
                arrays[key] = npz[key]
            except ValueError as exc:
                if "allow_pickle" not in str(exc):
                    raise  # open_npz words it
                raise IICError(f"{path}: {key} holds Python objects, which are never read (they would be "
                               "unpickled): save numeric arrays, or text labels as a str array") from None
    plain = [key for key in PLAIN_KEYS if key in arrays]
    split = [key for key in SPLIT_KEYS if key in arrays]
    if plain and split:
        raise IICError(f"{path} mixes {plain[0]!r} with {split[0]!r}: name the arrays x and y, "
                       "or x_train, y_train, x_test and y_test")
    if plain:
        if "x" not in arrays:
            raise IICError(f"{path} has 'y' but no 'x' array of features")
        arrays = {"x_train": arrays["x"], **({"y_train": arrays["y"]} if "y" in arrays else {})}
    elif "x_train" not in arrays:
        raise IICError(f"{path} has no 'x' or 'x_train' array (found: {', '.join(keys) or 'none'})")
    splits, labelled = npz_splits(arrays, path, "vectors")
    source = {name: f"{path.name}:{'x' if plain else f'x_{name}'}" for name in splits}
    features = [features_from_array(arrays[f"x_{name}"], source[name]) for name in splits]
    if len(features) > 1 and features[1].shape[1] != features[0].shape[1]:
        raise IICError(f"{path}: x_test has {features[1].shape[1]} features and x_train {features[0].shape[1]}: "
                       "give both splits the same features")
    feature_names = default_feature_names(features[0].shape[1])
    if labelled:
        label_sources = [f"{path.name}:{'y' if plain else f'y_{name}'}" for name in splits]
        raw = [label_values(arrays[f"y_{name}"], len(x), label_source)
               for name, x, label_source in zip(splits, features, label_sources)]
        ids, names = class_ids(raw, label_sources)
        sets = [VectorSet(x, y, names, feature_names) for x, y in zip(features, ids)]
    else:
        sets = [VectorSet(x, None, None, list(feature_names)) for x in features]
    return sets[0], sets[1] if len(sets) > 1 else None


def read_csv(path: Path, label: str | None = None) -> VectorSet:
    """A CSV with a header row; ``label`` names the label column, every other column must hold numbers. Rows are
    numbered as a spreadsheet shows them (the header is row 1)."""
    try:
        # utf-8-sig: spreadsheets save a byte-order mark that would otherwise join the first column's name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as exc:
        raise IICError(f"cannot read {path}: it is not UTF-8 text (it holds the byte {exc.object[exc.start]:#04x}): "
                       "save it as UTF-8 (\"CSV UTF-8\" in a spreadsheet)") from None
    except (OSError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{exc.__class__.__name__}: {exc}"
        raise IICError(f"cannot read {path} as CSV text: {brief(reason)[1:-1]}") from None
    if not rows or not any(rows[0]):
        raise IICError(f"{path} has no header row: give a first row of column names, then one row per sample")
    header = [name.strip() for name in rows[0]]
    for index, name in enumerate(header):
        if not name:  # pandas' to_csv writes its index under an empty name: clustering on it would be wrong
            raise IICError(f"{path}: column {index + 1} has no name in the header row (an index written by "
                           "DataFrame.to_csv? save with index=False, or name the column)")
        if header.count(name) > 1:
            raise IICError(f"{path}: column name {name!r} appears more than once in the header row")
    if label is not None and label not in header:
        shown = ", ".join(repr(name) for name in header[:8]) + (f", … ({len(header)} columns)"
                                                                if len(header) > 8 else "")
        raise IICError(f"{path} has no column {label!r} to take labels from (columns: {shown})")
    label_column = header.index(label) if label is not None else None
    feature_columns = [index for index in range(len(header)) if index != label_column]
    feature_names = [header[index] for index in feature_columns]

    values: list[list[float]] = []
    labels: list[str] = []
    row_numbers: list[int] = []
    for row_number, cells in enumerate(rows[1:], start=2):
        if not cells:  # a blank line
            continue
        if len(cells) != len(header):
            raise IICError(f"{path}: row {row_number} has {len(cells)} cell{'s' * (len(cells) != 1)}, the header "
                           f"row {len(header)}: give every row one cell per column")
        try:
            values.append([float(cells[index]) for index in feature_columns])
        except ValueError:
            index = next(index for index in feature_columns if not _is_number(cells[index]))
            cell = cells[index]
            problem = "is empty" if not cell.strip() else f"{brief(cell)} is not a number"
            hint = (f" (if it holds labels, name it: --label-column {header[index]})"
                    if label is None and cell.strip() else "")
            raise IICError(f"{path}: column {header[index]!r}, row {row_number}: {problem}{hint}") from None
        if label_column is not None:
            cell = cells[label_column].strip()
            if not cell:
                raise IICError(f"{path}: column {label!r}, row {row_number}: is empty")
            labels.append(cell)
        row_numbers.append(row_number)
    if not values:
        raise IICError(f"{path} has a header row but no data rows")

    features = features_from_array(np.array(values, dtype=np.float64).reshape(len(values), len(feature_columns)),
                                   str(path), feature_names, row_numbers)
    if label_column is None:
        return VectorSet(features, None, None, feature_names)
    parsed = [float(cell) if _is_number(cell) else math.nan for cell in labels]
    if all(math.isfinite(number) for number in parsed):  # numbers sort as numbers: 2 before 10
        raw = label_values(np.array(parsed), len(labels), f"{path}: column {label!r}")
    else:
        raw = np.array(labels, dtype=str)
    (ids,), names = class_ids([raw], [str(path)])
    return VectorSet(features, ids, names, feature_names)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- standardising -----------------------------------------------------------------------------------------------

@dataclass
class Standardiser:
    """Per-feature mean and standard deviation of the training features (float32), applied to any features."""

    mean: np.ndarray
    std: np.ndarray
    feature_names: list[str]

    @classmethod
    def fit(cls, features: np.ndarray, feature_names: list[str] | None = None,
            constant_ok: bool = False) -> "Standardiser":
        """Statistics of ``features`` (N × D); a feature with one value for every sample is an error, not a
        division by zero, unless ``constant_ok`` (a network's features, where a unit silent on every image is no
        mistake of the user's): it is then only centred (std 1)."""
        features = np.asarray(features)
        if features.ndim != 2 or 0 in features.shape:
            raise IICError(f"standardising needs an N × D array of training features, got shape {features.shape}")
        names = list(feature_names) if feature_names is not None else default_feature_names(features.shape[1])
        constant = (features == features[0]).all(axis=0)
        if constant.any() and not constant_ok:
            column = int(np.flatnonzero(constant)[0])
            raise IICError(f"feature {names[column]!r} is constant (every sample {features[0, column]:g}): "
                           "it carries nothing to cluster on; remove it")
        wide = features.astype(np.float64)  # float32 sums of many samples lose digits
        mean, std = wide.mean(axis=0), wide.std(axis=0)
        tiny = std.astype(np.float32) == 0
        if constant_ok:
            std[tiny] = 1.0
        elif tiny.any():  # not constant, but spread less than float32 can hold
            column = int(np.flatnonzero(tiny)[0])
            raise IICError(f"feature {names[column]!r} varies too little to standardise (std {std[column]:.3g}): "
                           "rescale or remove it")
        return cls(mean.astype(np.float32), std.astype(np.float32), names)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """``features`` (N × D, as in training) less the training mean, over the training std, as float32."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != len(self.mean):
            raise IICError(f"expected {len(self.mean)} features per sample (as in training: "
                           f"{', '.join(self.feature_names[:5])}{', …' if len(self.feature_names) > 5 else ''}), "
                           f"got shape {features.shape}")
        return ((features.astype(np.float32, copy=False) - self.mean) / self.std).astype(np.float32, copy=False)

    def state_dict(self) -> dict[str, list]:
        """Plain lists (float32 values are exact as Python floats), for a checkpoint that pickles no objects."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "feature_names": list(self.feature_names)}

    @classmethod
    def from_state(cls, state: dict) -> "Standardiser":
        """The Standardiser ``state_dict`` saved; a damaged state is one IICError."""
        try:
            mean = np.asarray(_plain(state["mean"]), dtype=np.float32)
            std = np.asarray(_plain(state["std"]), dtype=np.float32)
            names = [str(name) for name in state["feature_names"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise IICError(f"the checkpoint's standardiser state is damaged: {exc.__class__.__name__}: "
                           f"{brief(str(exc))[1:-1]}") from None
        if not (mean.ndim == std.ndim == 1 and len(mean) == len(std) == len(names) > 0):
            raise IICError(f"the checkpoint's standardiser state is damaged: {mean.shape} means, {std.shape} "
                           f"stds and {len(names)} feature names")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise IICError("the checkpoint's standardiser state is damaged: its means and stds must be finite and "
                           "its stds positive")
        return cls(mean, std, names)


def _plain(values: Any) -> Any:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values
