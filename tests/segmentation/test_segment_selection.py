"""Choosing images by name (``names_<split>`` in an .npz, --train-names / --eval-names) and multi-scale training
crops (``crop_scales``)."""

import math

import numpy as np
import pytest
import torch

from iic.errors import IICError
from iic.segmentation.config import SegmentConfig
from iic.segmentation.data import (
    IGNORE,
    ArraySource,
    SegmentationSource,
    SubsetSource,
    TrainingCrops,
    build_source,
    check_crop_scales,
    crop_or_pad,
    evaluation_loader,
    load_npz_source,
    select_by_name,
    to_tensor,
)

CAMVID_NAMES = ["0016E5_07959.png", "0001TP_006690.png", "0016E5_08010.png", "0006R0_f00930.png"]
CAMVID_STEMS = [n.removesuffix(".png") for n in CAMVID_NAMES]


def arrays(count, h=6, w=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, h, w, 3), dtype=np.uint8), rng.integers(0, 3, (count, h, w)).astype(np.uint8)


def names_of(source):
    return [source.item_name(i) for i in range(len(source))]


# ------------------------------------------------------------------ names_<split> in an .npz

def test_npz_names_arrays_name_the_items_by_their_stem(tmp_path):
    x, y = arrays(7)
    np.savez(tmp_path / "d.npz", x_train=x[:4], y_train=y[:4], names_train=np.array(CAMVID_NAMES),
             x_val=x[4:6], y_val=y[4:6], names_val=np.array([b"seq/a.jpg", b"b.png"]),  # bytes are decoded
             x_test=x[6:], y_test=y[6:])  # no names_test: synthesised names
    source = load_npz_source(tmp_path / "d.npz", ("train", "val", "test"))
    assert names_of(source) == CAMVID_STEMS + ["a", "b", "test_0000"]
    assert names_of(load_npz_source(tmp_path / "d.npz", ("test",))) == ["test_0000"]


@pytest.mark.parametrize("names", [
    np.array(CAMVID_NAMES[:3]),  # one short
    np.array(CAMVID_NAMES).reshape(2, 2),  # 2-D
    np.arange(4),  # numbers
    np.array("0016E5_07959.png"),  # one string, not one per image
], ids=["short", "2d", "numeric", "scalar"])
def test_bad_npz_names_array_is_one_clear_error(tmp_path, names):
    x, y = arrays(4)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, names_train=names)
    with pytest.raises(IICError, match=r"d\.npz: names_train must be a 1-D array of 4 strings"):
        load_npz_source(tmp_path / "d.npz", ("train",))


# ------------------------------------------------------------------ select_by_name

def camvid_arrays():
    x, y = arrays(len(CAMVID_STEMS))
    return ArraySource(x, y.astype(np.int16), ["a", "b", "c"], list(CAMVID_STEMS), name="camvid")


def test_select_by_name_keeps_exactly_the_matching_items_in_order():
    source = camvid_arrays()
    assert select_by_name(source, "", "training") is source
    chosen = select_by_name(source, "0016E5_*", "training")
    assert names_of(chosen) == ["0016E5_07959", "0016E5_08010"]
    np.testing.assert_array_equal(chosen.images, source.images[[0, 2]])
    np.testing.assert_array_equal(chosen.labels, source.labels[[0, 2]])
    assert chosen.class_names == ["a", "b", "c"] and chosen.name == "camvid"
    # several patterns, spaces around them: the source's order, not the patterns'
    several = select_by_name(source, " 0006R0_* ,0001TP_006690 ", "evaluation")
    assert names_of(several) == ["0001TP_006690", "0006R0_f00930"]
    assert names_of(select_by_name(source, "*_0*", "training")) == ["0016E5_07959", "0001TP_006690", "0016E5_08010"]
    assert names_of(select_by_name(source, "0016e5_*,0006R0_f0093?", "training")) == ["0006R0_f00930"]  # case counts


class NamedSource(SegmentationSource):
    """A source that is not arrays: item i is a constant image of value i."""

    name = "named"
    color_channels = 3
    extra_channels = 1

    def __init__(self, names):
        self.names, self.class_names = names, ["x", "y"]

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        return np.full((4, 4, 4), index, dtype=np.uint8), None

    def item_name(self, index):
        return self.names[index]


