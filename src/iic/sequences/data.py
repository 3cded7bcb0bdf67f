"""Time series to cluster, held in memory as float32 N × T × C arrays padded past each series' length.

Sources: ``.npz`` (``x``: N × T × C, or N × T for one channel; optional ``y`` per series (N) or per step (N × T),
optional ``lengths``; or ``x_train``/``y_train`` with optional ``x_test``/``y_test``), the UCR/UEA ``.ts`` format
(read by aeon), long tables (``.csv``/``.parquet``: one row per step, an id column, a time column, channels, an
optional label column), aeon's bundled BasicMotions, GunPoint and ItalyPowerDemand, and arrays from Python. Steps
that are NaN in every channel at the end of a series are padding; a NaN inside a series is filled by linear
interpolation in time; a channel that is NaN all through a series is refused. No file is ever unpickled."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iic.data.npz import npz_splits, open_npz
from iic.data.subsets import protocol_sets
from iic.data.vectors import class_ids, label_values
from iic.errors import IICError, brief
from iic.sequences.config import BUNDLED, SequenceConfig

SUFFIXES = (".npz", ".ts", ".csv", ".parquet")


@dataclass
class SequenceSet:
    x: np.ndarray  # float32 N × T × C, 0 past each series' length
    lengths: np.ndarray  # int64 N, each series' steps
    labels: np.ndarray | None  # int64 class ids: N (per series) or N × T (per step, −1 past the length); or None
    class_names: list[str] | None
    channel_names: list[str]
    ids: list[str]  # each series' name (its id in a long table, else its index)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def num_channels(self) -> int:
        return self.x.shape[2]

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0

    @property
    def per_step(self) -> bool:
        return self.labels is not None and self.labels.ndim == 2

    def mask(self) -> np.ndarray:
        """N × T: True where a step belongs to its series."""
        return np.arange(self.x.shape[1])[None, :] < self.lengths[:, None]


@dataclass
class SequenceData:
    train: SequenceSet
    evaluation: SequenceSet


# --- checks shared by every source -------------------------------------------------------------------------------

def padded(series: list[np.ndarray], source: str, ids: list[str] | None = None,
           channel_names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A list of T_i × C arrays as one N × max T × C float32 array (zeros past each length) and the lengths; NaNs
    filled and checked per series (errors name a series by its id and a channel by its name when there are some,
    as in a long table, else by their indices)."""
    if not series:
        raise IICError(f"{source}: no series")
    channels = {s.shape[1] for s in series}
    if len(channels) > 1:
        first = next(i for i, s in enumerate(series) if s.shape[1] != series[0].shape[1])
        raise IICError(f"{source}: series 0 has {series[0].shape[1]} channels and series {first} has "
                       f"{series[first].shape[1]}: every series needs the same channels")
    cleaned = [fill_gaps(s, repr(ids[i]) if ids else str(i), source, channel_names) for i, s in enumerate(series)]
    lengths = np.array([len(s) for s in cleaned], dtype=np.int64)
    x = np.zeros((len(cleaned), int(lengths.max()), cleaned[0].shape[1]), dtype=np.float32)
    for i, s in enumerate(cleaned):
        x[i, :len(s)] = s
    return x, lengths


def fill_gaps(series: np.ndarray, index: str, source: str, channel_names: list[str] | None = None) -> np.ndarray:
    """One T × C series: trailing steps NaN in every channel cut off (padding), inner NaNs interpolated in time; one
    clear error for a series with no steps, a channel NaN all through, or an infinite value."""
    series = np.asarray(series, dtype=np.float64)
    if np.isinf(series).any():
        step, channel = np.argwhere(np.isinf(series))[0]
        raise IICError(f"{source}: series {index} is infinite at step {step}, channel "
                       f"{repr(channel_names[channel]) if channel_names else channel}")
    present = ~np.isnan(series).all(axis=1)
    length = int(np.flatnonzero(present)[-1]) + 1 if present.any() else 0
    if length == 0:
        raise IICError(f"{source}: series {index} has no steps (all NaN or empty)")
    series = series[:length]
    for channel in range(series.shape[1]):
        values = series[:, channel]
        missing = np.isnan(values)
        if missing.all():
            named = repr(channel_names[channel]) if channel_names else channel
            raise IICError(f"{source}: channel {named} of series {index} is NaN all through: drop the channel, "
                           "or the series")
        if missing.any():
            steps = np.arange(length)
            values[missing] = np.interp(steps[missing], steps[~missing], values[~missing])
    if np.abs(series).max() > np.finfo(np.float32).max:
        raise IICError(f"{source}: series {index} has values too large for float32")
    return series.astype(np.float32)


