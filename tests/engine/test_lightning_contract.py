"""What the engine takes from Lightning beyond its public API: fails loudly when Lightning changes it."""

import csv
import inspect

from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from iic.engine.trainer import AppendingMetricsWriter


def test_the_csv_writer_methods_the_engine_extends_still_exist_with_their_signatures():
    # engine.trainer.AppendingMetricsWriter overrides these two private methods of Lightning's CSV writer so that
    # a resumed run appends to its metrics.csv; if Lightning renames them, resumed runs would lose their history.
    assert list(inspect.signature(ExperimentWriter._check_log_dir_exists).parameters) == ["self"]
    assert list(inspect.signature(ExperimentWriter._rewrite_with_new_header).parameters) == ["self", "fieldnames"]


def test_a_resumed_runs_metrics_are_appended_to_and_a_new_column_rewrites_the_file_whole(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train/loss_B\n0,-1.5\n")
    writer = AppendingMetricsWriter(log_dir=str(tmp_path))
    writer.log_metrics({"epoch": 1, "train/loss_B": -1.75})
    writer.log_metrics({"epoch": 1, "val/acc_B": 0.5})  # a column the file has not had yet
    writer.save()
    rows = list(csv.DictReader(path.open()))
    assert [row["epoch"] for row in rows] == ["0", "1", "1"]
    assert rows[0]["train/loss_B"] == "-1.5" and rows[2]["val/acc_B"] == "0.5"
