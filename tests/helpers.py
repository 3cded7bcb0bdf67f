"""Shared by tests: one clustering run on data already read, in a given run directory; the one error line of a
command run in this process."""

import dataclasses
from pathlib import Path

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
