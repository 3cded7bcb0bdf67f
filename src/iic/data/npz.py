"""Reading ``.npz`` archives (numpy.savez) given by users: every way a file can fail to be one is one clear error."""

import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from iic.errors import IICError, brief

# What numpy and zipfile raise for a damaged archive or member (NotImplementedError: zip features they lack).
NPZ_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, struct.error,
                   NotImplementedError, UnicodeDecodeError)


@contextmanager
def open_npz(path: Path) -> Iterator[np.lib.npyio.NpzFile]:
    """The archive at ``path``, read without pickles; a failure to read it or any array in it within the block is an
    IICError naming the file."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as exc:
        raise IICError(f"cannot read {path}: {exc.strerror or exc}") from None
    # np.load takes any other file for a pickle, and an .npy for one bare array: say what the file is instead.
    if magic == b"\x93NUMPY":
        raise IICError(f"{path} is a single .npy array, not an .npz archive of arrays (numpy.savez writes one)")
    if not magic.startswith(b"PK"):
        raise IICError(f"{path} is not an .npz archive (a zip of .npy arrays, as numpy.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            yield archive
    except NPZ_READ_ERRORS as exc:
        first_line = (str(exc).splitlines() or [""])[0]
        raise IICError(f"cannot read {path} as .npz arrays: "
                       f"{exc.__class__.__name__}: {brief(first_line)[1:-1]}") from None


def npz_splits(arrays: dict, path: Path, what: str) -> tuple[list[str], list[str]]:
    """The splits ("train", then "test") whose ``x_<split>`` arrays ``arrays`` holds, and those with ``y_<split>``
    labels; one clear error when test labels come without test ``what`` (images, vectors) or only one split has
    labels."""
    if "y_test" in arrays and "x_test" not in arrays:
        raise IICError(f"{path} has y_test but no x_test: give the test {what} with their labels, or neither")
    splits = [split for split in ("train", "test") if f"x_{split}" in arrays]
    labelled = [split for split in splits if f"y_{split}" in arrays]
    if labelled and labelled != splits:
        missing = next(split for split in splits if split not in labelled)
        raise IICError(f"{path} has y_{labelled[0]} but no y_{missing}: give labels for both splits or for neither")
    return splits, labelled
