"""IIC on vectors on the shared engine: the module (a small subclass of ``IICModule``) and the run of a vector task
(standardising, the neighbour graph cached in the run directory, pair batches, the picture).

A training batch is a set of rows drawn by the loader; ``PairBatches`` gives each row's pair (x, x′): a sample and a
neighbour, two corrupted copies, or the user's pair. The loss, heads, sub-heads, lowest-loss choice, evaluation and
run directory are the image task's."""

import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from iic.clustering.module import score_clusters
from iic.config import config_to_dict
from iic.data.vectors import Standardiser
from iic.distributed import check_shares, evaluation_sampler
from iic.engine.checkpoints import load_trained
from iic.engine.module import IICModule
from iic.engine.run import TaskRun
from iic.errors import IICError
from iic.losses import iic_losses
from iic.pairs import PairBatches, graph_fingerprint, load_graph, neighbour_graph, save_graph
from iic.vectors.config import VectorConfig
from iic.vectors.data import VectorData
from iic.vectors.network import VectorNet
from iic.vectors.task import VECTORS

GRAPH_FILE = "neighbours.npz"  # the run directory's cached neighbour graph


class VectorModule(IICModule):
    """Heads A and B on an MLP trunk (or on the features themselves, ``widths`` 0), trained by one Adam, on
    standardised features; with dataset ``features`` it also holds the frozen backbone, so that a checkpoint clusters
    new images by itself."""

    task_name = VECTORS.name
    config_class = VECTORS.config_class

    def __init__(self, config: dict[str, Any], num_features: int, num_classes: int = 0,
                 class_names: list[str] | None = None, feature_names: list[str] | None = None):
        super().__init__(config)
        self.save_hyperparameters({"config": config_to_dict(self.config), "num_features": num_features,
                                   "num_classes": num_classes, "class_names": class_names,
                                   "feature_names": feature_names})
        c = self.config
        self.num_features = num_features
        self.class_names = class_names
        self.feature_names = feature_names
        self.net = VectorNet(num_features, c.widths, c.k_a, c.k_b, c.num_subheads)
        # The training features' statistics, saved with the weights: new vectors are standardised as training's were.
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))
        self.backbone = None
        if c.dataset == "features":
            from iic.vectors.features import FrozenBackbone

            self.backbone = FrozenBackbone(c.backbone, c.backbone_size)  # its weights: pretrained, or the checkpoint's
        self.init_heads(c.num_subheads, {head: self.net.heads[head].num_clusters for head in self.head_names},
                        num_classes)
        self.pairs: PairBatches | None = None  # set by the run: what training steps draw their pairs from

    def set_standardiser(self, features: np.ndarray) -> None:
        if self.config.standardise:
            # A pretrained network's unit that no image excites is no mistake of the user's (dataset features).
            fitted = Standardiser.fit(features, self.feature_names, constant_ok=self.backbone is not None)
            self.feature_mean.copy_(torch.from_numpy(fitted.mean))
            self.feature_std.copy_(torch.from_numpy(fitted.std))

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.feature_mean) / self.feature_std

    def parameter_groups(self) -> list[list[torch.nn.Parameter]]:
        return [list(self.net.parameters())]  # the frozen backbone is not trained

    # --- the IIC task's part ------------------------------------------------------------------------------------

    def subhead_losses(self, batch: Any, head: str) -> tuple[torch.Tensor, torch.Tensor]:
        (rows,) = batch
        x, x2 = self.pairs(rows)
        p, p2 = self.net.forward_pair(x, x2, head)
        return iic_losses(p, p2, self.config.lamb_a if head == "A" else self.config.lamb_b)

    def pairs_in(self, batch: Any) -> int:
        return len(batch[0])

    def cluster_ids(self, batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        features, labels = batch
        probs = self.net.forward_all(self.standardise(features))
        return {head: p.argmax(dim=2) for head, p in probs.items()}, labels

    def score_head(self, head: str, tables: np.ndarray, reported: int) -> dict[str, Any]:
        return score_clusters(self, head, tables, reported)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.pairs is not None:
            self.pairs.to(self.device)

    # --- prediction -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_probs(self, features: torch.Tensor, head: str = "B", batch_size: int = 4096) -> torch.Tensor:
        """Cluster probabilities (n × k) of the head's reported sub-head for raw (not standardised) features."""
        self.check_head(head)
        self.eval()
        subhead = self.reported_subhead(head)
        device = self.feature_mean.device
        chunks = [self.net.subhead(self.standardise(features[start:start + batch_size].to(device)), head,
                                   subhead).cpu() for start in range(0, len(features), batch_size)]
        return torch.cat(chunks)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """The frozen backbone's features of uint8 images (a ``features`` model only)."""
        from iic.vectors.features import extract_features

        if self.backbone is None:
            raise IICError("this model clusters vectors, not images: give it vectors")
        return torch.from_numpy(extract_features(self.backbone, images, batch_size))


def training_loader(rows: int, batch_size: int, world_size: int, num_workers: int) -> DataLoader:
    """Row indices in random order, a process's share of a batch at a time (the last partial batch dropped)."""
    batch = min(batch_size, rows // world_size)
    return DataLoader(TensorDataset(torch.arange(rows)), batch_size=batch, shuffle=True, drop_last=True,
                      num_workers=num_workers)


def evaluation_loader(features: np.ndarray, labels: np.ndarray | None, num_workers: int = 0, batch_size: int = 4096,
                      world_size: int = 1, rank: int = 0) -> DataLoader:
    """The evaluated samples in order; under DDP this process's share, each sample in exactly one share."""
    label_tensor = (torch.from_numpy(labels) if labels is not None
                    else torch.full((len(features),), -1, dtype=torch.long))
    dataset = TensorDataset(torch.from_numpy(features), label_tensor)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      sampler=evaluation_sampler(dataset, world_size, rank))


def graph_space(config: VectorConfig, data: VectorData, standardised: np.ndarray) -> tuple[np.ndarray, str]:
    """The vectors whose neighbours pair the samples (the embedding given, else the features as the network sees
    them), and what else the graph depends on (its principal components)."""
    space = data.embedding if data.embedding is not None else standardised
    return space, f"pca={config.knn_pca} seed={config.seed} index={config.knn_index}"


def reduced(config: VectorConfig, space: np.ndarray) -> np.ndarray:
    if not config.knn_pca or config.knn_pca >= space.shape[1]:
        return space
    from sklearn.decomposition import PCA

    return PCA(config.knn_pca, svd_solver="randomized", random_state=config.seed).fit_transform(space)


def cached_graph(config: VectorConfig, data: VectorData, standardised: np.ndarray, cache: Path | None,
                 progress: bool = False, save: bool = True) -> np.ndarray:
    """The k-nearest-neighbour graph of the training samples: read from ``cache`` when it was built from the same
    vectors and options, else built (scikit-learn, memory linear in N) and, with ``save``, saved there."""
    space, options = graph_space(config, data, standardised)
    fingerprint = f"{graph_fingerprint(space, config.knn, config.metric)} {options}"
    graph = load_graph(cache, fingerprint) if cache is not None else None
    if graph is not None and graph.shape == (len(space), config.knn):
        return graph
    started = time.perf_counter()
    if progress:
        print(f"iic: finding {config.knn} {config.metric} neighbours of {len(space)} samples"
              f"{f' on {config.knn_pca} principal components' if 0 < config.knn_pca < space.shape[1] else ''}…",
              file=sys.stderr, flush=True)
    graph = neighbour_graph(reduced(config, space), config.knn, config.metric, index=config.knn_index)
    if progress:
        print(f"iic: neighbour graph built in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    if cache is not None and save:
        save_graph(cache, graph, fingerprint)
    return graph


class VectorRun(TaskRun):
    """A vector-clustering run on data already read and checked."""

    task = VECTORS

    def __init__(self, config: VectorConfig, data: VectorData, progress: bool = True):
        self.config, self.data, self.progress = config, data, progress
        self.module: VectorModule | None = None
        self.graph: np.ndarray | None = None

    def build_module(self) -> VectorModule:
        train = self.data.train
        module = VectorModule(config_to_dict(self.config), self.data.num_features, self.data.evaluation.num_classes,
                              self.data.evaluation.class_names, train.feature_names)
        module.set_standardiser(train.features)
        if self.data.backbone is not None:  # the pretrained weights that computed the features
            module.backbone.load_state_dict(self.data.backbone.state_dict())
        self.module = module
        return module

    def standardised(self, features: np.ndarray) -> np.ndarray:
        """``features`` as the network sees them: by the module's own statistics (0 and 1 without standardising)."""
        with torch.no_grad():
            return self.module.standardise(torch.from_numpy(features)).numpy()

    @functools.cached_property
    def train_features(self) -> np.ndarray:
        """The training samples standardised, once for the graph and the pairs."""
        return self.standardised(self.data.train.features)

    def neighbours(self, cache: Path | None, save: bool) -> np.ndarray | None:
        if self.config.pairs not in ("knn", "knn+noise"):
            return None
        if self.graph is None:
            self.graph = cached_graph(self.config, self.data, self.train_features, cache,
                                      self.progress, save)
        return self.graph

    def check_shares(self, world_size: int) -> None:
        rows = len(self.data.given_pairs) if self.data.given_pairs is not None else len(self.data.train)
        check_shares(world_size, rows, len(self.data.evaluation))

    def write_inputs(self, run_dir: Path, resumed: bool) -> None:
        # Built by the main process before training and cached in the run directory (a resumed run reads it).
        run_dir.mkdir(parents=True, exist_ok=True)
        self.neighbours(run_dir / GRAPH_FILE, save=True)

    def fit_data(self, module: VectorModule, trainer: L.Trainer, evaluation: DataLoader | None) -> dict[str, Any]:
        # Other processes of a DDP run read the main process's graph if it is there yet, else build their own (the
        # same: it is deterministic); they never write.
        run_dir = os.environ.get("IIC_RUN_DIR")
        graph = self.neighbours(Path(run_dir) / GRAPH_FILE if run_dir else None, save=False)
        features = torch.from_numpy(self.train_features)
        partner = None if self.data.partner is None else torch.from_numpy(self.standardised(self.data.partner))
        module.pairs = PairBatches(features, self.config.pairs, graph, self.data.given_pairs, partner,
                                   self.config.noise, self.config.mask)
        loader = training_loader(module.pairs.rows, self.config.batch_size, trainer.world_size,
                                 self.config.num_workers)
        return {"train_dataloaders": loader, "val_dataloaders": evaluation}

    def after_training(self, module: VectorModule, progress: bool) -> None:
        if self.config.refit_subheads:
            from iic.vectors.refit import refit_head_b

            refit_head_b(module, progress)
        module.pairs = None  # the training features and graph: not kept alive by the trained model

    def evaluation_loader(self, trainer: L.Trainer) -> DataLoader:
        return evaluation_loader(self.data.evaluation.features, self.data.evaluation.labels, self.config.num_workers,
                                 world_size=trainer.world_size, rank=trainer.global_rank)

    def write_outputs(self, module: VectorModule, run_dir: Path) -> None:
        from iic.vectors.outputs import draw_vector_clusters

        draw_vector_clusters(module, self.data.evaluation, self.data.images, run_dir / "clusters.png")


def load_module(path: str | os.PathLike) -> tuple[VectorModule, Path]:
    """A trained vector module from a checkpoint file or a run directory (its last checkpoint), and the file."""
    return load_trained(VectorModule, path)
