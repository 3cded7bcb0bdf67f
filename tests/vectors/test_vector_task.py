"""IIC on vectors from Python: the config's checks, what load_vector_data refuses, the neighbour graph's cache, tiny
runs that must learn (knn, noise and given pairs), the VectorModel of a run, and resuming one."""

import csv
import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch
import yaml
from helpers import one_thread

import iic
import iic.vectors
from iic.errors import IICError
from iic.pairs import neighbour_graph
from iic.vectors.config import VectorConfig, validate_vector_config
from iic.vectors.data import Arrays, VectorData, load_vector_data

# Three blobs of 60 samples, 8 apart, with no symmetry between the features (so that features taken in the wrong
# order do not cluster as well); a small MLP learns them in 20 epochs of 3 steps, about a second.
CENTRES = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 4.0], [8.0, 8.0, 8.0]])
NAMES = ["alpha", "beta", "gamma"]
TINY = dict(k_b=3, k_a=0, widths=(64, 64), num_subheads=3, epochs=20, batch_size=60, lr=0.01, knn=5,
            eval_every=1000, accelerator="cpu", progress=False)


def blobs(per_blob: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), per_blob)
    return (CENTRES[y] + rng.normal(size=(len(y), 3))).astype(np.float32), y


def blob_accuracy(clusters: torch.Tensor, y: np.ndarray) -> float:
    """The share of samples in their blob's most common cluster, when the three blobs have three different ones."""
    clusters = clusters.numpy()
    modes = [np.bincount(clusters[y == label], minlength=3).argmax() for label in range(3)]
    return float(np.mean(clusters == np.array(modes)[y])) if len(set(modes)) == 3 else 0.0


class Frame:
    """Just enough of a pandas DataFrame (not installed here): named columns, to_numpy, and df[[names]]."""

    def __init__(self, data, columns):
        self.data, self.columns = np.asarray(data), list(columns)

    def to_numpy(self) -> np.ndarray:
        return self.data

    def __getitem__(self, names):
        return Frame(self.data[:, [self.columns.index(name) for name in names]], names)




def message(call, *args, **kwargs) -> str:
    with pytest.raises(IICError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def write_csv(path, x, y=None, names=NAMES, order=(0, 1, 2)):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([names[i] for i in order] + ([] if y is None else ["label"]))
        for n, row in enumerate(x):
            writer.writerow([f"{row[i]:.6f}" for i in order] + ([] if y is None else [f"class-{y[n]}"]))
    return path


# --- the config ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, expected", [
    (dict(dataset="pictures"), "unknown dataset 'pictures': use vectors, features"),
    (dict(pairs="friends"), "pairs must be knn, noise, knn+noise, given, got 'friends'"),
    (dict(pairs="given", pairs_path="p.npy", partner_path="q.npy"), "pairs given: give --pairs-path"),
    (dict(pairs_path="p.npy"), "--pairs-path and --partner-path are for --pairs given, and pairs is 'knn'"),
    (dict(pairs="noise", partner_path="q.npy"), "are for --pairs given, and pairs is 'noise'"),
    (dict(knn=0), "knn must be at least 1 neighbour, got 0"),
    (dict(mask=1.0), "mask must be a probability in [0, 1), got 1.0"),
    (dict(mask=-0.1), "mask must be a probability in [0, 1)"),
    (dict(noise=-1.0), "noise must be ≥ 0"),
    (dict(k_b=1), "k_b must be at least 2, got 1"),
    (dict(k_a=1), "k_a must be 0 (no head A) or at least 2, got 1"),
    (dict(metric="manhattan"), "metric must be cosine or euclidean, got 'manhattan'"),
])
def test_each_bad_setting_is_one_clear_error(changes, expected):
    assert expected in message(validate_vector_config, VectorConfig(**changes))


def test_the_default_config_and_every_pair_source_with_what_it_needs_pass():
    validate_vector_config(VectorConfig())
    for pairs in ("knn", "noise", "knn+noise"):
        validate_vector_config(VectorConfig(pairs=pairs))
    validate_vector_config(VectorConfig(pairs="given", pairs_path="p.npy"))
    validate_vector_config(VectorConfig(pairs="given", partner_path="q.npy"))


def test_bad_settings_from_python_fail_before_a_run_directory_is_made(tmp_path):
    x, _ = blobs(10)
    out = tmp_path / "runs"
    assert "k_b must be at least 2" in message(iic.vectors.train, x, k_b=1, out_dir=str(out), progress=False)
    assert "unknown config key" in message(iic.vectors.train, x, no_such_setting=1, out_dir=str(out))
    assert "go with x" in message(iic.vectors.train, y=np.zeros(3), out_dir=str(out))
    assert not out.exists()


