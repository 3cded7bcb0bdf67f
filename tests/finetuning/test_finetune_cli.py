"""``iic finetune`` from the command line: the round trip finetune → evaluate → predict, --resume, and bad input
(one clear line, exit code 2, no run directory left)."""

import contextlib
import csv
import io
import shutil

import numpy as np
import pytest
import torch
import yaml
from helpers import in_process_error
from PIL import Image

import iic
from iic.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # trains, on one thread

# Two short passes of a narrow head on 30 labels (10 a class): about a second.
QUICK = ["--labels", "30", "--epochs", "2", "--epoch-images", "120", "--batch-size", "30", "--head-width", "32",
         "--no-progress"]
RUN_FILES = ("config.yaml", "metrics.csv", "labelled.csv", "results.yaml", "checkpoints/last.ckpt")


def quiet_main(*argv) -> tuple[int, str]:
    """``iic ARGV`` in this process: its exit code and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def printed_accuracy(text: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith("accuracy ")]
    return line.split()[1]


@pytest.fixture(scope="module")
def cli_run(digits_run, tmp_path_factory, one_thread_block):
    """``iic finetune RUN --labels 30 …``: its run directory and what it printed."""
    out_dir = tmp_path_factory.mktemp("finetune")
    with one_thread_block():
        code, printed = quiet_main("finetune", str(digits_run.run_dir), *QUICK, "--out-dir", str(out_dir),
                                   "--name", "ft")
    assert code == 0
    return out_dir / "ft", printed


def copy_run(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / run_dir.name)


# --- the round trip --------------------------------------------------------------------------------------------

def test_finetune_writes_its_run_and_says_what_it_did(cli_run, digits_run):
    run_dir, printed = cli_run
    for name in ("config.yaml", "labelled.csv", "metrics.csv", "results.yaml", "curves.png", "checkpoints/last.ckpt",
                 "checkpoints/best.ckpt"):
        assert (run_dir / name).is_file(), name
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["task"] == "finetuning" and config["source"] == str(digits_run.run_dir)
    assert config["labels"] == 30 and config["preset"] == "default"  # the IIC run's preset, digits, has none here
    assert (f"iic finetune: {digits_run.run_dir} (fine-tuned, preset default) with 30 labelled images; scored on 139 "
            f"(test split); run directory {run_dir}") in printed
    results = yaml.safe_load((run_dir / "results.yaml").read_text())
    assert printed_accuracy(printed) == f"{100 * results['acc']:.2f}%"
    assert "on 139 images (test split); lowest class: " in printed
    assert len((run_dir / "labelled.csv").read_text().splitlines()) == 31  # a header and 30 images


def test_evaluate_prints_the_accuracy_of_results_yaml(cli_run, capsys, tmp_path):
    run_dir, _ = cli_run
    assert main(["evaluate", str(run_dir), "--out", str(tmp_path / "eval.yaml")]) == 0
    printed = capsys.readouterr().out
    results = yaml.safe_load((run_dir / "results.yaml").read_text())
    assert f"iic evaluate: {run_dir / 'checkpoints' / 'last.ckpt'} (fine-tuned) on npz" in printed
    assert printed_accuracy(printed) == f"{100 * results['acc']:.2f}%"
    evaluated = yaml.safe_load((tmp_path / "eval.yaml").read_text())
    assert evaluated["acc"] == pytest.approx(results["acc"]) and evaluated["confusion"] == results["confusion"]
    assert evaluated["evaluated_on"] == "test split" and evaluated["images"] == 139


def test_predict_writes_each_images_class_name(cli_run, three_digit_npz, tmp_path, capsys):
    run_dir, _ = cli_run
    images = np.load(three_digit_npz)["x_test"][:6]
    folder = tmp_path / "digits"
    (folder / "more").mkdir(parents=True)
    for i, image in enumerate(images):  # images in a sub-folder are found too
        Image.fromarray(image).save(folder / ("more" if i > 3 else "") / f"{i}.png")
    out = tmp_path / "classes.csv"
    assert main(["predict", str(run_dir), str(folder), "--out", str(out)]) == 0
    with out.open() as handle:
        assert next(csv.reader(handle)) == ["path", "class", "probability"]
    rows = list(csv.DictReader(out.open()))
    assert [row["path"].rsplit("/", 1)[1] for row in rows] == [f"{i}.png" for i in range(6)]
    expected = iic.load(run_dir).predict_names(images)  # PNGs hold the same pixels
    assert [row["class"] for row in rows] == expected and set(expected) <= {"0", "1", "2"}
    assert all(1 / 3 <= float(row["probability"]) <= 1 for row in rows)  # the most likely of three classes
    counts = {name: expected.count(name) for name in ("0", "1", "2")}
    assert f"iic predict: 6 images → {out} (classes {counts})" in capsys.readouterr().out


# --- resume ----------------------------------------------------------------------------------------------------

def test_resume_trains_more_epochs_even_when_the_iic_run_has_moved(digits_run, tmp_path, monkeypatch):
    from iic.finetuning.module import FinetuneModule

    source = copy_run(digits_run.run_dir, tmp_path)
    run_dir = tmp_path / "runs" / "ft"
    code, _ = quiet_main("finetune", str(source), *QUICK, "--epochs", "1", "--out-dir", str(tmp_path / "runs"),
                         "--name", "ft")
    assert code == 0
    steps_per_epoch = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert steps_per_epoch == 120 // 30
    labelled = (run_dir / "labelled.csv").read_bytes()
    shutil.rmtree(source)  # the checkpoint holds the network and the IIC run's settings
    steps_run = []
    training_step = FinetuneModule.training_step
    monkeypatch.setattr(FinetuneModule, "training_step",
                        lambda self, batch, index: steps_run.append(index) or training_step(self, batch, index))
    code, printed = quiet_main("finetune", "--resume", str(run_dir), "--epochs", "3", "--no-progress")
    assert code == 0
    assert len(steps_run) == 2 * steps_per_epoch  # the two passes added, not the first again
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3 * steps_per_epoch
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["epochs"] == 3
    assert (run_dir / "labelled.csv").read_bytes() == labelled
    results = yaml.safe_load((run_dir / "results.yaml").read_text())
    assert printed_accuracy(printed) == f"{100 * results['acc']:.2f}%" and results["images"] == 139


@pytest.mark.parametrize("change", [["--labels", "33"], ["--labels-seed", "1"], ["--validation", "0.2"]])
def test_resume_with_other_labelled_images_is_refused_in_one_line(cli_run, tmp_path, capsys, change):
    run_dir = copy_run(cli_run[0], tmp_path)
    labelled, last = ((run_dir / name).read_bytes() for name in ("labelled.csv", "checkpoints/last.ckpt"))
    line = in_process_error(capsys, "finetune", "--resume", str(run_dir), *change, "--epochs", "3", "--no-progress")
    assert line == (f"iic: error: these settings draw other labelled images than the run's {run_dir / 'labelled.csv'}"
                    f": --labels, --labels-seed, --stratified, --validation and the data cannot change on --resume")
    assert (run_dir / "labelled.csv").read_bytes() == labelled
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == last


def test_a_refused_resume_leaves_the_run_as_it_was(cli_run, tmp_path, capsys):
    run_dir = copy_run(cli_run[0], tmp_path)
    before = {name: (run_dir / name).read_bytes() for name in RUN_FILES}
    in_process_error(capsys, "finetune", "--resume", str(run_dir), "--labels", "33", "--epochs", "3", "--no-progress")
    assert {name: (run_dir / name).read_bytes() for name in RUN_FILES} == before
    code, _ = quiet_main("finetune", "--resume", str(run_dir), "--epochs", "3", "--no-progress")
    assert code == 0


def test_resume_that_would_train_other_parameters_is_refused_in_one_line(cli_run, tmp_path, capsys):
    run_dir = copy_run(cli_run[0], tmp_path)
    before = {name: (run_dir / name).read_bytes() for name in RUN_FILES}
    for flag in ("--freeze-trunk", "--from-scratch"):
        assert in_process_error(capsys, "finetune", "--resume", str(run_dir), flag, "--epochs", "3") == (
            f"iic: error: {flag} cannot change on --resume: the run trains other parameters")
    assert {name: (run_dir / name).read_bytes() for name in RUN_FILES} == before


def test_a_run_that_ended_on_its_chosen_pass_is_not_resumed(digits_run, tmp_path, capsys):
    run = iic.finetune(digits_run.run_dir, labels=30, validation=0.2, epochs=2, epoch_images=60, batch_size=20,
                       head_width=16, out_dir=str(tmp_path), name="chosen", progress=False)
    assert "chosen_pass" in run.results
    assert in_process_error(capsys, "finetune", "--resume", str(run.run_dir), "--epochs", "3").endswith(
        "it ended on the pass its validation part chose, which its last checkpoint holds; start a new run with more "
        "--epochs")


def test_resume_of_a_finished_run_asks_for_more_epochs(cli_run, tmp_path, capsys):
    run_dir = copy_run(cli_run[0], tmp_path)
    last = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    assert "give more --epochs to train on" in in_process_error(capsys, "finetune", "--resume", str(run_dir),
                                                                "--no-progress")
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == last


def test_an_iic_run_cannot_be_resumed_as_a_finetuning_run(digits_run, capsys):
    assert in_process_error(capsys, "finetune", "--resume", str(digits_run.run_dir), "--epochs", "5").endswith(
        f"{digits_run.run_dir} is a clustering run: resume it with `iic evaluate`, `iic predict` or "
        f"`iic train --resume`")


# --- bad input: one clear line, exit code 2, no run directory ---------------------------------------------------

@pytest.fixture(scope="module")
def other_data(three_digit_npz, tmp_path_factory):
    """.npz files of the same digits: two classes only; a training split alone; no labels at all."""
    arrays = dict(np.load(three_digit_npz))
    folder = tmp_path_factory.mktemp("other")
    two = arrays["y_train"] < 2, arrays["y_test"] < 2
    np.savez(folder / "two_classes.npz", x_train=arrays["x_train"][two[0]], y_train=arrays["y_train"][two[0]],
             x_test=arrays["x_test"][two[1]], y_test=arrays["y_test"][two[1]])
    np.savez(folder / "train_only.npz", x_train=arrays["x_train"][:60], y_train=arrays["y_train"][:60])
    np.savez(folder / "unlabelled.npz", x_train=arrays["x_train"], x_test=arrays["x_test"])
    np.savez(folder / "few_train.npz", x_train=arrays["x_train"][:20], y_train=arrays["y_train"][:20],
             x_test=arrays["x_test"], y_test=arrays["y_test"])
    return folder


def assert_refused(capsys, tmp_path, source, *args) -> str:
    out_dir = tmp_path / "runs"
    line = in_process_error(capsys, "finetune", str(source), *args, "--out-dir", str(out_dir), "--no-progress")
    assert not out_dir.exists(), "nothing may be written on bad input"
    return line


@pytest.mark.parametrize("args, message", [
    (["--labels", "401"], "401 labels: 401 of 400 labelled images; give at least 1 and at most 400"),
    (["--labels", "2"], "2 labels cannot cover 3 classes: give at least one label per class"),
    (["--labels", "2.5"], "the number of labels must be a whole count or a fraction below 1, got 2.5"),
])
def test_impossible_label_counts(digits_run, tmp_path, capsys, args, message):
    assert assert_refused(capsys, tmp_path, digits_run.run_dir, *args) == f"iic: error: {message}"


def test_a_validation_part_too_small_for_the_classes_says_so(digits_run, tmp_path, capsys):
    line = assert_refused(capsys, tmp_path, digits_run.run_dir, "--labels", "30", "--validation", "0.05")
    assert "validation" in line


def test_data_of_other_classes_than_the_iic_runs(digits_run, other_data, tmp_path, capsys):
    line = assert_refused(capsys, tmp_path, digits_run.run_dir, "--dataset", "npz", "--data-path",
                          str(other_data / "two_classes.npz"))
    assert line == ("iic: error: npz has 2 classes, and the IIC run's data had 3: fine-tune on data of the same "
                    "classes as the run")


def test_without_a_test_split_the_images_left_unlabelled_are_scored(digits_run, other_data, tmp_path, capsys):
    data = ["--dataset", "npz", "--data-path", str(other_data / "train_only.npz")]
    line = assert_refused(capsys, tmp_path, digits_run.run_dir, *data, "--labels", "60")
    assert line == ("iic: error: all 60 training images are labelled and npz has no labelled test split: nothing is "
                    "left to score on; give fewer --labels")
    run = iic.finetune(digits_run.run_dir, dataset="npz", data_path=str(other_data / "train_only.npz"), labels=30,
                       epochs=1, epoch_images=60, batch_size=30, head_width=32, out_dir=str(tmp_path / "ok"),
                       progress=False)
    assert run.results["evaluated_on"] == "training images not labelled" and run.results["images"] == 30


def test_a_dataset_without_labels(other_data, tmp_path, capsys):
    unlabelled = iic.train(dataset="npz", data_path=str(other_data / "unlabelled.npz"), out_dir=str(tmp_path / "iic"),
                           k_b=3, k_a=0, num_subheads=1, epochs=1, batch_size=100, repeats=1, widths=(4, 8, 8, 8),
                           trunks=1, refit_subheads=0, progress=False)
    assert unlabelled.model.module.num_classes == 0 and "reported" not in unlabelled.results["B"]  # nothing to score
    line = assert_refused(capsys, tmp_path, unlabelled.run_dir, "--labels", "30")
    assert line == "iic: error: fine-tuning needs labelled images, and npz's training images have no labels"


def test_a_segmentation_checkpoint(tmp_path, capsys):
    torch.save({"task": "segmentation", "state_dict": {},
                "hyper_parameters": {"config": {}, "class_names": ["road", "sky"], "color_channels": 3}},
               tmp_path / "segmentation.ckpt")
    line = assert_refused(capsys, tmp_path, tmp_path / "segmentation.ckpt", "--labels", "30")
    assert line.endswith("is an iic segmentation checkpoint, not a clustering one: use `iic segment evaluate`, "
                         "`iic segment predict` or `iic segment train --resume`")


def test_a_finetuned_run_is_no_source(cli_run, tmp_path, capsys):
    line = assert_refused(capsys, tmp_path, cli_run[0], "--labels", "30")
    assert line == (f"iic: error: {cli_run[0] / 'checkpoints' / 'last.ckpt'} is an iic finetuning checkpoint, not a "
                    f"clustering one: use `iic evaluate`, `iic predict` or `iic finetune --resume`")


def test_options_of_iic_runs_are_refused_for_a_finetuned_one(cli_run, tmp_path, capsys):
    run_dir = cli_run[0]
    out = tmp_path / "out.yaml"
    assert in_process_error(capsys, "evaluate", str(run_dir), "--map-labels", "10", "--out", str(out)) == (
        "iic: error: --map-labels names the clusters of an IIC run; a fine-tuned run's classes are named already")
    assert "--protocol is for IIC runs" in in_process_error(capsys, "evaluate", str(run_dir), "--protocol", "split",
                                                            "--out", str(out))
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "0.png")
    assert in_process_error(capsys, "predict", str(run_dir), str(tmp_path / "0.png"), "--head", "A", "--out",
                            str(tmp_path / "o.csv")) == (
        "iic: error: --head is for IIC runs: a fine-tuned run has one classifier")
    assert not out.exists() and not (tmp_path / "o.csv").exists()


def test_evaluating_on_other_data_with_a_test_split_needs_no_labelled_draw(cli_run, other_data, capsys):
    run_dir = cli_run[0]
    code = main(["evaluate", str(run_dir), "--dataset", "npz", "--data-path", str(other_data / "few_train.npz")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = yaml.safe_load((run_dir / "results.yaml").read_text())
    assert printed_accuracy(captured.out) == f"{100 * results['acc']:.2f}%"  # the same test split


@pytest.mark.parametrize("args", [["--labels", "1", "--no-stratified"], ["--labels", "4", "--validation", "0.75"]],
                         ids=["one-label", "one-left-by-validation"])
def test_a_single_labelled_training_image_is_trained_or_refused_in_one_line(digits_run, tmp_path, capsys, args):
    out_dir = tmp_path / "runs"
    code = main(["finetune", str(digits_run.run_dir), *args, "--epoch-images", "0", "--epochs", "1", "--out-dir",
                 str(out_dir), "--no-progress"])
    captured = capsys.readouterr()
    if code == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("iic: error:"), captured.err
        assert not out_dir.exists()
    else:
        assert code == 0, captured.err
