"""Sequence runs that train (seconds each): whole series and time steps learn synthetic classes; the command line's
round trip train → evaluate → predict → resume; bad input is one line and leaves no run directory."""

import csv

import numpy as np
import pytest
import torch
import yaml
from helpers import in_process_error

import iic.sequences
from iic.cli import main
from iic.sequences.cli import is_sequence_run, wants_sequences

TINY = dict(widths=(16, 16), kernel=5, k_a=0, num_subheads=2, lr=0.01, eval_every=1000, accelerator="cpu")
TINY_FLAGS = ["--widths", "16", "16", "--kernel", "5", "--k-a", "0", "--num-subheads", "2", "--lr", "0.01",
              "--eval-every", "1000", "--accelerator", "cpu", "--no-progress"]


def two_kinds(count: int = 40, steps: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Series of 2 channels: class 0 oscillates in channel 0, class 1 in channel 1 (the other is faint noise);
    random phases and lengths 36..48 (NaN-padded)."""
    rng = np.random.default_rng(seed)
    y = np.arange(count) % 2
    t = np.arange(steps)
    x = 0.1 * rng.normal(size=(count, steps, 2))
    x[np.arange(count), :, y] += np.sin(2 * np.pi * t[None, :] / 12 + rng.uniform(0, 6.3, size=(count, 1)))
    for i, length in enumerate(rng.integers(36, steps + 1, size=count)):
        x[i, length:] = np.nan
    return x.astype(np.float32), y


@pytest.mark.slow
def test_whole_series_learn_two_kinds(tmp_path, one_torch_thread):
    x, y = two_kinds()
    run = iic.sequences.train(x, y, k_b=2, epochs=15, batch_size=20, out_dir=str(tmp_path), progress=False, **TINY)
    assert run.results["B"]["reported"]["acc"] >= 0.95
    assert (run.run_dir / "clusters.png").is_file()
    model = iic.sequences.load(run.run_dir)
    new_x, new_y = two_kinds(10, seed=1)
    predicted = model.predict(new_x).numpy()
    assert max((predicted == new_y).mean(), (predicted != new_y).mean()) >= 0.9
    # iic.load knows a sequence run by its checkpoint, as it knows the other tasks' runs
    assert type(iic.load(run.run_dir)) is type(model)
    assert np.array_equal(iic.load(run.run_dir).predict(new_x).numpy(), predicted)


@pytest.mark.slow
def test_time_steps_learn_their_segments(tmp_path, one_torch_thread):
    """A recording of 24 series end to end (segments of 36..48 steps): every step gets its series' class."""
    x, y = two_kinds(24)
    settings = dict(TINY, num_subheads=4)  # sub-heads guard against an unlucky start (T = 8: over half a period)
    run = iic.sequences.train(x, y, mode="steps", recording=True, k_b=2, window=64, shift=8, epochs=20,
                              batch_size=16, out_dir=str(tmp_path), progress=False, **settings)
    assert run.results["B"]["reported"]["step_acc"] >= 0.85
    assert (run.run_dir / "segments.png").is_file()
    steps = iic.sequences.load(run.run_dir).predict(x[:3])  # each step's cluster, −1 past each series' end
    assert steps.shape[0] == 3 and int((steps >= 0).sum()) == int((~np.isnan(x[:3, :, 0])).sum())


def test_the_refit_replaces_only_head_b_and_reports_its_losses(tmp_path, one_torch_thread):
    x, y = two_kinds(20)
    settings = dict(TINY, k_b=2, epochs=1, batch_size=10, out_dir=str(tmp_path), progress=False)
    plain = iic.sequences.train(x, y, name="plain", **settings)
    run = iic.sequences.train(x, y, name="refit", refit_subheads=4, refit_epochs=2, **settings)
    trained, refitted = plain.model.module.net, run.model.module.net
    assert all(torch.equal(a, b) for a, b in zip(trained.trunk.state_dict().values(),
                                                   refitted.trunk.state_dict().values()))
    assert not torch.equal(trained.heads["B"].linear.weight, refitted.heads["B"].linear.weight)
    losses = run.results["B"]["subhead_losses"]
    # the re-fit's losses at λ = refit_lamb = 3 (below −2 ln 2 here), the lowest of four first; not λ = 1's (≥ −ln 2)
    assert len(losses) == 2 and losses == sorted(losses) and max(losses) < -2 * np.log(2)
    assert min(plain.results["B"]["subhead_losses"]) >= -np.log(2) - 1e-4
    assert np.array_equal(iic.load(run.run_dir).predict(x).numpy(), run.model.predict(x).numpy())  # saved


@pytest.mark.slow
def test_command_line_round_trip(tmp_path, capsys, one_torch_thread):
    x, y = two_kinds()
    np.savez(tmp_path / "series.npz", x=x, y=y)
    argv = ["train", "--dataset", "sequences", "--data-path", str(tmp_path / "series.npz"), "--k-b", "2",
            "--epochs", "10", "--batch-size", "20", "--out-dir", str(tmp_path / "runs"), "--name", "r", *TINY_FLAGS]
    assert wants_sequences(argv[1:])
    assert main(argv) == 0
    run_dir = tmp_path / "runs" / "r"
    assert "ACC" in capsys.readouterr().out and is_sequence_run([str(run_dir)])
    assert is_sequence_run(["--dataset", "sequences", str(run_dir / "checkpoints" / "last.ckpt")])
    assert main(["evaluate", str(run_dir), "--out", str(tmp_path / "scores.yaml"), "--cpu"]) == 0
    scores = yaml.safe_load((tmp_path / "scores.yaml").read_text())
    assert scores["B"]["reported"]["acc"] >= 0.9
    np.savez(tmp_path / "new.npz", x=x[:5])
    assert main(["predict", str(run_dir), str(tmp_path / "new.npz"), "--out", str(tmp_path / "clusters.csv")]) == 0
    with open(tmp_path / "clusters.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["series"] for row in rows] == ["0", "1", "2", "3", "4"]
    assert len({row["cluster"] for row in rows}) == 2
    assert wants_sequences(["--resume", str(run_dir)])
    assert main(["train", "--resume", str(run_dir), "--epochs", "11", "--no-progress"]) == 0  # one more epoch
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["epochs"] == 11


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    (tmp_path / "bad.ts").write_text("@problemName x\n@data\n1,2,3:abc\n@broken")
    x = np.ones((4, 10, 2), dtype=np.float32)
    x[2, :, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    np.savez(tmp_path / "short.npz", x=np.ones((4, 6, 1), dtype=np.float32))
    np.savez(tmp_path / "channels.npz", x_train=np.ones((4, 10, 2), dtype=np.float32),
             x_test=np.ones((3, 10, 3), dtype=np.float32))
    (tmp_path / "long.csv").write_text("id,time,a,b\nu,0,,1\nu,1,,2\nv,0,1,3\nv,1,2,4\n")
    cases = [(["--data-path", str(tmp_path / "nan.npz")], "channel 0 of series 2 is NaN all through"),
             (["--data-path", str(tmp_path / "long.csv")], "channel 'a' of series 'u' is NaN all through"),
             (["--data-path", str(tmp_path / "channels.npz")],
              "the training series have 2 channels and the test series 3"),
             (["--data-path", str(tmp_path / "short.npz"), "--mode", "steps", "--half-window", "6"],
              "half_window T=6 is not shorter than the longest series (6 steps)"),
             (["--data-path", str(tmp_path / "missing.npz")], "no such file"),
             (["--data-path", str(tmp_path / "nan.npz"), "--crop", "0.5", "2"], "crop must be two shares"),
             (["--data-path", str(tmp_path / "nan.npz"), "--mode", "steps", "--refit-subheads", "5"],
              "refit_subheads re-fits whole-series heads: it is for mode series")]
    if __import__("importlib").util.find_spec("aeon"):
        cases.append((["--data-path", str(tmp_path / "bad.ts")], "not a readable .ts file"))
    for flags, message in cases:
        line = in_process_error(capsys, "train", "--dataset", "sequences", "--out-dir", str(runs), "--k-b", "2",
                                "--k-a", "0", *flags)
        assert message in line, line
    assert not runs.exists()
