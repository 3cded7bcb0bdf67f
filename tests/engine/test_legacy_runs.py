"""Run directories written by iic before the one-engine layout (tests/fixtures/legacy_runs: config.yaml without
``task:``, checkpoints without ``"task"``, segmentation's ``affine_degrees`` and ``best_subhead``) still evaluate,
predict and resume, from the command line and from Python. Each test works on a copy: the fixtures never change."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import iic
from iic.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # trains on one thread

FIXTURES = Path(__file__).parents[1] / "fixtures" / "legacy_runs"



def copy_of(name: str, tmp_path: Path) -> Path:
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)
    return run


def fixture_files() -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(FIXTURES.rglob("*")) if path.is_file()}


@pytest.fixture(autouse=True)
def fixtures_untouched():
    before = fixture_files()
    yield
    assert fixture_files() == before, "a test changed tests/fixtures/legacy_runs"


def test_the_fixtures_are_of_the_old_format():
    for name in ("digits-legacy", "segment-legacy"):
        assert "task" not in yaml.safe_load((FIXTURES / name / "config.yaml").read_text())
        assert "task" not in torch.load(FIXTURES / name / "checkpoints" / "last.ckpt", weights_only=True)
    old_state = torch.load(FIXTURES / "segment-legacy" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "best_subhead" in old_state and "subhead_loss_B" not in old_state
    assert "affine_degrees" in yaml.safe_load((FIXTURES / "segment-legacy" / "config.yaml").read_text())


def assert_resumed_run(run: Path, task: str, passes_before: int, passes_after: int) -> dict:
    """The run directory as the new code leaves it: config.yaml naming its task, results in the new format,
    checkpoints naming their task, and the old metrics kept."""
    text = (run / "config.yaml").read_text()
    assert text.startswith(f"task: {task}\n")
    assert yaml.safe_load(text)["epochs"] == 2
    results = yaml.safe_load((run / "results.yaml").read_text())
    assert {"k", "reported_subhead", "subhead_losses"} <= set(results["B"]) and "reported" in results["B"]
    assert all(np.isfinite(results["B"]["subhead_losses"]))
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["task"] == task and last["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"] == passes_after
    # The run was moved (written elsewhere by the old code): its best checkpoint is still best.ckpt, not best-v1.ckpt.
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["task"] == task  # validated after every pass: rewritten by the resumed run
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    epochs = sorted({int(row["epoch"]) for row in rows})
    assert epochs[0] == 0 and set(range(passes_before, passes_after)) <= set(epochs)  # the old rows kept, new appended
    return results


# --- clustering: digits-legacy (1 epoch of A, B, B on the embedded digits, widths 4) ----------------------------

def test_legacy_clustering_run_evaluates_from_the_cli_and_python(tmp_path, capsys):
    run = copy_of("digits-legacy", tmp_path)
    trained = yaml.safe_load((run / "results.yaml").read_text())
    assert main(["evaluate", str(run), "--cpu", "--out", str(tmp_path / "eval.yaml")]) == 0
    printed = capsys.readouterr().out
    assert f"iic evaluate: {run / 'checkpoints' / 'last.ckpt'} on digits (1797 images, protocol iic)" in printed
    assert "head B (k=10), sub-head 0 (lowest loss): ACC" in printed
    evaluated = yaml.safe_load((tmp_path / "eval.yaml").read_text())
    model = iic.load(run)
    assert model.path == run / "checkpoints" / "last.ckpt"
    in_python = model.evaluate(accelerator="cpu")
    for results in (evaluated, in_python):
        for head in ("B", "A"):  # the old code's own results of this model, reproduced
            assert results[head]["reported_subhead"] == trained[head]["reported_subhead"]
            assert results[head]["cluster_sizes"] == trained[head]["cluster_sizes"]
            assert results[head]["reported"] == pytest.approx(trained[head]["reported"])


def test_legacy_clustering_run_predicts(tmp_path, capsys):
    from sklearn.datasets import load_digits

    run = copy_of("digits-legacy", tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    digits = np.rint(load_digits().images[:3] * 255 / 16).astype(np.uint8)
    for index, digit in enumerate(digits):
        Image.fromarray(digit).resize((16, 16)).save(images / f"{index}.png")
    out = tmp_path / "clusters.csv"
    assert main(["predict", str(run), str(images), "--out", str(out)]) == 0
    assert "iic predict: 3 images" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert [Path(row["path"]).name for row in rows] == ["0.png", "1.png", "2.png"]
    assert all(0 <= int(row["cluster"]) < 10 and 0 < float(row["probability"]) <= 1 for row in rows)
    clusters = iic.load(run).predict(sorted(images.iterdir()))
    assert clusters.tolist() == [int(row["cluster"]) for row in rows]


def test_legacy_clustering_run_resumes_for_one_more_epoch(tmp_path, capsys):
    run = copy_of("digits-legacy", tmp_path)
    steps_before = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"run directory {run}" in printed and "ACC" in printed
    results = assert_resumed_run(run, "clustering", passes_before=3, passes_after=6)
    assert "A" in results and sum(results["B"]["cluster_sizes"]) == 1797
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * steps_before
    assert iic.load(run).config.epochs == 2


# --- segmentation: segment-legacy (1 epoch of B, A on the embedded demo, widths 4) ------------------------------

def test_legacy_segmentation_run_evaluates_from_the_cli_and_python(tmp_path, capsys):
    from iic import segmentation

    run = copy_of("segment-legacy", tmp_path)
    trained = yaml.safe_load((run / "results.yaml").read_text())  # the old format: head_B, head_A
    assert main(["segment", "evaluate", str(run)]) == 0
    printed = capsys.readouterr().out
    assert f"iic segment evaluate: {run / 'checkpoints' / 'last.ckpt'} on 48 images of demo (train)" in printed
    assert f"head B: pixel accuracy {100 * trained['head_B']['pixel_acc']:.1f}%" in printed
    model = segmentation.load(run)
    assert model.path == run / "checkpoints" / "last.ckpt" and model.class_names == ["flat", "stripes", "grain"]
    assert model.config.rotation == 0.0  # saved as affine_degrees
    results = model.evaluate()
    for head in ("B", "A"):  # the old code's own results of this model, reproduced
        assert results[head]["reported"]["pixel_acc"] == pytest.approx(trained[f"head_{head}"]["pixel_acc"])
        assert results[head]["reported"]["miou"] == pytest.approx(trained[f"head_{head}"]["miou"])
    assert results["B"]["reported"]["iou"] == pytest.approx(trained["head_B"]["iou"])


def test_legacy_segmentation_run_predicts(tmp_path, capsys):
    from iic import segmentation

    run = copy_of("segment-legacy", tmp_path)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 20, 28, 3), dtype=np.uint8)
    (tmp_path / "images").mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "images" / f"{index}.png")
    assert main(["segment", "predict", str(run), str(tmp_path / "images"), "--out", str(tmp_path / "out")]) == 0
    assert "wrote 4 files for 2 images" in capsys.readouterr().out
    maps = segmentation.load(run).predict(images)
    assert len(maps) == 2
    for index, labels in enumerate(maps):
        assert labels.shape == (20, 28) and labels.dtype == np.int64 and 0 <= labels.min() and labels.max() < 3
        with Image.open(tmp_path / "out" / f"{index}_labels.png") as written:
            assert written.mode == "P" and np.array_equal(np.asarray(written), labels)


def test_legacy_segmentation_run_resumes_for_one_more_epoch(tmp_path, capsys):
    run = copy_of("segment-legacy", tmp_path)
    steps_before = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert main(["segment", "train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"run directory {run}" in printed and "head B: pixel accuracy" in printed
    results = assert_resumed_run(run, "segmentation", passes_before=2, passes_after=4)
    assert set(results["B"]["reported"]) == {"pixel_acc", "miou", "iou", "cluster_to_class", "confusion"}
    assert 0 <= results["B"]["reported"]["pixel_acc"] <= 1
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert "rotation" in config and "affine_degrees" not in config
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * steps_before
    assert "best_subhead" not in last["state_dict"] and "subhead_loss_B" in last["state_dict"]
