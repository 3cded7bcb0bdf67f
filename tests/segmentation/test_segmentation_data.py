"""Each reader on tiny fixtures written in the dataset's real on-disk format."""

import numpy as np
import pytest
import scipy.io
from PIL import Image

from iic.errors import IICError
from iic.segmentation.data import (
    IGNORE,
    CocoStuffSource,
    EvaluationImages,
    FolderSource,
    PotsdamSource,
    TrainingCrops,
    demo_source,
    load_npz_source,
    meets_curation_rule,
)

# ------------------------------------------------------------------ Potsdam (the authors' preprocessed .mat tiles)

def write_potsdam(root, labelled=("t0", "t1"), unlabelled=("u0",), size=20):
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    (root / "gt").mkdir()
    for tile in labelled + unlabelled:
        scipy.io.savemat(root / "imgs" / f"{tile}.mat", {"img": rng.integers(0, 256, (size, size, 4), dtype=np.uint8)})
    for tile in labelled:
        gt = (np.arange(size * size).reshape(size, size) % 6).astype(np.int32)
        scipy.io.savemat(root / "gt" / f"{tile}.mat", {"gt": gt})
    (root / "labelled_train.txt").write_text("\n".join(labelled) + "\n")
    (root / "unlabelled_train.txt").write_text("\n".join(unlabelled) + "\n")
    (root / "labelled_test.txt").write_text(labelled[0] + "\n")


def test_potsdam_reads_tiles_labels_and_coarse_merge(tmp_path):
    write_potsdam(tmp_path)
    fine = PotsdamSource(tmp_path, ("labelled_train",), coarse=False)
    image, label = fine[0]
    assert image.shape == (20, 20, 4) and image.dtype == np.uint8
    assert fine.extra_channels == 1 and fine.num_classes == 6
    assert set(np.unique(label)) == set(range(6))
    coarse = PotsdamSource(tmp_path, ("labelled_train",), coarse=True)
    _, merged = coarse[0]
    # roads+cars → 0, buildings+clutter → 1, low vegetation+trees → 2
    np.testing.assert_array_equal(merged, np.array([0, 1, 2, 2, 0, 1])[label])
    assert coarse.num_classes == 3


def test_potsdam_unlabelled_tiles_and_missing_labels(tmp_path):
    write_potsdam(tmp_path)
    everything = PotsdamSource(tmp_path, ("unlabelled_train", "labelled_train", "labelled_test"), coarse=True)
    assert len(everything) == 4
    assert everything[0][1] is None  # u0 has no gt
    with pytest.raises(IICError, match="has no label map"):
        PotsdamSource(tmp_path, ("unlabelled_train",), coarse=True, require_labels=True)


def test_potsdam_label_size_mismatch_is_an_error(tmp_path):
    write_potsdam(tmp_path)
    scipy.io.savemat(tmp_path / "gt" / "t1.mat", {"gt": np.zeros((10, 20), dtype=np.int32)})
    source = PotsdamSource(tmp_path, ("labelled_train",), coarse=False)
    with pytest.raises(IICError, match="label map is 10×20 but the image is 20×20"):
        source[1]


def test_potsdam_missing_list_or_tile(tmp_path):
    write_potsdam(tmp_path)
    with pytest.raises(IICError, match="missing image list"):
        PotsdamSource(tmp_path, ("nonexistent",), coarse=True)
    (tmp_path / "imgs" / "t1.mat").unlink()
    with pytest.raises(IICError, match="listed but missing"):
        PotsdamSource(tmp_path, ("labelled_train",), coarse=True)


# ------------------------------------------------------------------ COCO-Stuff 164k (jpg + fine-id png + curated list)

SKY, TREE, ROAD, WALL, PERSON = 156, 168, 148, 171, 0  # fine ids: sky-other, tree, road, wall-concrete, person


def write_coco_image(root, split, image_id, fine, seed=0):
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, fine.shape + (3,), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "images" / split / f"{image_id}.jpg")
    Image.fromarray(fine.astype(np.uint8), mode="L").save(root / "annotations" / split / f"{image_id}.png")


def test_cocostuff3_maps_fine_ids_and_masks_things_and_unlabelled(tmp_path):
    fine = np.array([[SKY, TREE, ROAD], [WALL, PERSON, 255]])
    write_coco_image(tmp_path, "train2017", "000000000001", fine)
    (tmp_path / "curated" / "train2017").mkdir(parents=True)
    (tmp_path / "curated" / "train2017" / "Coco164kFew_Stuff_6.txt").write_text("000000000001\n")
    source = CocoStuffSource(tmp_path, ("train2017",), num_classes=3, curated_version=6)
    image, label = source[0]
    assert image.shape == (2, 3, 3)
    assert source.class_names == ["sky", "plant", "ground"]
    np.testing.assert_array_equal(label, [[0, 1, 2], [IGNORE, IGNORE, IGNORE]])


