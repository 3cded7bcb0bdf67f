"""iic export: every task's model as ONNX (and .pt2) computes what the PyTorch model computes, with dynamic batch
(and image size, steps), metadata inside; the light predictor needs neither torch nor Lightning; bad input is one
line. Models here have random weights (the export is about the computation, not what was learnt) and a reported
sub-head that is not the first, so that the choice travels."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iic.config import config_to_dict
from iic.errors import IICError
from iic.export import export
from iic.export.graphs import Graph, example_images
from iic.export.serving import OnnxModel
from iic.export.writer import write_onnx

pytest.importorskip("onnxruntime")


def with_reported_last(module):
    """The last sub-head of each head has the lowest loss (the export must pick it), and batch norm's statistics are
    those of varied inputs (random weights with the initial statistics put every input in one cluster)."""
    for head in module.head_names:
        losses = module.subhead_loss(head)
        losses.copy_(torch.arange(len(losses), 0, -1, dtype=torch.float32))
    return calibrated(module)


def calibrated(module):
    from iic.export.graphs import task_graph

    for norm in module.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            norm.momentum = 1.0  # the statistics of the one batch below
    graph = task_graph(module)
    module.train()
    with torch.no_grad():
        graph.model(torch.cat([graph.example, graph.example.flip(0) // 2]))
    return module.eval()


def clustering_module():
    from iic.clustering.config import CLUSTER_PRESETS, ClusterConfig
    from iic.clustering.module import ClusterModule

    config = ClusterConfig(**{**CLUSTER_PRESETS["mnist"], "widths": (8, 8, 16, 16), "k_a": 7, "num_subheads": 2,
                              "trunks": 2})
    return with_reported_last(ClusterModule(config_to_dict(config), channels=1))


def colour_clustering_module():  # Sobel input, centre crop of 32 → 20, a torchvision-style trunk
    from iic.clustering.config import CLUSTER_PRESETS, ClusterConfig
    from iic.clustering.module import ClusterModule

    config = ClusterConfig(**{**CLUSTER_PRESETS["cifar10"], "backbone": "clusternet6c", "widths": (8, 8, 16, 16),
                              "num_subheads": 2, "input_size": 24})
    return with_reported_last(ClusterModule(config_to_dict(config), channels=3))


def segmentation_module():
    from iic.segmentation.config import SegmentConfig
    from iic.segmentation.module import SegmentationModule

    config = SegmentConfig(scale=0.5, widths=(8, 8, 16, 16, 16, 16), num_subheads=2, k_b=3, k_a=5)
    module = SegmentationModule(config_to_dict(config), ["sky", "road", "tree"])
    module.cluster_to_class.copy_(torch.tensor([2, 0, 1]))  # clusters matched to classes by an evaluation
    return with_reported_last(module)


def vector_module():
    from iic.vectors.config import VectorConfig
    from iic.vectors.module import VectorModule

    module = VectorModule(config_to_dict(VectorConfig(k_b=3, k_a=6, num_subheads=3)), num_features=5,
                          feature_names=list("abcde"))
    module.feature_mean.copy_(torch.tensor([0.0, 10, -3, 100, 1]))
    module.feature_std.copy_(torch.tensor([1.0, 5, 0.5, 20, 2]))
    return with_reported_last(module)


def sequence_module(mode: str = "series"):
    from iic.sequences.config import SequenceConfig
    from iic.sequences.module import SequenceModule

    settings = dict(mode=mode, widths=(8, 16), k_b=3, k_a=4, num_subheads=2, window=24, half_window=2)
    module = SequenceModule(config_to_dict(SequenceConfig(**settings)), num_channels=2, input_length=30)
    module.channel_mean.copy_(torch.tensor([1.0, -2.0]))
    module.channel_std.copy_(torch.tensor([2.0, 0.5]))
    return with_reported_last(module)


def classifier_module():
    from iic.clustering.config import ClusterConfig
    from iic.finetuning.config import FinetuneConfig
    from iic.finetuning.module import FinetuneModule

    source = ClusterConfig(widths=(8, 8, 16, 16), image_size=16, input_size=16, eval_crop_size=14)
    module = FinetuneModule(config_to_dict(FinetuneConfig()), config_to_dict(source), channels=1,
                            class_names=[str(i) for i in range(10)])
    return calibrated(module)


MODULES = {"clustering": clustering_module, "clustering-sobel": colour_clustering_module,
           "segmentation": segmentation_module, "vectors": vector_module, "sequences": sequence_module,
           "sequence-steps": lambda: sequence_module("steps"), "finetuning": classifier_module}


def inputs_for(meta: dict, count: int, seed: int = 3) -> np.ndarray:
    """A fixed batch of what the file takes."""
    spec, generator = meta["input"], np.random.default_rng(seed)
    if spec["dtype"] == "uint8":
        size = (spec["height"] or 13, spec["width"] or 18)  # any size for segmentation: small and not square
        return example_images(count, size, spec["channels"], seed=seed).numpy()
    if meta["task"] == "vectors":
        return (generator.normal(size=(count, spec["features"])) * [1, 5, 0.5, 20, 2] + [0, 10, -3, 100, 1]
                ).astype(np.float32)
    shape = (count, spec["steps"] or 50, spec["channels"])
    amplitude, level = generator.uniform(0.1, 4, (count, 1, 1)), generator.normal(0, 2, (count, 1, 1))
    series = (generator.normal(size=shape) * amplitude + level) * [2, 0.5] + [1, -2]
    return series.astype(np.float32)


def pytorch_output(module, meta: dict, batch: np.ndarray) -> np.ndarray:
    """What the model's own prediction path gives (not the exported graph's modules run eagerly)."""
    x = torch.from_numpy(batch)
    if meta["task"] in ("clustering", "finetuning"):
        from iic.clustering.api import ClusterModel
        from iic.finetuning.api import ClassifierModel

        model = ClassifierModel(module) if meta["task"] == "finetuning" else ClusterModel(module)
        return model.predict_proba(batch).numpy()
    if meta["task"] == "segmentation":
        from iic.segmentation.api import SegmentationModel

        return np.stack(SegmentationModel(module).predict(batch))
    if meta["task"] == "vectors":
        return module.predict_probs(x).numpy()
    return module.predict_probs(x, torch.full((len(x),), x.shape[1])).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each model exported once to ONNX: name → (module, path, metadata)."""
    folder = tmp_path_factory.mktemp("exported")
    return {name: (module, folder / f"{name}.onnx", export(module, folder / f"{name}.onnx"))
            for name, module in ((name, build()) for name, build in MODULES.items())}


