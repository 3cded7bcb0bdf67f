"""``iic train --dataset vectors`` from the command line (in this process): the round trip train → evaluate →
predict on a CSV with a label column, which parser `iic train` picks, bad input (one line, no run directory left),
and --resume of a vector run."""

import contextlib
import csv
import io
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from helpers import in_process_error, one_thread

import iic
from iic.cli import main
from iic.vectors.cli import wants_vectors

# Three blobs of 60 samples with no symmetry between the features (columns taken in the wrong order would not
# cluster as well); the small MLP below learns them in 20 epochs of 3 steps, about a second.
CENTRES = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 4.0], [8.0, 8.0, 8.0]])
TINY = ["--k-b", "3", "--k-a", "0", "--widths", "64", "64", "--num-subheads", "3", "--epochs", "20", "--batch-size",
        "60", "--lr", "0.01", "--knn", "5", "--eval-every", "1000", "--accelerator", "cpu", "--no-progress"]
EPOCHS = 20


def blobs(per_blob: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), per_blob)
    return (CENTRES[y] + rng.normal(size=(len(y), 3))).astype(np.float32), y


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def blob_csv(path, x, y=None, order=("a", "label", "b", "c")):
    """The blobs as a CSV with the columns of ``order`` (features a, b, c and the label column, by name)."""
    cells = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}
    rows = [[f"{cells[name][n]:.6f}" if name != "label" else ["north", "south", "west"][y[n]] for name in order]
            for n in range(len(x))]
    return write_csv(path, order, rows)