def test_cocostuff15_keeps_stuff_classes_only(tmp_path):
    fine = np.array([[SKY, TREE, ROAD], [WALL, PERSON, 255]])
    write_coco_image(tmp_path, "val2017", "000000000002", fine)
    (tmp_path / "curated" / "val2017").mkdir(parents=True)
    (tmp_path / "curated" / "val2017" / "Coco164kFull_Stuff_Coarse_7.txt").write_text("000000000002\n")
    source = CocoStuffSource(tmp_path, ("val2017",), num_classes=15, curated_version=7)
    _, label = source[0]
    names = source.class_names
    assert len(names) == 15
    assert [names[c] for c in label[0]] == ["sky", "plant", "ground"]
    assert names[label[1, 0]] == "wall"
    assert label[1, 1] == IGNORE and label[1, 2] == IGNORE


def test_cocostuff_curation_rule_applied_without_a_list(tmp_path):
    big_stuff = np.full((360, 380), SKY)
    big_stuff[:50] = PERSON  # 14 % things: still ≥ 75 % sky/plant/ground
    mostly_things = np.full((360, 360), PERSON)
    mostly_things[:80] = ROAD  # 22 % ground only
    small = np.full((300, 400), TREE)  # a side below 360
    write_coco_image(tmp_path, "train2017", "a", big_stuff)
    write_coco_image(tmp_path, "train2017", "b", mostly_things)
    write_coco_image(tmp_path, "train2017", "c", small)
    source = CocoStuffSource(tmp_path, ("train2017",), num_classes=3, curated_version=6)
    assert [source.item_name(i) for i in range(len(source))] == ["a"]
    wanted = np.array([SKY])
    assert meets_curation_rule(np.full((360, 360), SKY), wanted)
    assert not meets_curation_rule(np.full((359, 400), SKY), wanted)


def test_cocostuff_label_size_mismatch_is_an_error(tmp_path):
    write_coco_image(tmp_path, "train2017", "x", np.full((4, 6), SKY))
    Image.fromarray(np.full((5, 6), SKY, dtype=np.uint8)).save(tmp_path / "annotations" / "train2017" / "x.png")
    (tmp_path / "curated" / "train2017").mkdir(parents=True)
    (tmp_path / "curated" / "train2017" / "Coco164kFew_Stuff_6.txt").write_text("x\n")
    with pytest.raises(IICError, match="label map is 5×6 but the image is 4×6"):
        CocoStuffSource(tmp_path, ("train2017",), 3, 6)[0]


# ------------------------------------------------------------------ folders and .npz

def write_folder(tmp_path, sizes=((12, 16), (12, 16)), labels=True):
    images, label_dir = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    label_dir.mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(np.full((h, w, 3), 40 * i, dtype=np.uint8)).save(images / f"img{i}.jpg")
        if labels:
            label = np.zeros((h, w), dtype=np.uint8)
            label[:, w // 2:] = 1
            label[0, 0] = 255
            Image.fromarray(label).save(label_dir / f"img{i}.png")
    return images, label_dir


def test_folder_with_label_maps_and_ignore_value(tmp_path):
    images, labels = write_folder(tmp_path)
    source = FolderSource(images, labels, ignore_index=255)
    assert len(source) == 2 and source.num_classes == 2
    image, label = source[1]
    assert image.shape == (12, 16, 3)
    assert label[0, 0] == IGNORE and label[0, 15] == 1
    assert FolderSource(images)[0][1] is None


def test_folder_bad_inputs(tmp_path):
    images, labels = write_folder(tmp_path)
    (labels / "img1.png").unlink()
    with pytest.raises(IICError, match="has no label map"):
        FolderSource(images, labels)
    Image.fromarray(np.zeros((11, 16), dtype=np.uint8)).save(labels / "img1.png")
    with pytest.raises(IICError, match="label map .* is 16×11 .* but its image .* is 16×12"):
        FolderSource(images, labels)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IICError, match="no images found"):
        FolderSource(empty)
    (images / "img1.jpg").write_bytes((images / "img1.jpg").read_bytes()[:200])  # truncated
    with pytest.raises(IICError, match="cannot read image .*img1.jpg"):
        FolderSource(images)  # read on construction, label maps or not


