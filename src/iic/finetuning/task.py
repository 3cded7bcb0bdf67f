"""The fine-tuning task, as the engine and the command line know it."""

from iic.engine.task import Task
from iic.finetuning.config import FINETUNE_PRESETS, FinetuneConfig

FINETUNING = Task(
    name="finetuning", config_class=FinetuneConfig, presets=FINETUNE_PRESETS, run_prefix="finetune-",
    commands="`iic evaluate`, `iic predict` or `iic finetune --resume`",
)
