"""Fine-tuning under DDP (two CPU processes, gloo): each test image is scored once, with the saved model's weights and
BatchNorm statistics, and the pass chosen on the validation part is the one restored in every process."""

import subprocess
import sys

import numpy as np
import pytest
import yaml

from iic.cli import main

pytestmark = pytest.mark.slow  # trains in two processes


def test_two_process_finetuning_scores_each_test_image_once_with_the_saved_model(digits_run, three_digit_npz,
                                                                                 tmp_path):
    run = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "iic", "finetune", str(digits_run.run_dir), "--devices", "2", "--accelerator", "cpu",
         "--labels", "30", "--validation", "0.2", "--epochs", "2", "--epoch-images", "200", "--batch-size", "20",
         "--head-width", "32", "--out-dir", str(tmp_path), "--name", "ddp", "--no-progress"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("iic finetune:") == 1 and result.stdout.count("trained in") == 1, result.stdout
    trained = yaml.safe_load((run / "results.yaml").read_text())
    test_labels = np.load(three_digit_npz)["y_test"]
    assert trained["images"] == len(test_labels)  # every test image once, none repeated to even the shares
    assert np.array(trained["confusion"]).sum(axis=1).tolist() == np.bincount(test_labels).tolist()
    assert trained["chosen_pass"] in (1, 2)
    assert main(["evaluate", str(run), "--out", str(tmp_path / "eval.yaml")]) == 0
    evaluated = yaml.safe_load((tmp_path / "eval.yaml").read_text())
    assert evaluated["confusion"] == trained["confusion"] and evaluated["acc"] == trained["acc"]
