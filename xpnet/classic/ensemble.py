"""Bagging: many copies of one classifier, each fitted on a resample of the data, then a vote."""

from __future__ import annotations

from array_api_compat import array_namespace

from .base import (
    BaseEstimator,
    ClassifierMixin,
    check_predict_X,
    check_X,
    check_y_classes,
    clone,
    host_rng,
    one_hot,
)

_MAX_DRAWS = 20  # redraws allowed for a resample that happens to hold a single class


class BaggingClassifier(ClassifierMixin, BaseEstimator):
    """Bootstrap aggregation of ``n_estimators`` clones of ``estimator``.

    Each clone is fitted on ``max_samples`` samples (a float is a fraction of n, an int a count)
    drawn with replacement (``bootstrap=True``) or without. Labels are encoded as 0..K-1 for the
    clones, so a resample missing a class still votes in the full label set (a resample with a
    single class is redrawn). Prediction averages the clones' ``predict_proba`` when they all
    have one (soft voting, as scikit-learn does), else counts their ``predict`` votes; ties go
    to the smallest label. ``estimator=None`` bags ``GaussianClassifier('diagonal')`` (Gaussian
    naive Bayes): xpnet has no decision tree, scikit-learn's default.

    Resamples come from ``random_state`` (an int seeds NumPy's PCG64 on the host; None uses the
    backend's seeded generator); a clone with a ``random_state`` parameter of its own gets a seed
    drawn from the same generator, so the whole ensemble repeats exactly.
    After fit: ``estimators_``, ``estimators_samples_`` (index arrays), ``classes_``.
    """

    def __init__(self, estimator=None, n_estimators=10, max_samples=1.0, bootstrap=True,
                 random_state=None):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.bootstrap = bootstrap
        self.random_state = random_state

    def _base(self):
        if self.estimator is not None:
            return self.estimator
        from .gaussian import GaussianClassifier

        return GaussianClassifier(covariance="diagonal")

    def _n_draw(self, who, n):
        m = self.max_samples
        if isinstance(m, float) and 0.0 < m <= 1.0:
            return max(1, int(m * n))
        if isinstance(m, int) and not isinstance(m, bool) and 1 <= m <= n:
            return m
        raise ValueError(f"{who}: max_samples must be a fraction in (0, 1] or a count in "
                         f"[1, {n}], got {m!r}")

    def fit(self, X, y):
        who = "BaggingClassifier.fit"
        if not isinstance(self.n_estimators, int) or isinstance(self.n_estimators, bool) \
                or self.n_estimators < 1:
            raise ValueError(f"{who}: n_estimators must be an int >= 1, got {self.n_estimators!r}")
        base = self._base()
        if not hasattr(base, "fit") or not hasattr(base, "predict"):
            raise ValueError(f"{who}: estimator must have fit and predict, got {type(base).__name__}")
        X = check_X(X, who)
        classes, codes = check_y_classes(y, X, who)
        xp = array_namespace(X)
        n = X.shape[0]
        m = self._n_draw(who, n)
        rng = host_rng(self.random_state, X)
        seeds = "random_state" in base.get_params(deep=False)
        self.estimators_, self.estimators_samples_, self._estimator_classes = [], [], []
        for _ in range(self.n_estimators):
            for _ in range(_MAX_DRAWS):
                idx = rng.integers(0, n, (m,)) if self.bootstrap else rng.permutation(n)[:m]
                sample_codes = xp.take(codes, idx, axis=0)
                if int(xp.max(sample_codes)) != int(xp.min(sample_codes)):
                    break
            else:
                raise ValueError(f"{who}: {_MAX_DRAWS} resamples of {m} samples in a row held a "
                                 f"single class; raise max_samples")
            model = clone(base)
            if seeds:
                model.set_params(random_state=int(rng.integers(0, 2 ** 31 - 1, (1,))[0]))
            model.fit(xp.take(X, idx, axis=0), sample_codes)
            self.estimators_.append(model)
            self.estimators_samples_.append(idx)
        self.classes_ = classes
        self.n_features_in_ = X.shape[1]
        self._fit_reference = X[:1, :]
        return self

    def predict_proba(self, X):
        """(n, K): the mean of the clones' probabilities mapped onto ``classes_`` (soft voting), or
        the fraction of clones voting for each class when a clone has no ``predict_proba``."""
        X = check_predict_X(self, X, "BaggingClassifier.predict_proba", "_fit_reference")
        xp = array_namespace(X)
        k = self.classes_.shape[0]
        total = xp.zeros((X.shape[0], k), dtype=X.dtype, device=X.device)
        soft = all(hasattr(est, "predict_proba") for est in self.estimators_)
        for est in self.estimators_:
            if soft:
                # a clone knows only the codes it saw: a one-hot map puts its columns in place
                mapping = one_hot(xp.astype(est.classes_, xp.int64), k, X.dtype)
                total = total + est.predict_proba(X) @ mapping
            else:
                total = total + one_hot(xp.astype(est.predict(X), xp.int64), k, X.dtype)
        return total / len(self.estimators_)

    def predict(self, X):
        proba = self.predict_proba(X)
        xp = array_namespace(proba)
        return xp.take(self.classes_, xp.argmax(proba, axis=1), axis=0)
