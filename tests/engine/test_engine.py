"""Engine pieces that a short run does not reach: divergence, channel conversion for evaluation, config sources."""

import dataclasses
import math

import pytest
import torch
from helpers import fit

from iic.clustering.config import CLUSTER_PRESETS, ClusterConfig
from iic.clustering.module import ClusterModule
from iic.config import config_from_dict, config_to_dict, resolve_config
from iic.errors import IICError

pytestmark = pytest.mark.slow  # trains, or runs the iic command


def test_a_non_finite_loss_stops_training_with_a_clear_error():
    module = ClusterModule(config_to_dict(ClusterConfig(k_b=3, k_a=0, num_subheads=2)), channels=1)
    module._loss_sums["B"], module._loss_counts["B"] = torch.tensor([0.5, float("nan")]), 1
    with pytest.raises(IICError, match="diverged"):
        module.close_pass()
    module._loss_sums["B"] = torch.tensor([-0.5, -0.7])
    module.close_pass()
    assert module.reported_subhead("B") == 1


def test_evaluate_converts_images_to_the_models_channels():
    from iic.clustering.data import ImageSet
    from iic.clustering.module import evaluate_images

    config = ClusterConfig(k_b=3, k_a=0, num_subheads=1, channels=3)
    module = ClusterModule(config_to_dict(config), channels=3)
    grey = ImageSet(torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8), torch.arange(12) % 3)
    results = evaluate_images(module, grey, accelerator="cpu")  # an RGB model scored on greyscale digits
    assert 0 < results["B"]["reported"]["acc"] <= 1


def test_predict_on_a_missing_head_a_is_an_error():
    module = ClusterModule(config_to_dict(ClusterConfig(k_b=3, k_a=0, num_subheads=1)), channels=1)
    images = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    assert module.predict_probs(images, head="B").shape == (2, 3)
    with pytest.raises(IICError, match="no head A"):
        module.predict_probs(images, head="A")


