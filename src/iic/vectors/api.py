"""The Python interface for IIC on vectors, tables and frozen image features.

    import iic.vectors
    run = iic.vectors.train(x, y, k_b=3)                  # an N × D array, tensor or DataFrame; y only for scores
    run = iic.vectors.train(x, given_pairs=index_pairs)   # pairs the user knows (M × 2 sample indices)
    run = iic.vectors.train(preset="wine", pairs="noise")  # or any preset, YAML file or setting (dataset, data_path…)
    model = iic.load(run.run_dir)                          # a VectorModel
    clusters = model.predict(new_x)                        # rows of the training features (a DataFrame: by name)
    results = model.evaluate(x=new_x, y=new_y)             # or the run's data, or another file

A model of dataset ``features`` takes images instead (arrays, files or folders): its frozen backbone and its heads
run together.
"""

import csv
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from iic.data.vectors import VectorSet, read_vectors, vectors_from_array
from iic.errors import IICError
from iic.export import Exportable
from iic.vectors.config import VectorConfig, validate_vector_config
from iic.vectors.data import Arrays, VectorData, load_vector_data

if TYPE_CHECKING:
    from iic.engine.run import RunResult


class VectorModel(Exportable):
    """A trained IIC vector model (``iic.load`` or ``iic.vectors.train(...).model``). Its reported sub-head is the one
    with the lowest training loss, chosen without labels."""

    def __init__(self, module, path: Path | None = None):
        self.module = module
        self.path = path

    @property
    def config(self) -> VectorConfig:
        return self.module.config

    @property
    def takes_images(self) -> bool:
        return self.module.backbone is not None

    def features(self, x: Any) -> torch.Tensor:
        """``x`` as the float32 N × D features the model was trained on: an array, tensor or DataFrame (whose columns
        are picked by the training features' names when it has them all), or an .npy/.npz/.csv file; for an images
        model, images (arrays, files or folders) through its backbone."""
        if self.takes_images:
            from iic.clustering.api import model_images

            return self.module.image_features(model_images(x, self.config.image_size, 3))
        if isinstance(x, (str, os.PathLike)):
            return torch.from_numpy(read_rows(Path(x), self.config.label_column, self.module.feature_names))
        if hasattr(x, "columns") and self.module.feature_names:
            names = [str(name) for name in x.columns]
            if set(self.module.feature_names) <= set(names) and names != self.module.feature_names:
                x = x[[x.columns[names.index(name)] for name in self.module.feature_names]]
        return torch.from_numpy(vectors_from_array(x, source="vectors").features)

    def predict_proba(self, x: Any, head: str = "B") -> torch.Tensor:
        """Cluster probabilities, N × k, of the head's reported sub-head (on the CPU)."""
        features = self.features(x)
        if features.shape[1] != self.module.num_features:
            raise IICError(f"expected {self.module.num_features} features per sample (as in training), "
                           f"got {features.shape[1]}")
        return self.module.predict_probs(features, head=head)

    def predict(self, x: Any, head: str = "B") -> torch.Tensor:
        """The cluster id of each sample (int64, N) by the head's reported sub-head."""
        return self.predict_proba(x, head).argmax(dim=1)

    def evaluate(self, dataset: str | None = None, data_path: str | None = None, protocol: str | None = None,
                 download: bool | None = None, accelerator: str = "auto", x: Any = None, y: Any = None,
                 progress: bool = False) -> dict[str, Any]:
        """Scores of every head and sub-head (ACC, NMI, ARI; losses and cluster sizes without labels) on the run's
        data (a run trained from Python arrays has none to read again), another dataset or file (arguments left at
        None keep the run's settings), or the arrays ``x``, ``y``."""
        from iic.engine.run import evaluate
        from iic.vectors.module import evaluation_loader

        if x is not None:
            evaluation = vectors_from_array(self.features(x).numpy(), y, "x")
        else:
            changes = {k: v for k, v in (("dataset", dataset), ("data_path", data_path), ("protocol", protocol),
                                         ("download", download)) if v is not None}
            config = dataclasses.replace(self.config, **changes)
            validate_vector_config(config)
            if (config.dataset == "features") != self.takes_images:
                takes = "images, through its backbone" if self.takes_images else "vectors"
                raise IICError(f"this model clusters {takes}: it cannot be evaluated on dataset {config.dataset!r}")
            if config.label_column and config.data_path != self.config.data_path:  # a label column of another file
                path = Path(config.data_path or "")
                if path.suffix.lower() != ".csv" or config.label_column not in csv_header(path):
                    config = dataclasses.replace(config, label_column=None)
            evaluation = load_vector_data(config, training=False, progress=progress,
                                          backbone=self.module.backbone).evaluation
            evaluation = dataclasses.replace(evaluation, features=by_name(evaluation.features,
                                                                          evaluation.feature_names,
                                                                          self.module.feature_names))
        if evaluation.features.shape[1] != self.module.num_features:
            raise IICError(f"the evaluated data have {evaluation.features.shape[1]} features and the model takes "
                           f"{self.module.num_features}")
        self.module.set_num_classes(evaluation.num_classes if evaluation.labels is not None else 0)
        return evaluate(self.module, evaluation_loader(evaluation.features, evaluation.labels), accelerator)


