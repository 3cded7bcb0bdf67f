"""The command-line round trip train → evaluate → predict, a run that must learn, and bad input."""

import contextlib
import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import fit, in_process_error
from PIL import Image

from iic.cli import main

pytestmark = pytest.mark.slow  # trains, or runs the iic command

# Two trunks of the wider network learn three digits in 6 epochs (the slim default needs more), without a re-fit.
TINY = ["--k-b", "3", "--k-a", "6", "--num-subheads", "2", "--trunks", "2", "--epochs", "6", "--batch-size", "100",
        "--repeats", "3", "--lr", "0.004", "--widths", "32", "64", "128", "128", "--refit-subheads", "0",
        "--no-progress", "--seed", "0"]
RUN_FILES = ("config.yaml", "metrics.csv", "checkpoints/last.ckpt")  # what a refused resume must leave as it was


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, three_digit_npz):
    out = tmp_path_factory.mktemp("runs")
    code = main(["train", "--dataset", "npz", "--data-path", str(three_digit_npz), "--out-dir", str(out),
                 "--name", "tiny", *TINY])
    assert code == 0
    return out / "tiny"


def test_training_run_writes_its_directory(trained_run):
    for name in ("config.yaml", "metrics.csv", "results.yaml", "clusters.png", "curves.png",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (trained_run / name).is_file(), name
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["k_b"] == 3 and config["dataset"] == "npz"


def test_tiny_training_run_learns(trained_run):
    results = yaml.safe_load((trained_run / "results.yaml").read_text())
    # Three digit classes: chance is about 1/3; a learning run separates them.
    assert results["B"]["reported"]["acc"] > 0.8
    assert results["A"]["mapping"] == "many-to-one"
    assert np.isfinite(results["B"]["subhead_losses"]).all()
    assert len(results["B"]["subhead_losses"]) == 4  # 2 trunks × 2 sub-heads compete for the lowest loss
    assert results["B"]["reported_trunk"] == results["B"]["reported_subhead"] // 2


def test_evaluate_round_trip(trained_run, capsys, tmp_path):
    assert main(["evaluate", str(trained_run), "--out", str(tmp_path / "eval.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "ACC" in printed and "NMI" in printed and "ARI" in printed
    train_results = yaml.safe_load((trained_run / "results.yaml").read_text())
    eval_results = yaml.safe_load((tmp_path / "eval.yaml").read_text())
    assert eval_results["B"]["reported"]["acc"] == pytest.approx(train_results["B"]["reported"]["acc"])


def test_clusters_named_from_few_labels(trained_run, capsys, tmp_path):
    """IIC+ with reduced label coverage: each head's clusters named from 30 labelled images, scored on the others."""
    assert main(["evaluate", str(trained_run), "--map-labels", "30", "--map-seed", "1",
                 "--out", str(tmp_path / "eval.yaml")]) == 0
    printed = capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "eval.yaml").read_text())
    for head in ("B", "A"):
        few = saved[head]["label_efficient"]
        assert few["labels"] == 30 and few["seed"] == 1 and few["scored_on"] == sum(saved[head]["cluster_sizes"]) - 30
        assert few["acc"] > saved[head]["reported"]["acc"] - 0.1  # nearly as good as naming them from every label
        assert f"head {head}: clusters named from 30 labelled images evaluated (seed 1)" in printed
    assert main(["evaluate", str(trained_run), "--map-labels", "2"]) == 2  # three classes need three labels
    assert "cannot cover 3 classes" in capsys.readouterr().err


def test_clusters_named_from_training_labels_are_scored_on_every_test_image(trained_run, three_digit_npz, capsys,
                                                                            tmp_path):
    """The split protocol's IIC+: the mapping fitted on labelled training images, scored on the test split."""
    out = tmp_path / "eval.yaml"
    assert main(["evaluate", str(trained_run), "--protocol", "split", "--map-labels", "400", "--map-from", "train",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = yaml.safe_load(out.read_text())
    test_images = len(np.load(three_digit_npz)["y_test"])
    for head in ("B", "A"):
        few = saved[head]["label_efficient"]
        assert (few["labels"], few["fitted_on"], few["scored_on"]) == (400, "training split", test_images)
        # Every training label (all 400) names the clusters as well as the test labels do, within a few images.
        assert abs(few["acc"] - saved[head]["reported"]["acc"]) < 0.05
        assert f"head {head}: clusters named from 400 labelled images of the training split (seed 0)" in printed
    # Under the IIC protocol the evaluated images include the labelled training ones: refused.
    assert in_process_error(capsys, "evaluate", str(trained_run), "--map-labels", "400", "--map-from", "train") == (
        "iic: error: --map-from train scores the test split, which the labelled training images are not part of: "
        "give --protocol split")


def test_predict_round_trip(trained_run, three_digit_npz, tmp_path):
    arrays = np.load(three_digit_npz)
    folder = tmp_path / "new"
    (folder / "more").mkdir(parents=True)
    for i in range(6):  # images in a sub-folder are found too
        picture = Image.fromarray(arrays["x_test"][i]).resize((32, 32)).convert("RGB")
        picture.save(folder / ("more" if i > 3 else "") / f"{i}.png")
    (folder / ".ipynb_checkpoints").mkdir()  # hidden folders are not
    Image.fromarray(arrays["x_test"][0]).save(folder / ".ipynb_checkpoints" / "0.png")
    out = tmp_path / "clusters.csv"
    assert main(["predict", str(trained_run / "checkpoints" / "last.ckpt"), str(folder), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == [f"{i}.png" for i in range(6)]
    assert all(0 <= int(r["cluster"]) < 3 and 0 < float(r["probability"]) <= 1 for r in rows)
    # Same digit class → same cluster, for the test images' labels
    labels = arrays["y_test"][:6]
    clusters = [int(r["cluster"]) for r in rows]
    agree = sum((labels[i] == labels[j]) == (clusters[i] == clusters[j]) for i in range(6) for j in range(i))
    assert agree >= 12  # of 15 pairs


def test_resume_continues_from_last_checkpoint(trained_run, capsys, monkeypatch, tmp_path):
    from iic.clustering.module import ClusterModule

    trained_run = Path(shutil.copytree(trained_run, tmp_path / "tiny"))  # the shared run stays as trained

    epochs = yaml.safe_load((trained_run / "config.yaml").read_text())["epochs"]
    steps_before = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    steps_per_epoch = steps_before // epochs
    logged_steps_before = {row["step"] for row in csv.DictReader((trained_run / "metrics.csv").open())}
    steps_run = []
    original_step = ClusterModule.training_step

    def counted_step(self, batch, batch_idx):
        steps_run.append(batch_idx)
        return original_step(self, batch, batch_idx)

    monkeypatch.setattr(ClusterModule, "training_step", counted_step)
    assert main(["train", "--resume", str(trained_run), "--no-progress", "--epochs", str(epochs + 1)]) == 0
    state = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert len(steps_run) == steps_per_epoch  # only the added epoch (A, B, B) was trained
    assert state["global_step"] == steps_before + steps_per_epoch
    assert yaml.safe_load((trained_run / "config.yaml").read_text())["epochs"] == epochs + 1  # the flag applied
    logged_steps = [int(row["step"]) for row in csv.DictReader((trained_run / "metrics.csv").open())]
    # The history before the resume is kept, but for the earlier run's final evaluation, now superseded.
    assert logged_steps_before - {str(steps_before)} <= {str(step) for step in logged_steps}
    assert max(logged_steps) >= steps_before and logged_steps == sorted(logged_steps)


def test_last_checkpoint_is_the_final_model(three_digit_npz, tmp_path):
    from iic.clustering.config import ClusterConfig
    from iic.clustering.data import load_cluster_data
    from iic.config import config_from_dict

    # Schedule B, A: the final pass trains head A, which leaves val/loss (head B's loss) where it was, so the
    # best checkpoint is not refreshed after it; last.ckpt must still be the model as training left it.
    config = config_from_dict(ClusterConfig, {"dataset": "npz", "data_path": str(three_digit_npz), "k_b": 3, "k_a": 6,
                                              "num_subheads": 2, "epochs": 1, "head_b_first": True, "head_b_passes": 1,
                                              "batch_size": 100, "repeats": 2})
    data = load_cluster_data(config)
    module, _ = fit(config, data, tmp_path / "run")
    trained_steps = 2 * (len(data.train_b) // 100)  # two passes (B, then A) over the data
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=False)
    assert best["epoch"] == 0 and last["global_step"] == trained_steps == 2 * best["global_step"]
    for name, value in module.state_dict().items():
        assert torch.equal(last["state_dict"][name], value), name


@pytest.mark.parametrize("eval_every", [2, 100])
def test_checkpoints_cover_passes_not_validated(three_digit_npz, tmp_path, eval_every):
    from iic.clustering.config import ClusterConfig
    from iic.clustering.data import load_cluster_data
    from iic.config import config_from_dict

    # Three passes: Lightning validates (and checkpoints) after pass 2 only with eval_every 2, and never with 100,
    # when its best-by-loss callback would save nothing at all.
    config = config_from_dict(ClusterConfig, {"dataset": "npz", "data_path": str(three_digit_npz), "k_b": 3, "k_a": 6,
                                              "num_subheads": 2, "epochs": 1, "eval_every": eval_every,
                                              "batch_size": 100, "repeats": 2})
    data = load_cluster_data(config)
    module, _ = fit(config, data, tmp_path / "run")
    trained_steps = 3 * (len(data.train_b) // 100)  # passes A, B, B over the data
    last, best = (torch.load(tmp_path / "run" / "checkpoints" / f"{name}.ckpt", weights_only=False)
                  for name in ("last", "best"))
    assert last["global_step"] == trained_steps
    assert best["global_step"] == (trained_steps if eval_every == 100 else 2 * trained_steps // 3)
    for name, value in module.state_dict().items():
        assert torch.equal(last["state_dict"][name], value), name


def test_last_checkpoint_is_saved_after_every_pass_with_that_pass_recorded(three_digit_npz, tmp_path, monkeypatch):
    from iic.clustering.config import ClusterConfig
    from iic.clustering.data import load_cluster_data
    from iic.clustering.module import ClusterModule
    from iic.config import config_from_dict

    saved = []  # last.ckpt as found at the start of passes 2 and 3, beside the module's state then

    def look(module):
        if module.current_epoch > 0:
            last = torch.load(module.trainer.default_root_dir + "/checkpoints/last.ckpt", weights_only=False)
            saved.append((last, module.global_step, {k: v.clone() for k, v in module.state_dict().items()}))

    original = ClusterModule.on_train_epoch_start
    monkeypatch.setattr(ClusterModule, "on_train_epoch_start", lambda self: (look(self), original(self)))
    config = config_from_dict(ClusterConfig, {"dataset": "npz", "data_path": str(three_digit_npz), "k_b": 3, "k_a": 6,
                                              "num_subheads": 2, "epochs": 1, "eval_every": 100,  # never evaluated
                                              "batch_size": 100, "repeats": 2})
    fit(config, load_cluster_data(config), tmp_path / "run")
    assert [step for _, step, _ in saved] == [last["global_step"] for last, _, _ in saved] and len(saved) == 2
    for last, _, state in saved:
        for name, value in state.items():
            assert torch.equal(last["state_dict"][name], value), name
    assert torch.isfinite(saved[0][0]["state_dict"]["subhead_loss_A"]).all()  # pass 1 trained head A


@pytest.mark.parametrize("text, fragment", [
    ("1: 2\n", "unknown config key(s): 1"),
    ("null: 1\n", "unknown config key(s): None"),
    ("preset: [digits]\n", "unknown preset"),
    ("preset: {a: 1}\n", "unknown preset"),
    ("out_dir: null\n", "out_dir=None: expected str"),
    ("dataset: [npz]\n", "dataset=['npz']: expected str"),
    ("x_per_pair: 2\n", "x_per_pair=2: expected bool"),
])
def test_odd_yaml_values_are_one_clear_line(tmp_path, monkeypatch, capsys, text, fragment):
    (tmp_path / "c.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "c.yaml", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iic: error:") and fragment in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no run directory (e.g. "None/")


def run_cli(*args):
    """``iic ARGS`` in this process (bad input is found before any training: no need for a process of its own)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
    return subprocess.CompletedProcess(args, code, "", err.getvalue())


def run_cli_process(*args):
    """``iic ARGS`` as a user runs it: a process of its own."""
    return subprocess.run([sys.executable, "-m", "iic", *args], capture_output=True, text=True, timeout=300)


def assert_one_line_error(result, fragment):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("iic: error:") and fragment in lines[0], result.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--dataset", "folder", "--data-path", "/no/such/dir"], "no such directory"),
        (["train", "--k-b", "5000"], "larger than the number of training images"),
        (["train", "--preset", "imagenet"], "unknown preset"),
        (["train", "--epochs", "zero"], "expected int"),
        (["train", "--crop-size", "99"], "crop_size"),
        (["train", "--k-a", "1"], "k_a must be 0 (no head A) or at least 2"),
        (["evaluate", "/no/such/run"], "no such checkpoint"),
        (["predict", "/no/such.ckpt", "."], "no such checkpoint"),
        (["train", "--backbone", "nosuch"], "unknown backbone"),  # found only when the model is built
        (["train", "--precision", "foo"], "unknown precision"),
        (["train", "--precision", "16-mixed", "--accelerator", "cpu"], "precision 16-mixed needs a GPU"),
        (["train", "--devices", "abc"], "--devices"),
        (["train", "--accelerator", "tpu"], "cannot set up training"),
        (["train", "--tf-crop-sizes", "10", "20"], "tf_crop_sizes"),
        (["train", "--num-workers", "-1"], "num_workers"),
        (["train", "--lr", "inf"], "lr must be positive and at most 10"),
        (["train", "--x-crop", "middle"], "x_crop must be random, centre or centre_half"),
        (["train", "--rotation-p", "1.5"], "rotation_p must be a probability"),
        (["train", "--conv-size", "4"], "conv_size must be odd"),
        (["train", "--refit-subheads", "3", "--num-subheads", "5"], "refit_subheads must be 0 (no re-fit) or at least"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, args, fragment):
    result = run_cli(*args, "--out-dir", str(tmp_path)) if args[0] == "train" else run_cli(*args)
    assert_one_line_error(result, fragment)
    assert not any(tmp_path.iterdir()), "nothing may be written on bad input"


@pytest.mark.parametrize("args, fragment", [
    (["train", "--k-b", "5000"], "larger than the number of training images"),
    (["predict", "/no/such.ckpt", "."], "no such checkpoint"),
])
def test_bad_input_gives_one_clear_line_from_a_process_of_its_own(tmp_path, args, fragment):
    result = run_cli_process(*args, "--out-dir", str(tmp_path)) if args[0] == "train" else run_cli_process(*args)
    assert_one_line_error(result, fragment)
    assert not any(tmp_path.iterdir()), "nothing may be written on bad input"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--lr", "1e300"], "lr must be positive and at most 10"),  # overflowed float32 inside Adam
        (["--seed", "-1"], "seed must be in 0..2**32-1"),
        (["--head-b-passes", "0"], "head_b_passes must be at least 1"),  # was silently 1
        (["--head-a-passes", "0"], "head_a_passes must be at least 1 while head A is on"),  # head A reported untrained
        (["--widths", "0", "0", "0", "0"], "widths must be positive"),
        (["--jitter", "-1", "0", "0", "0"], "jitter (brightness, contrast, saturation, hue) must be"),
        (["--rotation", "nan"], "rotation must be in 0..180"),
        (["--name", "../elsewhere"], "name must be a plain folder name"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, capsys, args, fragment):
    assert fragment in in_process_error(capsys, "train", *args, "--out-dir", str(tmp_path / "runs"))
    assert not any(tmp_path.iterdir())


def test_resuming_a_finished_run_is_refused_as_there_is_nothing_to_train(trained_run):
    before = {name: (trained_run / name).read_bytes() for name in RUN_FILES}
    assert_one_line_error(run_cli("train", "--resume", str(trained_run), "--batch-size", "50"),
                          "give more --epochs to train on")
    assert before == {name: (trained_run / name).read_bytes() for name in before}
    assert_one_line_error(run_cli("train", "--resume", str(trained_run), "--preset", "mnist"),
                          "cannot change on --resume")


def test_a_config_file_given_on_resume_may_not_move_the_run(trained_run, tmp_path):
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    (tmp_path / "moved.yaml").write_text(yaml.safe_dump({**saved, "name": "elsewhere"}))
    assert_one_line_error(run_cli("train", "--resume", str(trained_run), "--config", str(tmp_path / "moved.yaml")),
                          "cannot change on --resume: the run keeps its directory")
    # The run's own config.yaml is no move: refused here only because it has nothing more to train.
    assert_one_line_error(run_cli("train", "--resume", str(trained_run), "--config", str(trained_run / "config.yaml")),
                          "give more --epochs to train on")


def test_resume_takes_the_runs_last_checkpoint_too_but_no_other(trained_run):
    before = (trained_run / "checkpoints" / "last.ckpt").read_bytes()
    assert_one_line_error(run_cli("train", "--resume", str(trained_run / "checkpoints" / "last.ckpt")),
                          "give more --epochs to train on")  # taken, and found finished
    assert_one_line_error(run_cli("train", "--resume", str(trained_run / "checkpoints" / "best.ckpt"),
                                  "--epochs", "99"), "--resume takes a run directory or its checkpoints/last.ckpt")
    assert (trained_run / "checkpoints" / "last.ckpt").read_bytes() == before


def test_resume_with_another_architecture_is_refused(trained_run):
    before = {name: (trained_run / name).read_bytes() for name in RUN_FILES}
    assert_one_line_error(run_cli("train", "--resume", str(trained_run), "--k-b", "5"), "cannot resume")
    assert before == {name: (trained_run / name).read_bytes() for name in before}


def test_resume_with_fewer_epochs_than_trained_is_refused(trained_run):
    before = {name: (trained_run / name).read_bytes() for name in RUN_FILES}
    assert_one_line_error(run_cli("train", "--resume", str(trained_run), "--epochs", "1"), "give more --epochs")
    assert before == {name: (trained_run / name).read_bytes() for name in before}


def test_bad_output_paths(tmp_path, trained_run):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert_one_line_error(run_cli("train", "--out-dir", str(a_file)), "is a file, not a directory")
    assert_one_line_error(run_cli("evaluate", str(trained_run), "--out", str(tmp_path)), "is a directory")
    assert_one_line_error(run_cli("predict", str(trained_run), str(a_file), "--out", str(tmp_path)), "is a directory")


def test_bad_files_and_layouts(tmp_path, trained_run, capsys):
    out_dir = tmp_path / "runs"
    (tmp_path / "binary.yaml").write_bytes(b"\x00\xff\xfe")
    assert "is not a UTF-8 text file" in in_process_error(capsys, "train", "--config", str(tmp_path / "binary.yaml"),
                                                          "--out-dir", str(out_dir))
    mixed = tmp_path / "mixed"
    for place in ("cats", "dogs", "."):  # class sub-folders, and a stray image beside them
        (mixed / place).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(mixed / place / "0.png")
    assert "holds both images (0.png, …: 1) and sub-folders (cats, …: 2)" in in_process_error(
        capsys, "train", "--dataset", "folder", "--data-path", str(mixed), "--out-dir", str(out_dir))
    np.savez(tmp_path / "three.npz", x_train=np.zeros((3, 8, 8), dtype=np.uint8))
    assert_one_line_error(run_cli("train", "--dataset", "npz", "--data-path", str(tmp_path / "three.npz"), "--k-b", "2",
                                  "--k-a", "0", "--devices", "2", "--accelerator", "cpu", "--out-dir", str(out_dir)),
                          "3 training images cannot be shared by 2 processes")
    np.savez(tmp_path / "one_test.npz", x_train=np.zeros((8, 8, 8), dtype=np.uint8),
             x_test=np.zeros((1, 8, 8), dtype=np.uint8))
    assert_one_line_error(run_cli("train", "--dataset", "npz", "--data-path", str(tmp_path / "one_test.npz"),
                                  "--protocol", "split", "--k-b", "2", "--k-a", "0", "--devices", "2",
                                  "--accelerator", "cpu", "--out-dir", str(out_dir)),
                          "1 evaluation images cannot be shared by 2 processes")
    assert not out_dir.exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for command in (["evaluate", str(trained_run)], ["predict", str(trained_run), str(mixed / "cats")]):
        line = in_process_error(capsys, *command, "--out", str(a_file / "results"))  # refused before any work
        assert line.endswith(f"cannot write {a_file / 'results'}: {a_file} is a file, not a directory")


def test_a_broken_symbolic_link_on_the_output_path_is_refused_before_any_work(tmp_path, trained_run, capsys):
    broken = tmp_path / "gone"
    broken.symlink_to(tmp_path / "nowhere")
    out_dir = broken / "runs"
    assert in_process_error(capsys, "train", "--out-dir", str(out_dir), "--epochs", "1").endswith(
        f"{broken} is a broken symbolic link")
    assert in_process_error(capsys, "evaluate", str(trained_run), "--out", str(broken / "r.yaml")).endswith(
        f"cannot write {broken / 'r.yaml'}: {broken} is a broken symbolic link")
    assert not (tmp_path / "nowhere").exists()


def test_an_empty_output_name_is_refused_rather_than_read_as_the_current_folder(tmp_path, trained_run, capsys,
                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert in_process_error(capsys, "train", "--out-dir", "", "--epochs", "1").endswith("out_dir is empty: give the "
                                                                                        "folder for run directories")
    for empty in ("", " "):
        error = in_process_error(capsys, "evaluate", str(trained_run), "--out", empty)
        assert error.endswith("the output file name is empty")
    assert in_process_error(capsys, "predict", str(trained_run), str(trained_run / "clusters.png"), "--out", ""
                            ).endswith("the output file name is empty")
    assert not any(tmp_path.iterdir())


def test_bad_images_and_checkpoints(tmp_path, trained_run):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG garbage")
    assert_one_line_error(run_cli("predict", str(trained_run), str(tmp_path / "corrupt.png"), "--out",
                                  str(tmp_path / "o.csv")), "corrupt")
    assert not (tmp_path / "o.csv").exists()
    not_a_ckpt = tmp_path / "random.ckpt"
    torch.save({"weights": torch.zeros(3)}, not_a_ckpt)
    assert_one_line_error(run_cli("evaluate", str(not_a_ckpt)), "not an iic clustering checkpoint")
    other = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=False)
    other["hyper_parameters"]["config"]["widths"] = [8, 8, 8, 8]  # a checkpoint of a different model
    torch.save(other, tmp_path / "other.ckpt")
    assert_one_line_error(run_cli("evaluate", str(tmp_path / "other.ckpt")), "does not match")
    (tmp_path / "damaged.ckpt").write_bytes(b"PK\x03\x04 truncated")
    assert_one_line_error(run_cli("evaluate", str(tmp_path / "damaged.ckpt")), "damaged or not a checkpoint")


def test_a_checkpoint_of_the_other_task_names_the_commands_that_take_it(tmp_path, trained_run, capsys):
    clustering = trained_run / "checkpoints" / "last.ckpt"
    for argv in (("segment", "evaluate", str(clustering)),
                 ("segment", "predict", str(clustering), str(trained_run / "clusters.png"), "--out",
                  str(tmp_path / "o"))):
        assert in_process_error(capsys, *argv).endswith("is an iic clustering checkpoint, not a segmentation one: "
                                                        "use `iic evaluate`, `iic predict` or `iic train --resume`")
    # A run directory is told by its config.yaml (`task: clustering`) before its checkpoint is read.
    assert in_process_error(capsys, "segment", "train", "--resume", str(trained_run), "--epochs", "1").endswith(
        f"{trained_run} is a clustering run: resume it with `iic evaluate`, `iic predict` or `iic train --resume`")
    assert torch.load(clustering, weights_only=True)["task"] == "clustering"
    segmentation = torch.load(clustering, weights_only=False)
    segmentation["task"] = "segmentation"
    segmentation["hyper_parameters"] = {"config": {}, "class_names": ["road", "sky"], "color_channels": 3}
    torch.save(segmentation, tmp_path / "segmentation.ckpt")
    del segmentation["task"]  # as written before checkpoints named their task: told by the module's arguments
    torch.save(segmentation, tmp_path / "legacy-segmentation.ckpt")
    for name in ("segmentation.ckpt", "legacy-segmentation.ckpt"):
        for argv in (("evaluate", str(tmp_path / name)),
                     ("predict", str(tmp_path / name), str(clustering), "--out", str(tmp_path / "o.csv"))):
            assert in_process_error(capsys, *argv).endswith(
                "is an iic segmentation checkpoint, not a clustering, finetuning, vectors or sequences one: "
                "use `iic segment evaluate`, `iic segment predict` or `iic segment train --resume`")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.csv").exists()


def test_a_head_that_never_trained_is_reported_as_such():
    from iic.clustering.cli import format_results

    untrained = {"k": 50, "reported_subhead": 0, "subhead_losses": [float("inf")] * 2, "cluster_sizes": [3, 0],
                 "reported": {"acc": 0.3, "nmi": 0.1, "ari": 0.1}, "best_by_labels_subhead": 1,
                 "best_by_labels": {"acc": 0.3, "nmi": 0.1, "ari": 0.1}}
    text = format_results({"A": untrained, "B": {**untrained, "k": 10, "subhead_losses": [-2.0, -1.5]}})
    assert "head A (k=50): not trained (training stopped before its first pass)" in text
    assert "head B (k=10), sub-head 0 (lowest loss): ACC" in text


def test_a_failed_download_is_one_clear_line(tmp_path):
    from iic.clustering.config import ClusterConfig
    from iic.clustering.data import _torchvision
    from iic.errors import IICError

    def offline(**kwargs):
        raise RuntimeError("Error downloading train-images.gz:\nTried https://example.org/, got:\n"
                           "<urlopen error [Errno -2] Name or service not known>\n")

    def unreachable(**kwargs):
        raise OSError(101, "Network is unreachable")

    config = ClusterConfig(dataset="mnist", data_path=str(tmp_path), download=True)
    with pytest.raises(IICError,
                       match=r"cannot download mnist to .*: <urlopen error \[Errno -2\] Name or service not known>$"):
        _torchvision(offline, config)
    with pytest.raises(IICError, match="cannot download mnist under .*: Network is unreachable"):
        _torchvision(unreachable, config)


# config.yaml names its task; older ones are told by their keys
@pytest.mark.parametrize("task", ["segmentation", None])
def test_resuming_a_segmentation_run_as_clustering_says_which_command(tmp_path, capsys, task):
    from iic.config import save_config
    from iic.segmentation.config import SegmentConfig

    save_config(SegmentConfig(), tmp_path / "config.yaml", task=task)
    assert (tmp_path / "config.yaml").read_text().startswith("task: segmentation\n") == (task is not None)
    line = in_process_error(capsys, "train", "--resume", str(tmp_path))
    assert line == (f"iic: error: {tmp_path} is a segmentation run: resume it with `iic segment evaluate`, "
                    f"`iic segment predict` or `iic segment train --resume`")


def test_help_explains_every_setting(capsys):
    import dataclasses

    from iic.clustering.config import ClusterConfig
    from iic.config import field_comments
    from iic.segmentation.config import SegmentConfig

    for cls in (ClusterConfig, SegmentConfig):  # each setting documented where it is defined (preset too, now)
        assert {f.name for f in dataclasses.fields(cls)} - set(field_comments(cls)) == set()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--x-crop X_CROP random | centre | centre_half" in text
    assert "--lr-schedule LR_SCHEDULE constant | cosine" in text


def test_progress_bar_counts_passes(tmp_path):
    """Lightning's bar says "Epoch 29" for --epochs 10 (its epochs are our passes): ours says which pass of how many."""
    result = run_cli_process("train", "--epochs", "1", "--trunks", "1", "--widths", "8", "8", "16", "16",
                             "--repeats", "2", "--refit-subheads", "5", "--refit-epochs", "2", "--out-dir",
                             str(tmp_path), "--name", "bar")
    assert result.returncode == 0, result.stderr[-2000:]
    shown = result.stdout + result.stderr  # Lightning's bars write to stdout
    assert "pass 1/3" in shown and "pass 3/3" in shown and "re-fit pass 2/2" in shown
    # Not a terminal: one line per pass, naming its head, instead of a bar's carriage returns.
    import re

    lines = [line for line in result.stdout.splitlines() if re.match(r"pass \d/3", line)]
    assert [line.split(":")[0] for line in lines] == ["pass 1/3 (head A)", "pass 2/3 (head B)", "pass 3/3 (head B)"]
    assert all(re.search(r": loss \S+  pairs_per_s \S+  \d+\.\d s$", line) for line in lines), lines
    assert "\r" not in result.stdout
