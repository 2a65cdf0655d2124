"""k-nearest-neighbour classification with brute-force distances computed in bounded chunks."""

from __future__ import annotations

from array_api_compat import array_namespace

from .base import (
    BaseEstimator,
    ClassifierMixin,
    check_choice,
    check_predict_X,
    check_X,
    check_y_classes,
)

# elements of the (chunk, n_train, n_features) difference block when chunk_size is None
_AUTO_CHUNK_ELEMENTS = 1 << 22


class KNeighborsClassifier(ClassifierMixin, BaseEstimator):
    """Majority vote among the ``n_neighbors`` training samples closest to x.

    Distances (``metric``): 'euclidean' ||x - x'||_2, computed as scikit-learn does from
    ||x||^2 - 2 x.x' + ||x'||^2 (one matrix product per chunk), or 'manhattan' ||x - x'||_1 from
    the differences. Queries go in chunks of ``chunk_size`` rows, each a handful of whole-array
    operations (no loop over samples). The largest temporary holds chunk_size * n_train numbers for
    'euclidean' and chunk_size * n_train * n_features for 'manhattan'; ``chunk_size=None`` picks
    the rows that keep it near 4 Mi numbers (32 MiB in float64; never fewer than one row).
    The Euclidean distances returned by ``kneighbors`` are recomputed from the differences to the
    chosen neighbours, so they are exact to rounding (a training point is at distance 0 from itself).

    Neighbours are ordered by distance with a stable sort, so equal computed distances keep the
    training order; the vote is uniform and a tie between classes goes to the smallest label (the
    first column of ``predict_proba`` reaching the maximum), as in scikit-learn's brute force.
    Where the k-th and (k+1)-th neighbours are equally far in exact arithmetic (common on iris,
    whose values have one decimal), rounding decides which one is taken, here as in scikit-learn.
    """

    def __init__(self, n_neighbors=5, metric="euclidean", chunk_size=None):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.chunk_size = chunk_size

    def fit(self, X, y):
        who = "KNeighborsClassifier.fit"
        check_choice(who, "metric", self.metric, ("euclidean", "manhattan"))
        self._check_k(who, self.n_neighbors)
        if self.chunk_size is not None and (not isinstance(self.chunk_size, int)
                                            or isinstance(self.chunk_size, bool)
                                            or self.chunk_size < 1):
            raise ValueError(f"{who}: chunk_size must be None or an int >= 1, got {self.chunk_size!r}")
        X = check_X(X, who)
        classes, codes = check_y_classes(y, X, who)
        if self.n_neighbors > X.shape[0]:
            raise ValueError(f"{who}: n_neighbors={self.n_neighbors} is more than the {X.shape[0]} "
                             f"training samples")
        self._fit_X = X
        self._fit_sq = array_namespace(X).sum(X * X, axis=1)
        self._fit_codes = codes
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        self.n_samples_fit_ = X.shape[0]
        return self

    @staticmethod
    def _check_k(who, k):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"{who}: n_neighbors must be an int >= 1, got {k!r}")

    def _rows_per_chunk(self, n_features):
        if self.chunk_size is not None:
            return self.chunk_size
        per_row = self.n_samples_fit_ * (n_features if self.metric == "manhattan" else 1)
        return max(1, _AUTO_CHUNK_ELEMENTS // per_row)

    def _distances(self, Xq):
        """(q, n_train) distances of one chunk: squared for 'euclidean' (same order, no sqrt)."""
        xp = array_namespace(Xq)
        if self.metric == "manhattan":
            return xp.sum(xp.abs(Xq[:, None, :] - self._fit_X[None, :, :]), axis=2)
        # ||x - x'||^2 = ||x||^2 - 2 x.x' + ||x'||^2: one matrix product, no (q, n, D) block
        sq = xp.sum(Xq * Xq, axis=1)[:, None] - 2.0 * (Xq @ self._fit_X.mT) + self._fit_sq[None, :]
        return xp.maximum(sq, 0.0)

    def kneighbors(self, X, n_neighbors=None, return_distance=True):
        """The ``n_neighbors`` nearest training samples of each row of X, nearest first:
        (distances (n, k), indices (n, k) int64), or indices alone with ``return_distance=False``."""
        who = "KNeighborsClassifier.kneighbors"
        X = check_predict_X(self, X, who, "_fit_X")
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        self._check_k(who, k)
        if k > self.n_samples_fit_:
            raise ValueError(f"{who}: n_neighbors={k} is more than the {self.n_samples_fit_} "
                             f"training samples")
        xp = array_namespace(X)
        step = self._rows_per_chunk(X.shape[1])
        dists, indices = [], []
        for start in range(0, X.shape[0], step):
            D = self._distances(X[start:min(start + step, X.shape[0]), :])
            order = xp.argsort(D, axis=1, stable=True)[:, :k]
            if return_distance and self.metric == "euclidean":
                order, exact = self._exact_euclidean(X[start:min(start + step, X.shape[0]), :], order)
                dists.append(exact)
            elif return_distance:
                dists.append(xp.take_along_axis(D, order, axis=1))
            indices.append(order)
        ind = xp.concat(indices, axis=0)
        if not return_distance:
            return ind
        return xp.concat(dists, axis=0), ind

    def _exact_euclidean(self, Xq, order):
        """The chosen neighbours' Euclidean distances from the differences themselves, and the
        neighbours re-ordered (stably) by them. The expansion ||x||^2 - 2 x.x' + ||x'||^2 loses
        about eps * ||x||^2 to cancellation, so a point's distance to itself can come out as
        sqrt(eps) * ||x|| instead of 0 (2e-5 on wine's features under cuBLAS); the direct
        difference costs only (q, k, n_features) operations."""
        xp = array_namespace(Xq)
        q, k = order.shape
        chosen = xp.reshape(xp.take(self._fit_X, xp.reshape(order, (q * k,)), axis=0), (q, k, Xq.shape[1]))
        diff = Xq[:, None, :] - chosen
        exact = xp.sqrt(xp.sum(diff * diff, axis=2))
        resort = xp.argsort(exact, axis=1, stable=True)
        return xp.take_along_axis(order, resort, axis=1), xp.take_along_axis(exact, resort, axis=1)

    def predict_proba(self, X):
        """(n, K): the fraction of the neighbours in each class, columns in ``classes_`` order."""
        ind = self.kneighbors(X, return_distance=False)
        xp = array_namespace(ind)
        n_classes = self.classes_.shape[0]
        neighbour_codes = xp.reshape(xp.take(self._fit_codes, xp.reshape(ind, (-1,)), axis=0),
                                     ind.shape)
        cols = xp.arange(n_classes, dtype=neighbour_codes.dtype, device=ind.device)
        votes = xp.sum(xp.astype(neighbour_codes[:, :, None] == cols[None, None, :],
                                 self._fit_X.dtype), axis=1)
        return votes / ind.shape[1]

    def predict(self, X):
        proba = self.predict_proba(X)
        xp = array_namespace(proba)
        # argmax returns the first maximum: a tied vote goes to the smallest label
        return xp.take(self.classes_, xp.argmax(proba, axis=1), axis=0)
