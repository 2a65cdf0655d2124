"""GaussianClassifier posteriors against QDA, LDA and GaussianNB, and against scipy's densities."""

from __future__ import annotations

import numpy as np
import pytest

from classic_cases import assert_on, dataset, on, to_np
from xpnet.classic import GaussianClassifier


def _qda_divides_by_n() -> bool:
    """scikit-learn 1.9's QDA uses the ML covariance (divide by n_k); older ones divide by n_k - 1."""
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    X = np.array([[0.0, 0.0], [2.0, 1.0], [1.0, 3.0], [5.0, 5.0], [7.0, 6.0], [6.0, 8.0]])
    y = np.array([0, 0, 0, 1, 1, 1])
    qda = QuadraticDiscriminantAnalysis(store_covariance=True).fit(X, y)
    return np.allclose(qda.covariance_[0], np.cov(X[:3].T, bias=True))


def qda_posteriors(X, y, query):
    """QDA's posteriors for the ML covariance on any scikit-learn version: where QDA divides by
    n_k - 1, one extra sample at each class mean (same mean, same scatter) turns that into n_k,
    and the priors are pinned to the original class frequencies."""
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    classes, counts = np.unique(y, return_counts=True)
    priors = counts / len(y)
    if not _qda_divides_by_n():
        means = np.stack([X[y == c].mean(axis=0) for c in classes])
        X, y = np.r_[X, means], np.r_[y, classes]
    return QuadraticDiscriminantAnalysis(priors=priors).fit(X, y).predict_proba(query)


def reference_posteriors(X, y, query, covariance, reg=0.0, priors=None):
    """Bayes' rule with scipy's Gaussian densities and the documented ML covariances."""
    from scipy.stats import multivariate_normal

    classes, counts = np.unique(y, return_counts=True)
    priors = counts / len(y) if priors is None else np.asarray(priors)
    D = X.shape[1]
    shared = sum(np.cov(X[y == c].T, bias=True) * n for c, n in zip(classes, counts)) / len(y)
    log_joint = []
    for c, prior in zip(classes, priors):
        Xc = X[y == c]
        cov = {"full": np.cov(Xc.T, bias=True), "shared": shared,
               "diagonal": np.diag(Xc.var(axis=0))}[covariance] + reg * np.eye(D)
        log_joint.append(np.log(prior) + multivariate_normal(Xc.mean(axis=0), cov).logpdf(query))
    log_joint = np.stack(log_joint, axis=1)
    log_joint -= log_joint.max(axis=1, keepdims=True)
    p = np.exp(log_joint)
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name", ["iris", "wine"])
def test_full_equals_qda(backend, name):
    X, y = dataset(name)
    model = GaussianClassifier("full").fit(*on(backend, X, y))
    proba = model.predict_proba(on(backend, X))
    assert_on(proba, backend)
    np.testing.assert_allclose(to_np(proba), qda_posteriors(X, y, X), atol=1e-6)


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
@pytest.mark.parametrize("solver", ["lsqr", "eigen"])
def test_shared_equals_lda(backend, name, solver):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    X, y = dataset(name)
    reference = LinearDiscriminantAnalysis(solver=solver).fit(X, y)
    model = GaussianClassifier("shared").fit(*on(backend, X, y))
    np.testing.assert_allclose(to_np(model.predict_proba(on(backend, X))),
                               reference.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(to_np(model.predict(on(backend, X))), reference.predict(X))


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
@pytest.mark.parametrize("reg", [0.0, 0.05])
def test_diagonal_equals_gaussian_nb(backend, name, reg):
    from sklearn.naive_bayes import GaussianNB

    X, y = dataset(name)
    # GaussianNB adds var_smoothing * (largest variance of a feature over all of X)
    reference = GaussianNB(var_smoothing=reg / X.var(axis=0).max()).fit(X, y)
    model = GaussianClassifier("diagonal", reg=reg).fit(*on(backend, X, y))
    np.testing.assert_allclose(to_np(model.predict_proba(on(backend, X))),
                               reference.predict_proba(X), atol=1e-6)


@pytest.mark.parametrize("covariance", ["full", "shared", "diagonal"])
def test_reg_and_priors_follow_bayes_rule(backend, covariance):
    X, y = dataset("wine")
    rng = np.random.default_rng(0)
    query = X[rng.choice(len(X), 40, replace=False)] + rng.normal(scale=0.1, size=(40, X.shape[1]))
    priors = [0.5, 0.2, 0.3]
    model = GaussianClassifier(covariance, reg=0.3, priors=priors).fit(*on(backend, X, y))
    expected = reference_posteriors(X, y, query, covariance, reg=0.3, priors=priors)
    np.testing.assert_allclose(to_np(model.predict_proba(on(backend, query))), expected, atol=1e-6)
    np.testing.assert_allclose(np.exp(to_np(model.predict_log_proba(on(backend, query)))),
                               expected, atol=1e-6)


def test_fitted_parameters_are_maximum_likelihood(backend):
    X, y = dataset("iris")
    Xb, yb = on(backend, X, y)
    full = GaussianClassifier("full").fit(Xb, yb)
    shared = GaussianClassifier("shared").fit(Xb, yb)
    diagonal = GaussianClassifier("diagonal").fit(Xb, yb)
    covs = np.stack([np.cov(X[y == c].T, bias=True) for c in range(3)])
    np.testing.assert_allclose(to_np(full.means_), [X[y == c].mean(axis=0) for c in range(3)],
                               rtol=1e-12)
    np.testing.assert_allclose(to_np(full.covariances_), covs, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(to_np(shared.covariances_), covs.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(to_np(diagonal.covariances_),
                               np.stack([np.diagonal(c) for c in covs]), rtol=1e-10)
    np.testing.assert_allclose(to_np(full.priors_), [1 / 3] * 3, rtol=1e-12)
    assert_on(full.covariances_, backend)


def test_far_away_points_give_finite_posteriors(backend):
    X, y = dataset("iris")
    model = GaussianClassifier("full").fit(*on(backend, X, y))
    proba = to_np(model.predict_proba(on(backend, np.full((2, 4), 1e3))))
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_singular_covariance_asks_for_reg(backend):
    X, y = dataset("iris")
    Xc = np.c_[X, X[:, 0] + X[:, 1]]  # a feature that is a sum of two others
    Xb, yb = on(backend, Xc, y)
    with pytest.raises(ValueError, match="GaussianClassifier.fit.*singular.*reg > 0"):
        GaussianClassifier("full").fit(Xb, yb)
    GaussianClassifier("full", reg=1e-3).fit(Xb, yb)
