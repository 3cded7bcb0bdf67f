"""Writing an exported model: ONNX through PyTorch's exporter (``torch.onnx.export(dynamo=True)``) or a
``torch.export`` program (``.pt2``), with the run's metadata inside, checked against the PyTorch model before the file
appears (ONNX Runtime runs the ``.onnx``). A file that does not compute what the model computes is an error."""

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iic.errors import IICError
from iic.export import FORMATS
from iic.export.graphs import Graph, example_images, task_graph

TOLERANCE = 1e-4  # on probabilities; ids must agree wherever PyTorch's top two are further apart than this
METADATA_KEY = "iic"  # the ONNX metadata entry (and the .pt2 extra file "iic.json") holding the metadata as JSON


def export_format(out: Path, format: str | None) -> str:
    """``format``, or the one ``out``'s suffix names; one error for anything else."""
    if format is None:
        format = out.suffix.lower().lstrip(".")
        if format not in FORMATS:
            raise IICError(f"cannot tell the format from {out.name!r}: give --format onnx or pt2 (or an .onnx or "
                           f".pt2 file name)")
    if format not in FORMATS:
        raise IICError(f"unknown export format {format!r}: use {' or '.join(FORMATS)}")
    return format


def iic_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("iic")
    except PackageNotFoundError:  # run from a source tree
        import iic

        return iic.__version__


def export_module(module, out: str | os.PathLike, format: str | None = None, head: str = "B",
                  checkpoint: Path | None = None) -> dict[str, Any]:
    """Export a trained module (any task) to ``out`` and check it; returns the file's metadata, with the check's
    largest differences under ``"checked"``. Nothing is written unless the check passes."""
    from iic.data.images import check_writable

    out = Path(out).expanduser()
    format = export_format(out, format)
    check_writable(out)
    module = module.cpu().eval()
    graph = task_graph(module, head)
    graph.metadata.update(format=format, iic_version=iic_version(), torch_version=torch.__version__,
                          exported=time.strftime("%Y-%m-%dT%H:%M:%S%z"), input_name=graph.input_name,
                          output_name=graph.output_name,
                          dynamic={graph.input_name: list(graph.dynamic.values())})
    if checkpoint is not None:
        checkpoint = Path(checkpoint).resolve()
        run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
        graph.metadata.update(run=str(run_dir), checkpoint=str(checkpoint))
    reference = reference_of(module, graph, head)
    created = first_missing(out.parent)  # folders made for the file are removed again if the export fails
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as scratch:
            tmp = Path(scratch) / f"model.{format}"
            with torch.no_grad():
                run = write_onnx(graph, tmp) if format == "onnx" else write_pt2(graph, tmp)
            graph.metadata["checked"] = check_export(graph, run, reference)
            if format == "onnx":
                finish_onnx(tmp, graph.metadata, graph.dynamic)
            else:
                set_pt2_metadata(tmp, graph.metadata)
            os.replace(tmp, out)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return graph.metadata


def first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its ancestors that does not exist yet (None: it exists)."""
    missing = None
    while not folder.exists():
        missing, folder = folder, folder.parent
    return missing


def dynamic_shapes(graph: Graph) -> tuple[dict[int, Any]]:
    return ({dim: torch.export.Dim.AUTO for dim in graph.dynamic},)


def exporter_error(exc: Exception) -> IICError:
    """One line for a model PyTorch cannot export, naming the operator where the exporter's message does."""
    import re

    text = f"{exc.__class__.__name__}: {exc}"
    found = re.search(r"(aten::[\w.]+|aten\.[\w.]+|torch\.ops\.[\w.]+|operator [\w.:]+)", text)
    line = next((part.strip() for part in str(exc).splitlines() if part.strip()), exc.__class__.__name__)
    what = f"operator {found.group(1)}" if found else line[:200]
    return IICError(f"this model cannot be exported: {what}")


