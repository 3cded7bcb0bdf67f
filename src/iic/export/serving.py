"""Serving an exported ``.onnx`` model with ONNX Runtime, numpy and Pillow only: neither torch nor Lightning is
imported (``iic predict model.onnx …`` comes here before anything else loads).

Inputs by what the file takes (its metadata says): images (files or folders, or an .npy/.npz of uint8 N × H × W × C)
for image models; .npy/.npz/.csv rows for vector models; .npy/.npz (``x``: N × T × C) for sequence models."""

import argparse
import colorsys
import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from iic.errors import ESCAPE, IICError

METADATA_KEY = "iic"  # as iic.export.writer writes it


class OnnxModel:
    """An exported iic model: ``metadata`` (task, k, class names, input), ``run(batch)`` (the file's output) and
    ``predict_proba`` / ``predict`` for probability models."""

    def __init__(self, path: str | Path, threads: int = 0):
        try:
            import onnxruntime
        except ImportError:
            raise IICError("serving an .onnx model needs onnxruntime: pip install onnxruntime") from None
        path = Path(path).expanduser()
        if not path.is_file():
            raise IICError(f"no such model file: {path}")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a damaged file
            raise IICError(f"{path} is damaged or not an ONNX model ({str(exc).splitlines()[0][:160]})") from None
        entry = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if entry is None:
            raise IICError(f"{path} is an ONNX model, but not one iic exported (no iic metadata)")
        self.metadata: dict[str, Any] = json.loads(entry)
        self.path = path
        self.input_name = self.session.get_inputs()[0].name

    @property
    def task(self) -> str:
        return self.metadata["task"]

    def run(self, batch: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The file's output for a batch of its input, ``batch_size`` at a time."""
        spec = self.metadata["input"]
        batch = np.ascontiguousarray(batch, dtype=np.dtype(spec["dtype"]))
        if len(batch) == 0:
            raise IICError("no inputs to predict: the files hold no rows")
        return np.concatenate([self.session.run(None, {self.input_name: batch[start:start + batch_size]})[0]
                               for start in range(0, len(batch), batch_size)])

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        if self.metadata["output_name"] != "probabilities":
            raise IICError(f"this {self.task} model gives labels, not probabilities: use predict")
        return self.run(batch)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Cluster (or class) ids: N, N × T per step, or N × H × W label maps."""
        out = self.run(batch)
        return out if self.metadata["output_name"] == "labels" else out.argmax(axis=1)

    # --- reading inputs ------------------------------------------------------------------------------------

    def read_inputs(self, paths: list[str]) -> tuple[list[Any], list[np.ndarray] | np.ndarray]:
        """Names for the outputs' rows (image paths; (file, row) of arrays) and the batch (or, for segmentation, one
        image per entry) of ``paths``."""
        spec = self.metadata["input"]
        if spec["dtype"] == "uint8":  # images
            arrays = [Path(p) for p in paths if Path(p).suffix.lower() in (".npy", ".npz")]
            if arrays and len(arrays) < len(paths):
                raise IICError("give image files and folders, or .npy/.npz arrays of images, not both")
            if arrays:
                names, batch = self.read_arrays(arrays, "images")
                return names, check_images(batch, spec)
            from iic.data.images import expand_image_paths, load_image

            files = expand_image_paths(paths, recursive=True)
            size = (spec["height"], spec["width"]) if spec["height"] else None
            images = [load_image(f, spec["channels"], size) for f in files]
            return [str(f) for f in files], images if size is None else np.stack(images)
        if self.task == "vectors":
            names, batch = self.read_arrays([Path(p) for p in paths], "vectors")
            if batch.ndim != 2 or batch.shape[1] != spec["features"]:
                raise IICError(f"expected rows of {spec['features']} features (as in training), got shape "
                               f"{batch.shape}")
            return names, batch
        names, batch = self.read_arrays([Path(p) for p in paths], "series")
        if batch.ndim == 2 and spec["channels"] == 1:
            batch = batch[..., None]
        if batch.ndim != 3 or batch.shape[2] != spec["channels"]:
            raise IICError(f"expected series N × T × {spec['channels']}, got shape {batch.shape}")
        if spec["steps"] and batch.shape[1] != spec["steps"]:
            raise IICError(f"this model takes series of {spec['steps']} steps (the training length), got "
                           f"{batch.shape[1]}: resample them, or predict with the PyTorch model (iic predict RUN)")
        return names, batch

    def read_arrays(self, paths: list[Path], what: str) -> tuple[list[tuple[str, int]], np.ndarray]:
        """Rows of .npy, .npz (its ``x``, or its one array) or, for vectors, .csv files (numeric columns; a header
        naming the training features picks them by name)."""
        names, parts = [], []
        for path in paths:
            if not path.is_file():
                raise IICError(f"no such file: {path}")
            suffix = path.suffix.lower()
            try:
                if suffix == ".npy":
                    array = np.load(path, allow_pickle=False)
                elif suffix == ".npz":
                    with np.load(path, allow_pickle=False) as archive:
                        keys = list(archive.keys())
                        key = "x" if "x" in keys else keys[0] if len(keys) == 1 else None
                        if key is None:
                            raise IICError(f"{path}: give the {what} as the array 'x' (it holds {', '.join(keys)})")
                        array = archive[key]
                elif suffix == ".csv" and what == "vectors":
                    array = self.read_csv(path)
                else:
                    kinds = ".npy, .npz or .csv" if what == "vectors" else ".npy or .npz"
                    raise IICError(f"{path}: {what} are read from {kinds} files")
            except (OSError, ValueError, EOFError, csv.Error, zipfile.BadZipFile) as exc:
                raise IICError(f"{path} is damaged or not a {suffix} file ({exc.__class__.__name__})") from None
            if array.ndim == 0:
                raise IICError(f"{path}: expected an array of {what}, got a single value")
            if array.dtype == object or not np.issubdtype(array.dtype, np.number):
                raise IICError(f"{path}: the {what} must be numbers, got {array.dtype}")
            if what != "images" and not np.isfinite(array).all():
                raise IICError(f"{path}: the {what} hold NaN or infinite values")
            names += [(str(path), index) for index in range(len(array))]
            parts.append(array)
        shapes = {part.shape[1:] for part in parts}
        if len(shapes) > 1:
            raise IICError(f"the files hold {what} of different shapes: {sorted(shapes)}")
        return names, np.concatenate(parts)

    def read_csv(self, path: Path) -> np.ndarray:
        wanted = self.metadata["input"].get("feature_names")
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if not rows:
            raise IICError(f"{path} is empty")
        header, body = rows[0], rows[1:]
        if wanted and set(wanted) <= set(header):
            columns = [header.index(name) for name in wanted]
        else:
            try:
                [float(value) for value in header]
                body = rows  # no header: the first row is data
            except ValueError:
                pass
            columns = list(range(len(body[0]) if body else 0))
        try:
            return np.array([[float(row[c]) for c in columns] for row in body], dtype=np.float32)
        except (ValueError, IndexError):
            raise IICError(f"{path}: every row must hold the model's {len(columns)} numeric features") from None


def check_images(batch: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    if batch.ndim == 3 and spec["channels"] == 1:
        batch = batch[..., None]
    expected = (spec["height"], spec["width"], spec["channels"])
    if batch.ndim != 4 or any(e is not None and e != g for e, g in zip(expected, batch.shape[1:])):
        shown = "×".join(str(e) if e is not None else name for e, name in zip(expected, "HWC"))
        raise IICError(f"images must be uint8 N×{shown}, got shape {batch.shape}")
    if batch.dtype != np.uint8:
        raise IICError(f"images must be uint8, got {batch.dtype}")
    return batch


# --- outputs -----------------------------------------------------------------------------------------------------

def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    from iic.data.images import atomic_write_bytes

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8", ESCAPE))


def label_palette(count: int) -> list[int]:
    """A flat 256-colour PNG palette: distinct hues (golden-ratio steps) for the first ``count`` ids."""
    colours = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95) for i in range(min(count, 256))]
    flat = [round(c * 255) for rgb in colours for c in rgb]
    return flat + [0] * (768 - len(flat))


def predict_files(model: OnnxModel, inputs: list[str], out: Path) -> str:
    """Predict ``inputs`` and write the outputs (a CSV; segmentation: a folder of label PNGs); a summary line."""
    from iic.data.images import check_writable

    meta = model.metadata
    segmenting = meta["output_name"] == "labels"
    check_writable(out, "folder" if segmenting else "file")
    names, batch = model.read_inputs(inputs)
    class_names = meta.get("class_names") if meta["task"] == "finetuning" else None
    if segmenting:
        return write_label_maps(model, names, batch, out)
    probs = model.run(batch)
    ids, confidence = probs.argmax(axis=1), probs.max(axis=1)
    if meta["input"]["dtype"] == "uint8":  # images: as iic predict of a run writes them
        label = "class" if class_names else "cluster"
        paths = [name if isinstance(name, str) else f"{name[0]}:{name[1]}" for name in names]
        write_csv(out, ["path", label, "probability"],
                  [[path, class_names[c] if class_names else int(c), f"{p:.4f}"]
                   for path, c, p in zip(paths, ids, confidence)])
    elif meta["task"] == "vectors":
        write_csv(out, ["file", "row", "cluster", "probability"],
                  [[*name, int(c), f"{p:.4f}"] for name, c, p in zip(names, ids, confidence)])
    else:  # series: their index (with several files, file:index)
        series = [row if len(inputs) == 1 else f"{file}:{row}" for file, row in names]
        if probs.ndim == 3:  # per step: N × k × T
            write_csv(out, ["series", "step", "cluster", "probability"],
                      [[name, step, int(ids[i, step]), f"{confidence[i, step]:.4f}"]
                       for i, name in enumerate(series) for step in range(ids.shape[1])])
            return f"{len(names)} series × {ids.shape[1]} steps → {out}"
        write_csv(out, ["series", "cluster", "probability"],
                  [[name, int(c), f"{p:.4f}"] for name, c, p in zip(series, ids, confidence)])
    sizes = np.bincount(ids, minlength=probs.shape[1]).tolist()
    kind = "class" if class_names else "cluster"
    return f"{len(names)} input{'' if len(names) == 1 else 's'} → {out} ({kind} sizes {sizes})"


def write_label_maps(model: OnnxModel, names: list[str], images: list[np.ndarray] | np.ndarray, out: Path) -> str:
    """Per image ``<stem>_labels.png``: a palette PNG of its class (or cluster) ids; everything is segmented before
    anything is written."""
    from PIL import Image

    from iic.data.images import save_png

    palette = label_palette(max(model.metadata["k"], len(model.metadata.get("class_names") or [])))
    maps = [model.run(np.asarray(image)[None])[0] for image in images]
    stems = [Path(name).stem if isinstance(name, str) else f"{Path(name[0]).stem}_{name[1]}" for name in names]
    stems = [stem if stems.count(stem) == 1 else f"{stem}_{i}" for i, stem in enumerate(stems)]
    out.mkdir(parents=True, exist_ok=True)
    for stem, labels in zip(stems, maps):
        picture = Image.fromarray(np.clip(labels, 0, 255).astype(np.uint8), mode="P")
        picture.putpalette(palette)
        save_png(out / f"{stem}_labels.png", picture)
    return f"{len(maps)} image{'' if len(maps) == 1 else 's'} → {out}/ (label PNGs, {model.metadata['labels']} ids)"


def predict_command(argv: list[str]) -> int:
    """``iic predict MODEL.onnx INPUTS… --out FILE``: the light path, before the CLI imports anything heavy."""
    parser = argparse.ArgumentParser(prog="iic predict", description="Predict with an exported .onnx model "
                                     "(ONNX Runtime, numpy and Pillow only).")
    parser.add_argument("model", help="a .onnx file written by iic export")
    parser.add_argument("inputs", nargs="+", help="image files or folders, or .npy/.npz (and for vectors .csv) files")
    parser.add_argument("--out", default=None, help="the CSV to write (default clusters.csv); for a segmenter, the "
                                                    "folder of label PNGs (default predictions/)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime's threads (0: its default)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        raise IICError(f"--threads must be 0 (ONNX Runtime's default) or more, got {args.threads}")
    model = OnnxModel(args.model, args.threads)
    out = Path(args.out or ("predictions" if model.metadata["output_name"] == "labels" else "clusters.csv"))
    print(f"iic predict: {predict_files(model, args.inputs, out)}")
    return 0
