"""Labelled subsets drawn by seed, and clusters named from them (IIC+ with few labels)."""

import numpy as np
import pytest

from iic.data.subsets import labelled_subset
from iic.errors import IICError
from iic.metrics import label_efficient_accuracy


def test_a_stratified_draw_gives_each_class_its_share_and_is_reproducible():
    labels = np.repeat(np.arange(10), [100] * 9 + [300])  # nine classes of 100, one of 300
    chosen = labelled_subset(labels, 120, seed=3)
    assert len(chosen) == len(set(chosen)) == 120
    counts = np.bincount(labels[chosen], minlength=10)
    assert counts.tolist() == [10] * 9 + [30]
    assert np.array_equal(chosen, labelled_subset(labels, 120, seed=3))
    assert not np.array_equal(chosen, labelled_subset(labels, 120, seed=4))


def test_a_fraction_counts_images_and_every_class_gets_at_least_one():
    labels = np.repeat([0, 1, 2], [990, 5, 5])
    chosen = labelled_subset(labels, 0.01, seed=0)  # 10 of 1000
    assert len(chosen) == 10 and set(labels[chosen]) == {0, 1, 2}
    assert len(labelled_subset(labels, 7, seed=0, stratified=False)) == 7


@pytest.mark.parametrize("amount, message", [
    (0, "a count ≥ 1 or a fraction"), (-3, "a count ≥ 1 or a fraction"), (float("nan"), "a count ≥ 1 or a fraction"),
    (2.5, "a whole count"), (10, "fewer than 10"), (2, "cannot cover 3 classes"),
])
def test_impossible_amounts_are_one_clear_error(amount, message):
    with pytest.raises(IICError, match=message):
        labelled_subset(np.repeat([0, 1, 2], [4, 3, 3]), amount)


def test_clusters_are_named_on_the_few_and_scored_on_the_rest():
    # Fitted on the labelled few: cluster 0 → class 1, cluster 1 → class 0 (Hungarian, k = classes).
    few = np.array([[0, 3], [2, 0]])
    rest = np.array([[5, 40], [45, 10]])  # under that mapping 40 + 45 of 100 are right
    assert label_efficient_accuracy(few, rest) == pytest.approx(0.85)
    # Over-clustering (k > classes): many-to-one, each cluster to its majority class among the few.
    few_over = np.array([[1, 0], [0, 1], [1, 0]])
    rest_over = np.array([[10, 0], [2, 8], [0, 5]])
    assert label_efficient_accuracy(few_over, rest_over) == pytest.approx(18 / 25)
