"""LinearRegression: least squares against numpy.linalg.lstsq, ridge against scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from classic_cases import assert_on, dataset, on, to_np
from xpnet.classic import ConvergenceWarning, LinearRegression


def test_least_squares_equals_lstsq(backend):
    X, y = dataset("diabetes")
    design = np.c_[X, np.ones(len(X))]
    expected = np.linalg.lstsq(design, y, rcond=None)[0]
    Xb, yb = on(backend, X, y)
    model = LinearRegression().fit(Xb, yb)
    assert_on(model.coef_, backend)
    np.testing.assert_allclose(to_np(model.coef_), expected[:-1], rtol=1e-8)
    np.testing.assert_allclose(float(model.intercept_), expected[-1], rtol=1e-8)
    pred = model.predict(Xb)
    assert_on(pred, backend)
    np.testing.assert_allclose(to_np(pred), design @ expected, rtol=1e-8)


def test_no_intercept_and_several_targets_equal_lstsq(backend):
    X, y = dataset("diabetes")
    Y = np.c_[y, X[:, 0] * 3.0 - y]
    Xb, Yb = on(backend, X, Y)
    model = LinearRegression(fit_intercept=False).fit(Xb, Yb)
    expected = np.linalg.lstsq(X, Y, rcond=None)[0]
    assert tuple(model.coef_.shape) == (2, X.shape[1])
    np.testing.assert_allclose(to_np(model.coef_), expected.T, rtol=1e-8, atol=1e-9)
    np.testing.assert_array_equal(to_np(model.intercept_), [0.0, 0.0])
    assert tuple(model.predict(Xb).shape) == (len(X), 2)


@pytest.mark.parametrize("alpha", [0.01, 1.0, 30.0])
def test_ridge_equals_sklearn(backend, alpha):
    from sklearn.linear_model import Ridge

    X, y = dataset("diabetes")
    reference = Ridge(alpha=alpha).fit(X, y)
    model = LinearRegression(alpha=alpha).fit(*on(backend, X, y))
    np.testing.assert_allclose(to_np(model.coef_), reference.coef_, rtol=1e-8)
    np.testing.assert_allclose(float(model.intercept_), reference.intercept_, rtol=1e-8)


def test_gradient_descent_reaches_the_normal_equations(backend):
    X, y = dataset("diabetes")
    Xb, yb = on(backend, X, y)
    exact = LinearRegression(alpha=0.5).fit(Xb, yb)
    gd = LinearRegression(solver="gd", alpha=0.5, tol=1e-12, max_iter=5000).fit(Xb, yb)
    assert gd.n_iter_ < 5000
    np.testing.assert_allclose(to_np(gd.coef_), to_np(exact.coef_), rtol=1e-6)
    np.testing.assert_allclose(float(gd.intercept_), float(exact.intercept_), rtol=1e-9)


def test_gradient_descent_warns_when_stopped_early(backend):
    X, y = dataset("diabetes")
    with pytest.warns(ConvergenceWarning, match="LinearRegression.fit"):
        LinearRegression(solver="gd", max_iter=3).fit(*on(backend, X, y))


def test_score_is_r2(backend):
    from sklearn.metrics import r2_score

    X, y = dataset("diabetes")
    Xb, yb = on(backend, X, y)
    model = LinearRegression(alpha=1.0).fit(Xb[:300, :], yb[:300])
    expected = r2_score(y[300:], to_np(model.predict(Xb[300:, :])))
    assert model.score(Xb[300:, :], yb[300:]) == pytest.approx(expected, rel=1e-12)


def test_float32_stays_float32(backend):
    X, y = dataset("diabetes")
    Xb, yb = on(backend, X.astype(np.float32), y.astype(np.float32))
    Xb = backend.xp.astype(Xb, backend.xp.float32)
    yb = backend.xp.astype(yb, backend.xp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for model in (LinearRegression(), LinearRegression(solver="gd", max_iter=50)):
            model.fit(Xb, yb)
            assert model.coef_.dtype == backend.xp.float32
            assert model.predict(Xb).dtype == backend.xp.float32


def test_collinear_features_need_alpha(backend):
    X, y = dataset("diabetes")
    Xc = np.c_[X, X[:, :1] * 2.0]
    Xb, yb = on(backend, Xc, y)
    with pytest.raises(ValueError, match="LinearRegression.fit.*alpha > 0"):
        LinearRegression().fit(Xb, yb)
    LinearRegression(alpha=1e-3).fit(Xb, yb)
