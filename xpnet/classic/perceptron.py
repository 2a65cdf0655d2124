"""Rosenblatt's perceptron, online, one-vs-rest for more than two classes (as scikit-learn's)."""

from __future__ import annotations

from array_api_compat import array_namespace

from .base import (
    BaseEstimator,
    ClassifierMixin,
    check_max_iter,
    check_positive,
    check_predict_X,
    check_X,
    check_y_classes,
    host_rng,
    one_hot,
    to_python_list,
    warn_not_converged,
)


def ovr_targets(codes, n_classes, dtype):
    """+1 / -1 targets: one column for two classes (+1 = classes_[1]), one per class otherwise."""
    xp = array_namespace(codes)
    if n_classes == 2:
        return 2.0 * xp.astype(codes, dtype)[:, None] - 1.0
    return 2.0 * one_hot(codes, n_classes, dtype) - 1.0


def ovr_predict(classes, scores):
    """Labels from one-vs-rest scores: the sign for two classes, the largest score otherwise."""
    xp = array_namespace(scores)
    if scores.ndim == 1:
        return xp.take(classes, xp.astype(scores > 0, xp.int64), axis=0)
    return xp.take(classes, xp.argmax(scores, axis=1), axis=0)


class Perceptron(ClassifierMixin, BaseEstimator):
    """The perceptron rule, one sample at a time (scikit-learn's Perceptron without a penalty).

    For each sample (x_i, t_i), t_i in {-1, +1}, in an order reshuffled every epoch:
        if t_i (w.x_i + b) <= 0:   w <- w + eta0 t_i x_i,   b <- b + eta0 t_i
    With K > 2 classes, K such perceptrons (class k against the rest) learn side by side on the same
    sample order; predict takes the class with the largest score.

    Stopping follows scikit-learn: the epoch loss is sum_i max(0, -t_i (w.x_i + b)) before each
    update; a perceptron stops after ``n_iter_no_change`` epochs in a row whose loss is not below
    (best loss - tol * n_samples). ``tol=None`` runs all ``max_iter`` epochs.

    ``shuffle`` reorders the samples each epoch with a generator seeded by ``random_state`` (an int
    seeds NumPy's PCG64 on the host; None uses the backend's seeded generator), so the sequence of
    updates differs from scikit-learn's (a Mersenne Twister) but repeats exactly on every backend.

    After fit: ``coef_`` (1 or K, n_features), ``intercept_`` (1 or K,), ``classes_``, ``n_iter_``.
    """

    def __init__(self, eta0=1.0, max_iter=1000, tol=1e-3, shuffle=True, random_state=0,
                 fit_intercept=True, n_iter_no_change=5):
        self.eta0 = eta0
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.random_state = random_state
        self.fit_intercept = fit_intercept
        self.n_iter_no_change = n_iter_no_change

    def fit(self, X, y):
        who = "Perceptron.fit"
        check_positive(who, "eta0", self.eta0)
        check_max_iter(who, self.max_iter)
        if self.tol is not None:
            check_positive(who, "tol", self.tol, allow_zero=True)
        X = check_X(X, who)
        classes, codes = check_y_classes(y, X, who)
        xp = array_namespace(X)
        n, d = X.shape
        T = ovr_targets(codes, classes.shape[0], X.dtype)
        m = T.shape[1]
        rng = host_rng(self.random_state, X) if self.shuffle else None
        W = xp.zeros((d, m), dtype=X.dtype, device=X.device)
        b = xp.zeros((m,), dtype=X.dtype, device=X.device)
        eta0 = float(self.eta0)
        active = [True] * m
        active_mask = xp.ones((m,), dtype=X.dtype, device=X.device)
        best = [float("inf")] * m
        stalled = [0] * m
        epoch = 0
        for epoch in range(1, self.max_iter + 1):
            if rng is not None:
                order = rng.permutation(n)
                Xe, Te = xp.take(X, order, axis=0), xp.take(T, order, axis=0)
            else:
                Xe, Te = X, T
            # eta0 and the frozen classes are folded into the step targets once per epoch; rows
            # are split out once too (indexing one row at a time costs more than the arithmetic)
            rows = xp.unstack(Xe, axis=0)
            columns = xp.unstack(Xe[:, :, None], axis=0)
            targets = xp.unstack(Te, axis=0)
            steps = xp.unstack(eta0 * Te * active_mask, axis=0)
            margins = []
            for x, x_col, t, step in zip(rows, columns, targets, steps):
                margin = t * (x @ W + b)
                margins.append(margin)
                update = xp.where(margin <= 0.0, step, 0.0)
                W = W + x_col * update
                if self.fit_intercept:
                    b = b + update
            loss = xp.sum(xp.maximum(-xp.stack(margins, axis=0), 0.0), axis=0)
            if self.tol is None:
                continue
            for k, value in enumerate(to_python_list(loss)):
                if not active[k]:
                    continue
                stalled[k] = stalled[k] + 1 if value > best[k] - self.tol * n else 0
                best[k] = min(best[k], value)
                if stalled[k] >= self.n_iter_no_change:
                    active[k] = False
            if not any(active):
                break
            active_mask = xp.asarray([1.0 if a else 0.0 for a in active], dtype=X.dtype,
                                     device=X.device)
        else:
            if self.tol is not None:
                warn_not_converged(who, self.max_iter)
        self.coef_ = W.mT
        self.intercept_ = b
        self.classes_ = classes
        self.n_iter_ = epoch
        self.n_features_in_ = d
        return self

    def decision_function(self, X):
        """Scores w.x + b: shape (n,) for two classes, (n, K) otherwise."""
        X = check_predict_X(self, X, "Perceptron.decision_function", "coef_")
        scores = X @ self.coef_.mT + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X):
        scores = self.decision_function(X)
        return ovr_predict(self.classes_, scores)
