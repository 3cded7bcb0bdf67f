"""End to end: the demo learns to separate textures; the CLI round trip; bad input gives one clear line."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from iic.cli import main
from iic.config import config_from_dict
from iic.errors import IICError
from iic.segmentation.api import load, train
from iic.segmentation.config import SEGMENT_PRESETS, SegmentConfig

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # trains on one thread



def test_demo_training_separates_regions_by_texture(tmp_path):
    config = config_from_dict(SegmentConfig, {**SEGMENT_PRESETS["demo"], "epochs": 25, "eval_every": 100,
                                              "out_dir": str(tmp_path), "name": "demo"})
    result = train(config, progress=False)
    # Three balanced texture classes (largest 36 % of pixels): chance after matching is about 36 %.
    assert result.results["B"]["reported"]["pixel_acc"] > 0.55, result.results["B"]
    run_dir = tmp_path / "demo"
    assert result.run_dir == run_dir and result.model.path == run_dir / "checkpoints" / "last.ckpt"
    for name in ("config.yaml", "metrics.csv", "results.yaml", "segmentation.png", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["epochs"] == 25
    with Image.open(run_dir / "segmentation.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 200


def run_cli(capsys, *argv):
    code = main(["segment", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_train_evaluate_predict_round_trip(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--epochs", 2, "--out-dir", tmp_path, "--name", "run", "--no-progress")
    assert code == 0, err
    assert "pixel accuracy" in out
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()

    code, out, err = run_cli(capsys, "train", "--resume", checkpoint, "--epochs", 3, "--no-progress")
    assert code == 0, err
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    trained = {int(row["epoch"]) for row in rows if row["train/loss_A"] or row["train/loss_B"]}
    assert trained == set(range(6))  # 3 epochs × (head A pass + head B pass), earlier rows kept
    # The final evaluation is logged after the last pass (as clustering's); the first run's was dropped on resume.
    assert [int(row["epoch"]) for row in rows if row["val/pixel_acc_B"]] == [6]

    code, out, err = run_cli(capsys, "evaluate", checkpoint)
    assert code == 0, err
    assert f"iic segment evaluate: {checkpoint} on 48 images of demo (train)" in out and "head B: pixel accuracy" in out

    images = tmp_path / "new"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (40, 52)), ("b.jpg", (33, 47))):
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(images / name)
    code, out, err = run_cli(capsys, "predict", checkpoint, images, "--out", tmp_path / "pred")
    assert code == 0, err
    with Image.open(tmp_path / "pred" / "a_labels.png") as labels:
        assert labels.mode == "P" and labels.size == (52, 40)
        assert labels.getpalette() is not None and max(np.asarray(labels).ravel()) < 3
    with Image.open(tmp_path / "pred" / "b_overlay.png") as overlay:
        assert overlay.mode == "RGB" and overlay.size == (47, 33)


def write_folder(root, label_sizes):
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i, size in enumerate(label_sizes):
        Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        if size is not None:
            Image.fromarray(np.zeros(size, dtype=np.uint8)).save(root / "labels" / f"{i}.png")


@pytest.mark.parametrize("case", ["label size", "missing label", "empty folder", "corrupt image", "float image",
                                  "preset data missing", "preset data not in IIC_DATA", "T too large", "k_a of 1",
                                  "negative seed", "untrained head A",
                                  "affine nan", "predict empty", "no sub-heads", "negative eval crop",
                                  "crop larger than the images", "scale too small"])
def test_bad_input_gives_one_clear_line_and_no_run(tmp_path, capsys, monkeypatch, case):
    out_dir = tmp_path / "runs"
    folder_args = ["--dataset", "folder", "--data-path", tmp_path / "images", "--label-dir", tmp_path / "labels"]
    unlabelled_folder_args = ["--dataset", "folder", "--data-path", tmp_path / "images", "--num-workers", 1]
    if case == "label size":
        write_folder(tmp_path, [(64, 64), (60, 64)])
        argv, expected = ["train", *folder_args], "label map"
    elif case == "missing label":
        write_folder(tmp_path, [(64, 64), None])
        argv, expected = ["train", *folder_args], "has no label map"
    elif case == "empty folder":
        write_folder(tmp_path, [])
        argv, expected = ["train", *folder_args], "no images found"
    elif case == "corrupt image":  # without label maps, and one of several: training would not read it first
        write_folder(tmp_path, [None] * 4)
        (tmp_path / "images" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        argv, expected = ["train", *unlabelled_folder_args], "cannot read image " + str(tmp_path / "images" / "2.png")
    elif case == "float image":
        write_folder(tmp_path, [None] * 4)
        Image.fromarray(np.zeros((64, 64), dtype=np.float32)).save(tmp_path / "images" / "3.tif")
        argv, expected = (["train", *unlabelled_folder_args],
                          "unsupported image mode 'F' in " + str(tmp_path / "images" / "3.tif"))
    elif case == "preset data missing":  # the CamVid presets name no data path of their own
        monkeypatch.delenv("IIC_DATA", raising=False)
        monkeypatch.chdir(tmp_path)
        argv, expected = ["train", "--preset", "camvid3"], ("dataset 'npz' needs --data-path: its root folder, "
                                                            ".npz file or image folder (or set IIC_DATA to the folder "
                                                            "that holds camvid_180x240_trainval.npz)")
    elif case == "preset data not in IIC_DATA":
        monkeypatch.setenv("IIC_DATA", str(tmp_path / "data"))
        monkeypatch.chdir(tmp_path)
        argv, expected = ["train", "--preset", "camvid3"], str(tmp_path / "data" / "camvid_180x240_trainval.npz")
    elif case == "T too large":
        argv, expected = ["train", "--T", 48, "--crop-size", 48], "T=48 is too large"
    elif case == "k_a of 1":
        argv, expected = ["train", "--k-a", 1], "k_a 0 (no head A) or at least 2"
    elif case == "negative seed":  # the checks shared with clustering
        argv, expected = ["train", "--seed", -1], "seed must be in 0..2**32-1"
    elif case == "untrained head A":
        argv, expected = ["train", "--head-a-passes", 0], "head_a_passes must be at least 1 while head A is on"
    elif case == "affine nan":
        argv, expected = ["train", "--rotation", "nan"], "rotation and affine_shear must be finite"
    elif case == "no sub-heads":
        argv, expected = ["train", "--num-subheads", 0], "num_subheads must be at least 1, got 0"
    elif case == "negative eval crop":
        argv, expected = (["train", "--eval-crop-size", -4, "--eval-every", 1],
                          "eval_crop_size must be 0 (whole images) or at least 2")
    elif case == "crop larger than the images":  # the demo's images are 64 × 64
        argv, expected = ["train", "--crop-size", 1000], "crop_size=1000 is larger than the 64×64 training images"
    elif case == "scale too small":
        argv, expected = ["train", "--scale", 0.02], "scale 0.02 makes the training images 1×1 pixels"
    else:
        (tmp_path / "empty").mkdir()
        argv, expected = (["predict", tmp_path / "missing.ckpt", tmp_path / "empty", "--out", tmp_path / "p"],
                          "no such checkpoint")
    code, out, err = run_cli(capsys, *argv, *(["--out-dir", out_dir] if argv[0] == "train" else []))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iic: error:") and expected in lines[0], err
    assert "Traceback" not in err and out == ""  # no banner for a run that does not start
    assert not out_dir.exists()


def test_potsdam3_preset_trains_on_rgb_ir_tiles(tmp_path, capsys):
    from test_segmentation_data import write_potsdam

    root = tmp_path / "POTSDAM"
    write_potsdam(root, labelled=("t0", "t1", "t2"), unlabelled=("u0",), size=24)
    code, out, err = run_cli(capsys, "train", "--preset", "potsdam3", "--data-path", root, "--crop-size", 16,
                             "--eval-crop-size", 24, "--T", 2, "--widths", 4, 4, 4, 4, 4, 4, "--epochs", 1,
                             "--batch-size", 2, "--out-dir", tmp_path / "runs", "--name", "p3", "--no-progress")
    assert code == 0, err
    run_dir = tmp_path / "runs" / "p3"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["k_a"] == 24 and config["k_b"] == 3 and config["lamb_b"] == 1.5 and config["jitter"] == [0.1] * 4
    results = yaml.safe_load((run_dir / "results.yaml").read_text())
    assert set(results["B"]["reported"]["iou"]) == {"roads and cars", "buildings and clutter", "vegetation and trees"}
    assert "paper (Table 4): pixel accuracy 65.1%" in out
    assert (run_dir / "segmentation.png").is_file()


def test_two_process_training_run_evaluates_each_image_once(tmp_path):
    """`iic segment train --devices 2` on CPU (gloo), five labelled images: each process evaluates its share
    (Lightning's default sampler would count one image twice) with rank 0's BatchNorm statistics (each process's last
    training step updates its own), so the last pass's validation, results.yaml and one process's evaluation of the
    saved model agree exactly; and only rank 0 prints."""
    import csv
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(5):  # a noisy region beside a flat one, split at a different column in each image
        image = np.full((32, 32, 3), 128, dtype=np.uint8)
        labels = np.zeros((32, 32), dtype=np.uint8)
        image[:, : 8 + 4 * i] = rng.integers(0, 256, (32, 8 + 4 * i, 3))
        labels[:, : 8 + 4 * i] = 1
        Image.fromarray(image).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(labels).save(tmp_path / "labels" / f"{i}.png")
    data = ["--dataset", "folder", "--data-path", str(tmp_path / "images"), "--label-dir", str(tmp_path / "labels")]
    result = subprocess.run(
        [sys.executable, "-m", "iic", "segment", "train", *data, "--devices", "2", "--accelerator", "cpu",
         "--k-b", "2", "--k-a", "0", "--crop-size", "24", "--T", "2", "--widths", *["4"] * 6,
         "--batch-size", "4",  # above a process's share (2 or 3 images): capped at it, else no batch at all
         "--epochs", "2", "--eval-every", "1", "--no-progress", "--out-dir", str(tmp_path / "runs"), "--name", "ddp"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("iic segment train:") == 1 and result.stdout.count("pixel accuracy") == 1, result.stdout
    run_dir = tmp_path / "runs" / "ddp"
    trained = yaml.safe_load((run_dir / "results.yaml").read_text())["B"]["reported"]
    with open(run_dir / "metrics.csv") as f:
        validated = [float(row["val/pixel_acc_B"]) for row in csv.DictReader(f) if row.get("val/pixel_acc_B")]
    assert validated[-1] == pytest.approx(trained["pixel_acc"], abs=1e-6)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2  # it trained

    evaluated = load(run_dir).evaluate(accelerator="cpu")["B"]["reported"]
    assert evaluated["pixel_acc"] == pytest.approx(trained["pixel_acc"], abs=1e-12)
    assert evaluated["miou"] == pytest.approx(trained["miou"], abs=1e-12)


def write_untrained_checkpoint(path, **settings):
    """A checkpoint as `iic segment train` saves it, without the training: enough for predict."""
    from iic.config import config_to_dict
    from iic.segmentation.module import SegmentationModule

    module = SegmentationModule(config_to_dict(SegmentConfig(widths=(4,) * 6, **settings)), ["a", "b", "c"])
    torch.save({"task": "segmentation", "hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()},
               path)
    return path


def test_predict_searches_sub_folders_and_keeps_images_of_the_same_name_apart(tmp_path, capsys):
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt")
    images = tmp_path / "images"
    for relative, width in (("a/0.png", 20), ("b/0.png", 24), ("b/deeper/1.png", 28)):
        (images / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((16, width, 3), dtype=np.uint8)).save(images / relative)
    code, out, err = run_cli(capsys, "predict", checkpoint, images, images / "a" / "0.png", "--out", tmp_path / "out")
    assert code == 0, err
    assert "wrote 6 files for 3 images" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "1_labels.png", "1_overlay.png", "a_0_labels.png", "a_0_overlay.png", "b_0_labels.png", "b_0_overlay.png"]
    for name, width in (("a_0", 20), ("b_0", 24), ("1", 28)):  # each output is of its own image
        with Image.open(tmp_path / "out" / f"{name}_labels.png") as labels:
            assert labels.size == (width, 16)
    # --out inside a folder searched: a second run does not segment the first one's outputs
    for _ in range(2):
        code, out, err = run_cli(capsys, "predict", checkpoint, images, "--out", images / "predictions")
        assert code == 0 and "wrote 6 files for 3 images" in out, err


def test_predict_takes_images_one_pixel_wide(tmp_path, capsys):
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt")
    for name, (h, w) in (("wide", (1, 40)), ("tall", (40, 1)), ("dot", (1, 1))):
        Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    code, out, err = run_cli(capsys, "predict", checkpoint, *(tmp_path / f"{n}.png" for n in ("wide", "tall", "dot")),
                             "--out", tmp_path / "out")
    assert code == 0 and "wrote 6 files for 3 images" in out, err
    with Image.open(tmp_path / "out" / "tall_labels.png") as labels:
        assert labels.size == (1, 40)


def test_predict_writes_nothing_when_an_image_fails_to_segment(tmp_path, monkeypatch):
    from iic.segmentation.module import SegmentationModule
    from iic.segmentation.outputs import predict_images

    module = load(write_untrained_checkpoint(tmp_path / "model.ckpt")).module
    for name in ("a", "b"):
        Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    segment = SegmentationModule.predict_clusters
    calls = []

    def fail_on_the_second(self, x):
        calls.append(x)
        if len(calls) == 2:
            raise IICError("the second image failed")
        return segment(self, x)

    monkeypatch.setattr(SegmentationModule, "predict_clusters", fail_on_the_second)
    with pytest.raises(IICError, match="the second image failed"):
        predict_images(module, [tmp_path / "a.png", tmp_path / "b.png"], tmp_path / "out")
    assert len(calls) == 2 and not (tmp_path / "out").exists()


def test_predict_refuses_an_empty_output_folder_name(tmp_path, capsys, monkeypatch):
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt")
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / "0.png")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "predict", checkpoint, tmp_path / "0.png", "--out", "")
    assert code == 2 and err.strip() == "iic: error: the output folder name is empty", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.png", "model.ckpt"]


def test_output_names_use_the_folder_an_image_is_found_in(tmp_path):
    from iic.segmentation.outputs import output_names

    for folder in ("a", "b", "store"):
        (tmp_path / folder).mkdir()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "store" / "0.png")
    (tmp_path / "a" / "0.png").symlink_to(tmp_path / "store" / "0.png")
    (tmp_path / "b" / "0.png").symlink_to(tmp_path / "store" / "0.png")
    assert output_names([tmp_path / "a" / "0.png", tmp_path / "b" / "0.png"]) == ["a_0", "b_0"]


def test_output_names_are_distinct_and_keep_unique_stems():
    from pathlib import Path

    from iic.segmentation.outputs import output_names

    paths = [Path("x/a/0.png"), Path("x/b/0.jpg"), Path("x/a_0.png"), Path("y/a/0.png"), Path("x/Z.png"),
             Path("y/z.png"), Path("y/w.png")]
    names = output_names(paths)
    assert names[2] == "a_0" and names[6] == "w"  # a stem of its own is kept, even one like a derived name
    assert names[1] == "b_0" and (names[0], names[3]) == ("a_0_2", "a_0_3")
    assert (names[4], names[5]) == ("x_Z", "y_z")  # stems that differ in case only clash on some file systems


def test_folder_training_without_labels_prints_no_warnings(tmp_path):
    """Lightning warned that validation_step had no data, torch that PIL's read-only arrays were wrapped:
    a subprocess, since torch gives its warning once per process."""
    import subprocess
    import sys

    write_folder(tmp_path, [None] * 3)
    result = subprocess.run(
        [sys.executable, "-m", "iic", "segment", "train", "--dataset", "folder",
         "--data-path", str(tmp_path / "images"),
         "--crop-size", "24", "--widths", *["4"] * 6, "--batch-size", "2", "--epochs", "1", "--no-progress",
         "--accelerator", "cpu", "--out-dir", str(tmp_path / "runs"), "--name", "quiet"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr
    assert (tmp_path / "runs" / "quiet" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "runs" / "quiet" / "checkpoints" / "best.ckpt").is_file()  # no labels, so never validated


def test_a_run_never_validated_still_has_a_best_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--epochs", 1, "--eval-every", 100, "--out-dir", tmp_path, "--name", "run",
                           "--no-progress")
    assert code == 0, err
    best, last = (torch.load(tmp_path / "run" / "checkpoints" / f"{name}.ckpt", weights_only=False)
                  for name in ("best", "last"))
    assert best["global_step"] == last["global_step"] > 0  # the trained model
    mapping = best["state_dict"]["cluster_to_class"]  # with the final evaluation's matching, as last.ckpt
    assert (mapping >= 0).all() and torch.equal(mapping, last["state_dict"]["cluster_to_class"])


def test_each_head_reports_its_own_lowest_loss_sub_head(tmp_path):
    import warnings

    from iic.config import config_to_dict
    from iic.engine.checkpoints import check_resumable, load_trained
    from iic.segmentation.module import SegmentationModule

    module = SegmentationModule(config_to_dict(SegmentConfig(widths=(4,) * 6, num_subheads=3, k_a=6)), ["a", "b", "c"])
    module._loss_sums = {"A": torch.tensor([-1.0, -1.2, -3.0]), "B": torch.tensor([-1.0, -2.0, -1.5])}
    module._loss_counts = {"A": 1, "B": 1}
    module.close_pass()
    assert module.reported_subhead("A") == 2 and module.reported_subhead("B") == 1
    assert module.subhead_loss("B").tolist() == [-1.0, -2.0, -1.5]  # the buffer the choice is made from (and saved)
    module.close_pass()  # nothing new to record: the choices stand
    assert module.reported_subhead("A") == 2 and module.reported_subhead("B") == 1
    # Scores are of each head's own choice: head A's sub-head 2 and head B's sub-head 1 are right on every pixel,
    # the others wrong.
    labels = torch.tensor([[0, 1], [2, 0]])
    wrong = torch.tensor([[0, 0], [0, 0]])
    module.tables["A"].update(torch.stack([wrong, wrong, labels])[:, None], labels[None])
    module.tables["B"].update(torch.stack([wrong, labels, wrong])[:, None], labels[None])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer to log to here
        module.on_validation_epoch_end()
    results = module.last_results
    assert results["A"]["reported"]["pixel_acc"] == 1.0 and results["B"]["reported"]["pixel_acc"] == 1.0
    assert (results["A"]["reported_subhead"], results["B"]["reported_subhead"]) == (2, 1)
    # Checkpoints from before the shared engine kept head B's chosen sub-head and its loss (best_subhead,
    # latest_loss_b) and, later, head A's (best_subhead_a); older still, none for head A, which then reported head
    # B's choice. They load (and resume) reporting the same sub-heads.
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("subhead_loss_")}
    old = {"best_subhead": torch.tensor(1), "latest_loss_b": torch.tensor(-2.0)}
    for name, extra, chosen_a in (("old.ckpt", {}, 1), ("with-a.ckpt", {"best_subhead_a": torch.tensor(2)}, 2)):
        torch.save({"hyper_parameters": dict(module.hparams), "state_dict": {**state, **old, **extra},
                    "global_step": 4, "epoch": 1}, tmp_path / name)
        loaded, _ = load_trained(SegmentationModule, tmp_path / name)
        assert (loaded.reported_subhead("A"), loaded.reported_subhead("B")) == (chosen_a, 1), name
        assert loaded.subhead_loss("B")[1] == -2.0
        assert torch.equal(loaded.cluster_to_class, module.cluster_to_class)
        fresh = SegmentationModule(**module.hparams)
        assert check_resumable(fresh, tmp_path / name, max_passes=10) == 1
        assert (fresh.reported_subhead("A"), fresh.reported_subhead("B")) == (chosen_a, 1), name


@pytest.fixture
def tiny_run(tmp_path, capsys):
    """A one-epoch demo run with a small network: runs/run."""
    code, _, err = run_cli(capsys, "train", "--epochs", 1, "--widths", *[4] * 6, "--out-dir", tmp_path / "runs",
                           "--name", "run", "--no-progress")
    assert code == 0, err
    return tmp_path / "runs" / "run"


def test_resume_trains_at_the_lr_given_and_takes_the_runs_own_config(tiny_run, capsys):
    code, _, err = run_cli(capsys, "train", "--resume", tiny_run, "--config", tiny_run / "config.yaml", "--epochs", 2,
                           "--lr", 0.05, "--no-progress")
    assert code == 0, err
    saved = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] > 0 and yaml.safe_load((tiny_run / "config.yaml").read_text())["lr"] == 0.05
    assert {group["lr"] for state in saved["optimizer_states"] for group in state["param_groups"]} == {0.05}


@pytest.mark.parametrize("change", ["--name", "--preset", "--out-dir", "name in --config", "out_dir in --config"])
def test_resume_keeps_what_names_the_run(tiny_run, tmp_path, capsys, change):
    before = (tiny_run / "config.yaml").read_text()
    if change.startswith("--"):
        argv = [change, {"--name": "other", "--preset": "demo", "--out-dir": tmp_path / "other"}[change]]
        expected = f"iic: error: {change} cannot change on --resume: the run keeps its directory and preset"
    else:
        key = change.split()[0]
        (tmp_path / "settings.yaml").write_text(f"{key}: other\nepochs: 2\n")
        argv = ["--config", tmp_path / "settings.yaml"]
        expected = (f"iic: error: {key} in {tmp_path / 'settings.yaml'} cannot change on --resume: "
                    "the run keeps its directory and preset")
    code, out, err = run_cli(capsys, "train", "--resume", tiny_run, *argv, "--epochs", 2)
    assert code == 2 and err.strip() == expected and out == "", err
    assert (tiny_run / "config.yaml").read_text() == before and not (tmp_path / "other").exists()


def test_resume_takes_a_run_directory_or_its_last_checkpoint(tiny_run, tmp_path, capsys):
    copy = tmp_path / "elsewhere" / "copies" / "m.ckpt"
    copy.parent.mkdir(parents=True)
    copy.write_bytes((tiny_run / "checkpoints" / "last.ckpt").read_bytes())
    last = (tiny_run / "checkpoints" / "last.ckpt").read_bytes()
    for checkpoint in (copy, tiny_run / "checkpoints" / "best.ckpt"):
        code, out, err = run_cli(capsys, "train", "--resume", checkpoint, "--epochs", 2)
        assert code == 2 and out == "", err
        assert err.strip() == (f"iic: error: cannot resume {checkpoint}: "
                               "--resume takes a run directory or its checkpoints/last.ckpt")
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["copies"]  # no run written around the copy
    assert (tiny_run / "checkpoints" / "last.ckpt").read_bytes() == last


@pytest.mark.parametrize("flags, expected", [
    (["--eval-crop-size", 1], "eval_crop_size must be 0 (whole images) or at least 2, got 1"),
    (["--scale", 0.02], "scale 0.02 makes the evaluation images 1×1 pixels: the network needs at least 2 a side"),
], ids=["eval crop of 1", "scale 0.02"])
def test_evaluate_refuses_images_too_small_for_the_network(tmp_path, capsys, flags, expected):
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt")
    code, out, err = run_cli(capsys, "evaluate", checkpoint, *flags)
    assert code == 2 and err.strip() == f"iic: error: {expected}" and out == "", err


def test_evaluate_on_other_data_uses_its_classes(tmp_path, capsys):
    """A model trained with class names and groups (as camvid3's) evaluates on a labelled folder of other classes."""
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt", class_groups="0;1;2", class_names=("x", "y", "z"))
    write_folder(tmp_path, [(64, 64), (64, 64)])
    Image.fromarray(np.eye(64, dtype=np.uint8)).save(tmp_path / "labels" / "1.png")  # classes 0 and 1
    code, out, err = run_cli(capsys, "evaluate", checkpoint, "--dataset", "folder", "--data-path", tmp_path / "images",
                             "--label-dir", tmp_path / "labels")
    assert code == 0, err
    assert f"iic segment evaluate: {checkpoint} on 2 images of folder (train)" in out
    assert "IoU per class: class 0" in out and "class 1" in out and "x " not in out


@pytest.mark.parametrize("scale", ["nan", "inf", "0", "-1", "1e-9"])
def test_predict_refuses_a_scale_that_leaves_nothing_to_segment(tmp_path, capsys, scale):
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt")
    Image.fromarray(np.zeros((40, 52, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    code, out, err = run_cli(capsys, "predict", checkpoint, tmp_path / "a.png", "--out", tmp_path / "out",
                             "--scale", scale)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("iic: error: scale ") and out == "", err
    assert not (tmp_path / "out").exists()


def test_the_old_name_of_rotation_is_still_read(tmp_path):
    """`affine_degrees` became `rotation` (as clustering's): config files and checkpoints of older runs keep working."""
    from iic.config import read_yaml

    (tmp_path / "old.yaml").write_text("affine_degrees: 12.5\n")
    assert config_from_dict(SegmentConfig, read_yaml(tmp_path / "old.yaml")).rotation == 12.5
    assert "affine_degrees" not in SegmentConfig.__dataclass_fields__
