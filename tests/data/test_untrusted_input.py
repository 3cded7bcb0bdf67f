"""Untrusted files and values: whatever they hold, iic returns normally or raises IICError with one line — never
another exception, never a hang, never unbounded memory, and a checkpoint never runs code.

Property-based (Hypothesis) tests throw generated garbage at every reader of user files; the three attacks found by
hand (issue 23) are regression tests below them."""

import io
import os
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from iic.cli import main
from iic.clustering.config import ClusterConfig, validate_cluster_config
from iic.clustering.data import image_folder, npz_arrays
from iic.config import config_from_dict, read_yaml
from iic.data.images import load_image, load_label_map
from iic.engine.checkpoints import read_checkpoint
from iic.errors import IICError, brief
from iic.segmentation.config import SegmentConfig, validate_config
from iic.segmentation.data import FolderSource, load_npz_source

FIXTURES = Path(__file__).parents[1] / "fixtures" / "legacy_runs"
# Per example: a deadline (no hang) and few examples (the suite's time budget); fresh files in a fresh folder each.
FUZZ = settings(max_examples=25, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=12,
)


MEMORY_LIMIT = 64 * 2**20  # what reading any of these small generated inputs may allocate (Python and numpy)


def returns_or_one_line_error(call, *args, **kwargs):
    """Run ``call``; an IICError is fine if its message is one line (what the CLI prints), anything else fails, and
    so does allocating more than MEMORY_LIMIT on the way (traced: Python objects and numpy arrays)."""
    tracemalloc.start()
    try:
        return call(*args, **kwargs)
    except IICError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 2000, message
        return None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"{call.__name__} allocated {peak / 2**20:.0f} MiB"


def fresh_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / f"{time.perf_counter_ns()}-{name}"
    path.write_bytes(data)
    return path


# --- configs ------------------------------------------------------------------------------------------------------

@FUZZ
@given(key=st.sampled_from([f.name for f in ClusterConfig.__dataclass_fields__.values()] + ["unknown", "7"]),
       value=yaml_values)
def test_any_value_for_a_clustering_setting(key, value):
    config = returns_or_one_line_error(config_from_dict, ClusterConfig, {key: value})
    if config is not None:
        returns_or_one_line_error(validate_cluster_config, config)


@FUZZ
@given(key=st.sampled_from(list(SegmentConfig.__dataclass_fields__)), value=yaml_values)
def test_any_value_for_a_segmentation_setting(key, value):
    config = returns_or_one_line_error(config_from_dict, SegmentConfig, {key: value})
    if config is not None:
        returns_or_one_line_error(validate_config, config)


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_config_file(tmp_path, text):
    values = returns_or_one_line_error(read_yaml,
                                       fresh_file(tmp_path, "config.yaml", text.encode("utf-8", "surrogatepass")))
    if values is not None:
        returns_or_one_line_error(config_from_dict, ClusterConfig, values)


def test_brief_formats_a_bounded_prefix_of_any_value():
    bomb: list = ["lol"] * 9
    for _ in range(30):  # 9 ** 30 items if walked
        bomb = [bomb] * 9
    started = time.perf_counter()
    assert len(brief(bomb)) < 200 and len(brief("x" * 10**6)) < 100
    assert time.perf_counter() - started < 0.1


# --- data files ---------------------------------------------------------------------------------------------------

npz_arrays_strategy = st.dictionaries(
    st.sampled_from(["x_train", "y_train", "x_test", "y_test", "x_val", "y_val", "void_label", "class_names"]),
    hnp.arrays(st.sampled_from([np.uint8, np.int64, np.float32, np.bool_, np.int8]),
               hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)),
    max_size=5,
)


@FUZZ
@given(arrays=npz_arrays_strategy, damage=st.integers(min_value=-1, max_value=400))
def test_any_npz_file(tmp_path, arrays, damage):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = bytearray(buffer.getvalue())
    if 0 <= damage < len(data):  # one byte changed: a damaged archive or member
        data[damage] ^= 0xFF
    path = fresh_file(tmp_path, "data.npz", bytes(data))
    returns_or_one_line_error(npz_arrays, path)
    returns_or_one_line_error(load_npz_source, path, ("train",), None, None)
    returns_or_one_line_error(load_npz_source, path, ("train", "val"), 0, "0;1,2")