def as_series_list(x: Any, source: str) -> list[np.ndarray]:
    """``x`` (N × T × C or N × T array or tensor, or a list of T_i × C arrays) as a list of T_i × C float arrays."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)):
        items = [np.asarray(s.detach().cpu().numpy() if isinstance(s, torch.Tensor) else s) for s in x]
        out = []
        for i, s in enumerate(items):
            s = s[:, None] if s.ndim == 1 else s
            if s.ndim != 2:
                raise IICError(f"{source}: series {i} has shape {s.shape}: give each as T × C (steps × channels)")
            out.append(numeric(s, source))
        return out
    try:
        array = np.asarray(x)
    except ValueError:
        raise IICError(f"{source}: cannot be read as an N × T × C array (give a list of T × C arrays for series "
                       "of different lengths)") from None
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise IICError(f"{source}: got shape {array.shape}: give N × T × C (series × steps × channels), or N × T")
    array = numeric(array, source)
    return list(array)


def numeric(array: np.ndarray, source: str) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == np.bool_):
        raise IICError(f"{source}: values must be numbers, got {array.dtype}")
    return array.astype(np.float64)


def label_array(y: Any, lengths: np.ndarray, steps: int, source: str) -> np.ndarray:
    """Labels per series (N values) or per step (N × T): label values, with per-step ones kept only within each
    series (returned as object rows of valid steps, made ids by ``encode_labels``)."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    array = np.asarray(y) if not isinstance(y, (list, tuple)) or np.ndim(y[0]) == 0 else None
    count = len(lengths)
    if array is not None and array.ndim == 2 and array.shape[1] > 1:
        if array.shape[0] != count or array.shape[1] < lengths.max():
            raise IICError(f"{source}: per-step labels are shaped {array.shape} and the series {count} × "
                           f"{int(lengths.max())}: give one label per step")
        return [label_values(row[:n], int(n), source) for row, n in zip(array, lengths)]
    if array is None:  # a list of per-step label sequences (series of different lengths)
        if len(y) != count:
            raise IICError(f"{source}: {len(y)} label sequences for {count} series")
        rows = [label_values(np.asarray(row), len(row), source) for row in y]
        for i, (row, n) in enumerate(zip(rows, lengths)):
            if len(row) < n:
                raise IICError(f"{source}: series {i} has {n} steps and {len(row)} labels")
        return [row[:n] for row, n in zip(rows, lengths)]
    return label_values(array, count, source)


def encode_labels(splits: list[Any], sources: list[str], steps: list[int]) -> tuple[list[np.ndarray], list[str]]:
    """Label values of several splits as class ids by one mapping: per series (1-D arrays), or per step (lists of
    rows, padded with −1 to ``steps``)."""
    flat = [np.concatenate(s) if isinstance(s, list) else s for s in splits]
    ids, names = class_ids(flat, sources)
    out = []
    for split, flat_ids, width in zip(splits, ids, steps):
        if not isinstance(split, list):
            out.append(flat_ids)
            continue
        table = np.full((len(split), width), -1, dtype=np.int64)
        start = 0
        for i, row in enumerate(split):
            table[i, :len(row)] = flat_ids[start:start + len(row)]
            start += len(row)
        out.append(table)
    return out, names


