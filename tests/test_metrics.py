import numpy as np
import pytest
import torch

from iic.metrics import ContingencyTables, cluster_scores, hungarian_mapping, many_to_one_mapping, segmentation_scores


def table_from(clusters, labels, k, c):
    t = np.zeros((k, c), dtype=np.int64)
    for a, b in zip(clusters, labels):
        t[a, b] += 1
    return t


def test_hungarian_accuracy_on_a_permuted_labelling():
    labels = [0, 0, 1, 1, 2, 2, 2]
    clusters = [2, 2, 0, 0, 1, 1, 0]  # one mistake
    scores = cluster_scores(table_from(clusters, labels, 3, 3))
    assert scores.acc == pytest.approx(6 / 7)
    assert scores.mapping == {2: 0, 0: 1, 1: 2}


def test_hungarian_is_one_to_one_not_greedy():
    # Greedy majority would map both clusters to class 0; one-to-one must give cluster 1 class 1.
    t = np.array([[5, 0], [4, 3]])
    assert hungarian_mapping(t) == {0: 0, 1: 1}
    assert cluster_scores(t).acc == pytest.approx(8 / 12)


def test_many_to_one_for_over_clustering():
    labels = [0, 0, 0, 1, 1, 1]
    clusters = [0, 1, 1, 2, 3, 3]
    t = table_from(clusters, labels, 4, 2)
    assert many_to_one_mapping(t) == {0: 0, 1: 0, 2: 1, 3: 1}
    assert cluster_scores(t).acc == 1.0


def test_nmi_ari_perfect_and_chance():
    t = np.diag([5, 5, 5])
    s = cluster_scores(t)
    assert (s.acc, s.nmi, s.ari) == pytest.approx((1.0, 1.0, 1.0))
    independent = np.full((2, 2), 10)
    s = cluster_scores(independent)
    assert s.nmi == pytest.approx(0.0, abs=1e-9) and s.acc == 0.5


def test_segmentation_scores_pooled_and_miou():
    # clusters × classes; cluster 1 → class 0 and cluster 0 → class 1 after matching
    t = np.array([[1, 9], [8, 2]])
    s = segmentation_scores(t)
    assert s.pixel_acc == pytest.approx(17 / 20)
    # class 0: TP 8, predicted 10, true 9 → IoU 8/11; class 1: TP 9, predicted 10, true 11 → 9/12
    assert s.iou == pytest.approx([8 / 11, 9 / 12])
    assert s.miou == pytest.approx((8 / 11 + 9 / 12) / 2)


def test_contingency_tables_count_and_ignore():
    metric = ContingencyTables(num_subheads=2, num_clusters=3, num_classes=2, ignore_index=255)
    clusters = torch.tensor([[0, 1, 2, 2], [1, 1, 1, 0]])
    labels = torch.tensor([0, 1, 255, 1])
    metric.update(clusters, labels)
    tables = metric.compute()
    assert tables[0].tolist() == [[1, 0], [0, 1], [0, 1]]
    assert tables[1].tolist() == [[0, 1], [1, 1], [0, 0]]


@pytest.mark.parametrize("clusters, labels", [
    ([[0, 1]], [0, 3]),  # class 3 of 3 would have been counted as (cluster 2, class 0)
    ([[0, 3]], [0, 1]),
    ([[-1, 0]], [0, 1]),
])
def test_contingency_tables_refuse_ids_out_of_range(clusters, labels):
    metric = ContingencyTables(num_subheads=1, num_clusters=3, num_classes=3)
    with pytest.raises(ValueError, match=r"cluster ids 0\.\.2 and class ids 0\.\.2"):
        metric.update(torch.tensor(clusters), torch.tensor(labels))
    assert not metric.compute().any()


def test_scores_of_an_empty_table_are_all_undefined():
    scores = cluster_scores(np.zeros((3, 3), dtype=np.int64))
    assert np.isnan([scores.acc, scores.nmi, scores.ari]).all()