def quiet_main(*argv) -> tuple[int, str]:
    """``iic ARGV`` in this process: its exit code and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue()


def head_b_line(printed: str) -> str:
    (line,) = [line for line in printed.splitlines() if line.startswith("head B")]
    return line


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    x, y = blobs()
    return blob_csv(tmp_path_factory.mktemp("data") / "blobs.csv", x, y)


@pytest.fixture(scope="module")
def cli_run(data_csv, tmp_path_factory):
    """``iic train --dataset vectors --data-path blobs.csv --label-column label …``: its run directory and output."""
    out = tmp_path_factory.mktemp("runs")
    with one_thread():
        code, printed = quiet_main("train", "--dataset", "vectors", "--data-path", data_csv, "--label-column", "label",
                                   *TINY, "--out-dir", out, "--name", "blobs")
    assert code == 0
    return out / "blobs", printed


# --- the round trip ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_learns_and_prints_head_b(cli_run, data_csv):
    run_dir, printed = cli_run
    assert (f"iic train: preset vectors, dataset vectors (180 samples of 3 features for training, 180 evaluated, knn "
            f"pairs (k=5, cosine)), run directory {run_dir}") in printed
    line = head_b_line(printed)
    assert "ACC" in line and "NMI" in line and "ARI" in line
    results = yaml.safe_load((run_dir / "results.yaml").read_text())
    assert results["B"]["reported"]["acc"] >= 0.95  # three blobs: chance is 1/3
    assert f"{100 * results['B']['reported']['acc']:.1f}%" in line.split("ACC")[1].split("NMI")[0]
    for name in ("config.yaml", "metrics.csv", "results.yaml", "clusters.png", "curves.png", "neighbours.npz",
                 "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["task"] == "vectors" and config["label_column"] == "label" and config["data_path"] == str(data_csv)
    model = iic.load(run_dir)
    assert model.module.feature_names == ["a", "b", "c"]  # the label is not a feature
    assert model.module.class_names == ["north", "south", "west"]


@pytest.mark.slow
def test_evaluate_scores_the_run_as_training_did(cli_run, tmp_path):
    run_dir, _ = cli_run
    code, printed = quiet_main("evaluate", run_dir, "--cpu", "--out", tmp_path / "eval.yaml")
    assert code == 0
    assert f"iic evaluate: {run_dir / 'checkpoints' / 'last.ckpt'} on vectors (180 samples, protocol iic)" in printed
    assert "ACC" in head_b_line(printed)
    evaluated = yaml.safe_load((tmp_path / "eval.yaml").read_text())
    trained = yaml.safe_load((run_dir / "results.yaml").read_text())
    assert evaluated["B"]["reported"]["acc"] == pytest.approx(trained["B"]["reported"]["acc"])
    assert evaluated["B"]["cluster_sizes"] == trained["B"]["cluster_sizes"]


@pytest.mark.slow
def test_predict_writes_a_row_per_sample_and_ignores_the_label_column(cli_run, data_csv, tmp_path):
    run_dir, _ = cli_run
    out = tmp_path / "pred.csv"
    code, printed = quiet_main("predict", run_dir, data_csv, "--out", out)
    assert code == 0 and f"iic predict: 180 samples → {out}" in printed
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["file", "row", "cluster", "probability"]
    assert [int(row["row"]) for row in rows] == list(range(180))
    assert {row["file"] for row in rows} == {str(data_csv)}
    assert all(0 < float(row["probability"]) <= 1 for row in rows)
    clusters = [int(row["cluster"]) for row in rows]
    assert clusters == iic.load(run_dir).predict(data_csv).tolist()
    _, y = blobs()
    modes = [np.bincount(np.array(clusters)[y == label]).argmax() for label in range(3)]
    assert len(set(modes)) == 3 and np.mean(np.array(clusters) == np.array(modes)[y]) >= 0.95
    # The same samples without the label column, or with the columns in another order: the same clusters.
    x, _ = blobs()
    plain = blob_csv(tmp_path / "plain.csv", x, order=("a", "b", "c"))
    shuffled = blob_csv(tmp_path / "shuffled.csv", x, y, order=("c", "label", "a", "b"))
    both = tmp_path / "both.csv"
    assert quiet_main("predict", run_dir, plain, shuffled, "--out", both)[0] == 0
    rows = list(csv.DictReader(both.open()))
    assert len(rows) == 360 and [int(row["cluster"]) for row in rows] == clusters * 2
    assert [row["file"] for row in rows] == [str(plain)] * 180 + [str(shuffled)] * 180


@pytest.mark.slow
def test_predict_of_the_wrong_number_of_columns_is_one_error(cli_run, tmp_path, capsys):
    run_dir, _ = cli_run
    x, _ = blobs(5)
    two = write_csv(tmp_path / "two.csv", ["a", "b"], x[:, :2].round(4).tolist())
    assert in_process_error(capsys, "predict", str(run_dir), str(two), "--out", str(tmp_path / "p.csv")) == (
        "iic: error: expected 3 features per sample (as in training), got 2")
    assert not (tmp_path / "p.csv").exists()
    assert in_process_error(capsys, "evaluate", str(run_dir), "--map-labels", "10").startswith(
        "iic: error: --map-labels is for image-clustering runs")


# --- which parser `iic train` uses ---------------------------------------------------------------------------------

def help_of(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--dataset", "vectors"], ["--dataset=wine"], ["--dataset", "breast-cancer"],
                                  ["--preset", "wine"], ["--preset", "digits-vectors"], ["--preset=mnist-vectors"]])
def test_vector_datasets_and_presets_get_the_vector_settings(capsys, argv):
    printed = help_of(capsys, "train", *argv, "--help")
    assert printed.startswith("usage: iic train") and "IIC on vectors" in printed
    for flag in ("--knn", "--pairs", "--pairs-path", "--label-column", "--embedding-path"):
        assert flag in printed


def test_plain_train_help_is_the_image_task_s_and_points_to_vectors(capsys):
    printed = help_of(capsys, "train", "--help")
    assert "--knn" not in printed and "--pairs-path" not in printed
    assert "iic train --dataset vectors" in " ".join(printed.split())
    printed = help_of(capsys, "train", "--dataset", "mnist", "--help")  # a dataset of the image task
    assert "--knn" not in printed


def test_a_vector_run_s_config_or_run_directory_chooses_the_vector_task(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("task: vectors\ndataset: vectors\nknn: 5\n")
    assert wants_vectors(["--resume", str(run_dir)])
    assert wants_vectors(["--resume", str(run_dir / "checkpoints" / "last.ckpt")])
    assert wants_vectors(["--config", str(run_dir / "config.yaml")])
    (tmp_path / "wine.yaml").write_text("preset: wine\nepochs: 3\n")
    assert wants_vectors(["--config", str(tmp_path / "wine.yaml")])
    (tmp_path / "images.yaml").write_text("task: clustering\ndataset: mnist\n")
    assert not wants_vectors(["--config", str(tmp_path / "images.yaml")])
    assert not wants_vectors(["--resume", str(tmp_path / "no-such-run")])
    assert not wants_vectors(["--dataset", "mnist", "--preset", "default"])


def test_a_config_file_of_a_vector_dataset_chooses_the_vector_task(tmp_path):
    (tmp_path / "mine.yaml").write_text("dataset: vectors\ndata_path: x.csv\nk_b: 3\nepochs: 2\n")
    assert wants_vectors(["--config", str(tmp_path / "mine.yaml")])


@pytest.mark.slow
def test_the_iic_command_dispatches_a_vector_preset(tmp_path):
    """The installed command, once, in a subprocess."""
    done = subprocess.run([sys.executable, "-m", "iic", "train", "--preset", "wine", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--knn" in done.stdout and "IIC on vectors" in done.stdout


# --- bad input: one line, exit code 2, no run directory ------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    x = np.random.default_rng(1).normal(size=(30, 3)).round(4)
    header = ["a", "b", "c"]
    rows = x.astype(str).tolist()
    write_csv(folder / "ok.csv", header, rows)
    nan = [list(row) for row in rows]
    nan[4][1] = "nan"
    write_csv(folder / "nan.csv", header, nan)
    write_csv(folder / "constant.csv", header, [row[:2] + ["5"] for row in rows])
    text = [list(row) for row in rows]
    text[6][0] = "hello"
    write_csv(folder / "text.csv", header, text)
    write_csv(folder / "few.csv", header, rows[:2])
    np.save(folder / "pairs.npy", np.array([[0, 1], [2, 30]]))
    np.save(folder / "embedding.npy", np.zeros((29, 2)))
    np.save(folder / "partner.npy", np.zeros((30, 2)))
    (folder / "text.npy").write_text("1,2,3\n4,5,6\n")
    return folder


BAD = [
    (["--data-path", "nan.csv"], "nan.csv: column 'b', row 6: nan is not a finite number"),
    (["--data-path", "constant.csv"], "feature 'c' is constant (every sample 5)"),
    (["--data-path", "text.csv"], "text.csv: column 'a', row 8: 'hello' is not a number"),
    (["--data-path", "few.csv"], "k_b=3 is larger than the number of training samples (2)"),
    (["--data-path", "ok.csv", "--knn", "30"], "30 samples cannot have 30 neighbours each: give --knn at most 29"),
    (["--data-path", "ok.csv", "--pairs", "given", "--pairs-path", "pairs.npy"],
     "pair 1 holds 30, outside the sample indices 0..29 (indices count from 0)"),
    (["--data-path", "missing.csv"], "no such file: "),
    (["--data-path", "text.npy"], "text.npy is not an .npy array (as numpy.save writes)"),
    (["--data-path", "ok.csv", "--pairs", "given"], "pairs given: give --pairs-path (M × 2 sample indices) or "
                                                    "--partner-path (an aligned array)"),
    (["--data-path", "ok.csv", "--pairs-path", "pairs.npy"],
     "--pairs-path and --partner-path are for --pairs given, and pairs is 'knn'"),
    (["--data-path", "ok.csv", "--pairs", "friends"], "pairs must be knn, noise, knn+noise, given, got 'friends'"),
    (["--data-path", "ok.csv", "--label-column", "kind"], "has no column 'kind' to take labels from"),
    (["--data-path", "ok.csv", "--embedding-path", "embedding.npy"],
     "the embedding has 29 rows and there are 30 training samples"),
    (["--data-path", "ok.csv", "--pairs", "given", "--partner-path", "partner.npy"],
     "the partner array is shaped (30, 2) and the training samples (30, 3)"),
    ([], "dataset 'vectors' needs --data-path FILE (.npy, .npz or .csv)"),
]


@pytest.mark.parametrize("named", [False, True])
@pytest.mark.parametrize("args, expected", BAD, ids=[" ".join(args) or "no-data" for args, _ in BAD])
def test_bad_input_is_one_error_line_and_leaves_no_run_directory(bad_files, tmp_path, capsys, args, expected,
                                                                 named):
    args = [str(bad_files / arg) if arg.endswith((".csv", ".npy")) else arg for arg in args]
    out = tmp_path / "runs"
    name = ["--name", "bad"] if named else []
    line = in_process_error(capsys, "train", "--dataset", "vectors", *args, "--k-b", "3", "--k-a", "0",
                            "--epochs", "1", "--no-progress", "--accelerator", "cpu", "--out-dir", str(out), *name)
    assert expected in line
    assert not out.exists() or not any(out.iterdir())


# --- resuming ------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_resume_of_a_vector_run_by_its_config(cli_run, tmp_path, one_torch_thread):
    run_dir = shutil.copytree(cli_run[0], tmp_path / "blobs")
    graph = run_dir / "neighbours.npz"
    before = graph.stat().st_mtime_ns
    steps = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    code, printed = quiet_main("train", "--resume", run_dir, "--epochs", EPOCHS + 2, "--no-progress")
    assert code == 0
    assert f"run directory {run_dir}" in printed and "ACC" in head_b_line(printed)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["epochs"] == EPOCHS + 2
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == steps + 2 * 3
    assert graph.stat().st_mtime_ns == before  # read from the run, not rebuilt
    assert yaml.safe_load((run_dir / "results.yaml").read_text())["B"]["reported"]["acc"] >= 0.95
