"""Fine-tuning runs from Python on the three digits: a classifier that must learn from a handful of labels, the trunk
it starts from (the IIC run's, random with from_scratch, left as it was when frozen), and the labelled images that
labelled.csv records."""

import csv
from collections import Counter

import numpy as np
import pytest
import torch
import yaml

import iic
from iic.data.subsets import labelled_subset
from iic.finetuning.api import ClassifierModel
from iic.finetuning.module import FinetuningRun

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # trains, on one thread

# One short pass of a narrow head: enough to build and run each kind of fine-tuning (about a second each).
QUICK = dict(labels=30, epochs=1, epoch_images=60, batch_size=30, head_width=32, progress=False)


def state_copy(module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def source_trunk_state(run_dir) -> dict[str, torch.Tensor]:
    """The trunk of the IIC run's checkpoint (one trunk: the one its reported sub-head is on)."""
    (tower,) = iic.load(run_dir).module.net.towers
    return state_copy(tower.trunk)


@pytest.fixture(scope="module")
def tuned(digits_run, tmp_path_factory, one_thread_block):
    # 30 labels (10 a class), 5 passes of 300 labelled views: seeds 0–5 of these settings scored 0.885–0.95.
    with one_thread_block():
        return iic.finetune(digits_run.run_dir, labels=30, epochs=5, epoch_images=300, batch_size=30, head_width=32,
                            out_dir=str(tmp_path_factory.mktemp("finetune")), name="tuned", progress=False)


def test_a_handful_of_labels_teaches_the_classifier_the_digits(tuned, three_digit_npz):
    arrays = np.load(three_digit_npz)
    results = tuned.results
    assert results["acc"] > 0.75  # three classes of 46–47 test images: chance is about 1/3
    assert results["evaluated_on"] == "test split" and results["images"] == len(arrays["y_test"]) == 139
    assert "chosen_pass" not in results  # no validation part: the last pass is the model
    assert results["classes"] == ["0", "1", "2"] == tuned.model.class_names
    confusion = np.array(results["confusion"])  # rows: the true class, columns: the predicted one
    assert confusion.sum(axis=1).tolist() == np.bincount(arrays["y_test"]).tolist()
    assert results["acc"] == pytest.approx(np.trace(confusion) / confusion.sum())
    for i, name in enumerate(results["classes"]):
        assert results["per_class_acc"][name] == pytest.approx(confusion[i, i] / confusion[i].sum())
    assert yaml.safe_load((tuned.run_dir / "results.yaml").read_text()) == results
    # The model that was scored is the one returned, and the one saved.
    predicted = tuned.model.predict(arrays["x_test"])
    assert (predicted.numpy() == arrays["y_test"]).mean() == pytest.approx(results["acc"])
    assert tuned.model.predict_names(arrays["x_test"][:5]) == [str(i) for i in predicted[:5].tolist()]
    loaded = iic.load(tuned.run_dir)
    assert isinstance(loaded, ClassifierModel) and loaded.path == tuned.run_dir / "checkpoints" / "last.ckpt"
    assert torch.allclose(loaded.predict_proba(arrays["x_test"]), tuned.model.predict_proba(arrays["x_test"]),
                          atol=1e-6)
    assert loaded.evaluate(accelerator="cpu")["acc"] == pytest.approx(results["acc"])


def test_labelled_csv_records_the_stratified_draw(tuned, three_digit_npz):
    y_train = np.load(three_digit_npz)["y_train"]
    rows = list(csv.DictReader((tuned.run_dir / "labelled.csv").open()))
    indices = [int(row["index"]) for row in rows]
    assert indices == labelled_subset(y_train, 30, seed=0, leave_out=False).tolist()
    assert [row["class"] for row in rows] == [str(y_train[i]) for i in indices]
    assert Counter(row["class"] for row in rows) == {"0": 10, "1": 10, "2": 10}  # 132, 135 and 133 to draw from
    assert {row["part"] for row in rows} == {"train"}


def test_the_trunk_starts_as_the_iic_runs_and_from_scratch_does_not(digits_run, tmp_path, monkeypatch):
    started = {}
    build_module = FinetuningRun.build_module

    def record_start(job):
        module = build_module(job)
        started[job.config.from_scratch] = state_copy(module.net.trunk)
        return module

    monkeypatch.setattr(FinetuningRun, "build_module", record_start)
    for from_scratch in (False, True):
        iic.finetune(digits_run.run_dir, from_scratch=from_scratch, out_dir=str(tmp_path), **QUICK)
    source = source_trunk_state(digits_run.run_dir)
    assert started[False].keys() == source.keys() == started[True].keys()
    for name, value in source.items():
        assert torch.equal(started[False][name], value), name
    weights = [name for name, value in source.items() if value.dim() == 4]  # the convolutions
    assert weights and not any(torch.equal(started[True][name], source[name]) for name in weights)


@pytest.fixture(scope="module")
def frozen(digits_run, tmp_path_factory, one_thread_block):
    """A frozen-trunk run, and its head as it was built (before training)."""
    heads = []
    build_module = FinetuningRun.build_module

    def record_start(job):
        module = build_module(job)
        heads.append(state_copy(module.net.head))
        return module

    with pytest.MonkeyPatch.context() as patch, one_thread_block():
        patch.setattr(FinetuningRun, "build_module", record_start)
        run = iic.finetune(digits_run.run_dir, freeze_trunk=True, out_dir=str(tmp_path_factory.mktemp("frozen")),
                           **QUICK)
    (head,) = heads
    return run, head


def test_a_frozen_trunks_weights_are_the_iic_runs_and_only_the_head_trains(frozen, digits_run):
    run, head_before = frozen
    source = source_trunk_state(digits_run.run_dir)
    trained = run.model.module.net
    saved = torch.load(run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    learnable = [name for name, _ in trained.trunk.named_parameters()]
    assert learnable
    for name in learnable:  # convolutions and BatchNorm's affine weights
        assert torch.equal(trained.trunk.state_dict()[name], source[name]), name
        assert torch.equal(saved[f"net.trunk.{name}"], source[name]), name
    for name, value in trained.head.state_dict().items():  # and yet the run trained: its head moved
        if value.is_floating_point():
            assert not torch.equal(head_before[name], value), name


def test_a_frozen_trunks_batchnorm_statistics_are_the_iic_runs(frozen, digits_run):
    run, _ = frozen
    source = source_trunk_state(digits_run.run_dir)
    trained = run.model.module.net.trunk.state_dict()
    statistics = [name for name in source if "running_" in name or "num_batches_tracked" in name]
    assert statistics
    for name in statistics:
        assert torch.equal(trained[name], source[name]), name


def test_a_validation_part_is_held_out_of_the_labels_and_chooses_the_pass(digits_run, three_digit_npz, tmp_path):
    run = iic.finetune(digits_run.run_dir, labels=30, labels_seed=4, validation=0.2, epochs=4, epoch_images=60,
                       batch_size=12, head_width=32, out_dir=str(tmp_path), progress=False)
    y_train = np.load(three_digit_npz)["y_train"]
    rows = list(csv.DictReader((run.run_dir / "labelled.csv").open()))
    assert [int(row["index"]) for row in rows] == labelled_subset(y_train, 30, seed=4, leave_out=False).tolist()
    held = [row for row in rows if row["part"] == "validation"]
    assert {row["part"] for row in rows} == {"train", "validation"}
    assert len(held) == 6 and Counter(row["class"] for row in held) == {"0": 2, "1": 2, "2": 2}  # stratified too
    # The pass chosen is the one of lowest loss on the validation part, and it is the model saved and scored.
    losses = {int(row["epoch"]) + 1: float(row["val/loss"])
              for row in csv.DictReader((run.run_dir / "metrics.csv").open()) if row.get("val/loss")}
    assert sorted(losses) == [1, 2, 3, 4]
    assert run.results["chosen_pass"] == min(losses, key=losses.get)
    best, last = (torch.load(run.run_dir / "checkpoints" / f"{name}.ckpt", weights_only=True)["state_dict"]
                  for name in ("best", "last"))
    for name, value in best.items():
        assert torch.equal(last[name], value), name
    assert run.results["evaluated_on"] == "test split" and run.results["images"] == 139
