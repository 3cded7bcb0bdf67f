"""Shared by tests: one clustering run on data already read, in a given run directory."""

import dataclasses
from pathlib import Path

from iic.clustering.module import ClusteringRun
from iic.engine.run import run


def fit(config, data, run_dir: Path, resume: bool = False):
    """Train ``config`` on ``data`` in ``run_dir`` (or resume it) through the engine's
    run lifecycle: (module, results)."""
    config = dataclasses.replace(config, out_dir=str(run_dir.parent), name=run_dir.name)
    result = run(ClusteringRun(config, data), resume=run_dir if resume else None, progress=False)
    return result.model, result.results