def image_bytes(mode: str, width: int, height: int, format: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.new(mode, (width, height))
    if mode in ("L", "P", "RGB", "RGBA"):
        channels = {"L": 1, "P": 1, "RGB": 3, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF" if mode in ("I", "F", "CMYK") else format)  # modes PNG cannot hold
    return buffer.getvalue()


image_files = st.one_of(
    st.binary(max_size=200),
    st.builds(image_bytes, st.sampled_from(["1", "L", "P", "RGB", "RGBA", "I", "F", "I;16", "CMYK"]),
              st.integers(1, 12), st.integers(1, 12), st.sampled_from(["PNG", "TIFF"]), st.integers(0, 99)),
).flatmap(lambda data: st.tuples(st.just(data), st.integers(-1, len(data) - 1)))


def damaged(data: bytes, position: int) -> bytes:
    if position < 0:
        return data
    return data[:position] + bytes([data[position] ^ 0x5A]) + data[position + 1:]


@FUZZ
@given(files=st.lists(image_files, min_size=0, max_size=3), channels=st.sampled_from([1, 3]),
       suffix=st.sampled_from([".png", ".tif", ".jpg"]))
def test_any_image_folder(tmp_path, files, channels, suffix):
    folder = tmp_path / f"folder{time.perf_counter_ns()}"
    folder.mkdir()
    for index, (data, position) in enumerate(files):
        (folder / f"{index}{suffix}").write_bytes(damaged(data, position))
    returns_or_one_line_error(image_folder, folder, channels, 8)
    returns_or_one_line_error(FolderSource, folder)


@FUZZ
@given(file=image_files)
def test_any_image_or_label_map_file(tmp_path, file):
    path = fresh_file(tmp_path, "image.png", damaged(*file))
    returns_or_one_line_error(load_image, path, 3, (8, 8))
    returns_or_one_line_error(load_label_map, path)


# --- checkpoints --------------------------------------------------------------------------------------------------

plain_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | hnp.arrays(np.float32, hnp.array_shapes(max_dims=2, max_side=3)).map(torch.from_numpy),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=10,
)
checkpoint_like = st.fixed_dictionaries(
    {}, optional={"state_dict": plain_values, "hyper_parameters": plain_values, "epoch": plain_values,
                  "loops": plain_values, "history": plain_values,  # as the segmentation checkpoints before 0.2 held
                  "task": st.sampled_from(["clustering", "segmentation"]) | plain_values},
)


@FUZZ
@given(content=checkpoint_like | plain_values, kind=st.sampled_from(["clustering", "segmentation"]))
def test_any_plain_checkpoint(tmp_path, content, kind):
    from iic.clustering import api
    from iic.segmentation.api import load as load_segmentation

    buffer = io.BytesIO()
    torch.save(content, buffer)
    path = fresh_file(tmp_path, "model.ckpt", buffer.getvalue())
    returns_or_one_line_error(read_checkpoint, path, kind)
    returns_or_one_line_error(api.load if kind == "clustering" else load_segmentation, path)


@FUZZ
@given(data=st.binary(max_size=300), legacy=st.sampled_from(["digits-legacy", "segment-legacy"]),
       position=st.integers(0, 10**6))
def test_any_damaged_checkpoint(tmp_path, data, legacy, position):
    good = (FIXTURES / legacy / "checkpoints" / "last.ckpt").read_bytes()
    position %= len(good)
    for content in (data, good[:position], good[:position] + data + good[position + len(data):]):
        path = fresh_file(tmp_path, "model.ckpt", content)
        returns_or_one_line_error(read_checkpoint, path, "clustering")
        returns_or_one_line_error(read_checkpoint, path, "segmentation")


def test_a_png_whose_chunk_length_claims_gigabytes_is_read_in_little_memory(tmp_path):
    """A 1×1 PNG with one damaged byte: its data chunk claims 1.5 GB, which PIL read from the file in one call
    (allocated first: 1,440 MiB traced). Found by the fuzzing above; iic decodes from memory."""
    png = bytearray(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x01\x00\x00\x00\x007n\xf9$"
                    b"\x00\x00\x00\x00IDAT\x00\x00")
    png[33] ^= 0x5A  # the IDAT chunk's length: 0x5A000000
    path = fresh_file(tmp_path, "damaged.png", bytes(png))
    returns_or_one_line_error(load_image, path, 3, (8, 8))  # within MEMORY_LIMIT
    returns_or_one_line_error(load_label_map, path)


def test_a_few_bytes_declaring_a_huge_pickled_string_are_refused_unread(tmp_path):
    """Not a zip archive: torch.load would read it as a bare pickle, whose string opcode's length field (here 2 GiB)
    is allocated before the read finds the file short. Found by the fuzzing below (5 bytes, 64 MiB)."""
    path = tmp_path / "tiny.ckpt"
    path.write_bytes(b"X\xff\xff\xff\x7f")
    returns_or_one_line_error(read_checkpoint, path, "clustering")  # one line, within MEMORY_LIMIT
    with pytest.raises(IICError, match="not the zip archive torch.save writes"):
        read_checkpoint(path, "clustering")


class RunsCode:
    """What an attacker pickles: loading it would run ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def malicious_checkpoint(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": RunsCode(marker)}}, path)
    with zipfile.ZipFile(path) as archive:  # the attack is real: an unrestricted load would run it
        assert any(b"system" in archive.read(name) for name in archive.namelist() if name.endswith(".pkl"))
    return path, marker


def test_a_malicious_checkpoint_is_refused_unread_everywhere_it_can_be_given(malicious_checkpoint, tmp_path):
    from iic.clustering import api
    from iic.engine.checkpoints import check_resumable, load_plain
    from iic.segmentation.api import load as load_segmentation

    path, marker = malicious_checkpoint
    for load in (api.load, load_segmentation, load_plain, lambda p: read_checkpoint(p, "clustering"),
                 lambda p: read_checkpoint(p, "segmentation")):
        with pytest.raises(IICError, match="holds Python objects.*system.*could run code"):
            load(path)
    # Resuming (the settings come from the run's config.yaml; the checkpoint is read before anything is trained):
    # a run of either task whose last.ckpt was replaced by the attack.
    for legacy, load in (("digits-legacy", api.load), ("segment-legacy", load_segmentation)):
        run = tmp_path / f"run-{legacy}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_bytes((FIXTURES / legacy / "config.yaml").read_bytes())
        (run / "checkpoints" / "last.ckpt").write_bytes(path.read_bytes())
        module = load(FIXTURES / legacy).module
        with pytest.raises(IICError, match="could run code"):
            check_resumable(module, run / "checkpoints" / "last.ckpt", 100)
    assert not marker.exists()


def iic_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iic", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # runs the iic command in a subprocess
def test_the_cli_refuses_a_malicious_checkpoint_in_one_line(malicious_checkpoint, tmp_path, capsys):
    path, marker = malicious_checkpoint
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    runs = []
    for legacy in ("digits-legacy", "segment-legacy"):  # runs whose last.ckpt was replaced by the attack
        run = tmp_path / legacy
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_bytes((FIXTURES / legacy / "config.yaml").read_bytes())
        (run / "checkpoints" / "last.ckpt").write_bytes(path.read_bytes())
        runs.append(run)
    for args in (["predict", str(path), "a.png"], ["segment", "predict", str(path), "a.png", "--out", "out"]):
        result = iic_command(*args, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("iic: error: ") and "could run code" in result.stderr
    for args in (["train", "--resume", str(runs[0]), "--epochs", "2", "--no-progress"],  # in this process: quicker
                 ["segment", "train", "--resume", str(runs[1]), "--epochs", "2", "--no-progress"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("iic: error: ") and err.count("\n") == 1 and "could run code" in err, err
    assert not marker.exists() and not (tmp_path / "clusters.csv").exists() and not (tmp_path / "out").exists()
    assert all(sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml"] for run in runs)


# An alias bomb: 10 YAML lines that expand to 9**10 strings. Under a fixed-length field it used to be formatted
# in full into the error message (4.4 GB and no end).
ALIAS_BOMB = ("jitter:\n  - &a [" + ",".join(['"lol"'] * 9) + "]\n"
              + "".join(f"  - &{b} [{','.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
              + "  - [" + ",".join(["*i"] * 9) + "]\n")


def test_an_alias_bomb_config_is_refused_quickly_in_little_memory(tmp_path):
    from iic.clustering.config import CLUSTER_PRESETS
    from iic.config import resolve_config

    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(IICError, match="jitter=.*expected 4 values"):
            resolve_config(ClusterConfig, CLUSTER_PRESETS, None, str(path), {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 5 and peak < 20 * 2**20


@pytest.mark.slow  # runs the iic command in a subprocess
def test_the_cli_refuses_an_alias_bomb_in_one_line_under_300_mb(tmp_path):
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    # A fresh process around the command, so that the peak is the command's own, not an earlier child's.
    measure = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run([sys.executable, '-m', 'iic', 'train', '--config', 'bomb.yaml'], "
               "capture_output=True, text=True); "
               "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t); "
               "print(r.stderr, end='')")
    result = subprocess.run([sys.executable, "-c", measure], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    status, peak_kib, seconds = result.stdout.splitlines()[0].split()
    assert status == "2" and result.stdout.count("\n") == 2 and "iic: error: config value jitter=" in result.stdout
    assert int(peak_kib) < 300 * 1024 and float(seconds) < 5, result.stdout
    assert not (tmp_path / "runs").exists()


def test_an_oversized_config_file_is_refused_unparsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("widths: [" + "1, " * 400_000 + "1]\n")
    with pytest.raises(IICError, match="larger than 1024 KiB"):
        read_yaml(path)


@pytest.mark.slow  # runs the iic command in a subprocess
def test_a_file_name_that_is_not_utf8_is_written_back_escaped(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in (b"caf\xe9.png", b"plain.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(os.path.join(bytes(images), name))
    result = iic_command("predict", str(FIXTURES / "digits-legacy"), "images", "--out", "clusters.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "clusters.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in rows] == ["path", "images/caf\\xe9.png", "images/plain.png"]
    for name in os.listdir(images):
        (images / name).unlink()
    (images / "\udcff.png").write_bytes(b"not an image")  # the name b"\xff.png", as Python spells it
    result = iic_command("predict", str(FIXTURES / "digits-legacy"), "images", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr == ("iic: error: cannot read image images/\\xff.png: "
                                                        "corrupt or not an image (UnidentifiedImageError)\n")