@pytest.mark.parametrize("name", list(MODULES))
def test_onnx_export_computes_what_pytorch_computes_at_any_batch_size(exported, name):
    module, path, meta = exported[name]
    model = OnnxModel(path)
    for count in (1, 64):
        batch = inputs_for(meta, count)
        expected, got = pytorch_output(module, meta, batch), model.run(batch)
        assert got.shape == expected.shape
        if meta["output_name"] == "labels":
            assert (got == expected).all()
            assert set(np.unique(got)) <= {0, 1, 2}  # class ids through the cluster → class matching
        else:
            assert np.abs(got - expected).max() < 1e-4
            assert (model.predict(batch) == expected.argmax(axis=1)).all()
    if meta["output_name"] == "probabilities":  # not all one cluster: the comparison means something
        assert len(np.unique(model.predict(inputs_for(meta, 64)))) > 1


def test_segmentation_takes_any_image_size_and_labels_it_at_that_size(exported):
    module, path, meta = exported["segmentation"]
    model = OnnxModel(path)
    for size in ((20, 31), (64, 48), (9, 9)):
        batch = example_images(2, size, 3, seed=5).numpy()
        assert model.run(batch).shape == (2, *size)
        assert (model.run(batch) == pytorch_output(module, meta, batch)).all()


def test_per_step_models_take_any_length(exported):
    module, path, meta = exported["sequence-steps"]
    batch = inputs_for({**meta, "input": {**meta["input"], "steps": 77}}, 3)
    got = OnnxModel(path).run(batch)
    assert got.shape == (3, 3, 77)
    assert np.abs(got - pytorch_output(module, meta, batch)).max() < 1e-4


def test_metadata_travels_inside_the_file(exported):
    import iic.export.writer

    module, path, meta = exported["clustering"]
    read = OnnxModel(path).metadata
    assert read == json.loads(json.dumps(meta))  # everything export returned, as JSON
    assert (read["task"], read["k"], read["head"], read["subhead"]) == ("clustering", 10, "B", 3)
    assert read["input"] == {"layout": "N×H×W×C", "dtype": "uint8", "height": 28, "width": 28, "channels": 1}
    assert read["iic_version"] == iic.export.writer.iic_version()
    seg = OnnxModel(exported["segmentation"][1]).metadata
    assert (seg["labels"], seg["class_names"], seg["scale"]) == ("classes", ["sky", "road", "tree"], 0.5)
    assert OnnxModel(exported["finetuning"][1]).metadata["class_names"] == [str(i) for i in range(10)]
    assert OnnxModel(exported["vectors"][1]).metadata["input"]["feature_names"] == list("abcde")


