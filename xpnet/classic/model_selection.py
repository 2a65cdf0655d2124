"""Splitting data for evaluation: train_test_split, KFold, StratifiedKFold, cross_val_score.

Index arrays are int64 arrays in the namespace and on the device of the data they index. With
``shuffle=False`` the splits are scikit-learn's, index for index. Shuffling draws from a NumPy
PCG64 generator seeded with ``random_state`` (on the host, then uploaded: the same split on every
backend), or from the backend's seeded generator when ``random_state`` is None (repeatable after
``xpnet.manual_seed``). scikit-learn shuffles with a Mersenne Twister (``RandomState``), so
shuffled splits have the same sizes and class balance as scikit-learn's but other members.
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace
from array_api_compat import device as array_device

from ..backends import check_same_device
from .base import (
    as_backend_array,
    check_y_classes,
    clone,
    host_rng,
    is_classifier,
    one_hot,
    to_python_list,
)


def _n_samples(X, who):
    if not hasattr(X, "shape") or len(X.shape) < 1:
        raise ValueError(f"{who}: expected an array with a samples axis, got {type(X).__name__}")
    return X.shape[0]


def _check_n_splits(who, n_splits, n):
    if not isinstance(n_splits, int) or isinstance(n_splits, bool) or n_splits < 2:
        raise ValueError(f"{who}: n_splits must be an int >= 2, got {n_splits!r}")
    if n_splits > n:
        raise ValueError(f"{who}: cannot make n_splits={n_splits} folds of {n} samples")


def _arange(n, like):
    xp = array_namespace(like)
    return xp.arange(n, dtype=xp.int64, device=array_device(like))


class KFold:
    """K consecutive folds; fold i is the test set once while the others train.

    The first n % n_splits folds hold n // n_splits + 1 samples, the rest n // n_splits (as in
    scikit-learn). ``shuffle`` permutes the samples once before cutting the folds.
    """

    def __init__(self, n_splits=5, shuffle=False, random_state=None):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state
        if not shuffle and random_state is not None:
            raise ValueError("KFold: random_state has no effect without shuffle=True; leave it None")

    def get_n_splits(self, X=None, y=None, groups=None):
        return self.n_splits

    def split(self, X, y=None, groups=None):
        """Yield (train_index, test_index) int64 arrays on X's device, one pair per fold."""
        X = as_backend_array(X, "KFold.split", "X")
        xp = array_namespace(X)
        n = _n_samples(X, "KFold.split")
        _check_n_splits("KFold.split", self.n_splits, n)
        order = host_rng(self.random_state, X).permutation(n) if self.shuffle else _arange(n, X)
        sizes = [n // self.n_splits + (1 if i < n % self.n_splits else 0)
                 for i in range(self.n_splits)]
        start = 0
        for size in sizes:
            stop = start + size
            train = xp.concat([order[:start], order[stop:]])
            yield train, order[start:stop]
            start = stop

    def __repr__(self):
        return (f"{type(self).__name__}(n_splits={self.n_splits}, shuffle={self.shuffle}, "
                f"random_state={self.random_state})")