# --- load_vector_data ----------------------------------------------------------------------------------------------

def load(x, **settings):
    """load_vector_data of the array ``x`` with the arrays ``partner``/``embedding`` and config ``settings``."""
    arrays = {key: settings.pop(key) for key in ("partner", "embedding") if key in settings}
    return load_vector_data(VectorConfig(**{"k_a": 0, "k_b": 3, **settings}), arrays=Arrays(x, **arrays),
                            progress=False)


def test_protocol_split_needs_a_test_split(tmp_path):
    x, y = blobs(10)
    assert message(load, x, protocol="split") == (
        "protocol 'split' needs a test split, and vectors has none: use --protocol iic")
    np.savez(tmp_path / "splits.npz", x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:])
    data = load_vector_data(VectorConfig(data_path=str(tmp_path / "splits.npz"), protocol="split", k_a=0, k_b=3,
                                         knn=3), progress=False)
    assert len(data.train) == 20 and len(data.evaluation) == 10
    both = load_vector_data(VectorConfig(data_path=str(tmp_path / "splits.npz"), k_a=0, k_b=3, knn=3),
                            progress=False)
    assert len(both.train) == len(both.evaluation) == 30


def test_more_clusters_or_neighbours_than_samples_are_refused():
    x, _ = blobs(4)  # 12 samples
    assert message(load, x, k_b=13) == "k_b=13 is larger than the number of training samples (12)"
    assert message(load, x, k_a=20) == "k_a=20 is larger than the number of training samples (12)"
    assert message(load, x, knn=12) == "12 samples cannot have 12 neighbours each: give --knn at most 11"
    assert message(load, x, knn=12, pairs="knn+noise").startswith("12 samples cannot have 12 neighbours")
    assert len(load(x, knn=11).train) == 12
    assert len(load(x, knn=12, pairs="noise").train) == 12  # no neighbours needed


def test_the_embedding_needs_a_row_per_sample():
    x, _ = blobs(4)
    assert message(load, x, embedding=np.zeros((11, 2))) == (
        "the embedding has 11 rows and there are 12 training samples: give one row per training sample, in the "
        "same order")
    assert load(x, embedding=np.ones((12, 2))).embedding.shape == (12, 2)


def test_a_partner_array_must_be_shaped_as_the_samples():
    x, _ = blobs(4)
    for shape in ((12, 2), (11, 3)):
        assert message(load, x, pairs="given", partner=np.zeros(shape)) == (
            f"the partner array is shaped {shape} and the training samples (12, 3): row i of it pairs with training "
            "sample i, so the shapes must agree")
    assert load(x, pairs="given", partner=x + 1).partner.shape == (12, 3)


def test_given_pairs_must_index_the_samples(tmp_path):
    x, _ = blobs(4)
    arrays = Arrays(x, pairs=np.array([[0, 1], [5, 12]]))
    assert message(load_vector_data, VectorConfig(pairs="given", k_a=0, k_b=3), arrays=arrays) == (
        "pair 1 holds 12, outside the sample indices 0..11 (indices count from 0)")
    np.save(tmp_path / "pairs.npy", np.array([[0, 1], [2, 3], [-1, 4]]))
    config = VectorConfig(pairs="given", pairs_path=str(tmp_path / "pairs.npy"), k_a=0, k_b=3)
    assert message(load_vector_data, config, arrays=Arrays(x)) == (
        "pair 2 holds -1, outside the sample indices 0..11 (indices count from 0)")
    np.save(tmp_path / "pairs.npy", np.array([[0, 1], [11, 3]]))
    assert load_vector_data(config, arrays=Arrays(x)).given_pairs.tolist() == [[0, 1], [11, 3]]
    arrays = Arrays(x, pairs=np.array([[0, 1]]))
    assert message(load_vector_data, VectorConfig(k_a=0, k_b=3), arrays=arrays) == (
        "pairs and partner are for pairs='given', and pairs is 'knn'")


def test_a_csv_label_column_is_for_evaluation_only(tmp_path):
    x, y = blobs(5)
    path = write_csv(tmp_path / "x.csv", x, y)
    data = load_vector_data(VectorConfig(data_path=str(path), label_column="label", k_a=0, k_b=3, knn=3),
                            progress=False)
    assert data.train.feature_names == NAMES and data.num_features == 3  # not a feature
    np.testing.assert_allclose(data.train.features, x, atol=1e-5)
    assert data.evaluation.class_names == ["class-0", "class-1", "class-2"]
    assert data.evaluation.labels.tolist() == y.tolist()
    unlabelled = load_vector_data(VectorConfig(data_path=str(write_csv(tmp_path / "plain.csv", x)), k_a=0, k_b=3,
                                               knn=3), progress=False)
    assert unlabelled.evaluation.labels is None and unlabelled.num_features == 3
    assert "has no column 'kind'" in message(load_vector_data, VectorConfig(data_path=str(path), label_column="kind"))
    assert "--label-column names a column of a CSV file" in message(
        load_vector_data, VectorConfig(dataset="wine", label_column="label"))