def test_head_a_exports_its_own_reported_subhead(tmp_path):
    from iic.vectors.api import VectorModel

    module = vector_module()
    meta = VectorModel(module).export(tmp_path / "a.onnx", head="A")  # every task's model has .export
    batch = inputs_for(meta, 16)
    assert meta["k"] == 6
    assert np.abs(OnnxModel(tmp_path / "a.onnx").run(batch) - module.predict_probs(torch.from_numpy(batch),
                                                                                     head="A").numpy()).max() < 1e-4


@pytest.mark.parametrize("name", ["clustering", "sequence-steps"])
def test_pt2_export_loads_with_its_metadata_and_dynamic_shapes(tmp_path, name):
    module = MODULES[name]()
    meta = export(module, tmp_path / "model.pt2")
    extra = {"iic.json": ""}
    program = torch.export.load(str(tmp_path / "model.pt2"), extra_files=extra)
    assert json.loads(extra["iic.json"]) == json.loads(json.dumps(meta))  # with the check's figures
    for count in (1, 64):
        batch = inputs_for(meta, count)
        with torch.no_grad():
            got = program.module()(torch.from_numpy(batch)).numpy()
        expected = pytorch_output(module, meta, batch)
        assert np.abs(got - expected).max() < 1e-4 if meta["output_name"] != "labels" else (got == expected).all()


