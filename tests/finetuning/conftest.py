"""Shared by the fine-tuning tests: a tiny IIC clustering run on three digits, trained once a session, whose trunk
they fine-tune (they copy it before changing anything in it)."""

import pytest
from helpers import one_thread


@pytest.fixture(scope="session")
def one_thread_block():
    """``one_thread`` for module-scoped fixtures (a test file cannot import this conftest by name: tests/conftest.py
    is a module named conftest too)."""
    return one_thread


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, three_digit_npz):
    """One epoch of a slim one-trunk IIC network on the three digits (about 5 s): its trunk is trained (its head B
    scores about 2/3), which is all that fine-tuning needs of it."""
    import iic

    with one_thread():
        return iic.train(dataset="npz", data_path=str(three_digit_npz), out_dir=str(tmp_path_factory.mktemp("iic")),
                         name="digits", k_b=3, k_a=6, num_subheads=2, epochs=1, batch_size=100, repeats=2,
                         widths=(8, 16, 16, 16), trunks=1, refit_subheads=0, progress=False)