def test_a_subset_of_any_source_delegates_to_it():
    source = NamedSource(["cat_1", "dog_1", "cat_2"])
    chosen = select_by_name(source, "cat_*", "training")
    assert isinstance(chosen, SubsetSource) and len(chosen) == 2
    assert names_of(chosen) == ["cat_1", "cat_2"]
    assert chosen[1][0][0, 0, 0] == 2 and chosen[1][1] is None
    assert (chosen.name, chosen.color_channels, chosen.extra_channels) == ("named", 3, 1)
    assert chosen.class_names == ["x", "y"] and chosen.num_classes == 2
    with pytest.raises(IndexError):
        chosen[2]


def test_no_match_names_the_flag_and_shows_example_names():
    source = camvid_arrays()
    with pytest.raises(IICError, match=r"^no training image matches --train-names 'nothing_\*' "
                                       r"\(names look like: 0016E5_07959, 0001TP_006690, 0016E5_08010\)$"):
        select_by_name(source, "nothing_*", "training")
    with pytest.raises(IICError, match=r"^no evaluation image matches --eval-names '0016E5_07959\.png'"):
        select_by_name(source, "0016E5_07959.png", "evaluation")  # names are stems


def test_build_source_applies_train_names_and_eval_names(tmp_path):
    x, y = arrays(6)
    names = ["A_1.png", "B_1.png", "A_2.png", "B_2.png"]
    np.savez(tmp_path / "d.npz", x_train=x[:4], y_train=y[:4], names_train=np.array(names),
             x_val=x[4:], y_val=y[4:], names_val=np.array(["A_3.png", "C_1.png"]))
    config = SegmentConfig(dataset="npz", data_path=str(tmp_path / "d.npz"), train_splits=("train",),
                           eval_splits=("train", "val"), train_names="A_*", eval_names="B_*, C_*",
                           class_names=("p", "q", "r"))
    train = build_source(config, "train")
    assert names_of(train) == ["A_1", "A_2"] and train.class_names == ["p", "q", "r"]
    np.testing.assert_array_equal(train.images, x[[0, 2]])
    evaluation = build_source(config, "eval")
    assert names_of(evaluation) == ["B_1", "B_2", "C_1"]
    np.testing.assert_array_equal(evaluation.labels, y[[1, 3, 5]])
    assert evaluation_loader(config, evaluation).batch_size == config.eval_batch_size > 1  # still batched
    everything = SegmentConfig(dataset="npz", data_path=str(tmp_path / "d.npz"), eval_splits=("train", "val"))
    assert len(build_source(everything, "train")) == 4 and len(build_source(everything, "eval")) == 6
    with pytest.raises(IICError, match="no training image matches --train-names 'C_\\*'"):
        build_source(SegmentConfig(dataset="npz", data_path=str(tmp_path / "d.npz"), train_names="C_*"), "train")


# ------------------------------------------------------------------ TrainingCrops with crop_scales

def test_unit_crop_scales_give_todays_crops_draw_for_draw():
    x, y = arrays(3, h=20, w=30)
    labels = y.astype(np.int16)
    labels[:, :5] = IGNORE
    source = ArraySource(x, labels, ["a", "b", "c"])
    masks = []
    for kwargs in ({}, {"crop_scales": (1.0, 1.0)}, {"crop_scales": (1, 1)}):
        crops = TrainingCrops(source, 8, 1.0, True, **kwargs)
        for seed in range(4):
            torch.manual_seed(seed)
            got = [crops[i] for i in range(3)]
            torch.manual_seed(seed)
            for i, (crop, mask) in enumerate(got):  # what TrainingCrops computed before crop_scales
                image, label = to_tensor(*source[i])
                top = int(torch.randint(0, 20 - 8 + 1, ()))
                left = int(torch.randint(0, 30 - 8 + 1, ()))
                expected, _, valid = crop_or_pad(image, label, label >= 0, 8, top, left)
                assert crop.shape == (3, 8, 8)
                assert torch.equal(crop, expected) and torch.equal(mask, valid)
                masks.append(mask)
    assert any(m.all() for m in masks) and not all(m.all() for m in masks)  # crops both in and off the masked band


def gradient_source(size=64):
    """Red grows by 4 a column, green by 4 a row: a crop's values give back its region."""
    rows, cols = np.mgrid[0:size, 0:size]
    image = np.stack([cols * 4, rows * 4, np.full_like(rows, 128)], axis=-1).astype(np.uint8)
    return ArraySource(image[None], None)


