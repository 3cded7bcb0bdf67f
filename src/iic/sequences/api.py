"""The Python interface for IIC on sequences.

    import iic.sequences
    run = iic.sequences.train(x, y, k_b=4)                # N × T × C (or a list of T × C series); y only for scores
    run = iic.sequences.train(preset="basic-motions")      # or any preset, YAML file or setting
    run = iic.sequences.train(x, y_steps, mode="steps")   # a cluster per time step (segmentation in time)
    model = iic.sequences.load(run.run_dir)                # a SequenceModel
    clusters = model.predict(new_x)                        # N ids (mode series) or N × T (mode steps, −1 past ends)
    results = model.evaluate(x=new_x, y=new_y)             # or the run's data, or another file
"""

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from iic.errors import IICError
from iic.export import Exportable
from iic.sequences.config import SequenceConfig, validate_sequence_config
from iic.sequences.data import (
    SequenceData,
    SequenceSet,
    as_series_list,
    concat,
    label_array,
    labelled,
    load_sequence_data,
    make_set,
    per_step_labels,
    read_sequences,
)

if TYPE_CHECKING:
    from iic.engine.run import RunResult


class SequenceModel(Exportable):
    """A trained IIC sequence model (``iic.sequences.load`` or ``iic.sequences.train(...).model``). Its reported
    sub-head is the one with the lowest training loss, chosen without labels."""

    def __init__(self, module, path: Path | None = None):
        self.module = module
        self.path = path

    @property
    def config(self) -> SequenceConfig:
        return self.module.config

    @property
    def per_step(self) -> bool:
        return self.module.per_step

    def sequences(self, x: Any) -> SequenceSet:
        """``x`` as series: an N × T × C array or tensor, a list of T × C series, a SequenceSet, or a file (.npz,
        .ts, .csv, .parquet: read with the run's column names)."""
        if isinstance(x, SequenceSet):
            sequences = x
        elif isinstance(x, (str, os.PathLike)):
            config, path = self.config, Path(x).expanduser()
            if config.label_column and not has_column(path, config.label_column):  # new series, no labels
                config = dataclasses.replace(config, label_column=None)
            train, test = read_sequences(path, config)
            sequences = concat(train, test)
        else:
            sequences = make_set(as_series_list(x, "x"), "x")
        if sequences.num_channels != self.module.num_channels:
            raise IICError(f"expected {self.module.num_channels} channels per step (as in training), got "
                           f"{sequences.num_channels}")
        return sequences

    def predict_proba(self, x: Any, head: str = "B") -> torch.Tensor:
        """Cluster probabilities of the head's reported sub-head (on the CPU): N × k, or N × k × T per step (0 past
        each series' end)."""
        sequences = self.sequences(x)
        return self.module.predict_probs(torch.from_numpy(sequences.x), torch.from_numpy(sequences.lengths), head)

    def predict(self, x: Any, head: str = "B") -> torch.Tensor:
        """Each series' cluster (int64, N), or each step's (N × T, −1 past each series' end)."""
        sequences = self.sequences(x)
        probs = self.module.predict_probs(torch.from_numpy(sequences.x), torch.from_numpy(sequences.lengths), head)
        ids = probs.argmax(dim=1)
        if self.per_step:
            ids = ids.masked_fill(~torch.from_numpy(sequences.mask()), -1)
        return ids

    def evaluate(self, dataset: str | None = None, data_path: str | None = None, protocol: str | None = None,
                 accelerator: str = "auto", x: Any = None, y: Any = None) -> dict[str, Any]:
        """Scores of every head and sub-head (ACC, NMI, ARI per series; step accuracy and mIoU per step) on the
        run's data, another dataset or file, or the arrays ``x``, ``y``."""
        from iic.engine.run import evaluate
        from iic.sequences.module import evaluation_loader

        if x is not None:
            evaluation = self.sequences(x)
            if y is not None:
                (evaluation,) = labelled([evaluation], [label_array(y, evaluation.lengths, evaluation.x.shape[1],
                                                                    "y")], ["y"])
            if self.per_step:
                evaluation = per_step_labels(evaluation)
        else:
            changes = {k: v for k, v in (("dataset", dataset), ("data_path", data_path), ("protocol", protocol))
                       if v is not None}
            config = dataclasses.replace(self.config, **changes)
            validate_sequence_config(config)
            evaluation = load_sequence_data(config, training=False).evaluation
        if evaluation.num_channels != self.module.num_channels:
            raise IICError(f"the evaluated series have {evaluation.num_channels} channels and the model takes "
                           f"{self.module.num_channels}")
        if evaluation.per_step != self.per_step and evaluation.labels is not None:
            raise IICError("this model clusters whole series: labels per step cannot score it" if not self.per_step
                           else "this model clusters steps: labels per series are broadcast to steps")
        self.module.set_num_classes(evaluation.num_classes if evaluation.labels is not None else 0)
        return evaluate(self.module, evaluation_loader(evaluation), accelerator)


def has_column(path: Path, column: str) -> bool:
    try:
        import pandas as pd

        head = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, nrows=0)
        return column in [str(c) for c in head.columns]
    except Exception:
        return False  # read_sequences says what is wrong with the file


def load(path: str | os.PathLike) -> SequenceModel:
    """A trained sequence model from a checkpoint file or a run directory (its last checkpoint)."""
    from iic.sequences.module import load_module

    module, file = load_module(path)
    return SequenceModel(module, file)


def train(x: Any = None, y: Any = None, *, config: SequenceConfig | str | os.PathLike | None = None,
          preset: str | None = None, resume: str | os.PathLike | None = None, progress: bool = True,
          **settings: Any) -> "RunResult":
    """Train an IIC sequence model in a new run directory under ``out_dir`` (or continue ``resume``) and evaluate it.

    ``x``: N × T × C series (an array or tensor, or a list of T × C arrays of different lengths) to cluster, else
    the config's dataset; ``y``: labels per series (N) or per step (N × T), for the scores only. ``config``: a
    SequenceConfig or a YAML file; else ``preset`` (default ``sequences``); ``settings`` are config fields applied
    last."""
    from iic.engine.task import python_settings, resumed_settings
    from iic.sequences.task import SEQUENCES

    if resume is not None:
        run_config = resumed_settings(SEQUENCES, resume, None if config is None else str(config), settings)
    else:
        run_config = python_settings(SEQUENCES, config, preset, settings)
    if x is None and y is not None:
        raise IICError("y goes with x, the series it labels")
    return run_training(run_config, resume, progress=progress, arrays=None if x is None else (x, y))


def run_training(config: SequenceConfig, resume: str | os.PathLike | None = None, progress: bool = True,
                 on_start: Callable[[SequenceData, Path], None] | None = None,
                 arrays: tuple[Any, Any] | None = None) -> "RunResult":
    """Check ``config`` and the data, then train in a new run directory (or continue ``resume``), evaluate and draw
    the run's pictures (the engine's run lifecycle)."""
    validate_sequence_config(config)
    data = load_sequence_data(config, arrays=arrays)
    from iic.engine.run import run
    from iic.sequences.module import SequenceRun

    job = SequenceRun(config, data, progress=progress)
    result = run(job, resume, progress, on_start=None if on_start is None else lambda run_dir: on_start(data, run_dir))
    return dataclasses.replace(result, model=SequenceModel(result.model, result.run_dir / "checkpoints" / "last.ckpt"))

