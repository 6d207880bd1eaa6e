import numpy as np
from deeptime.decomposition import TICA, VAMP

from starmd.evaluate.tica import fit_tica, lagged_pairs, vamp2_score


def _slow_fast_process(n=3000, seed=0):
    """Four mixed AR(1) signals with different memories, (n, 4)."""
    rng = np.random.default_rng(seed)
    memories = np.array([0.99, 0.9, 0.6, 0.2])
    x = np.zeros((n, 4))
    for t in range(1, n):
        x[t] = memories * x[t - 1] + np.sqrt(1 - memories**2) * rng.standard_normal(4)
    mixing = rng.normal(size=(4, 4))
    return x @ mixing + 3.0


def test_tica_matches_deeptime():
    data = _slow_fast_process()
    lag = 5
    model = fit_tica(*lagged_pairs([data], lag))
    reference = TICA(lagtime=lag, scaling=None).fit(data).fetch_model()
    assert np.allclose(model.eigenvalues, reference.singular_values, atol=1e-6)
    mine, theirs = model.transform(data), reference.transform(data)
    for k in range(4):
        assert abs(np.corrcoef(mine[:, k], theirs[:, k])[0, 1]) > 1 - 1e-6


def test_vamp2_matches_deeptime():
    data = _slow_fast_process(seed=1)
    lag = 3
    expected = VAMP(lagtime=lag).fit(data).fetch_model().score(2)
    assert np.isclose(vamp2_score(*lagged_pairs([data], lag)), expected, rtol=1e-6)


def test_lagged_pairs_skip_invalid_frames_and_replica_boundaries():
    a = np.arange(6, dtype=float)[:, None]
    b = 10 + np.arange(4, dtype=float)[:, None]
    valid = [np.array([1, 1, 0, 1, 1, 1], bool), np.ones(4, bool)]
    x0, xt = lagged_pairs([a, b], 1, valid)
    assert x0.ravel().tolist() == [0, 3, 4, 10, 11, 12]
    assert (xt - x0).ravel().tolist() == [1] * 6