def read_rows(path: Path, label_column: str | None, feature_names: list[str] | None) -> np.ndarray:
    """The vectors of a file given to a trained model; a CSV's label column (if it has one) is left out, and its
    columns are picked by the training features' names when it has them all."""
    label = None
    if path.suffix.lower() == ".csv" and path.is_file():
        header = csv_header(path)
        label = label_column if label_column in header else None
    train, test = read_vectors(path, label)
    vectors = train if test is None else VectorSet(np.concatenate([train.features, test.features]), None, None,
                                                   train.feature_names)
    return by_name(vectors.features, vectors.feature_names, feature_names)


def by_name(features: np.ndarray, names: list[str], trained: list[str] | None) -> np.ndarray:
    """The columns of ``features`` (named ``names``) in the training features' order, when it has them all by name
    (a table whose columns moved); else as they are."""
    if trained and names != trained and set(trained) <= set(names):
        return features[:, [names.index(name) for name in trained]]
    return features


def csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [name.strip() for name in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # read_vectors says what is wrong with the file


def train(x: Any = None, y: Any = None, *, given_pairs: Any = None, partner: Any = None, embedding: Any = None,
          config: VectorConfig | str | os.PathLike | None = None, preset: str | None = None,
          resume: str | os.PathLike | None = None, progress: bool = True, **settings: Any) -> "RunResult":
    """Train an IIC vector model in a new run directory under ``out_dir`` (or continue ``resume``) and evaluate it.

    ``x``: an N × D array, tensor or DataFrame to cluster (else the config's dataset); ``y``: labels, for the scores
    only; ``given_pairs``: an M × 2 array of sample indices, or ``partner``: an array aligned with ``x`` (either sets
    ``pairs="given"``); ``embedding``: an N × E array whose neighbours pair the samples. ``config``: a VectorConfig,
    or a YAML file of settings; else ``preset`` (default ``vectors``). ``settings`` are config fields applied last."""
    from iic.engine.task import python_settings, resumed_settings
    from iic.vectors.task import VECTORS

    if resume is not None:
        run_config = resumed_settings(VECTORS, resume, None if config is None else str(config), settings)
    else:
        run_config = python_settings(VECTORS, config, preset, settings)
    given = given_pairs is not None or partner is not None
    if given:
        run_config = dataclasses.replace(run_config, pairs="given")
    arrays = None if x is None else Arrays(x, y, given_pairs, partner, embedding)
    if arrays is None and (given or embedding is not None or y is not None):
        raise IICError("y, given_pairs, partner and embedding go with x, the samples they describe")
    return run_training(run_config, resume, progress=progress, arrays=arrays)


def run_training(config: VectorConfig, resume: str | os.PathLike | None = None, progress: bool = True,
                 on_start: Callable[[VectorData, Path], None] | None = None,
                 arrays: Arrays | None = None) -> "RunResult":
    """Check ``config`` and the data, then train in a new run directory (or continue ``resume``), evaluate and draw
    the run's pictures (the engine's run lifecycle)."""
    validate_vector_config(config)
    data = load_vector_data(config, arrays=arrays, progress=progress)
    from iic.engine.run import run
    from iic.vectors.module import VectorRun

    job = VectorRun(config, data, progress=progress)
    result = run(job, resume, progress, on_start=None if on_start is None else lambda run_dir: on_start(data, run_dir))
    return dataclasses.replace(result, model=VectorModel(result.model, result.run_dir / "checkpoints" / "last.ckpt"))