class StratifiedKFold(KFold):
    """K folds that each keep the class proportions of y, scikit-learn's allocation exactly.

    Classes are numbered in order of first appearance in y; sorting those numbers and dealing the
    sorted list round-robin into the folds decides how many samples of each class each fold gets.
    Without ``shuffle`` each class's samples then go to the folds in their original order, the
    first ones to fold 0 (scikit-learn's assignment); with ``shuffle`` the order within each
    class is random.
    """

    def split(self, X, y, groups=None):
        who = "StratifiedKFold.split"
        X = as_backend_array(X, who, "X")
        xp = array_namespace(X)
        n = _n_samples(X, who)
        _check_n_splits(who, self.n_splits, n)
        _, codes = check_y_classes(y, X if X.ndim == 2 else xp.reshape(X, (n, -1)), who,
                                   min_classes=1)
        folds = self._test_folds(codes, n, who, X)
        for i in range(self.n_splits):
            yield xp.nonzero(folds != i)[0], xp.nonzero(folds == i)[0]

    def _test_folds(self, codes, n, who, like):
        xp = array_namespace(codes)
        k = int(xp.max(codes)) + 1
        member = one_hot(codes, k, xp.int64)  # (n, K), classes in sorted order
        counts = to_python_list(xp.sum(member, axis=0))
        if all(self.n_splits > c for c in counts):
            raise ValueError(f"{who}: n_splits={self.n_splits} is more than the number of samples "
                             f"in every class (largest class has {max(counts)})")
        # renumber classes by first appearance, as scikit-learn does before allocating
        positions = xp.reshape(_arange(n, like), (n, 1))
        first = to_python_list(xp.min(xp.where(member == 1, positions, n), axis=0))
        appearance = sorted(range(k), key=lambda c: first[c])
        # how many samples of class c fold f receives: dealing the sorted class list round-robin
        allocation = [[0] * self.n_splits for _ in range(k)]
        start = 0
        for c in appearance:
            stop = start + counts[c]
            for f in range(self.n_splits):
                # positions p in [start, stop) with p % n_splits == f
                allocation[c][f] = (_count_residue(stop, f, self.n_splits)
                                    - _count_residue(start, f, self.n_splits))
            start = stop
        # boundaries[c][f]: the first rank within class c that belongs to fold f + 1
        boundaries = []
        for c in range(k):
            total, row = 0, []
            for f in range(self.n_splits):
                total += allocation[c][f]
                row.append(total)
            boundaries.append(row)
        bounds = xp.asarray(boundaries, dtype=xp.int64, device=array_device(codes))  # (K, n_splits)
        if self.shuffle:
            order = host_rng(self.random_state, like).permutation(n)
        else:
            order = _arange(n, like)
        ordered = xp.take(member, order, axis=0)
        # rank of each sample among its class, counted along `order`
        ranks = xp.sum(xp.cumulative_sum(ordered, axis=0) * ordered, axis=1) - 1
        ordered_codes = xp.take(codes, order, axis=0)
        fold_of_ordered = xp.sum(xp.astype(ranks[:, None] >= xp.take(bounds, ordered_codes, axis=0),
                                           xp.int64), axis=1)
        # undo the permutation: sample order[j] is in fold fold_of_ordered[j]
        return xp.take(fold_of_ordered, xp.argsort(order), axis=0)


