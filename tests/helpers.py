"""Shared by tests: one clustering run on data already read, in a given run directory; the one error line of a
command run in this process; one torch thread for a block."""

import dataclasses
from contextlib import contextmanager
from pathlib import Path

import torch

from iic.cli import main
from iic.clustering.module import ClusteringRun
from iic.engine.run import run


def fit(config, data, run_dir: Path, resume: bool = False):
    """Train ``config`` on ``data`` in ``run_dir`` (or resume it) through the engine's
    run lifecycle: (module, results)."""
    config = dataclasses.replace(config, out_dir=str(run_dir.parent), name=run_dir.name)
    result = run(ClusteringRun(config, data), resume=run_dir if resume else None, progress=False)
    return result.model, result.results


def in_process_error(capsys, *argv) -> str:
    """The one error line of ``iic ARGV`` run in this process (exit code 2, nothing on stdout)."""
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("iic: error:"), captured
    return lines[0]


@contextmanager
def one_thread():
    """As the ``one_torch_thread`` fixture, for fixtures of a wider scope than a test's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
