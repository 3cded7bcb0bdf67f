"""The vector-clustering task, as the engine and the command line know it."""

from iic.engine.task import Task
from iic.vectors.config import VECTOR_PRESETS, VectorConfig

VECTORS = Task(
    name="vectors", config_class=VectorConfig, presets=VECTOR_PRESETS, run_prefix="",
    commands="`iic evaluate`, `iic predict` or `iic train --resume`",
)
