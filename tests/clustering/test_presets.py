"""The paper's presets as settings: the IIC+ ones train the over-clustering head alone."""

import dataclasses

import numpy as np
import pytest

from iic.clustering.config import CLUSTER_PRESETS, ClusterConfig
from iic.clustering.module import ClusterModule
from iic.config import config_from_dict, config_to_dict


@pytest.mark.parametrize(("preset", "k"), [("mnist-overcluster", 50), ("cifar10-overcluster", 70),
                                           ("cifar100-20-overcluster", 140), ("stl10-overcluster", 70)])
def test_overclustering_presets_train_one_head_of_k_clusters_scored_many_to_one(preset, k):
    config = config_from_dict(ClusterConfig, CLUSTER_PRESETS[preset])
    base = config_from_dict(ClusterConfig, CLUSTER_PRESETS[preset.removesuffix("-overcluster")])
    assert (config.k_a, config.k_b, config.num_subheads, config.dataset) == (0, k, 5, base.dataset)
    module = ClusterModule(config_to_dict(dataclasses.replace(config, widths=(4, 4, 4, 4), backbone="clusternet6c",
                                                              sobel=False)), channels=1, num_classes=10)
    assert module.head_names == ["B"] and module.schedule == ["B"]
    tables = np.zeros((5, k, 10), dtype=np.int64)
    tables[:, np.arange(k), np.arange(k) % 10] = 3  # each cluster all of one class: many-to-one maps it perfectly
    module.log = lambda *args, **kwargs: None
    scores = module.score_head("B", tables, reported=0)
    assert scores["mapping"] == "many-to-one" and scores["reported"]["acc"] == 1.0