def _count_residue(stop, residue, modulus):
    """How many p in [0, stop) have p % modulus == residue."""
    return max(0, (stop - residue + modulus - 1) // modulus)


def train_test_split(*arrays, test_size=None, train_size=None, random_state=None, shuffle=True,
                     stratify=None):
    """Split arrays (same first dimension) into [a_train, a_test, b_train, b_test, ...].

    Sizes follow scikit-learn: a float is a fraction (the test count rounds up, the train count
    down), an int a count; with neither given the test set is 25 %. ``shuffle=False`` takes the
    first samples for training and the next for testing, as scikit-learn does. ``stratify`` (class
    labels, usually y) gives each class test members in proportion to its size: the floors of
    n_test * n_c / n, plus one for the classes with the largest remainders (ties to the smaller
    label) until the counts sum to n_test; the training counts are shared out the same way among
    the samples left.
    """
    who = "train_test_split"
    if not arrays:
        raise ValueError(f"{who}: at least one array is required")
    first = as_backend_array(arrays[0], who, "array 0")
    arrays = [first] + [as_backend_array(a, who, f"array {i}", like=first)
                        for i, a in enumerate(arrays[1:], start=1)]
    n = _n_samples(arrays[0], who)
    for i, a in enumerate(arrays[1:], start=1):
        if _n_samples(a, who) != n:
            raise ValueError(f"{who}: array 0 has {n} samples but array {i} has {a.shape[0]}")
    check_same_device(*arrays, op=who)
    n_train, n_test = _split_sizes(who, n, test_size, train_size)
    like = arrays[0]
    if stratify is not None:
        if not shuffle:
            raise ValueError(f"{who}: stratify needs shuffle=True")
        train, test = _stratified_indices(who, stratify, like, n, n_train, n_test, random_state)
    elif shuffle:
        order = host_rng(random_state, like).permutation(n)
        test, train = order[:n_test], order[n_test:n_test + n_train]
    else:
        order = _arange(n, like)
        train, test = order[:n_train], order[n_train:n_train + n_test]
    out = []
    for a in arrays:
        ax = array_namespace(a)
        out.extend([ax.take(a, train, axis=0), ax.take(a, test, axis=0)])
    return out


def _split_sizes(who, n, test_size, train_size):
    def count(value, name, rounding):
        if value is None:
            return None
        if isinstance(value, float):
            if not 0.0 < value < 1.0:
                raise ValueError(f"{who}: {name} as a fraction must be in (0, 1), got {value}")
            return rounding(value * n)
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 < value < n:
                raise ValueError(f"{who}: {name}={value} must be between 1 and {n - 1} samples")
            return value
        raise ValueError(f"{who}: {name} must be a float fraction or an int count, got {value!r}")

    n_test = count(test_size, "test_size", math.ceil)
    n_train = count(train_size, "train_size", math.floor)
    if n_test is None and n_train is None:
        n_test = math.ceil(0.25 * n)
    if n_test is None:
        n_test = n - n_train
    if n_train is None:
        n_train = n - n_test
    if n_train < 1 or n_test < 1 or n_train + n_test > n:
        raise ValueError(f"{who}: {n} samples cannot give {n_train} for training and {n_test} for "
                         f"testing")
    return n_train, n_test


def _stratified_indices(who, stratify, like, n, n_train, n_test, random_state):
    xp = array_namespace(like)
    labels = as_backend_array(stratify, who, "stratify", like=like)
    if labels.shape[0] != n:
        raise ValueError(f"{who}: stratify has {labels.shape[0]} labels for {n} samples")
    column = xp.reshape(_arange(n, like), (n, 1))
    _, codes = check_y_classes(labels, column, who, min_classes=1)
    k = int(xp.max(codes)) + 1
    if n_test < k or n_train < k:
        raise ValueError(f"{who}: with {k} classes both sets need at least {k} samples, got "
                         f"{n_train} train and {n_test} test")
    member = one_hot(codes, k, xp.int64)
    counts = to_python_list(xp.sum(member, axis=0))
    test_counts = _proportional_counts(counts, n_test)
    train_counts = _proportional_counts([c - t for c, t in zip(counts, test_counts)], n_train)
    order = host_rng(random_state, like).permutation(n)
    ordered = xp.take(member, order, axis=0)
    ranks = xp.sum(xp.cumulative_sum(ordered, axis=0) * ordered, axis=1) - 1  # rank within class
    ordered_codes = xp.take(codes, order, axis=0)
    dev = array_device(codes)
    n_test_of = xp.take(xp.asarray(test_counts, dtype=xp.int64, device=dev), ordered_codes, axis=0)
    n_train_of = xp.take(xp.asarray(train_counts, dtype=xp.int64, device=dev), ordered_codes, axis=0)
    in_test = ranks < n_test_of
    in_train = (ranks >= n_test_of) & (ranks < n_test_of + n_train_of)
    return (xp.take(order, xp.nonzero(in_train)[0], axis=0),
            xp.take(order, xp.nonzero(in_test)[0], axis=0))


def _proportional_counts(weights, total):
    """Integers summing to ``total`` in proportion to ``weights``: the floors of
    total * w / sum(w), plus one for the largest remainders (ties to the earlier class)."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(weights)), key=lambda c: (-(exact[c] - counts[c]), c))
    for c in by_remainder[:total - sum(counts)]:
        counts[c] += 1
    return counts


def cross_val_score(estimator, X, y, cv=5):
    """``estimator.score`` of a fresh clone on each test fold, as a float64 array on X's device.

    ``cv`` is a number of folds (StratifiedKFold for classifiers, KFold otherwise, unshuffled as in
    scikit-learn), a splitter with ``split(X, y)``, or an iterable of (train, test) index arrays.
    """
    who = "cross_val_score"
    X = as_backend_array(X, who, "X")
    y = as_backend_array(y, who, "y", like=X)
    xp = array_namespace(X)
    if isinstance(cv, int) and not isinstance(cv, bool):
        cv = StratifiedKFold(cv) if is_classifier(estimator) else KFold(cv)
    splits = cv.split(X, y) if hasattr(cv, "split") else cv
    scores = []
    for train, test in splits:
        model = clone(estimator).fit(xp.take(X, train, axis=0), xp.take(y, train, axis=0))
        scores.append(model.score(xp.take(X, test, axis=0), xp.take(y, test, axis=0)))
    if not scores:
        raise ValueError(f"{who}: cv produced no splits")
    return xp.asarray(scores, dtype=xp.float64, device=array_device(X))
