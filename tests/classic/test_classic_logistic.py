"""LogisticRegression and SoftmaxRegression against scikit-learn's LogisticRegression."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from classic_cases import assert_on, on, split, to_np
from xpnet.classic import ConvergenceWarning, LogisticRegression, SoftmaxRegression


def _sk_logistic(**kw):
    from sklearn.linear_model import LogisticRegression as SkLogistic

    return SkLogistic(**kw)


@pytest.mark.parametrize("loss,solver", [("bce", "newton"), ("bce", "gd"), ("mse", "newton"),
                                         ("mse", "gd")])
def test_accuracy_within_one_point_of_sklearn(backend, loss, solver):
    X_tr, X_te, y_tr, y_te = split("breast_cancer")
    expected = _sk_logistic().fit(X_tr, y_tr).score(X_te, y_te)
    Xb_tr, Xb_te, yb_tr, yb_te = on(backend, X_tr, X_te, y_tr, y_te)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # gd stops at max_iter=1000
        model = LogisticRegression(loss=loss, solver=solver).fit(Xb_tr, yb_tr)
    assert abs(model.score(Xb_te, yb_te) - expected) <= 0.01


def test_newton_reaches_sklearn_optimum(backend):
    X_tr, X_te, y_tr, _ = split("breast_cancer")
    reference = _sk_logistic(solver="newton-cg", tol=1e-12, max_iter=1000).fit(X_tr, y_tr)
    Xb_tr, Xb_te, yb_tr = on(backend, X_tr, X_te, y_tr)
    model = LogisticRegression(tol=1e-10).fit(Xb_tr, yb_tr)
    assert model.n_iter_ < 20
    np.testing.assert_allclose(to_np(model.coef_), reference.coef_, atol=1e-6)
    np.testing.assert_allclose(to_np(model.intercept_), reference.intercept_, atol=1e-6)
    proba = model.predict_proba(Xb_te)
    assert_on(proba, backend)
    np.testing.assert_allclose(to_np(proba), reference.predict_proba(X_te), atol=1e-8)
    np.testing.assert_allclose(to_np(model.decision_function(Xb_te)),
                               reference.decision_function(X_te), atol=1e-6)


def _objective_gradient(X, t, w, b, C, loss):
    """dJ/d(w, b) of the documented objective, computed independently on the host."""
    n = len(X)
    z = X @ w + b
    p = 1.0 / (1.0 + np.exp(-z))
    dz = (p - t) / n if loss == "bce" else (p - t) * p * (1 - p) / n
    return np.r_[X.T @ dz + w / (C * n), dz.sum()]


@pytest.mark.parametrize("loss", ["bce", "mse"])
@pytest.mark.parametrize("solver", ["newton", "gd"])
def test_solution_is_stationary(backend, loss, solver):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 3))
    t = (X @ [1.5, -2.0, 0.5] + 0.3 + rng.normal(size=120) > 0).astype(np.int64)
    Xb, tb = on(backend, X, t)
    model = LogisticRegression(loss=loss, solver=solver, C=0.5, tol=1e-8, max_iter=20000).fit(Xb, tb)
    grad = _objective_gradient(X, t, to_np(model.coef_)[0], to_np(model.intercept_)[0], 0.5, loss)
    assert np.max(np.abs(grad)) <= 1e-8


def test_no_penalty_matches_sklearn(backend):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(150, 2))
    t = (X @ [1.0, -1.0] + rng.normal(size=150) > 0).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.8 spells it C=inf
        reference = _sk_logistic(penalty=None, solver="newton-cg", tol=1e-12).fit(X, t)
    model = LogisticRegression(penalty=None, tol=1e-10).fit(*on(backend, X, t))
    np.testing.assert_allclose(to_np(model.coef_), reference.coef_, atol=1e-6)


def test_any_two_labels(backend):
    X_tr, X_te, y_tr, y_te = split("breast_cancer")
    Xb_tr, Xb_te, yb_tr = on(backend, X_tr, X_te, np.where(y_tr == 1, 7, -3))
    model = LogisticRegression().fit(Xb_tr, yb_tr)
    np.testing.assert_array_equal(to_np(model.classes_), [-3, 7])
    pred = to_np(model.predict(Xb_te))
    assert set(np.unique(pred)) == {-3, 7}
    decision = to_np(model.decision_function(Xb_te))
    np.testing.assert_array_equal(pred == 7, decision > 0)
    np.testing.assert_allclose(to_np(model.predict_proba(Xb_te)).sum(axis=1), 1.0, atol=1e-12)


def test_logistic_is_binary(backend):
    X_tr, _, y_tr, _ = split("iris")
    with pytest.raises(ValueError, match="LogisticRegression.fit.*3 classes.*SoftmaxRegression"):
        LogisticRegression().fit(*on(backend, X_tr, y_tr))


@pytest.mark.parametrize("name", ["iris", "wine"])
def test_softmax_newton_equals_sklearn_multinomial(backend, name):
    X_tr, X_te, y_tr, y_te = split(name)
    reference = _sk_logistic(solver="newton-cg", tol=1e-12, max_iter=1000).fit(X_tr, y_tr)
    Xb_tr, Xb_te, yb_tr, yb_te = on(backend, X_tr, X_te, y_tr, y_te)
    model = SoftmaxRegression(tol=1e-10).fit(Xb_tr, yb_tr)
    np.testing.assert_allclose(to_np(model.coef_), reference.coef_, atol=1e-6)
    np.testing.assert_allclose(to_np(model.intercept_), reference.intercept_, atol=1e-6)
    proba = model.predict_proba(Xb_te)
    assert_on(proba, backend)
    np.testing.assert_allclose(to_np(proba), reference.predict_proba(X_te), atol=1e-8)
    np.testing.assert_array_equal(to_np(model.predict(Xb_te)), reference.predict(X_te))
    assert model.score(Xb_te, yb_te) == reference.score(X_te, y_te)


def test_softmax_gradient_descent_accuracy(backend):
    X_tr, X_te, y_tr, y_te = split("wine")
    expected = _sk_logistic().fit(X_tr, y_tr).score(X_te, y_te)
    Xb_tr, Xb_te, yb_tr, yb_te = on(backend, X_tr, X_te, y_tr, y_te)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = SoftmaxRegression(solver="gd", max_iter=300).fit(Xb_tr, yb_tr)
        early = SoftmaxRegression(solver="gd", max_iter=30).fit(Xb_tr, yb_tr)
    assert abs(model.score(Xb_te, yb_te) - expected) <= 0.01
    exact = to_np(SoftmaxRegression().fit(Xb_tr, yb_tr).coef_)
    # gradient descent approaches the Newton optimum: 10x the steps, at most half the distance
    far = np.linalg.norm(to_np(early.coef_) - exact)
    assert np.linalg.norm(to_np(model.coef_) - exact) < 0.5 * far
