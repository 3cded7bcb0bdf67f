"""The sequence task's parts without training: views in time (reproducible, and g⁻¹ inverting the window pairs), the
1-D dense loss, and reading series (.npz with padding, .ts, long CSV) with one clear error for bad input."""

import numpy as np
import pytest
import torch

from iic.errors import IICError
from iic.losses import iic_losses
from iic.sequences.config import SequenceConfig, validate_sequence_config
from iic.sequences.data import load_sequence_data, read_sequences, recording
from iic.sequences.loss import temporal_iic_losses
from iic.sequences.views import (
    inverse_index,
    map_back,
    read_window,
    resample,
    series_view,
    window_positions,
    window_starts,
)


def generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_series_views_are_reproducible_under_a_seed_and_differ_across_seeds():
    x = torch.randn(6, 3, 50)
    lengths = torch.tensor([50, 40, 30, 50, 20, 10])
    args = (x, lengths, 32, (0.6, 1.0), 0.2, 0.2, 0.05, 0.1)
    a, b, c = series_view(*args, generator(1)), series_view(*args, generator(1)), series_view(*args, generator(2))
    assert a.shape == (6, 3, 32)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_resample_reads_only_each_series_own_steps():
    x = torch.zeros(2, 1, 10)
    x[0, 0, :] = torch.arange(10.0)
    x[1, 0, :4] = torch.arange(4.0)  # then padding (0)
    out = resample(x, torch.tensor([10, 4]), 4)
    assert torch.allclose(out[0, 0], torch.tensor([0.0, 3.0, 6.0, 9.0]))
    assert torch.allclose(out[1, 0], torch.tensor([0.0, 1.0, 2.0, 3.0]))


@pytest.mark.parametrize("flip", [False, True])
def test_window_pairs_map_back_exactly(flip):
    """g⁻¹ of the paired window puts, at every step both windows hold, the very source step of the first window."""
    g = generator(0)
    lengths = torch.tensor([100, 37, 64])
    x = torch.arange(3 * 100, dtype=torch.float32).view(3, 1, 100)  # each value names its series and step
    series = torch.tensor([0, 1, 2, 0, 1, 2])
    window = 48
    start, offset = window_starts(lengths, series, window, 10, g)
    flipped = torch.tensor([True, False, True, False, True, False]) if flip else None
    first, valid = read_window(x[series], lengths[series], window_positions(start, window))
    second, valid2 = read_window(x[series], lengths[series], window_positions(start + offset, window, flipped))
    index, inside = inverse_index(start, offset, window, flipped)
    mask = valid & inside & valid2.gather(1, index)
    back = map_back(second.unsqueeze(0), index)[0]  # as a 1 × n × C × W map
    assert mask.sum() > 0.5 * mask.numel()
    assert torch.equal(back[mask.unsqueeze(1)], first[mask.unsqueeze(1)])
    assert not valid[1, 37:].any()  # series 1 has 37 steps: the rest of its window is padding


def test_temporal_loss_at_no_displacement_is_the_clustering_loss_of_the_steps():
    p = torch.rand(2, 3, 4, 9).softmax(dim=2)
    p2 = torch.rand(2, 3, 4, 9).softmax(dim=2)
    loss, plain = temporal_iic_losses(p, p2, None, T=0)
    flat = lambda m: m.permute(0, 1, 3, 2).reshape(2, -1, 4)  # noqa: E731
    expected, expected_plain = iic_losses(flat(p), flat(p2))
    assert torch.allclose(loss, expected, atol=1e-5) and torch.allclose(plain, expected_plain, atol=1e-5)


def test_temporal_loss_ignores_masked_steps():
    p = torch.rand(1, 2, 3, 12).softmax(dim=2)
    p2 = torch.rand(1, 2, 3, 12).softmax(dim=2)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, 8:] = False
    changed = p2.clone()
    changed[..., 8:] = torch.rand(1, 2, 3, 4).softmax(dim=2)
    assert torch.allclose(temporal_iic_losses(p, p2, mask, 2)[0], temporal_iic_losses(p, changed, mask, 2)[0])


# --- reading ---------------------------------------------------------------------------------------------------------

def config(**settings) -> SequenceConfig:
    c = SequenceConfig(**settings)
    validate_sequence_config(c)
    return c