def region_of(crop):
    """(left, right, top, bottom) columns and rows of the gradient image that a crop spans."""
    red, green = crop[0] * 255 / 4, crop[1] * 255 / 4
    return float(red.min()), float(red.max()), float(green.min()), float(green.max())


def test_half_scale_crops_are_2x_zooms_of_half_size_regions_anywhere():
    source = gradient_source()
    torch.manual_seed(0)
    full = TrainingCrops(source, 16)
    left, right, top, bottom = region_of(full[0][0])
    assert math.isclose(right - left, 15, abs_tol=1e-3) and math.isclose(bottom - top, 15, abs_tol=1e-3)
    half = TrainingCrops(source, 16, crop_scales=(0.5, 0.5))
    lefts, tops = [], []
    for _ in range(60):
        crop, mask = half[0]
        assert crop.shape == (3, 16, 16) and mask.shape == (16, 16) and mask.all()
        left, right, top, bottom = region_of(crop)
        # an 8-pixel region: its 8 columns' values (7 steps, half of a 16-pixel crop's 15) stretched over 16
        assert math.isclose(right - left, 7, abs_tol=1e-3) and math.isclose(bottom - top, 7, abs_tol=1e-3)
        assert np.allclose(crop[0].numpy(), crop[0, :1].numpy())  # still a horizontal gradient
        assert len(torch.unique(crop[0, 0])) > 8  # interpolated: more than the region's 8 values
        lefts.append(round(left))
        tops.append(round(top))
    # anywhere the 8-pixel region fits, beyond where a 16-pixel one could start (48)
    assert 0 <= min(lefts) and max(lefts) <= 56 and max(lefts) > 48 and max(tops) > 48


def test_crop_scales_range_draws_region_sizes_within_it():
    source = gradient_source()
    torch.manual_seed(1)
    crops = TrainingCrops(source, 16, crop_scales=(0.5, 1.0))
    spans = set()
    for _ in range(40):
        left, right, top, bottom = region_of(crops[0][0])
        assert math.isclose(right - left, bottom - top, abs_tol=1e-3)  # square regions
        spans.add(round(right - left))
    assert spans <= set(range(7, 16)) and len(spans) >= 4  # regions of 8…16 pixels, drawn


def test_regions_beyond_the_image_are_padded_and_marked_invalid():
    image = np.full((1, 10, 10, 3), 200, dtype=np.uint8)
    crops = TrainingCrops(ArraySource(image, None), 8, crop_scales=(2.0, 2.0))  # a 16-pixel region of a 10-pixel image
    crop, mask = crops[0]
    assert crop.shape == (3, 8, 8) and mask.dtype == torch.bool
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:5, :5] = True  # the image is the region's first 10 of 16 pixels a side
    assert torch.equal(mask, expected)
    assert (crop[:, :4, :4] > 0.7).all() and (crop[:, 6:] == 0).all() and (crop[:, :, 6:] == 0).all()


def test_unlabelled_pixels_stay_masked_through_the_resize():
    x, _ = arrays(1, h=32, w=32)
    labels = np.zeros((1, 32, 32), dtype=np.int16)
    labels[:, :, 16:] = IGNORE
    crops = TrainingCrops(ArraySource(x, labels, ["a"]), 8, mask_unlabelled=True, crop_scales=(4.0, 4.0))
    _, mask = crops[0]  # the whole 32-pixel image, shrunk 4×
    assert mask[:, :4].all() and not mask[:, 4:].any()


@pytest.mark.parametrize("scales", [(1.0, 1.0), (0.5, 2), (4, 4), [0.25, 0.5]])
def test_check_crop_scales_accepts(scales):
    check_crop_scales(scales)


@pytest.mark.parametrize("scales", [(0, 1), (2, 1), (1, 4.5), (math.nan, 1), (1, math.inf), (-1, 1), (1,),
                                    (1, 2, 3), "12", None, ("a", 1)])
def test_check_crop_scales_refuses(scales):
    with pytest.raises(IICError, match="crop_scales must be two numbers"):
        check_crop_scales(scales)
    with pytest.raises(IICError, match="crop_scales"):
        TrainingCrops(camvid_arrays(), 4, crop_scales=scales)