# --- the command line, from a run directory, and the light predictor ----------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A clustering run directory whose last checkpoint holds what a trained run's does (weights, settings, task)."""
    module = clustering_module()
    run = tmp_path_factory.mktemp("run")
    (run / "checkpoints").mkdir()
    (run / "config.yaml").write_text("dataset: mnist\n")
    torch.save({"task": "clustering", "hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()},
               run / "checkpoints" / "last.ckpt")
    return run


def test_cli_export_then_light_predict_agrees_with_pytorch_predict(run_dir, tmp_path, capsys):
    from PIL import Image

    from iic.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(example_images(6, (28, 28), 1, seed=7).numpy()):
        Image.fromarray(image[..., 0]).save(images / f"{i}.png")
    assert main(["export", str(run_dir), "--out", str(tmp_path / "model.onnx")]) == 0
    assert "checked on 3 batches against PyTorch" in capsys.readouterr().out
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "torch.csv")]) == 0
    # the light path in its own process: it must not import torch or Lightning
    code = ("import sys; from iic.cli import main; code = main(sys.argv[1:]); "
            "heavy = [m for m in ('torch', 'lightning', 'kornia') if m in sys.modules]; "
            "print('heavy:', heavy); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, "predict", str(tmp_path / "model.onnx"), str(images),
                           "--out", str(tmp_path / "onnx.csv")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout
    torch_rows = (tmp_path / "torch.csv").read_text().splitlines()
    onnx_rows = (tmp_path / "onnx.csv").read_text().splitlines()
    assert onnx_rows[0] == torch_rows[0] == "path,cluster,probability"
    assert [row.split(",")[:2] for row in onnx_rows] == [row.split(",")[:2] for row in torch_rows]
    probabilities = [(float(a.split(",")[2]), float(b.split(",")[2])) for a, b in zip(onnx_rows[1:], torch_rows[1:])]
    assert max(abs(a - b) for a, b in probabilities) <= 1e-4 + 1e-9


def test_light_predict_of_vectors_reads_csv_columns_by_name(exported, tmp_path):
    from iic.export.serving import predict_files

    module, path, meta = exported["vectors"]
    batch = inputs_for(meta, 5)
    shuffled = ["e", "c", "a", "d", "b", "extra"]  # columns in another order, and one more
    rows = [",".join(shuffled)] + [",".join([*(str(v) for v in row[[4, 2, 0, 3, 1]]), "9"]) for row in batch]
    (tmp_path / "v.csv").write_text("\n".join(rows) + "\n")
    predict_files(OnnxModel(path), [str(tmp_path / "v.csv")], tmp_path / "out.csv")
    written = [line.split(",") for line in (tmp_path / "out.csv").read_text().splitlines()]
    assert written[0] == ["file", "row", "cluster", "probability"]
    assert [int(row[2]) for row in written[1:]] == module.predict_probs(torch.from_numpy(batch)).argmax(1).tolist()


def test_light_predict_writes_label_maps_for_a_segmenter(exported, tmp_path):
    from PIL import Image

    from iic.export.serving import predict_files

    module, path, meta = exported["segmentation"]
    image = example_images(1, (33, 40), 3, seed=2).numpy()[0]
    Image.fromarray(image).save(tmp_path / "street.png")
    predict_files(OnnxModel(path), [str(tmp_path / "street.png")], tmp_path / "maps")
    labels = np.asarray(Image.open(tmp_path / "maps" / "street_labels.png"))
    assert labels.shape == (33, 40)
    assert (labels == pytorch_output(module, meta, image[None])[0]).all()


# --- bad input ---------------------------------------------------------------------------------------------------

def cli_error(argv: list[str], capsys) -> str:
    from iic.cli import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iic: error: "), captured.err
    return lines[0]


def test_export_refuses_bad_input_in_one_line_writing_nothing(run_dir, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("dataset: mnist\n")
    assert "has no finished checkpoint" in cli_error(["export", str(unfinished), "--out", "m.onnx"], capsys)
    out = tmp_path / "m.onnx"
    assert "unknown export format 'tflite'" in cli_error(["export", str(run_dir), "--out", str(out), "--format",
                                                          "tflite"], capsys)
    assert "cannot tell the format" in cli_error(["export", str(run_dir), "--out", str(tmp_path / "m.bin")], capsys)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "a-file" in cli_error(["export", str(run_dir), "--out", str(blocker / "m.onnx")], capsys)
    assert "unknown head" in cli_error(["export", str(run_dir), "--out", str(out), "--head", "C"], capsys)
    assert "no such model file" in cli_error(["predict", str(tmp_path / "none.onnx"), "x.png"], capsys)
    assert "--threads must be" in cli_error(["predict", str(tmp_path / "none.onnx"), "x.png", "--threads", "-5"],
                                            capsys)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert "not an ONNX model" in cli_error(["predict", str(tmp_path / "junk.onnx"), "x.png"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "junk.onnx", "unfinished"]


def test_a_file_that_fails_its_check_is_not_written_nor_its_folder_left(tmp_path, monkeypatch):
    import iic.export.writer

    def mismatch(*_):
        raise IICError("the exported model does not compute what the PyTorch model does")

    monkeypatch.setattr(iic.export.writer, "check_export", mismatch)
    with pytest.raises(IICError, match="does not compute"):
        export(vector_module(), tmp_path / "new" / "deeper" / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_light_predict_refuses_inputs_of_the_wrong_shape(exported, tmp_path, capsys):
    np.save(tmp_path / "wide.npy", np.zeros((2, 6), dtype=np.float32))
    assert "5 features" in cli_error(["predict", str(exported["vectors"][1]), str(tmp_path / "wide.npy")], capsys)
    np.save(tmp_path / "short.npy", np.zeros((2, 12, 2), dtype=np.float32))
    assert "30 steps" in cli_error(["predict", str(exported["sequences"][1]), str(tmp_path / "short.npy")], capsys)
    np.save(tmp_path / "nan.npy", np.full((2, 5), np.nan, dtype=np.float32))
    assert "NaN" in cli_error(["predict", str(exported["vectors"][1]), str(tmp_path / "nan.npy")], capsys)
    np.save(tmp_path / "none.npy", np.zeros((0, 5), dtype=np.float32))
    assert "no inputs" in cli_error(["predict", str(exported["vectors"][1]), str(tmp_path / "none.npy")], capsys)
    np.save(tmp_path / "images.npy", np.zeros((2, 28, 28, 1), dtype=np.uint8))
    assert "not both" in cli_error(["predict", str(exported["clustering"][1]), str(tmp_path / "images.npy"),
                                    str(tmp_path)], capsys)
    assert not (Path.cwd() / "clusters.csv").exists()


def test_an_operator_the_exporter_lacks_is_named_in_one_line(tmp_path):
    class Eigen(torch.nn.Module):  # a backbone with an operation ONNX has no counterpart for
        def forward(self, images):
            x = images.float().flatten(2)
            return torch.linalg.eigvalsh(x @ x.transpose(1, 2)).softmax(dim=1)

    graph = Graph(Eigen(), "images", "probabilities", example_images(4, (8, 8), 3), {0: "batch"})
    with pytest.raises(IICError, match=r"cannot be exported: operator aten\.\w*eigh"):
        write_onnx(graph, tmp_path / "m.onnx")