def make_set(series: list[np.ndarray], source: str, ids: list[str] | None = None,
             channel_names: list[str] | None = None) -> SequenceSet:
    x, lengths = padded(series, source, ids, channel_names)
    names = channel_names or [f"c{i}" for i in range(x.shape[2])]
    return SequenceSet(x, lengths, None, None, names, ids or [str(i) for i in range(len(x))])


def labelled(sets: list[SequenceSet | None], labels: list[Any], sources: list[str]) -> list[SequenceSet | None]:
    """The sets with their label values (per series or per step) as class ids of one mapping."""
    present = [(s, y, src) for s, y, src in zip(sets, labels, sources) if s is not None and y is not None]
    if not present:
        return sets
    if len(present) != sum(s is not None for s in sets):
        raise IICError(f"{sources[0]}: labels for one split and not the other: give labels for both or neither")
    kinds = {isinstance(y, list) for _, y, _ in present}
    if len(kinds) > 1:
        raise IICError(f"{sources[0]}: labels per series in one split and per step in the other")
    ids, names = encode_labels([y for _, y, _ in present], [src for _, _, src in present],
                               [s.x.shape[1] for s, _, _ in present])
    out = list(sets)
    it = iter(ids)
    for i, s in enumerate(sets):
        if s is not None and labels[i] is not None:
            out[i] = dataclasses.replace(s, labels=next(it), class_names=names)
    return out


# --- files -------------------------------------------------------------------------------------------------------

def read_sequences(path: Path, config: SequenceConfig) -> tuple[SequenceSet, SequenceSet | None]:
    """The series of a file (train, and test when the file has a test split)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise IICError(f"{path}: unknown file type {brief(path.suffix)}: give {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise IICError(f"no such file: {path}")
    if suffix == ".npz":
        return read_npz(path)
    if suffix == ".ts":
        return read_ts(path), None
    return read_long_table(path, config), None


def read_npz(path: Path) -> tuple[SequenceSet, SequenceSet | None]:
    with open_npz(path) as archive:
        names = set(archive.files)
        if "x" in names:
            parts = [("", archive["x"], archive["y"] if "y" in names else None,
                      archive["lengths"] if "lengths" in names else None)]
        else:
            splits, _ = npz_splits({n: None for n in names}, path, "series")
            if not splits:
                raise IICError(f"{path} holds no 'x' (N × T × C series) nor 'x_train'")
            parts = [(split, archive[f"x_{split}"], archive[f"y_{split}"] if f"y_{split}" in names else None,
                      archive[f"lengths_{split}"] if f"lengths_{split}" in names else None) for split in splits]
    sets, labels, sources = [], [], []
    for split, x, y, lengths in parts:
        source = f"{path} ({'x' if not split else 'x_' + split})"
        series = as_series_list(x, source)
        if lengths is not None:
            lengths = np.asarray(lengths).reshape(-1)
            if len(lengths) != len(series) or (lengths < 1).any() or (lengths > len(series[0])).any():
                raise IICError(f"{source}: lengths must hold one length in 1..{len(series[0])} per series")
            series = [s[:int(n)] for s, n in zip(series, lengths)]
        made = make_set(series, source)
        sets.append(made)
        labels.append(None if y is None else label_array(y, made.lengths, made.x.shape[1], source))
        sources.append(source)
    sets = labelled(sets, labels, sources)
    check_same_channels(sets, str(path))
    return sets[0], sets[1] if len(sets) > 1 else None


def read_ts(path: Path) -> SequenceSet:
    """A UCR/UEA .ts file through aeon's reader (its class labels, series of equal or unequal lengths)."""
    try:
        from aeon.datasets import load_from_ts_file
    except ImportError:
        raise IICError(f"{path}: reading .ts files needs aeon: pip install iic[sequences]") from None
    try:
        x, y = load_from_ts_file(str(path))
    except Exception as exc:  # aeon raises many types for a malformed file
        first = (str(exc).splitlines() or [exc.__class__.__name__])[0]
        raise IICError(f"{path}: not a readable .ts file ({brief(first)[1:-1]})") from None
    return from_channels_first(x, y, str(path))


