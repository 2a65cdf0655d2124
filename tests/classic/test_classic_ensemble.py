"""BaggingClassifier: resampling, voting and repeatability."""

from __future__ import annotations

import numpy as np
import pytest

from classic_cases import assert_on, on, split, to_np
from xpnet.classic import (
    BaggingClassifier,
    GaussianClassifier,
    KNeighborsClassifier,
    LinearSVC,
    Perceptron,
)


def test_soft_vote_is_the_mean_of_member_probabilities(backend):
    X_tr, X_te, y_tr, y_te = split("wine")
    Xb_tr, Xb_te, yb_tr, yb_te = on(backend, X_tr, X_te, y_tr + 4, y_te + 4)
    bag = BaggingClassifier(KNeighborsClassifier(3), n_estimators=5, random_state=0).fit(Xb_tr, yb_tr)
    assert len(bag.estimators_) == 5
    np.testing.assert_array_equal(to_np(bag.classes_), [4, 5, 6])
    members = []
    for est, idx in zip(bag.estimators_, bag.estimators_samples_):
        # each member was fitted on its resample, with labels coded 0..K-1
        ref = KNeighborsClassifier(3).fit(backend.xp.take(Xb_tr, idx, axis=0),
                                          backend.xp.take(yb_tr, idx, axis=0) - 4)
        proba = np.zeros((len(X_te), 3))
        proba[:, to_np(ref.classes_)] = to_np(ref.predict_proba(Xb_te))
        members.append(proba)
        np.testing.assert_array_equal(to_np(est.predict(Xb_te)), to_np(ref.predict(Xb_te)))
    expected = np.mean(members, axis=0)
    proba = bag.predict_proba(Xb_te)
    assert_on(proba, backend)
    np.testing.assert_allclose(to_np(proba), expected, atol=1e-12)
    np.testing.assert_array_equal(to_np(bag.predict(Xb_te)), np.argmax(expected, axis=1) + 4)
    assert bag.score(Xb_te, yb_te) >= 0.9


def test_resamples_are_documented_pcg64_draws(backend):
    X_tr, _, y_tr, _ = split("iris")
    bag = BaggingClassifier(n_estimators=3, max_samples=0.5, random_state=42).fit(
        *on(backend, X_tr, y_tr))
    gen = np.random.Generator(np.random.PCG64(42))
    m = int(0.5 * len(y_tr))
    for idx in bag.estimators_samples_:
        np.testing.assert_array_equal(to_np(idx), gen.integers(0, len(y_tr), size=m))


def test_hard_vote_without_predict_proba(backend):
    X_tr, X_te, y_tr, y_te = split("iris")
    Xb_tr, Xb_te, yb_tr, yb_te = on(backend, X_tr, X_te, y_tr, y_te)
    bag = BaggingClassifier(LinearSVC(max_iter=200), n_estimators=3, random_state=1).fit(Xb_tr, yb_tr)
    votes = np.stack([to_np(est.predict(Xb_te)) for est in bag.estimators_])
    counts = np.stack([(votes == c).sum(axis=0) for c in range(3)], axis=1)
    np.testing.assert_allclose(to_np(bag.predict_proba(Xb_te)), counts / 3)
    np.testing.assert_array_equal(to_np(bag.predict(Xb_te)), np.argmax(counts, axis=1))


def test_repeatable_and_members_get_their_own_seeds(backend):
    X_tr, X_te, y_tr, _ = split("iris")
    Xb_tr, Xb_te, yb_tr = on(backend, X_tr, X_te, y_tr)
    make = lambda: BaggingClassifier(Perceptron(max_iter=5, tol=None), n_estimators=2,  # noqa: E731
                                     random_state=3).fit(Xb_tr, yb_tr)
    a, b = make(), make()
    seeds = [est.random_state for est in a.estimators_]
    assert seeds == [est.random_state for est in b.estimators_] and seeds[0] != seeds[1]
    np.testing.assert_array_equal(to_np(a.predict_proba(Xb_te)), to_np(b.predict_proba(Xb_te)))


def test_one_member_without_bootstrap_is_the_base_model(backend):
    X_tr, X_te, y_tr, _ = split("wine")
    Xb_tr, Xb_te, yb_tr = on(backend, X_tr, X_te, y_tr)
    bag = BaggingClassifier(GaussianClassifier("full"), n_estimators=1, bootstrap=False,
                            random_state=0).fit(Xb_tr, yb_tr)
    base = GaussianClassifier("full").fit(Xb_tr, yb_tr)
    np.testing.assert_allclose(to_np(bag.predict_proba(Xb_te)), to_np(base.predict_proba(Xb_te)),
                               atol=1e-10)


def test_bad_max_samples(backend):
    X_tr, _, y_tr, _ = split("iris")
    with pytest.raises(ValueError, match="BaggingClassifier.fit: max_samples"):
        BaggingClassifier(max_samples=1000).fit(*on(backend, X_tr, y_tr))
