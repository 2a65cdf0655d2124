"""What every estimator shares: parameters, clone, input errors, namespace/device/dtype of outputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import xpnet
from classic_cases import assert_on, split, to_np
from xpnet.classic import (
    BaggingClassifier,
    ConvergenceWarning,
    GaussianClassifier,
    KFold,
    KNeighborsClassifier,
    LinearRegression,
    LinearSVC,
    LogisticRegression,
    NotFittedError,
    Perceptron,
    SoftmaxRegression,
    StratifiedKFold,
    clone,
    cross_val_score,
    train_test_split,
)

CLASSIFIERS = {
    "LogisticRegression": lambda: LogisticRegression(),
    "SoftmaxRegression": lambda: SoftmaxRegression(),
    "Perceptron": lambda: Perceptron(max_iter=3, tol=None),
    "LinearSVC": lambda: LinearSVC(max_iter=20),
    "KNeighborsClassifier": lambda: KNeighborsClassifier(3),
    "GaussianClassifier": lambda: GaussianClassifier("shared"),
    "BaggingClassifier": lambda: BaggingClassifier(n_estimators=2, random_state=0),
}
ESTIMATORS = dict(CLASSIFIERS, LinearRegression=lambda: LinearRegression())


def _binary_data(backend, device=None, dtype=np.float64):
    X_tr, X_te, y_tr, _ = split("breast_cancer")
    X_tr, X_te = X_tr[:60, :4].astype(dtype), X_te[:20, :4].astype(dtype)
    Xb_tr, Xb_te, yb_tr = (xpnet.to_device(a, backend.name, device) for a in (X_tr, X_te, y_tr[:60]))
    return Xb_tr, Xb_te, yb_tr


def test_get_set_params_and_repr():
    model = LogisticRegression(C=0.5, solver="gd")
    params = model.get_params()
    assert params == {"C": 0.5, "solver": "gd", "loss": "bce", "penalty": "l2", "max_iter": None,
                      "tol": 1e-6, "fit_intercept": True, "lr": "auto"}
    assert repr(model) == "LogisticRegression(C=0.5, solver='gd')"
    assert model.set_params(C=2.0, loss="mse") is model and model.C == 2.0 and model.loss == "mse"
    with pytest.raises(ValueError, match="LogisticRegression.set_params: unknown parameter 'alpha'"):
        model.set_params(alpha=1.0)
    bag = BaggingClassifier(KNeighborsClassifier(3))
    assert bag.get_params()["estimator__n_neighbors"] == 3
    bag.set_params(estimator__n_neighbors=7, n_estimators=4)
    assert bag.estimator.n_neighbors == 7 and bag.n_estimators == 4


def test_clone_is_unfitted_and_independent(backend):
    Xb_tr, _, yb_tr = _binary_data(backend)
    bag = BaggingClassifier(KNeighborsClassifier(3), n_estimators=2).fit(Xb_tr, yb_tr)
    copy = clone(bag)
    assert copy.get_params(deep=False).keys() == bag.get_params(deep=False).keys()
    assert copy.estimator is not bag.estimator and copy.estimator.n_neighbors == 3
    assert not hasattr(copy, "estimators_")
    # scikit-learn's own clone works too: the parameters come from the __init__ signature
    from sklearn.base import clone as sk_clone

    assert repr(sk_clone(bag)) == repr(bag)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_bad_input_names_the_estimator(backend, name):
    Xb, _, yb = _binary_data(backend)
    xp = backend.xp
    est = ESTIMATORS[name]()
    with pytest.raises(NotFittedError, match=f"{name}.*not fitted"):
        est.predict(Xb)
    with pytest.raises(ValueError, match=f"{name}.fit: X must be 2-D"):
        est.fit(xp.reshape(Xb, (-1,)), yb)
    nan_X = xp.where(xp.arange(Xb.shape[0])[:, None] == 3, xp.nan, Xb)
    with pytest.raises(ValueError, match=f"{name}.fit: X contains NaN"):
        est.fit(nan_X, yb)
    with pytest.raises(ValueError, match=f"{name}.fit: X has 60 samples but y has 59"):
        est.fit(Xb, yb[:59])
    if name in CLASSIFIERS:
        with pytest.raises(ValueError, match=f"{name}.fit: y needs at least 2 classes, got 1"):
            est.fit(Xb, xp.zeros_like(yb))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(Xb, xp.astype(yb, xp.float64) if name == "LinearRegression" else yb)
    with pytest.raises(ValueError, match=f"{name}.*X has 3 features, but {name} was fitted with 4"):
        est.predict(Xb[:, :3])


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_outputs_stay_on_the_input_device(backend, name):
    # array_api_strict data on 'device1' while the current backend sits on its default device:
    # everything must come back on device1 (numpy: on the CPU)
    device = "device1" if backend.name == "array_api_strict" else None
    Xb_tr, Xb_te, yb_tr = _binary_data(backend, device)
    target = xpnet.get_backend(backend.name, device)
    est = ESTIMATORS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(Xb_tr, backend.xp.astype(yb_tr, backend.xp.float64) if name == "LinearRegression"
                else yb_tr)
    outputs = [est.predict(Xb_te)]
    for method in ("predict_proba", "decision_function", "predict_log_proba"):
        if hasattr(est, method):
            outputs.append(getattr(est, method)(Xb_te))
    for attr in ("coef_", "intercept_", "classes_", "means_", "covariances_"):
        if hasattr(est, attr):
            outputs.append(getattr(est, attr))
    for out in outputs:
        assert_on(out, target)
    if backend.name == "array_api_strict":
        elsewhere = xpnet.to_device(Xb_te, backend.name, "CPU_DEVICE")
        with pytest.raises(xpnet.DeviceMismatchError, match=name):
            est.predict(elsewhere)


def test_model_selection_stays_on_the_input_device(backend):
    device = "device1" if backend.name == "array_api_strict" else None
    Xb, _, yb = _binary_data(backend, device)
    target = xpnet.get_backend(backend.name, device)
    for train, test in list(KFold(3, shuffle=True, random_state=0).split(Xb)) + \
            list(StratifiedKFold(3).split(Xb, yb)):
        assert_on(train, target)
        assert_on(test, target)
    for part in train_test_split(Xb, yb, random_state=0, stratify=yb):
        assert_on(part, target)
    assert_on(cross_val_score(GaussianClassifier(), Xb, yb, cv=3), target)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_float32_in_float32_out(backend, name):
    Xb_tr, Xb_te, yb_tr = _binary_data(backend, dtype=np.float32)
    est = ESTIMATORS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(Xb_tr, backend.xp.astype(yb_tr, backend.xp.float32) if name == "LinearRegression"
                else yb_tr)
    assert est.predict(Xb_te).dtype == (backend.xp.float32 if name == "LinearRegression"
                                        else yb_tr.dtype)
    for method in ("predict_proba", "decision_function"):
        if hasattr(est, method):
            assert getattr(est, method)(Xb_te).dtype == backend.xp.float32, method


def test_lists_and_integer_features_are_accepted(backend):
    X = [[0, 0], [1, 1], [0, 1], [5, 5], [6, 5], [5, 6]]
    y = [0, 0, 0, 1, 1, 1]
    model = KNeighborsClassifier(3).fit(X, y)
    np.testing.assert_array_equal(to_np(model.predict([[0, 0], [6, 6]])), [0, 1])
    assert_on(model.classes_, backend)