def from_channels_first(x: Any, y: Any, source: str) -> SequenceSet:
    """aeon's layout (N × C × T array, or a list of C × T_i arrays) as a labelled SequenceSet."""
    series = [np.asarray(s, dtype=np.float64).T for s in x]
    made = make_set(series, source)
    if y is None or len(y) == 0:
        return made
    (made,) = labelled([made], [label_array(np.asarray(y), made.lengths, made.x.shape[1], source)], [source])
    return made


def read_long_table(path: Path, config: SequenceConfig) -> SequenceSet:
    """A long table: one row per step, with ``id_column``, ``time_column`` (may be absent: the rows' order), the
    channels (every other numeric column) and the optional ``label_column``."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path)
    except ImportError as exc:
        raise IICError(f"{path}: reading Parquet needs pyarrow or fastparquet ({exc.name or exc})") from None
    except Exception as exc:
        first = (str(exc).splitlines() or [exc.__class__.__name__])[0]
        raise IICError(f"{path}: cannot read the table ({brief(first)[1:-1]})") from None
    columns = [str(c) for c in table.columns]
    table.columns = columns
    if config.id_column not in columns:
        raise IICError(f"{path}: no id column {config.id_column!r} (columns: {', '.join(columns[:8])}): "
                       "give --id-column")
    label = config.label_column
    if label is not None and label not in columns:
        raise IICError(f"{path}: no label column {label!r}")
    time = config.time_column if config.time_column in columns else None
    channels = [c for c in columns if c not in (config.id_column, time, label)]
    if not channels:
        raise IICError(f"{path}: no channel columns beside the id, time and label")
    text = [c for c in channels if not pd.api.types.is_numeric_dtype(table[c])]
    if text:
        raise IICError(f"{path}: column {text[0]!r} holds text: channels must be numbers (a label column? "
                       "give --label-column)")
    # Series in the order they first appear, each one's steps in time order.
    groups = [(key, group.sort_values(time, kind="stable") if time is not None else group)
              for key, group in table.groupby(config.id_column, sort=False)]
    series = [group[channels].to_numpy(dtype=np.float64) for _, group in groups]
    made = make_set(series, str(path), ids=[str(key) for key, _ in groups], channel_names=channels)
    if label is None:
        return made
    rows = [label_values(group[label].to_numpy(), len(group), str(path)) for _, group in groups]
    per_series = all(len(set(row.tolist())) == 1 for row in rows)
    y = np.array([row[0] for row in rows]) if per_series else rows
    (made,) = labelled([made], [y], [str(path)])
    return made


def bundled(name: str) -> tuple[SequenceSet, SequenceSet]:
    """One of aeon's bundled UCR/UEA datasets (train, test), read offline from the installed package."""
    try:
        from aeon.datasets import load_classification
    except ImportError:
        raise IICError(f"dataset {name} ships with aeon: pip install iic[sequences]") from None
    parts = []
    for split in ("train", "test"):
        x, y = load_classification(BUNDLED[name], split=split)
        parts.append((x, y))
    sets = [make_set([np.asarray(s, dtype=np.float64).T for s in x], f"{name} {split}")
            for (x, _), split in zip(parts, ("train", "test"))]
    labels = [label_array(np.asarray(y), s.lengths, s.x.shape[1], name) for (_, y), s in zip(parts, sets)]
    train, test = labelled(sets, labels, [f"{name} train", f"{name} test"])
    return train, test


def check_same_channels(sets: list[SequenceSet | None], source: str) -> None:
    present = [s for s in sets if s is not None]
    if len({s.num_channels for s in present}) > 1:
        raise IICError(f"{source}: the training series have {present[0].num_channels} channels and the test series "
                       f"{present[1].num_channels}")


# --- putting a run's data together --------------------------------------------------------------------------------

