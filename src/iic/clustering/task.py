"""The clustering task, as the engine and the command line know it."""

from iic.clustering.config import CLUSTER_PRESETS, ClusterConfig
from iic.engine.task import Task

CLUSTERING = Task(
    name="clustering", config_class=ClusterConfig, presets=CLUSTER_PRESETS, run_prefix="",
    commands="`iic evaluate`, `iic predict` or `iic train --resume`",
    legacy_hyperparameters=frozenset({"config", "channels"}),
)
