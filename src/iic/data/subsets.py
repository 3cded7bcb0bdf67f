"""Subsets of the data: the labelled few drawn by seed that semi-supervised uses of IIC may look at, and the sets a
protocol trains on and scores."""

import numpy as np

from iic.errors import IICError


def protocol_sets(protocol: str, dataset: str, train, test, concat):
    """(training set, evaluation set) of a protocol: 'split' trains on ``train`` and scores ``test``; 'iic' (the
    paper's) trains on both together and scores them. ``concat`` joins two sets of the task's kind."""
    if protocol == "split":
        if test is None:
            raise IICError(f"protocol 'split' needs a test split, and {dataset} has none: use --protocol iic")
        return train, test
    both = train if test is None else concat(train, test)
    return both, both


def labelled_subset(labels: np.ndarray, amount: float, seed: int = 0, stratified: bool = True,
                    leave_out: bool = True) -> np.ndarray:
    """Sorted indices of ``amount`` images (a count ≥ 1, or a fraction of them in (0, 1)) drawn with ``seed``.

    Stratified: each class gets its share of the count, in proportion to its size and at least one image (100
    labels of 10 balanced classes are 10 a class); otherwise a uniform draw. With ``leave_out`` at least one image is
    left out (to score on); without, a count of all the images takes them all."""
    labels = np.asarray(labels)
    total = len(labels)
    if not 0 < amount < np.inf:
        raise IICError(f"the number of labels must be a count ≥ 1 or a fraction in (0, 1), got {amount:g}")
    count = int(round(amount * total)) if amount < 1 else int(amount)
    if amount >= 1 and amount != count:
        raise IICError(f"the number of labels must be a whole count or a fraction below 1, got {amount:g}")
    most = total - 1 if leave_out else total
    if not 1 <= count <= most:
        raise IICError(f"{amount:g} labels: {count} of {total} labelled images; give at least 1 and "
                       f"{f'fewer than {total}' if leave_out else f'at most {total}'}")
    if count == total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    if not stratified:
        return np.sort(rng.choice(total, size=count, replace=False))
    classes, sizes = np.unique(labels, return_counts=True)
    if count < len(classes):
        raise IICError(f"{count} labels cannot cover {len(classes)} classes: give at least one label per class")
    # Largest remainders: each class its proportional share (≥ 1), the counts adding up to ``count``.
    shares = np.maximum(1, np.floor(sizes * count / total)).astype(int)
    while shares.sum() > count:
        shares[np.argmax(shares)] -= 1
    remainders = sizes * count / total - shares
    for index in np.argsort(-remainders)[: count - shares.sum()]:
        shares[index] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=min(n, size), replace=False)
              for c, n, size in zip(classes, shares, sizes)]
    return np.sort(np.concatenate(chosen))
