"""Bad or unusual data files: corrupt archives, decompression bombs, sparse or partial labels, channels-first arrays."""

import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from iic.clustering.config import ClusterConfig
from iic.clustering.data import image_folder, images_from_array, load_cluster_data, npz_arrays
from iic.data.images import expand_image_paths, load_image, open_image
from iic.errors import IICError

SMALL = dict(image_size=8, crop_size=8, eval_crop_size=8, k_b=2, k_a=3)


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, 8, 8), dtype=np.uint8)


# --- files that are not .npz archives ------------------------------------------------------------------

def truncated_npz(path):
    whole = save_npz(path.with_name("whole.npz"), x_train=images(4)).read_bytes()
    path.write_bytes(whole[:200])


def corrupt_member(path):
    np.savez_compressed(path, x_train=images(40))
    data = bytearray(path.read_bytes())
    data[100:140] = bytes(b ^ 0xFF for b in data[100:140])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("hello, not an archive\n"), "is not an .npz archive"),
        (lambda p: p.write_bytes(b""), "is not an .npz archive"),
        (lambda p: p.write_bytes(b"PK\x03\x04garbage"), "BadZipFile"),
        (truncated_npz, "BadZipFile"),
        (corrupt_member, "cannot read"),
        (lambda p: np.save(p.with_suffix(".npy"), images(4)) or p.with_suffix(".npy").rename(p), "single .npy array"),
        (lambda p: np.savez(p, x_train=np.array([None] * 4, dtype=object)), "Object arrays"),
    ],
    ids=["text", "empty", "zip-magic-garbage", "truncated", "corrupt-member", "npy-renamed", "object-array"],
)
def test_unreadable_npz_is_one_clear_error(tmp_path, make, message):
    path = tmp_path / "data.npz"
    make(path)
    with pytest.raises(IICError, match=message) as info:
        npz_arrays(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_npy_file_given_as_data_path(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, images(4))
    with pytest.raises(IICError, match="single .npy array"):
        load_cluster_data(ClusterConfig(dataset="npz", data_path=str(path), **SMALL))


@pytest.mark.parametrize("name", ["renamed.npz", "array.npy"])
def test_cli_reports_an_unreadable_npz_in_one_line(tmp_path, capsys, name):
    from iic.cli import main

    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, images(4))
    else:
        path.write_bytes(b"PK\x03\x04 not really a zip")
    out = tmp_path / "runs"
    assert main(["train", "--dataset", "npz", "--data-path", str(path), "--out-dir", str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("iic: error:") and str(path) in lines[0] and not out.exists()


# --- decompression bombs -----------------------------------------------------------------------------

def test_image_over_the_pixel_limit_is_one_clear_error(tmp_path, monkeypatch):
    Image.new("1", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses images over twice this
    for read in (open_image, lambda p: load_image(p, 1, (8, 8)), lambda p: image_folder(p.parent, 1, 8)):
        with pytest.raises(IICError, match=r"cannot read image .*big\.png: too large") as info:
            read(tmp_path / "big.png")
        assert "\n" not in str(info.value)


# --- labels ------------------------------------------------------------------------------------------

def test_sparse_labels_become_consecutive_ids_shared_by_both_splits(tmp_path):
    path = save_npz(tmp_path / "sparse.npz", x_train=images(6), y_train=[0, 7, 10**9, 0, 7, 10**9],
                    x_test=images(3), y_test=[7, 7, 10**9])
    train, test = npz_arrays(path)
    assert train.labels.tolist() == [0, 1, 2, 0, 1, 2] and test.labels.tolist() == [1, 1, 2]
    assert train.num_classes == test.num_classes == 3
    data = load_cluster_data(ClusterConfig(dataset="npz", data_path=str(path), **SMALL))
    assert data.evaluation.num_classes == 3 and data.evaluation.labels.tolist() == [0, 1, 2, 0, 1, 2, 1, 1, 2]


def test_test_split_missing_a_class_still_counts_every_class(tmp_path):
    path = save_npz(tmp_path / "l.npz", x_train=images(4), y_train=[0, 1, 7, 7], x_test=images(2), y_test=[0, 7])
    data = load_cluster_data(ClusterConfig(dataset="npz", data_path=str(path), protocol="split", **SMALL))
    assert data.evaluation.labels.tolist() == [0, 2] and data.evaluation.num_classes == 3


def test_negative_labels_are_classes_too(tmp_path):
    path = save_npz(tmp_path / "pm.npz", x_train=images(5), y_train=[-1, 1, 1, -1, 1])  # a ±1 labelling: two classes
    train, _ = npz_arrays(path)
    assert train.labels.tolist() == [0, 1, 1, 0, 1] and train.num_classes == 2 and train.class_names == ["-1", "1"]


def test_float_labels_are_remapped_too(tmp_path):
    train, _ = npz_arrays(save_npz(tmp_path / "f.npz", x_train=images(3), y_train=np.array([2.0, 4.0, 2.0])))
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [0, 1, 0]


def test_a_column_of_labels_and_boolean_labels_are_read_as_classes(tmp_path):
    path = save_npz(tmp_path / "c.npz", x_train=images(3), y_train=np.array([[3], [5], [3]], np.uint8),
                    x_test=images(2), y_test=np.array([[5], [3]], np.uint8))
    train, test = npz_arrays(path)
    assert train.labels.tolist() == [0, 1, 0] and test.labels.tolist() == [1, 0] and train.class_names == ["3", "5"]
    train, _ = npz_arrays(save_npz(tmp_path / "b.npz", x_train=images(3), y_train=np.array([True, False, True])))
    assert train.labels.tolist() == [1, 0, 1] and train.num_classes == 2
    with pytest.raises(IICError, match=r"expected 3 labels, got shape \(3, 2\)"):
        npz_arrays(save_npz(tmp_path / "w.npz", x_train=images(3), y_train=np.zeros((3, 2), np.int64)))


@pytest.mark.parametrize("present, missing", [("train", "test"), ("test", "train")])
def test_labels_for_only_one_split_are_an_error(tmp_path, present, missing):
    path = save_npz(tmp_path / "partial.npz", x_train=images(4), x_test=images(2),
                    **{f"y_{present}": np.zeros(4 if present == "train" else 2, np.int64)})
    with pytest.raises(IICError, match=f"has y_{present} but no y_{missing}"):
        npz_arrays(path)


def test_unlabelled_npz_with_both_splits(tmp_path):
    train, test = npz_arrays(save_npz(tmp_path / "u.npz", x_train=images(4), x_test=images(2)))
    assert train.labels is None and test.labels is None and train.num_classes == 0


# --- channels-first arrays ---------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
def test_channels_first_npz_is_accepted(tmp_path, channels):
    x = np.random.default_rng(0).integers(0, 255, (400, channels, 8, 10), dtype=np.uint8)
    train, _ = npz_arrays(save_npz(tmp_path / "cf.npz", x_train=x))
    assert torch.equal(train.images, torch.from_numpy(x))


def test_channels_last_wins_when_both_readings_fit():
    x = np.arange(2 * 3 * 8 * 3, dtype=np.uint8).reshape(2, 3, 8, 3)  # 3×8 images with 3 channels, last axis
    assert torch.equal(images_from_array(x, "x"), torch.from_numpy(x.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("shape", [(400, 2, 8, 8), (400, 8, 8, 5), (4, 5, 8, 8, 1)])
def test_rejected_shapes_are_shown_as_given(tmp_path, shape):
    path = save_npz(tmp_path / "bad.npz", x_train=np.zeros(shape, np.uint8))
    with pytest.raises(IICError, match=f"got shape {re.escape(str(shape))}"):
        npz_arrays(path)


def test_image_between_the_warning_and_the_error_limit_is_refused_too(tmp_path, monkeypatch):
    Image.new("L", (40, 40)).save(tmp_path / "big.png")  # 1600 pixels: PIL only warns (a line on stderr) below 2000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(IICError, match=r"cannot read image .*big\.png: too large"):
        load_image(tmp_path / "big.png", 1, (8, 8))


@pytest.mark.filterwarnings("error")
def test_palette_image_with_transparency_bytes_loads_without_a_warning(tmp_path):
    palette = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).convert("P")
    palette.save(tmp_path / "p.png", transparency=bytes([0, 10, 20, 255]))
    assert load_image(tmp_path / "p.png", 3, (8, 8)).shape == (8, 8, 3)
    assert load_image(tmp_path / "p.png", 1).shape == (8, 8, 1)


def test_a_photo_stored_sideways_is_read_as_shown_except_beside_label_maps(tmp_path):
    stored = np.zeros((20, 60, 3), np.uint8)
    stored[:, :10] = 255  # a white band at the stored image's left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: shown turned 90° clockwise
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = load_image(tmp_path / "phone.jpg", 3)
    assert shown.shape == (60, 20, 3) and shown[:10].mean() > 200 and shown[-10:].mean() < 50  # the band on top
    assert load_image(tmp_path / "phone.jpg", 3, upright=False).shape == (20, 60, 3)


def test_a_photo_with_damaged_exif_data_loads_without_a_warning(tmp_path, recwarn):
    stored = np.zeros((20, 60, 3), np.uint8)
    stored[:, :10] = 255
    # An EXIF block whose orientation tag (6) is intact but whose directory is cut short: PIL warns "Corrupt EXIF data".
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00" + b"\x99" * 9
    Image.fromarray(stored).save(tmp_path / "damaged.jpg", exif=exif, quality=95)
    with pytest.warns(UserWarning, match="Corrupt EXIF"):
        Image.open(tmp_path / "damaged.jpg").close()
    recwarn.clear()
    assert load_image(tmp_path / "damaged.jpg", 3).shape == (60, 20, 3)
    assert load_image(tmp_path / "damaged.jpg", 1, upright=False).shape == (20, 60, 1)
    assert not recwarn.list


def test_an_image_whose_exif_block_cannot_be_parsed_is_read_as_stored(tmp_path, recwarn):
    stored = np.zeros((20, 60, 3), np.uint8)
    Image.fromarray(stored).save(tmp_path / "garbled.png", exif=b"Exif\x00\x00garbage, not a TIFF header")
    with pytest.raises(SyntaxError):  # what PIL does with it
        ImageOps.exif_transpose(open_image(tmp_path / "garbled.png"))
    assert load_image(tmp_path / "garbled.png", 3).shape == (20, 60, 3)
    assert not recwarn.list


def test_sixteen_bit_greyscale_is_scaled_over_its_full_range(tmp_path):
    Image.fromarray(np.array([[0, 65535], [100 * 257, 30000]], np.uint16)).save(tmp_path / "deep.png")
    assert open_image(tmp_path / "deep.png").mode == "I;16"
    assert load_image(tmp_path / "deep.png", 1)[..., 0].tolist() == [[0, 255], [100, 117]]
    assert load_image(tmp_path / "deep.png", 3).shape == (2, 2, 3)
    maxval_4095 = np.array([[0, 4095], [2047, 1000]], ">u2")  # PIL scales PGM values to 0–65535 by their maximum
    (tmp_path / "deep.pgm").write_bytes(b"P5\n2 2\n4095\n" + maxval_4095.tobytes())
    assert load_image(tmp_path / "deep.pgm", 1)[..., 0].tolist() == [[0, 255], [127, 62]]


@pytest.mark.parametrize("make, mode", [
    (lambda: Image.fromarray(np.zeros((4, 4), np.float32)), "F"),
    (lambda: Image.fromarray(np.zeros((4, 4), np.int32)), "I"),
    (lambda: Image.frombytes("LAB", (4, 4), bytes(48)), "LAB"),  # PIL's LAB→RGB is no colour conversion
])
def test_float_32_bit_and_lab_images_are_refused_naming_their_mode(tmp_path, make, mode):
    make().save(tmp_path / "odd.tif")
    with pytest.raises(IICError, match=f"unsupported image mode '{mode}' in .*odd.tif"):
        load_image(tmp_path / "odd.tif", 3)


def test_a_search_of_sub_folders_follows_linked_folders_once(tmp_path):
    for name in ("real", "elsewhere"):
        (tmp_path / name).mkdir()
        Image.new("L", (4, 4)).save(tmp_path / name / f"{name}.png")
    (tmp_path / "real" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real")  # a link back up the tree
    (tmp_path / "real" / ".hidden").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "real" / ".hidden" / "skipped.png")
    found = expand_image_paths([tmp_path / "real"], recursive=True)
    assert [p.name for p in found] == ["elsewhere.png", "real.png"]
    assert [p.name for p in expand_image_paths([tmp_path / "real"])] == ["real.png"]


def test_class_folders_are_read_with_their_sub_folders_and_a_zips_macosx_folder_is_no_class(tmp_path):
    for path in ("cat/indoor/a.png", "cat/b.png", "dog/c.png", "__MACOSX/cat/._b.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(tmp_path / path)
    data = image_folder(tmp_path, channels=1, size=8)
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [0, 0, 1]


def test_test_labels_without_test_images_and_a_folder_for_an_npz_are_errors(tmp_path):
    path = save_npz(tmp_path / "half.npz", x_train=images(4), y_train=np.arange(4), y_test=np.arange(2))
    with pytest.raises(IICError, match="has y_test but no x_test"):
        npz_arrays(path)
    with pytest.raises(IICError, match="is a directory: give an .npz file"):
        npz_arrays(tmp_path)


def test_whole_numbers_are_pixel_values_whatever_their_type():
    zeros_and_ones = np.tile([0, 1], (2, 4, 2))  # 2 × 4 × 4, int64
    assert torch.equal(images_from_array(zeros_and_ones, "x"), images_from_array(zeros_and_ones.astype(np.uint8), "x"))
    assert images_from_array(zeros_and_ones.astype(np.float32), "x").max() == 255  # floats in [0, 1] are scaled
    with pytest.raises(IICError, match=r"pixel values must lie in \[0, 255\], got \[0, 256\]"):
        images_from_array(zeros_and_ones * 256, "x")


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 0, 8), np.uint8), "images have no pixels"),
    (np.zeros((4, 8, 0, 3), np.uint8), "images have no pixels"),
    (np.ones((4, 8, 8), np.complex64), "images must be real numbers"),
])
def test_pixelless_or_complex_images_are_one_clear_error(array, message):
    with pytest.raises(IICError, match=message):
        images_from_array(array, "x")


@pytest.mark.parametrize("labels", [np.array([1e30, 0.0, 1.0, 0.0]), np.array([2**64 - 1, 0, 1, 0], dtype=np.uint64)])
def test_labels_outside_the_int64_range_are_refused(tmp_path, labels):
    path = save_npz(tmp_path / "big.npz", x_train=images(4), y_train=labels)
    with pytest.raises(IICError, match="int64 range"):
        npz_arrays(path)