def write_onnx(graph: Graph, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The graph as ONNX at ``path``; returns a function that runs the file with ONNX Runtime."""
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so before it fails deeper)
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise IICError(f"export to ONNX needs onnx, onnxscript and onnxruntime ({exc.name} is missing): "
                       f"pip install 'iic[onnx]'") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph.model, (graph.example,), dynamo=True, verbose=False,
                                        input_names=[graph.input_name], output_names=[graph.output_name],
                                        dynamic_shapes=dynamic_shapes(graph), optimize=True)
    except Exception as exc:  # the exporter's errors come in many types
        raise exporter_error(exc) from None
    program.save(str(path))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {graph.input_name: x})[0]


def finish_onnx(path: Path, metadata: dict[str, Any], dynamic: dict[int, str]) -> None:
    """The checked file's last touches, in one read and write: the names users read on its free input dimensions
    (batch, height, width, steps; the exporter's are s0, s1, …) and the metadata entry."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    renames = {dims[index].dim_param: name for index, name in dynamic.items() if dims[index].dim_param}
    for value in [*model.graph.input, *model.graph.output]:
        for dimension in value.type.tensor_type.shape.dim:
            if dimension.dim_param in renames:
                dimension.dim_param = renames[dimension.dim_param]
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    model.doc_string = f"iic {metadata['task']} model: {metadata.get('run', 'trained in Python')}"
    onnx.save(model, str(path))


def write_pt2(graph: Graph, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The graph as a ``torch.export`` program at ``path`` (metadata as the extra file iic.json); returns a function
    that runs the loaded file."""
    try:
        program = torch.export.export(graph.model, (graph.example,), dynamic_shapes=dynamic_shapes(graph))
    except Exception as exc:
        raise exporter_error(exc) from None
    set_pt2_metadata(path, graph.metadata, program)
    loaded = torch.export.load(str(path)).module()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return loaded(torch.from_numpy(x)).numpy()
    return run


def set_pt2_metadata(path: Path, metadata: dict[str, Any], program=None) -> None:
    """Save ``program`` (default: the one at ``path``) with the metadata as its extra file iic.json."""
    program = program if program is not None else torch.export.load(str(path))
    with warnings.catch_warnings():  # its weights packer notes, on every CPU model, that they are on the CPU
        warnings.simplefilter("ignore", UserWarning)
        torch.export.save(program, str(path), extra_files={f"{METADATA_KEY}.json": json.dumps(metadata)})


def reference_of(module, graph: Graph, head: str) -> Callable[[torch.Tensor], np.ndarray]:
    """What the PyTorch model's own prediction path gives for a batch of the graph's inputs."""
    task = module.task_name
    if task == "clustering":
        return lambda x: module.predict_probs(x.permute(0, 3, 1, 2), head=head).numpy()
    if task == "finetuning":
        return lambda x: module.predict_probs(x.permute(0, 3, 1, 2)).numpy()
    if task == "vectors":
        if module.backbone is not None:
            return lambda x: module.predict_probs(module.image_features(x.permute(0, 3, 1, 2)), head=head).numpy()
        return lambda x: module.predict_probs(x, head=head).numpy()
    if task == "sequences":
        return lambda x: module.predict_probs(x, torch.full((len(x),), x.shape[1]), head=head).numpy()
    from iic.segmentation.outputs import segment_images

    return lambda x: np.stack(segment_images(module, list(x.numpy()), module.config.scale))


def check_batches(graph: Graph) -> list[torch.Tensor]:
    """The fixed batch, one sample, and (segmentation, steps) other sizes than the example's."""
    x = graph.example
    batches = [x, x[:1], torch.cat([x, x.flip(0), x])[:11]]
    if "height" in graph.dynamic.values():
        h, w = x.shape[1:3]
        batches.append(example_images(2, (h + 13, w - 7), x.shape[3], seed=1))
    if "steps" in graph.dynamic.values():
        batches.append(torch.cat([x, x[:, : x.shape[1] // 2]], dim=1))
    return batches


def check_export(graph: Graph, run: Callable[[np.ndarray], np.ndarray],
                 reference: Callable[[torch.Tensor], np.ndarray]) -> dict[str, Any]:
    """Run the exported file on ``check_batches`` and compare with the PyTorch model; an error on a mismatch."""
    worst, disagree = 0.0, 0
    batches = check_batches(graph)
    for batch in batches:
        expected = reference(batch)
        try:
            got = run(np.ascontiguousarray(batch.numpy()))
        except Exception as exc:
            raise IICError(f"the exported model failed on a batch of shape {tuple(batch.shape)}: "
                           f"{str(exc).splitlines()[0][:200]}") from None
        if got.shape != expected.shape:
            raise IICError(f"the exported model gave an output of shape {got.shape} for a batch of shape "
                           f"{tuple(batch.shape)}, the PyTorch model {expected.shape}")
        if graph.output_name == "labels":
            disagree = max(disagree, int((got != expected).sum()))
            continue
        worst = max(worst, float(np.abs(got - expected).max()))
        top2 = np.sort(expected, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > TOLERANCE  # ids of near-ties may flip within the tolerance
        disagree = max(disagree, int(((got.argmax(axis=1) != expected.argmax(axis=1)) & clear).sum()))
    if worst > TOLERANCE or disagree:
        raise IICError(f"the exported model does not compute what the PyTorch model does (largest difference in "
                       f"probabilities {worst:.2g}, tolerance {TOLERANCE:g}; {disagree} ids differ): not written")
    return {"batches": len(batches), "max_abs_difference": worst, "ids_differing": disagree}