# --- the neighbour graph, cached -----------------------------------------------------------------------------------

def test_the_graph_is_built_on_the_embedding_cached_and_rebuilt_when_its_inputs_change(tmp_path, monkeypatch):
    from iic.data.vectors import VectorSet
    from iic.vectors import module

    x, y = blobs(10)
    embedding = np.eye(3)[y] + np.random.default_rng(1).normal(scale=0.01, size=(30, 3))
    data = VectorData(VectorSet(x, None, None, NAMES), VectorSet(x, None, None, NAMES), embedding=embedding)
    config = VectorConfig(knn=4, metric="euclidean")
    cache = tmp_path / "neighbours.npz"
    graph = module.cached_graph(config, data, x, cache)
    assert graph.shape == (30, 4) and cache.is_file()
    assert (y[graph] == y[:, None]).all()  # the embedding's neighbours: all in the sample's own blob
    np.testing.assert_array_equal(graph, neighbour_graph(embedding, 4, "euclidean"))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached graph was rebuilt")

    monkeypatch.setattr(module, "neighbour_graph", no_rebuild)
    np.testing.assert_array_equal(module.cached_graph(config, data, x, cache), graph)  # read, not rebuilt
    monkeypatch.undo()
    rebuilt = module.cached_graph(dataclasses.replace(config, knn=3), data, x, cache)
    assert rebuilt.shape == (30, 3)
    data.embedding = None  # on the features themselves now
    np.testing.assert_array_equal(module.cached_graph(dataclasses.replace(config, knn=3), data, x, cache),
                                  neighbour_graph(x, 3, "euclidean"))


# --- tiny runs that must learn -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def knn_run(tmp_path_factory):
    x, y = blobs()
    with one_thread():
        return iic.vectors.train(Frame(x, NAMES), y, out_dir=str(tmp_path_factory.mktemp("runs")), name="knn",
                                 **TINY)


def assert_learnt(run, files=("config.yaml", "metrics.csv", "results.yaml", "clusters.png", "curves.png",
                              "checkpoints/last.ckpt")):
    for name in files:
        assert (run.run_dir / name).is_file(), name
    saved = yaml.safe_load((run.run_dir / "results.yaml").read_text())
    assert saved["B"]["reported"] == pytest.approx(run.results["B"]["reported"])
    assert run.results["B"]["reported"]["acc"] >= 0.95  # three blobs: chance is 1/3
    assert sorted(run.results["B"]["cluster_sizes"]) == pytest.approx([60, 60, 60], abs=3)
    assert "A" not in run.results  # k_a = 0
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["task"] == "vectors" and config["k_b"] == 3


@pytest.mark.slow
def test_knn_pairs_learn_the_blobs_and_the_graph_is_kept_in_the_run(knn_run):
    assert_learnt(knn_run)
    assert knn_run.model.module.feature_names == NAMES
    with np.load(knn_run.run_dir / "neighbours.npz") as saved:
        graph = saved["graph"]
    x, y = blobs()
    # Built on the standardised features (as the network sees them), cosine, 5 neighbours.
    mean, std = x.astype(np.float64).mean(0).astype(np.float32), x.astype(np.float64).std(0).astype(np.float32)
    np.testing.assert_array_equal(graph, neighbour_graph(((x - mean) / std).astype(np.float32), 5, "cosine"))
    assert (y[graph] == y[:, None]).mean() > 0.99


@pytest.mark.slow
def test_noise_pairs_learn_the_blobs(tmp_path, one_torch_thread):
    x, y = blobs()
    run = iic.vectors.train(x, y, config=VectorConfig(pairs="noise"), out_dir=str(tmp_path), name="noise", **TINY)
    assert_learnt(run)
    assert not (run.run_dir / "neighbours.npz").exists()


