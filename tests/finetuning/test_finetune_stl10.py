"""The paper's STL-10 recipe (its supplementary material: the labelled training split, the paper's head, ten crops
at evaluation) on a tiny fake STL-10 in torchvision's binary format.

torchvision checks STL-10's files against their MD5 sums, which fakes cannot match: that check is switched off
(as in tests/clustering/test_torchvision_data.py); the reader is torchvision's own.
"""

import csv

import numpy as np
import pytest
import torch

import iic
from iic.errors import IICError
from iic.finetuning.module import FinetuningRun

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # trains, on one thread

INTEGRITY = "torchvision.datasets.stl10.check_integrity"
SIZES = {"train": 20, "test": 10, "unlabeled": 30}  # two labelled training images a class, one test image a class


@pytest.fixture(scope="module")
def fake_stl10(tmp_path_factory):
    """STL-10's binary files with a few random 96×96 images: its root folder and the images of each split."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("stl10")
    folder = root / "stl10_binary"
    folder.mkdir()
    images = {split: rng.integers(0, 256, (n, 3, 96, 96)).astype(np.uint8) for split, n in SIZES.items()}
    for split, array in images.items():
        (folder / f"{split}_X.bin").write_bytes(array.transpose(0, 1, 3, 2).tobytes())  # STL-10 stores columns first
    labels = {split: np.arange(SIZES[split]) % 10 for split in ("train", "test")}
    for split, y in labels.items():
        (folder / f"{split}_y.bin").write_bytes(bytes((y + 1).tolist()))  # 1-based on disk
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    return root, images, labels


@pytest.fixture(scope="module")
def stl10_run(fake_stl10, tmp_path_factory, one_thread_block):
    """An IIC run of the stl10 preset (96×96 images, crops of 64, Sobel input), on a slim ClusterNet6c for one
    epoch instead of the paper's ClusterNet5g (about 3 s)."""
    root, _, _ = fake_stl10
    with pytest.MonkeyPatch.context() as patch, one_thread_block():
        patch.setattr(INTEGRITY, lambda *args, **kwargs: True)
        return iic.train(preset="stl10", data_path=str(root), out_dir=str(tmp_path_factory.mktemp("iic")),
                         backbone="clusternet6c", widths=(4, 8, 8, 8), k_a=0, num_subheads=1, repeats=1, epochs=1,
                         batch_size=10, progress=False)


def test_the_papers_stl10_recipe(stl10_run, fake_stl10, tmp_path, monkeypatch):
    from iic.finetuning.api import default_preset

    monkeypatch.setattr(INTEGRITY, lambda *args, **kwargs: True)
    _, images, labels = fake_stl10
    jobs = []
    build_module = FinetuningRun.build_module
    monkeypatch.setattr(FinetuningRun, "build_module", lambda job: jobs.append(job) or build_module(job))
    assert default_preset(stl10_run.run_dir) == "stl10"  # what `iic finetune RUN` would take
    run = iic.finetune(stl10_run.run_dir, preset="stl10", epochs=1, batch_size=10, labels=20, out_dir=str(tmp_path),
                       progress=False)
    module = run.model.module
    assert module.config.preset == "stl10" and module.config.epoch_images == 0
    assert module.evaluation_views.ten_crops  # evaluated on ten crops, their logits averaged
    assert module.net.head[0].out_features == 2048  # the paper's head: Linear → BatchNorm → ReLU → Linear
    assert module.source.image_size == 96 and module.source.input_size == 64 and module.source.sobel
    # Labels from STL-10's labelled training split only: all 20 of its images, none of the 30 unlabelled ones.
    (job,) = jobs
    assert torch.equal(job.data.training.images, torch.from_numpy(images["train"]))
    assert job.data.training.labels.tolist() == labels["train"].tolist()
    rows = list(csv.DictReader((run.run_dir / "labelled.csv").open()))
    assert [int(row["index"]) for row in rows] == list(range(20))
    assert [row["class"] for row in rows] == [f"class{y}" for y in labels["train"]]
    # Scored on its test split.
    results = run.results
    assert results["evaluated_on"] == "test split" and results["images"] == SIZES["test"]
    assert np.array(results["confusion"]).sum(axis=1).tolist() == [1] * 10  # one test image a class
    assert results["classes"] == [f"class{i}" for i in range(10)]
    # More labels than the labelled split holds are refused: the unlabelled images are no candidates.
    with pytest.raises(IICError, match="21 labels: 21 of 20 labelled images; give at least 1 and at most 20"):
        iic.finetune(stl10_run.run_dir, preset="stl10", epochs=1, batch_size=10, labels=21,
                     out_dir=str(tmp_path / "more"), progress=False)
    assert not (tmp_path / "more").exists()