def concat(first: SequenceSet, second: SequenceSet | None) -> SequenceSet:
    if second is None:
        return first
    steps = max(first.x.shape[1], second.x.shape[1])

    def widen(s: SequenceSet) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.pad(s.x, ((0, 0), (0, steps - s.x.shape[1]), (0, 0)))
        labels = s.labels
        if labels is not None and labels.ndim == 2:
            labels = np.pad(labels, ((0, 0), (0, steps - labels.shape[1])), constant_values=-1)
        return x, labels

    (x1, y1), (x2, y2) = widen(first), widen(second)
    labels = None if y1 is None or y2 is None else np.concatenate([y1, y2])
    return SequenceSet(np.concatenate([x1, x2]), np.concatenate([first.lengths, second.lengths]), labels,
                       first.class_names if labels is not None else None, first.channel_names,
                       first.ids + [f"test:{i}" for i in second.ids])


def recording(sequences: SequenceSet, seed: int) -> SequenceSet:
    """The series end to end in a seeded random order: one recording whose every step is labelled by its series'
    label (a benchmark for segmentation in time with a known truth)."""
    order = np.random.default_rng(seed).permutation(len(sequences))
    parts = [sequences.x[i, :sequences.lengths[i]] for i in order]
    x = np.concatenate(parts)[None]
    labels = None
    if sequences.labels is not None:
        if sequences.per_step:
            steps = [sequences.labels[i, :sequences.lengths[i]] for i in order]
        else:
            steps = [np.full(sequences.lengths[i], sequences.labels[i]) for i in order]
        labels = np.concatenate(steps)[None].astype(np.int64)
    return SequenceSet(x, np.array([x.shape[1]], dtype=np.int64), labels, sequences.class_names,
                       sequences.channel_names, ["recording"])


def per_step_labels(sequences: SequenceSet) -> SequenceSet:
    """Labels per series broadcast to every step of it (segmentation scores each step)."""
    if sequences.labels is None or sequences.per_step:
        return sequences
    table = np.where(sequences.mask(), sequences.labels[:, None], -1).astype(np.int64)
    return dataclasses.replace(sequences, labels=table)


def data_splits(config: SequenceConfig, arrays: tuple[Any, Any] | None) -> tuple[SequenceSet, SequenceSet | None]:
    if arrays is not None:
        x, y = arrays
        made = make_set(as_series_list(x, "x"), "x")
        if y is None:
            return made, None
        (made,) = labelled([made], [label_array(y, made.lengths, made.x.shape[1], "y")], ["y"])
        return made, None
    if config.dataset == "sequences":
        if not config.data_path:
            raise IICError("dataset 'sequences' needs --data-path FILE (.npz, .ts, .csv or .parquet)")
        return read_sequences(Path(config.data_path).expanduser(), config)
    return bundled(config.dataset)


def load_sequence_data(config: SequenceConfig, arrays: tuple[Any, Any] | None = None,
                       training: bool = True) -> SequenceData:
    """The series a run trains on and those it evaluates, per the dataset, protocol and mode; ``training``: also
    checked against the settings (more series than clusters, windows no longer than the data allow)."""
    train, test = data_splits(config, arrays)
    check_same_channels([train, test], config.data_path or config.dataset)
    train_set, evaluation = protocol_sets(config.protocol, config.dataset, train, test, concat)
    if config.recording:
        train_set = recording(train_set, config.seed)
        evaluation = train_set if config.protocol == "iic" else recording(evaluation, config.seed)
    if config.mode == "steps":
        train_set, evaluation = per_step_labels(train_set), per_step_labels(evaluation)
    elif train_set.per_step or evaluation.per_step:
        raise IICError("these labels are per step: cluster whole series with labels per series, or give --mode steps")
    if training:
        check_sizes(config, train_set)
    return SequenceData(train_set, evaluation)


def check_sizes(config: SequenceConfig, train: SequenceSet) -> None:
    if config.mode == "series":
        for k, head in ((config.k_b, "k_b"), (config.k_a, "k_a")):
            if k > len(train):
                raise IICError(f"{head}={k} is larger than the number of training series ({len(train)})")
        return
    longest = int(train.lengths.max())
    if config.half_window >= longest:
        raise IICError(f"half_window T={config.half_window} is not shorter than the longest series ({longest} "
                       "steps): give a smaller --half-window")