def test_npz_with_trailing_nan_padding_and_inner_gaps(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 20, 2))
    x[1, 15:] = np.nan  # series 1 has 15 steps
    x[2, 5, 0] = np.nan  # a gap, interpolated
    np.savez(tmp_path / "s.npz", x=x, y=np.array(["a", "b", "a"]))
    train, test = read_sequences(tmp_path / "s.npz", config())
    assert test is None and train.lengths.tolist() == [20, 15, 20]
    assert train.class_names == ["a", "b"] and train.labels.tolist() == [0, 1, 0]
    assert np.isclose(train.x[2, 5, 0], (x[2, 4, 0] + x[2, 6, 0]) / 2)
    assert (train.x[1, 15:] == 0).all()


TS = """@problemName tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 4
@classLabel true up down
@data
1,2,3,4:0,0,1,1:up
4,3,2,1:1,1,0,0:down
1,2,3,5:0,1,1,1:up
"""


def test_ts_file_through_aeon(tmp_path):
    pytest.importorskip("aeon")
    (tmp_path / "tiny.ts").write_text(TS)
    train, _ = read_sequences(tmp_path / "tiny.ts", config())
    assert train.x.shape == (3, 4, 2) and train.labels.tolist() == [1, 0, 1]
    assert train.x[1, :, 0].tolist() == [4, 3, 2, 1]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_long_table_sorted_by_time_with_a_label_per_series(tmp_path, suffix):
    """The same long table as CSV and as Parquet (pandas writes both) reads to the same series."""
    pd = pytest.importorskip("pandas")
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    table = pd.DataFrame({"id": ["s2", "s1", "s1", "s2", "s2"], "time": [1, 1, 0, 0, 2], "a": [5, 0, 2, 7, 9],
                          "b": [6, 1, 3, 8, 9], "label": ["walk", "run", "run", "walk", "walk"]})
    path = tmp_path / f"long{suffix}"
    if suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    train, _ = read_sequences(path, config(label_column="label"))
    assert train.ids == ["s2", "s1"] and train.lengths.tolist() == [3, 2]
    assert train.x[1, :2].tolist() == [[2, 3], [0, 1]] and train.channel_names == ["a", "b"]
    assert train.class_names == ["run", "walk"] and train.labels.tolist() == [1, 0]


@pytest.mark.parametrize("content, message", [
    ("@problemName x\n@data\n1,2,3:abc\n@broken", "not a readable .ts file"),
])
def test_a_ts_file_that_does_not_parse_is_one_line(tmp_path, content, message):
    pytest.importorskip("aeon")
    (tmp_path / "bad.ts").write_text(content)
    with pytest.raises(IICError, match=message):
        read_sequences(tmp_path / "bad.ts", config())


def test_bad_series_are_one_clear_error():
    with pytest.raises(IICError, match="series 0 has 2 channels and series 1 has 3"):
        load_sequence_data(config(), arrays=([np.zeros((5, 2)), np.zeros((5, 3))], None))
    x = np.ones((2, 6, 2))
    x[1, :, 1] = np.nan
    with pytest.raises(IICError, match="channel 1 of series 1 is NaN all through"):
        load_sequence_data(config(), arrays=(x, None))
    with pytest.raises(IICError, match="half_window T=8 is not shorter than the longest series"):
        load_sequence_data(config(mode="steps", half_window=8), arrays=(np.ones((3, 8, 1)), None))
    with pytest.raises(IICError, match="labels are per step"):
        load_sequence_data(config(k_b=2, k_a=0), arrays=(np.ones((3, 8, 1)), np.zeros((3, 8))))


def test_recording_labels_every_step_by_its_series():
    x = np.arange(12, dtype=np.float64).reshape(3, 4, 1)
    data = load_sequence_data(config(mode="steps", recording=True, k_b=2, k_a=0, half_window=1),
                              arrays=(x, np.array([0, 1, 0])))
    rec = data.train
    assert rec.x.shape == (1, 12, 1) and rec.labels.shape == (1, 12)
    series_of_step = rec.x[0, :, 0] // 4  # the values name their series
    assert (rec.labels[0] == np.array([0, 1, 0])[series_of_step.astype(int)]).all()
    assert recording(rec, 0).x.shape == (1, 12, 1)
