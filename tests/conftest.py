import os
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture
def one_torch_thread():
    """Small networks train on one thread: on a shared 2-core machine, two busy-waiting OpenMP threads per process
    made them several times slower (113 s against 25 s for the segmentation demo run under a load of 4)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED / "mnist.npz").is_file():
        pytest.skip(f"the shared datasets are not here: {SHARED / 'mnist.npz'} is expected (see README)")
    return SHARED


@pytest.fixture(scope="session")
def three_digit_npz(tmp_path_factory) -> Path:
    """scikit-learn digits 0, 1 and 7 at 16×16 as an .npz with x_train/y_train/x_test/y_test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.isin(digits.target, [0, 1, 7])
    images = np.rint(digits.images[keep] * 255 / 16).astype(np.uint8)
    labels = np.searchsorted([0, 1, 7], digits.target[keep])
    path = tmp_path_factory.mktemp("npz") / "three_digits.npz"
    np.savez(path, x_train=images[:400], y_train=labels[:400], x_test=images[400:], y_test=labels[400:])
    return path


# CI runs the same generated examples every time (a failure there reproduces); elsewhere each run draws new ones.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