def test_preset_comes_from_the_config_file_unless_given(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("preset: mnist\nlr: 0.001\n")
    config = resolve_config(ClusterConfig, CLUSTER_PRESETS, None, str(path), {"epochs": 2})
    assert (config.preset, config.dataset, config.lr, config.epochs) == ("mnist", "mnist", 0.001, 2)
    config = resolve_config(ClusterConfig, CLUSTER_PRESETS, "cifar10", str(path), {})
    assert (config.preset, config.dataset, config.lr) == ("cifar10", "cifar10", 0.001)
    assert resolve_config(ClusterConfig, CLUSTER_PRESETS, None, None, {}).preset == "digits"


def test_a_yaml_boolean_is_not_a_number():
    with pytest.raises(IICError, match="expected int"):
        config_from_dict(ClusterConfig, {"epochs": True})
    with pytest.raises(IICError, match="expected float"):
        config_from_dict(ClusterConfig, {"lr": False})
    assert config_from_dict(ClusterConfig, {"epochs": 3.0, "flip": "yes"}).epochs == 3


def test_cosine_schedule_takes_the_lr_from_its_value_down_to_zero_and_resuming_follows_new_settings(
        three_digit_npz, tmp_path, monkeypatch):
    from iic.clustering.data import load_cluster_data

    config = ClusterConfig(dataset="npz", data_path=str(three_digit_npz), k_b=3, k_a=0, num_subheads=1, epochs=2,
                           batch_size=100, repeats=2, lr=0.004, lr_schedule="cosine", out_dir=str(tmp_path), name="run")
    data = load_cluster_data(config)
    used = []
    original = ClusterModule.lr_factor

    def recorded(self):
        used.append(original(self) * self.config.lr)
        return used[-1] / self.config.lr

    monkeypatch.setattr(ClusterModule, "lr_factor", recorded)
    fit(config, data, tmp_path / "run")
    steps = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert len(used) == steps > 2 and used[0] == 0.004
    assert all(a > b for a, b in zip(used, used[1:])) and used[-1] < 0.004 * 0.01  # down to (almost) 0
    # Resumed with twice the epochs and another lr: the schedule is the new settings' from the step reached.
    used.clear()
    config.epochs, config.lr = 4, 0.002
    fit(config, data, tmp_path / "run", resume=True)
    assert len(used) == steps and used[0] == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(used[-1])


def test_cosine_schedule_reaches_zero_when_head_a_trains_on_more_images_than_head_b(three_digit_npz, tmp_path,
                                                                                   monkeypatch):
    """As STL-10, whose head A also sees the unlabelled images: passes of A and B differ in length."""
    from iic.clustering.data import ClusterData, concat, load_cluster_data

    config = ClusterConfig(dataset="npz", data_path=str(three_digit_npz), k_b=3, k_a=6, num_subheads=1, epochs=2,
                           batch_size=100, repeats=2, lr=0.004, lr_schedule="cosine", head_b_first=False)
    data = load_cluster_data(config)
    data = ClusterData(concat(*[data.train_b] * 4), data.train_b, data.evaluation, data.channels)
    used = []
    original = ClusterModule.lr_factor
    monkeypatch.setattr(ClusterModule, "lr_factor", lambda self: used.append(original(self) * self.config.lr) or
                        used[-1] / self.config.lr)
    fit(config, data, tmp_path / "run")
    global_step = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    pass_a, pass_b = len(data.train_a) // 100, len(data.train_b) // 100
    assert pass_a > 3 * pass_b and len(used) == global_step == 2 * (pass_a + 2 * pass_b)
    assert used[0] == 0.004 and all(a > b for a, b in zip(used, used[1:])) and used[-1] < 0.004 * 0.01


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_steps_per_pass_are_counted_as_each_process_takes_its_share(three_digit_npz, world_size):
    from types import SimpleNamespace

    from torch.utils.data import DistributedSampler

    from iic.clustering.data import load_cluster_data
    from iic.clustering.module import ClusterDataModule

    config = ClusterConfig(dataset="npz", data_path=str(three_digit_npz), batch_size=60)
    module = ClusterModule(config_to_dict(config), channels=1)
    datamodule = ClusterDataModule(config,
                                   load_cluster_data(ClusterConfig(dataset="npz", data_path=str(three_digit_npz))),
                                   module)
    datamodule.trainer = SimpleNamespace(world_size=world_size)
    loader = datamodule.head_dataloader("B")
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size, rank=world_size - 1)  # as Lightning's
    as_lightning_runs_it = torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                                                       drop_last=True)
    assert (datamodule.batches_per_pass("B") == len(as_lightning_runs_it)
            == math.ceil(len(loader.dataset) / world_size) // 60)


def test_resuming_with_another_lr_trains_with_it(three_digit_npz, tmp_path, monkeypatch):
    """The checkpoint's optimizer state carries the old lr; the resumed run's settings win."""
    from iic.clustering.data import load_cluster_data

    config = ClusterConfig(dataset="npz", data_path=str(three_digit_npz), k_b=3, k_a=0, num_subheads=1, epochs=1,
                           batch_size=100, repeats=2, lr=0.004, out_dir=str(tmp_path), name="run")
    data = load_cluster_data(config)
    fit(config, data, tmp_path / "run")
    config.epochs, config.lr = 2, 0.001
    used = []
    original = ClusterModule.training_step

    def recorded(self, batch, batch_idx):  # the lr of the optimiser's step, after the module set it
        loss = original(self, batch, batch_idx)
        used.append(self.optimizers().param_groups[0]["lr"])
        return loss

    monkeypatch.setattr(ClusterModule, "training_step", recorded)
    fit(config, data, tmp_path / "run", resume=True)
    assert used and set(used) == {0.001}
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == 0.001


# --- run directories, checkpoints and metrics.csv across a resume -----------------------------------------

def test_finished_passes_count_a_passs_own_checkpoint_and_the_end_of_a_run_alike():
    from iic.engine.checkpoints import finished_passes

    progress = lambda processed: {"fit_loop": {"epoch_progress": {"total": {"processed": processed}}}}  # noqa: E731
    assert finished_passes({"epoch": 1, "loops": progress(2)}) == 2  # saved as pass 1 (the second) ended
    assert finished_passes({"epoch": 6, "loops": progress(6)}) == 6  # saved at the end of a 6-pass run
    assert finished_passes({"epoch": 4}) == 4  # no loop state: the epoch it records


def test_a_resumed_runs_metrics_keep_the_finished_passes_on_disk_and_new_rows_are_appended(tmp_path, monkeypatch):
    import csv

    import iic.engine.trainer as engine
    from iic.engine.run import trim_metrics_for_resume

    (tmp_path / "metrics.csv").write_text("epoch,loss,step\n0,-1.0,9\n1,-2.0,19\n2,-2.5,29\n")  # pass 2 unfinished
    trim_metrics_for_resume(tmp_path, resumed_passes=2)
    assert [r["epoch"] for r in csv.DictReader((tmp_path / "metrics.csv").open())] == ["0", "1"]
    writes, atomic = [], engine.atomic_write_bytes
    monkeypatch.setattr(engine, "atomic_write_bytes", lambda path, data: (writes.append(path), atomic(path, data)))
    logger = engine.RunCSVLogger(save_dir=str(tmp_path), name="", version="")
    logger.log_metrics({"loss": -3.0, "epoch": 2}, step=20)
    logger.save()
    assert not writes  # rows of known columns are appended
    logger.log_metrics({"val/acc_B": 0.9, "epoch": 2}, step=29)  # a new column: the file is rewritten, whole
    logger.save()
    assert writes == [tmp_path / "metrics.csv"]
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [(r["epoch"], r["loss"], r["val/acc_B"]) for r in rows] == [
        ("0", "-1.0", ""), ("1", "-2.0", ""), ("2", "-3.0", ""), ("2", "", "0.9")]


def test_a_run_killed_in_a_pass_resumes_with_the_passes_left_and_the_history_of_those_before(three_digit_npz, tmp_path,
                                                                                             monkeypatch):
    import csv

    from iic.clustering.api import run_training

    config = ClusterConfig(dataset="npz", data_path=str(three_digit_npz), out_dir=str(tmp_path), name="run", k_b=3,
                           k_a=0, head_b_passes=1, num_subheads=1, trunks=1, epochs=3, batch_size=50, accelerator="cpu")
    original = ClusterModule.on_train_epoch_end

    def killed_at_the_end_of_the_third_pass(self):  # before its checkpoint, after its rows were logged
        if self.current_epoch == 2:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(ClusterModule, "on_train_epoch_end", killed_at_the_end_of_the_third_pass)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, progress=False)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 2 * 10  # pass 1's own: 10 batches a pass
    rows_of_pass = lambda: [r for r in csv.DictReader((tmp_path / "run" / "metrics.csv").open()) if r["epoch"] == "2"]  # noqa: E731
    assert rows_of_pass()  # logged by the pass that was killed
    monkeypatch.setattr(ClusterModule, "on_train_epoch_end", original)
    run_training(config, resume=tmp_path / "run", progress=False)
    final = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == 3 * 10  # the third pass, once
    steps = [int(r["step"]) for r in rows_of_pass() if r["loss"]]
    assert steps == sorted(set(steps))  # the killed pass's rows gone, the new ones in their place
    epochs = [int(r["epoch"]) for r in csv.DictReader((tmp_path / "run" / "metrics.csv").open())]
    assert {0, 1, 2} <= set(epochs) and epochs == sorted(epochs)


