"""The sequence task, as the engine and the command line know it."""

from iic.engine.task import Task
from iic.sequences.config import SEQUENCE_PRESETS, SequenceConfig

SEQUENCES = Task(
    name="sequences", config_class=SequenceConfig, presets=SEQUENCE_PRESETS, run_prefix="",
    commands="`iic evaluate`, `iic predict` or `iic train --resume`",
)