def test_preset_data_is_found_from_any_directory_by_its_path_or_in_iic_data(tmp_path, monkeypatch, shared_datasets):
    """The CamVid presets name no data path (none into the project's folders): --data-path, or $IIC_DATA's file."""
    import dataclasses

    from iic.config import resolve_config
    from iic.segmentation.config import SEGMENT_PRESETS, SegmentConfig, validate_config, with_data_path
    from iic.segmentation.data import build_source

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IIC_DATA", raising=False)
    config = resolve_config(SegmentConfig, SEGMENT_PRESETS, "camvid3", None, {})
    assert config.data_path is None and with_data_path(config) == config
    with pytest.raises(IICError, match=r"needs --data-path.*\(or set IIC_DATA to the folder that holds "
                                       r"camvid_180x240_trainval\.npz\)"):
        validate_config(config)
    npz = shared_datasets / "camvid_180x240_trainval.npz"
    source = build_source(dataclasses.replace(config, data_path=str(npz)), "eval")
    assert source.class_names == ["sky", "ground", "plants"] and len(source) > 0
    monkeypatch.setenv("IIC_DATA", str(shared_datasets))
    assert with_data_path(config).data_path == str(npz)
    monkeypatch.setenv("IIC_DATA", str(tmp_path / "elsewhere"))  # a path given wins over $IIC_DATA
    assert with_data_path(dataclasses.replace(config, data_path=str(npz))).data_path == str(npz)


def test_npz_splits_void_and_class_groups(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, (3, 8, 10)).astype(np.uint8)  # 5 = void
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 256, (3, 8, 10, 3), dtype=np.uint8), y_train=y,
             x_val=rng.integers(0, 256, (2, 8, 10, 3), dtype=np.uint8), y_val=y[:2],
             class_names=np.array(["a", "b", "c", "d", "e", "void"]), void_label=5)
    source = load_npz_source(tmp_path / "d.npz", ("train", "val"))
    assert len(source) == 5 and source.class_names == ["a", "b", "c", "d", "e"]
    assert (source.labels[:3][y == 5] == IGNORE).all()
    grouped = load_npz_source(tmp_path / "d.npz", ("train",), class_groups="0;2,3")
    assert grouped.class_names == ["a", "c+d"]
    expected = np.select([y == 0, (y == 2) | (y == 3)], [0, 1], IGNORE)
    np.testing.assert_array_equal(grouped.labels, expected)
    with pytest.raises(IICError, match="no array x_test"):
        load_npz_source(tmp_path / "d.npz", ("test",))


def test_demo_crops_and_evaluation_images():
    source = demo_source(num_images=4, size=32)
    assert source.num_classes == 3 and source.labels.min() == 0 and source.labels.max() == 2
    x, mask = TrainingCrops(source, crop_size=40)[0]  # larger than the image: padded and masked
    assert x.shape == (3, 40, 40) and mask.shape == (40, 40)
    assert mask[:32, :32].all() and not mask[32:].any() and not mask[:, 32:].any()
    x, y, index = EvaluationImages(source, scale=0.5)[1]
    assert x.shape == (3, 16, 16) and y.shape == (16, 16) and index == 1


def test_bad_npz_arrays_are_one_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (3, 8, 10, 3), dtype=np.uint8), rng.integers(0, 3, (3, 8, 10)).astype(np.uint8)
    cases = {
        "empty": (dict(x_train=x[:0], y_train=y[:0]), "holds no images"),
        "no-pixels": (dict(x_train=x[:, :0], y_train=y[:, :0]), "no pixels"),
        "object-names": (dict(x_train=x, y_train=y, class_names=np.array(["a", None], dtype=object)), "Object arrays"),
        "void-text": (dict(x_train=x, y_train=y, void_label=np.array("x")), "void_label must be one integer"),
        "float-labels": (dict(x_train=x, y_train=np.where(y == 0, np.nan, y)), "integer class ids"),
        "large-labels": (dict(x_train=x, y_train=y.astype(np.int64) * 40000), "class ids 0…255"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(IICError, match=message):
            load_npz_source(tmp_path / f"{name}.npz", ("train",))
    np.savez_compressed(tmp_path / "corrupt.npz", x_train=x, y_train=y)
    data = bytearray((tmp_path / "corrupt.npz").read_bytes())
    data[200:260] = bytes(b ^ 0xFF for b in data[200:260])
    (tmp_path / "corrupt.npz").write_bytes(bytes(data))
    with pytest.raises(IICError, match="cannot read .*corrupt.npz"):
        load_npz_source(tmp_path / "corrupt.npz", ("train",))
    np.savez(tmp_path / "minus.npz", x_train=x, y_train=np.where(y == 0, -1, y.astype(np.int16)))  # -1: unlabelled
    assert (load_npz_source(tmp_path / "minus.npz", ("train",)).labels[y == 0] == IGNORE).all()


@pytest.mark.parametrize("spec", ["0;300", "0;-1"])
def test_class_groups_with_ids_outside_the_label_range_are_refused(tmp_path, spec):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 256, (2, 8, 10, 3), dtype=np.uint8),
             y_train=rng.integers(0, 3, (2, 8, 10)).astype(np.uint8))
    with pytest.raises(IICError, match="class ids must be 0…255"):
        load_npz_source(tmp_path / "d.npz", ("train",), class_groups=spec)