@pytest.mark.slow
def test_given_pairs_within_each_blob_learn_the_blobs(tmp_path, one_torch_thread):
    x, y = blobs()
    pairs = np.array([[i, 60 * (i // 60) + (i + 7) % 60] for i in range(180)])  # each sample with another of its blob
    np.save(tmp_path / "pairs.npy", pairs)
    run = iic.vectors.train(x, y, config=VectorConfig(pairs="given", pairs_path=str(tmp_path / "pairs.npy")),
                            out_dir=str(tmp_path), name="given", **TINY)
    assert_learnt(run)
    assert not (run.run_dir / "neighbours.npz").exists()


@pytest.mark.slow
def test_given_pairs_from_python_learn_the_blobs(tmp_path, one_torch_thread):
    x, y = blobs()
    pairs = np.array([[i, 60 * (i // 60) + (i + 7) % 60] for i in range(180)])
    assert_learnt(iic.vectors.train(x, y, given_pairs=pairs, out_dir=str(tmp_path), name="given", **TINY))


@pytest.mark.slow
def test_a_partner_array_from_python_trains(tmp_path, one_torch_thread):
    x, y = blobs()
    partner = x + np.random.default_rng(3).normal(scale=0.1, size=x.shape).astype(np.float32)
    assert_learnt(iic.vectors.train(x, y, partner=partner, out_dir=str(tmp_path), name="partner", **TINY))


@pytest.mark.slow
def test_the_pairs_setting_may_be_given_by_name(tmp_path, one_torch_thread):
    x, y = blobs()
    run = iic.vectors.train(x, y, pairs="noise", out_dir=str(tmp_path), name="noise", **TINY)
    assert run.model.config.pairs == "noise"
    assert_learnt(run)


# --- the model -----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_load_gives_a_vector_model_that_predicts_as_the_run(knn_run):
    x, y = blobs()
    model = iic.load(knn_run.run_dir)
    assert isinstance(model, iic.vectors.VectorModel) and not model.takes_images
    assert model.path == knn_run.run_dir / "checkpoints" / "last.ckpt"
    clusters = model.predict(x)
    assert clusters.dtype == torch.int64 and clusters.shape == (180,)
    assert torch.equal(clusters, knn_run.model.predict(x))
    assert np.bincount(clusters.numpy(), minlength=3).tolist() == knn_run.results["B"]["cluster_sizes"]
    probabilities = model.predict_proba(torch.from_numpy(x))  # a tensor too
    assert probabilities.shape == (180, 3) and torch.allclose(probabilities.sum(1), torch.ones(180))
    assert torch.equal(probabilities.argmax(1), clusters)
    assert blob_accuracy(clusters, y) >= 0.95  # each blob (nearly all of it) one cluster


@pytest.mark.slow
def test_a_dataframe_or_csv_has_its_columns_picked_by_name(knn_run, tmp_path):
    x, _ = blobs()
    model = iic.load(knn_run.run_dir)
    expected = model.predict(x)
    reversed_frame = Frame(x[:, ::-1], NAMES[::-1])
    assert torch.equal(model.predict(reversed_frame), expected)
    extra = Frame(np.column_stack([np.ones(180), x[:, [2, 0, 1]]]), ["extra", "gamma", "alpha", "beta"])
    assert torch.equal(model.predict(extra), expected)
    assert torch.equal(model.predict(str(write_csv(tmp_path / "reversed.csv", x, order=(2, 1, 0)))), expected)
    assert torch.equal(model.predict(write_csv(tmp_path / "same.csv", x)), expected)


@pytest.mark.slow
def test_bad_input_to_the_model_is_one_clear_error(knn_run):
    x, _ = blobs()
    model = knn_run.model
    assert message(model.predict, x[:, :2]) == "expected 3 features per sample (as in training), got 2"
    assert message(model.predict, np.column_stack([x, x])) == "expected 3 features per sample (as in training), got 6"
    assert message(model.predict, x, head="A") == "this model has no head A (it was trained with k_a = 0)"
    assert "not a finite number" in message(model.predict, np.full((2, 3), np.nan))
    assert "1-D array" in message(model.predict, x[0])
    assert "the evaluated data have 2 features and the model takes 3" in message(model.evaluate, x=x[:, :2])


@pytest.mark.slow
def test_evaluate_on_arrays_scores_head_b(knn_run):
    x, y = blobs()
    model = iic.load(knn_run.run_dir)
    results = model.evaluate(x=x, y=y, accelerator="cpu")
    assert results["B"]["reported"]["acc"] == pytest.approx(knn_run.results["B"]["reported"]["acc"])
    assert results["B"]["reported"]["acc"] >= 0.95 and {"nmi", "ari"} <= set(results["B"]["reported"])
    assert sum(results["B"]["cluster_sizes"]) == 180
    unlabelled = model.evaluate(x=Frame(x[:, ::-1], NAMES[::-1]), accelerator="cpu")
    assert "reported" not in unlabelled["B"]  # no labels, no scores; the cluster sizes as with them
    assert unlabelled["B"]["cluster_sizes"] == results["B"]["cluster_sizes"]
    few = model.evaluate(x=x[:2], y=y[:2], accelerator="cpu")  # fewer samples than clusters
    assert sum(few["B"]["cluster_sizes"]) == 2


@pytest.mark.slow
def test_evaluate_on_a_file_picks_its_columns_by_name_as_predict_does(knn_run, tmp_path):
    x, y = blobs()
    model = iic.load(knn_run.run_dir)
    same = model.evaluate(data_path=str(write_csv(tmp_path / "same.csv", x)), accelerator="cpu")
    swapped = model.evaluate(data_path=str(write_csv(tmp_path / "swapped.csv", x, order=(2, 1, 0))),
                             accelerator="cpu")
    assert swapped["B"]["cluster_sizes"] == same["B"]["cluster_sizes"]
    labelled = write_csv(tmp_path / "labelled.csv", x, y, order=(2, 1, 0))
    scored = dataclasses.replace(model.config, label_column="label")
    model.module.config = scored
    assert model.evaluate(data_path=str(labelled), accelerator="cpu")["B"]["reported"]["acc"] >= 0.95


# --- resuming ------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_resume_continues_with_the_cached_graph(knn_run, tmp_path, monkeypatch, one_torch_thread):
    from iic.vectors import module

    run_dir = shutil.copytree(knn_run.run_dir, tmp_path / "knn")
    graph_file = run_dir / "neighbours.npz"
    before = graph_file.stat().st_mtime_ns
    steps = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the neighbour graph was rebuilt on resuming")

    monkeypatch.setattr(module, "neighbour_graph", no_rebuild)
    x = blobs()[0]
    run = iic.vectors.train(Frame(x, NAMES), resume=run_dir, epochs=TINY["epochs"] + 2, progress=False)
    assert run.run_dir == run_dir and graph_file.stat().st_mtime_ns == before
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["epochs"] == TINY["epochs"] + 2
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == steps + 2 * 3
    assert run.results["epoch"] == TINY["epochs"] + 2
    assert blob_accuracy(run.model.predict(x), blobs()[1]) >= 0.95  # still the three blobs
    assert os.path.getsize(graph_file) > 0


@pytest.mark.slow
def test_linear_subheads_on_the_features_themselves_learn_the_blobs(tmp_path, one_torch_thread):
    x, y = blobs()
    run = iic.vectors.train(x, y, out_dir=str(tmp_path), name="linear",
                            **{**TINY, "widths": (0,), "num_subheads": 30, "lamb_b": 3.0})
    assert_learnt(run)
    assert not any(isinstance(m, torch.nn.Linear) for m in run.model.module.net.trunk.modules())  # no hidden layer
    assert run.model.module.net.heads["B"].linear.out_features == 30 * 3  # thirty sub-heads in one layer


@pytest.mark.slow
def test_the_refit_puts_its_lowest_loss_subheads_in_head_b(tmp_path, one_torch_thread):
    x, y = blobs()
    run = iic.vectors.train(x, y, out_dir=str(tmp_path), name="refit", **{**TINY, "refit_subheads": 12})
    assert_learnt(run)
    losses = run.results["B"]["subhead_losses"]
    assert losses == sorted(losses) and run.results["B"]["reported_subhead"] == 0  # the lowest first
    model = iic.load(run.run_dir)  # the re-fitted heads are what the checkpoint holds
    assert torch.equal(model.predict(x), run.model.predict(x))


def test_the_vector_config_names_the_pair_module_s_choices():
    import iic.pairs
    import iic.vectors.config

    # The config module stays light (no torch, scikit-learn): it repeats these names, which must agree.
    assert iic.vectors.config.METRICS == iic.pairs.METRICS
    assert iic.vectors.config.INDEXES == iic.pairs.INDEXES


def test_widths_of_zero_or_positive_only():
    validate_vector_config(VectorConfig(widths=(0,)))
    with pytest.raises(IICError, match=r"widths must be positive \(or 0: no hidden layer\), got \[64, 0\]"):
        validate_vector_config(VectorConfig(widths=(64, 0)))


def test_evaluate_refuses_a_dataset_of_the_other_kind(knn_run):
    model = iic.load(knn_run.run_dir)
    with pytest.raises(IICError, match="this model clusters vectors: it cannot be evaluated on dataset 'features'"):
        model.evaluate(dataset="features", data_path="photos/")
    with pytest.raises(IICError, match="unknown dataset 'stl10'"):
        model.evaluate(dataset="stl10")