def test_checkpoints_are_written_beside_their_target_and_renamed(tmp_path, monkeypatch):
    import os

    from iic.engine.trainer import AtomicCheckpointIO, build_trainer

    trainer = build_trainer(ClusterConfig(accelerator="cpu"), tmp_path / "run", max_epochs=1,
                            check_val_every_n_epoch=1, reload_dataloaders=False, progress=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    moves, real_replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moves.append((src, dst)), real_replace(src, dst))[1])
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    trainer.strategy.checkpoint_io.save_checkpoint({"weights": torch.ones(3)}, target)
    assert [(os.path.dirname(src), dst) for src, dst in moves] == [(str(target.parent), target)]
    assert torch.equal(torch.load(target)["weights"], torch.ones(3)) and os.listdir(target.parent) == ["last.ckpt"]


def test_runs_started_in_the_same_second_get_directories_of_their_own(tmp_path, monkeypatch):
    from datetime import datetime

    import iic.engine.run as engine

    class FixedClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(engine, "datetime", FixedClock)
    with engine.fresh_run_dir(str(tmp_path), None, "digits") as first:  # created at once: the next run sees it taken
        assert first.name == "digits-20260102-030405" and first.is_dir()
        with engine.fresh_run_dir(str(tmp_path), None, "digits") as second:
            assert second.name == "digits-20260102-030405-2"
    with engine.fresh_run_dir(str(tmp_path), "mine", "digits"):
        with pytest.raises(IICError, match="already exists|taken by another run meanwhile"):  # one --name, twice
            with engine.fresh_run_dir(str(tmp_path), "mine", "digits"):
                pass
        assert (tmp_path / "mine" / "config.yaml").exists()  # the first run's claim stands


def test_a_run_stopped_before_its_first_checkpoint_leaves_nothing_but_what_was_there(three_digit_npz, tmp_path,
                                                                                    monkeypatch):
    from iic.clustering.api import run_training

    def interrupted(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(ClusterModule, "training_step", interrupted)
    config = ClusterConfig(dataset="npz", data_path=str(three_digit_npz), out_dir=str(tmp_path / "runs"), name="cut",
                           k_b=3, k_a=0, num_subheads=1, trunks=1, epochs=1, accelerator="cpu")
    (tmp_path / "runs" / "earlier").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, progress=False)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["earlier"]
    with pytest.raises(KeyboardInterrupt):  # an empty folder of the user's, given by name, is kept (emptied)
        run_training(dataclasses.replace(config, name="earlier"), progress=False)
    assert (tmp_path / "runs" / "earlier").is_dir() and not any((tmp_path / "runs" / "earlier").iterdir())

    def interrupted_after_someone_wrote_in_the_run(self, batch, batch_idx):
        (tmp_path / "runs" / "cut" / "notes.txt").write_text("mine")
        raise KeyboardInterrupt

    monkeypatch.setattr(ClusterModule, "training_step", interrupted_after_someone_wrote_in_the_run)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, progress=False)
    assert [p.name for p in (tmp_path / "runs" / "cut").iterdir()] == ["notes.txt"]  # only what the run wrote goes
    with pytest.raises(IICError, match="unknown precision"):  # a date-named directory, made as the run started
        run_training(dataclasses.replace(config, name=None, precision="64-bit", out_dir=str(tmp_path / "new" / "runs")),
                     progress=False)
    assert not (tmp_path / "new").exists()  # nor the folders made for it
