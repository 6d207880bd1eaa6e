import numpy as np
from scipy.linalg import sqrtm
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import jensenshannon

from starmd.evaluate.divergence import assignment_w2, gaussian_w2_parts, histogram_2d, js_distance


def test_js_distance_matches_scipy_on_hand_made_histograms():
    p = np.array([10, 0, 3, 7, 0, 1], dtype=float)
    q = np.array([2, 5, 3, 0, 0, 9], dtype=float)
    assert np.isclose(js_distance(p, q), jensenshannon(p, q))
    grid_p = np.arange(12, dtype=float).reshape(3, 4)
    grid_q = grid_p[::-1].copy()
    assert np.isclose(js_distance(grid_p, grid_q), jensenshannon(grid_p.ravel(), grid_q.ravel()))


def test_js_distance_per_row_matches_scipy():
    rng = np.random.default_rng(0)
    p, q = rng.integers(0, 5, (4, 8)), rng.integers(0, 5, (4, 8))
    expected = [jensenshannon(a, b) for a, b in zip(p, q, strict=True)]
    assert np.allclose(js_distance(p, q, axis=1), expected)


def test_js_distance_is_zero_for_identical_and_maximal_for_disjoint():
    p = np.array([1.0, 2.0, 3.0])
    assert js_distance(p, 2 * p) == 0.0
    assert np.isclose(js_distance([1, 0], [0, 1]), np.sqrt(np.log(2)))


def test_assignment_w2_matches_scipy_linear_sum_assignment():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(7, 2)), rng.normal(1.0, 1.0, size=(7, 2))
    cost = ((a[:, None] - b[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    assert np.isclose(assignment_w2(a, b), np.sqrt(cost[rows, cols].mean()))
    assert assignment_w2(a, a[::-1]) == 0.0


def test_gaussian_w2_matches_sqrtm_formula():
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(3), m2 @ m2.T + 0.1 * np.eye(3)
    mu1, mu2 = rng.normal(size=3), rng.normal(size=3)
    root = sqrtm(s1)
    expected = np.trace(s1 + s2 - 2 * np.real(sqrtm(root @ s2 @ root)))
    translation, variance = gaussian_w2_parts(mu1, s1, mu2, s2)
    assert np.isclose(translation, ((mu1 - mu2) ** 2).sum())
    assert np.isclose(variance, expected)
    assert np.isclose(gaussian_w2_parts(mu1, s1, mu1, s1)[1], 0.0, atol=1e-7)


def test_histogram_2d_counts_outside_points_in_an_extra_bin():
    points = np.array([[0.5, 0.5], [1.5, 0.5], [5.0, 5.0], [np.nan, 0.0]])
    counts = histogram_2d(points, np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0]))
    assert counts.tolist() == [1, 0, 1, 0, 1]
