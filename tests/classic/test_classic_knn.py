"""KNeighborsClassifier against scikit-learn's brute-force KNeighborsClassifier."""

from __future__ import annotations

import numpy as np
import pytest

from classic_cases import ambiguous_k, assert_on, dataset, on, split, to_np
from xpnet.classic import KNeighborsClassifier


def _sk_knn(k, metric):
    from sklearn.neighbors import KNeighborsClassifier as SkKNN

    return SkKNN(n_neighbors=k, algorithm="brute", metric=metric)


@pytest.mark.parametrize("name", ["iris", "wine"])
@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
def test_predictions_identical_to_sklearn(backend, name, metric):
    X_tr, X_te, y_tr, y_te = split(name, standardise=False)
    reference = _sk_knn(5, metric).fit(X_tr, y_tr)
    Xb_tr, Xb_te, yb_tr = on(backend, X_tr, X_te, y_tr)
    model = KNeighborsClassifier(n_neighbors=5, metric=metric).fit(Xb_tr, yb_tr)
    pred = model.predict(Xb_te)
    assert_on(pred, backend)
    np.testing.assert_array_equal(to_np(pred), reference.predict(X_te))
    np.testing.assert_allclose(to_np(model.predict_proba(Xb_te)), reference.predict_proba(X_te),
                               atol=1e-12)


@pytest.mark.parametrize("name", ["iris", "wine"])
@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
@pytest.mark.parametrize("k", [1, 4, 9])
def test_neighbours_agree_wherever_they_are_unique(backend, name, metric, k):
    # Querying the training set itself: iris has duplicated rows and many equal distances (its
    # values have one decimal), so some queries have a k-th and (k+1)-th neighbour at the same
    # distance; there the k nearest are not unique and any choice is valid. Everywhere else the
    # neighbour sets, votes and predictions must be scikit-learn's, and the sorted distances
    # must agree everywhere.
    X, y = dataset(name)
    reference = _sk_knn(k, metric).fit(X, y)
    Xb, yb = on(backend, X, y)
    model = KNeighborsClassifier(n_neighbors=k, metric=metric).fit(Xb, yb)
    dist, ind = model.kneighbors(Xb, n_neighbors=k + 1)
    ref_dist, ref_ind = reference.kneighbors(X, n_neighbors=k + 1)
    # scikit-learn computes ||x||^2 - 2 x.y + ||y||^2: near 0 its square root is off by ~1e-7
    np.testing.assert_allclose(to_np(dist), ref_dist, rtol=1e-9, atol=1e-6)
    all_dist = np.abs(X[:, None, :] - X[None, :, :])
    all_dist = np.sqrt((all_dist ** 2).sum(-1)) if metric == "euclidean" else all_dist.sum(-1)
    kth = to_np(dist)[:, k - 1]
    for row, (ours, theirs) in enumerate(zip(to_np(ind)[:, :k], ref_ind[:, :k])):
        # every point clearly inside the k-th distance is in both sets, none clearly outside it
        inside = set(np.flatnonzero(all_dist[row] < kth[row] - 1e-6))
        allowed = set(np.flatnonzero(all_dist[row] <= kth[row] + 1e-6))
        assert inside <= set(ours) <= allowed and inside <= set(theirs) <= allowed
    unique = ~ambiguous_k(to_np(dist), k)
    assert unique.sum() >= 45
    for ours, theirs in zip(to_np(ind)[unique, :k], ref_ind[unique, :k]):
        assert set(ours) == set(theirs)
    np.testing.assert_array_equal(to_np(model.predict(Xb))[unique], reference.predict(X)[unique])
    np.testing.assert_allclose(to_np(model.predict_proba(Xb))[unique],
                               reference.predict_proba(X)[unique], atol=1e-12)


def test_chunk_size_does_not_change_results(backend):
    X_tr, X_te, y_tr, _ = split("wine")
    Xb_tr, Xb_te, yb_tr = on(backend, X_tr, X_te, y_tr)
    results = []
    for chunk in (1, 7, 45, None):
        model = KNeighborsClassifier(n_neighbors=3, chunk_size=chunk).fit(Xb_tr, yb_tr)
        dist, ind = model.kneighbors(Xb_te)
        results.append((to_np(dist), to_np(ind), to_np(model.predict(Xb_te))))
    for dist, ind, pred in results[1:]:
        # the matrix product may round differently for another block shape
        np.testing.assert_allclose(dist, results[0][0], rtol=1e-12)
        np.testing.assert_array_equal(ind, results[0][1])
        np.testing.assert_array_equal(pred, results[0][2])


def test_ties_break_by_order_and_smallest_label(backend):
    # training points at distances 1, 1, 2, 2 from the origin; labels 5, 3, 3, 5
    X = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, -2.0]])
    y = np.array([5, 3, 3, 5])
    Xb, yb = on(backend, X, y)
    query = on(backend, np.zeros((1, 2)))
    dist, ind = KNeighborsClassifier(n_neighbors=4).fit(Xb, yb).kneighbors(query)
    np.testing.assert_array_equal(to_np(ind), [[0, 1, 2, 3]])  # stable: equal distances keep order
    np.testing.assert_allclose(to_np(dist), [[1.0, 1.0, 2.0, 2.0]])
    # two neighbours, one vote each for 5 and 3: the smaller label wins
    model = KNeighborsClassifier(n_neighbors=2).fit(Xb, yb)
    np.testing.assert_array_equal(to_np(model.predict(query)), [3])
    np.testing.assert_allclose(to_np(model.predict_proba(query)), [[0.5, 0.5]])
    # three neighbours: indices 0, 1, 2 -> labels 5, 3, 3
    np.testing.assert_array_equal(to_np(KNeighborsClassifier(n_neighbors=3).fit(Xb, yb)
                                        .predict(query)), [3])


def test_too_many_neighbours(backend):
    X_tr, _, y_tr, _ = split("iris")
    with pytest.raises(ValueError, match="KNeighborsClassifier.fit: n_neighbors=500"):
        KNeighborsClassifier(n_neighbors=500).fit(*on(backend, X_tr, y_tr))
