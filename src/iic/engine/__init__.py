"""One engine for every IIC task: the base LightningModule (``module``), the Trainer (``trainer``), checkpoints
(``checkpoints``), the run lifecycle (``run``) and the task declaration (``task``). It imports no task."""
