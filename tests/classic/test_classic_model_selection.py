"""KFold, StratifiedKFold, train_test_split and cross_val_score against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from classic_cases import assert_on, dataset, on, to_np
from xpnet.classic import (
    GaussianClassifier,
    KFold,
    LinearRegression,
    StratifiedKFold,
    cross_val_score,
    train_test_split,
)


def _labels():
    rng = np.random.default_rng(7)
    # classes out of sorted order of first appearance, uneven sizes, a class smaller than n_splits
    uneven = np.r_[np.full(11, 9), np.full(17, 2), np.full(3, 5), np.full(6, 0)]
    return {"iris": dataset("iris")[1], "wine": dataset("wine")[1],
            "uneven": rng.permutation(uneven), "random": rng.integers(0, 4, 53) * 10}


def _assert_splits_equal(ours, theirs, backend):
    ours, theirs = list(ours), list(theirs)
    assert len(ours) == len(theirs)
    for (train, test), (ref_train, ref_test) in zip(ours, theirs):
        assert_on(train, backend)
        assert_on(test, backend)
        np.testing.assert_array_equal(to_np(train), ref_train)
        np.testing.assert_array_equal(to_np(test), ref_test)


@pytest.mark.parametrize("n,n_splits", [(10, 2), (17, 5), (150, 5), (31, 7), (6, 6)])
def test_kfold_equals_sklearn(backend, n, n_splits):
    from sklearn.model_selection import KFold as SkKFold

    X = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    _assert_splits_equal(KFold(n_splits).split(on(backend, X)), SkKFold(n_splits).split(X), backend)


@pytest.mark.parametrize("labels", ["iris", "wine", "uneven", "random"])
@pytest.mark.parametrize("n_splits", [2, 3, 5])
def test_stratified_kfold_equals_sklearn(backend, labels, n_splits):
    import warnings

    from sklearn.model_selection import StratifiedKFold as SkStratified

    y = _labels()[labels]
    X = np.zeros((len(y), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only 3 members"
        theirs = list(SkStratified(n_splits).split(X, y))
    _assert_splits_equal(StratifiedKFold(n_splits).split(*on(backend, X, y)), theirs, backend)


def test_shuffled_folds_are_documented_pcg64_and_keep_class_counts(backend):
    from sklearn.model_selection import StratifiedKFold as SkStratified

    y = _labels()["wine"]
    X = np.zeros((len(y), 1))
    Xb, yb = on(backend, X, y)
    # KFold(shuffle=True): PCG64(random_state).permutation(n) cut into consecutive folds
    perm = np.random.Generator(np.random.PCG64(5)).permutation(len(y))
    folds = list(KFold(4, shuffle=True, random_state=5).split(Xb))
    np.testing.assert_array_equal(to_np(folds[0][1]), perm[:45])
    np.testing.assert_array_equal(np.sort(np.concatenate([to_np(t) for _, t in folds])),
                                  np.arange(len(y)))
    # StratifiedKFold(shuffle=True): other members than scikit-learn's, same class counts per fold
    ours = [to_np(t) for _, t in StratifiedKFold(4, shuffle=True, random_state=5).split(Xb, yb)]
    again = [to_np(t) for _, t in StratifiedKFold(4, shuffle=True, random_state=5).split(Xb, yb)]
    theirs = [t for _, t in SkStratified(4, shuffle=True, random_state=5).split(X, y)]
    for a, b, c in zip(ours, again, theirs):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(np.bincount(y[a], minlength=3), np.bincount(y[c], minlength=3))
    np.testing.assert_array_equal(np.sort(np.concatenate(ours)), np.arange(len(y)))
    unshuffled = [to_np(t) for _, t in StratifiedKFold(4).split(Xb, yb)]
    assert any(not np.array_equal(a, b) for a, b in zip(ours, unshuffled))


@pytest.mark.parametrize("test_size,train_size", [(None, None), (0.3, None), (None, 0.6),
                                                  (20, None), (0.2, 0.5), (None, 33)])
def test_train_test_split_sizes_and_unshuffled_split_equal_sklearn(backend, test_size, train_size):
    from sklearn.model_selection import train_test_split as sk_split

    X, y = dataset("iris")
    Xb, yb = on(backend, X, y)
    kw = dict(test_size=test_size, train_size=train_size)
    ours = train_test_split(Xb, yb, shuffle=False, **kw)
    theirs = sk_split(X, y, shuffle=False, **kw)
    for a, b in zip(ours, theirs):
        assert_on(a, backend)
        np.testing.assert_array_equal(to_np(a), b)
    shuffled = train_test_split(Xb, yb, random_state=3, **kw)
    theirs = sk_split(X, y, random_state=3, **kw)
    assert [tuple(a.shape) for a in shuffled] == [b.shape for b in theirs]


def test_train_test_split_shuffle_is_documented_pcg64(backend):
    X, y = dataset("wine")
    X_tr, X_te, y_tr, y_te = train_test_split(*on(backend, X, y), test_size=0.25, random_state=11)
    perm = np.random.Generator(np.random.PCG64(11)).permutation(len(y))
    n_test = int(np.ceil(0.25 * len(y)))
    np.testing.assert_array_equal(to_np(X_te), X[perm[:n_test]])
    np.testing.assert_array_equal(to_np(y_tr), y[perm[n_test:]])


def test_train_test_split_stratify_keeps_proportions(backend):
    y = _labels()["uneven"]
    X = np.arange(len(y), dtype=np.float64)[:, None]
    Xb, yb = on(backend, X, y)
    X_tr, X_te, y_tr, y_te = train_test_split(Xb, yb, test_size=0.3, random_state=0, stratify=yb)
    counts = {c: (y == c).sum() for c in np.unique(y)}
    n_test = int(np.ceil(0.3 * len(y)))
    got = {c: (to_np(y_te) == c).sum() for c in counts}
    assert sum(got.values()) == n_test
    for c, n_c in counts.items():
        assert abs(got[c] - n_test * n_c / len(y)) < 1.0
    # every sample lands in exactly one part, rows stay with their labels
    rows = np.r_[to_np(X_tr)[:, 0], to_np(X_te)[:, 0]].astype(int)
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(y)))
    np.testing.assert_array_equal(y[to_np(X_te)[:, 0].astype(int)], to_np(y_te))


def test_cross_val_score_equals_sklearn(backend):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import cross_val_score as sk_cross_val_score

    X, y = dataset("wine")
    Xb, yb = on(backend, X, y)
    # same folds (StratifiedKFold for a classifier) and the same model: identical accuracies
    scores = cross_val_score(GaussianClassifier("shared"), Xb, yb, cv=5)
    assert_on(scores, backend)
    np.testing.assert_allclose(to_np(scores), sk_cross_val_score(
        LinearDiscriminantAnalysis(solver="lsqr"), X, y, cv=5), atol=1e-12)
    # regressors: KFold and R^2
    Xd, yd = dataset("diabetes")
    scores = cross_val_score(LinearRegression(alpha=1.0), *on(backend, Xd, yd), cv=4)
    np.testing.assert_allclose(to_np(scores), sk_cross_val_score(Ridge(alpha=1.0), Xd, yd, cv=4),
                               rtol=1e-9)


def test_splitter_errors(backend):
    X = on(backend, np.zeros((4, 1)))
    with pytest.raises(ValueError, match="KFold.split: cannot make n_splits=5 folds of 4 samples"):
        list(KFold(5).split(X))
    with pytest.raises(ValueError, match="train_test_split: array 0 has 4 samples but array 1 has 3"):
        train_test_split(X, on(backend, np.zeros(3)))
    with pytest.raises(ValueError, match="StratifiedKFold.split: n_splits=3"):
        list(StratifiedKFold(3).split(X, on(backend, np.array([0, 0, 1, 1]))))
