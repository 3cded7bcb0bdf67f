"""The segmentation task, as the engine and the command line know it."""

from iic.engine.task import Task
from iic.segmentation.config import SEGMENT_PRESETS, SegmentConfig

SEGMENTATION = Task(
    name="segmentation", config_class=SegmentConfig, presets=SEGMENT_PRESETS, run_prefix="segment-",
    commands="`iic segment evaluate`, `iic segment predict` or `iic segment train --resume`",
    legacy_hyperparameters=frozenset({"config", "class_names"}),
)
