"""Time-lagged covariances, tICA and the VAMP-2 score, computed from explicit lagged pairs.

Working from explicit ``(x_t, x_{t+tau})`` pairs lets the metrics drop pairs that touch an
invalid or non-finite frame and pool replicas without gluing them together. Conventions follow
deeptime (``deeptime.decomposition.TICA`` with ``scaling=None`` and ``VAMP``), against which the
tests check these functions:

- tICA (Molgedey & Schuster 1994; Perez-Hernandez et al. 2013): reversible estimate, mean over
  both halves of the pairs, ``C00 = (X0'X0 + Xt'Xt) / 2n``, ``C0t = (X0'Xt + Xt'X0) / 2n``;
  solve ``C0t v = lambda C00 v`` after whitening ``C00`` (eigenvalues below ``epsilon`` dropped).
- VAMP-2 (Wu & Noe 2020, eq. 33): separate means, ``1 + ||C00^-1/2 C0t Ctt^-1/2||_F^2`` (the
  ``1`` is the constant singular function, as deeptime adds it for mean-free data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPSILON = 1e-6


def lagged_pairs(
    series: list[np.ndarray], lag: int, valid: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Instantaneous and time-lagged feature rows from several trajectories.

    Args:
        series: per trajectory, features ``(T_i, F)``.
        lag: lag in frames (>= 1).
        valid: per trajectory, ``(T_i,)`` bool; a pair is kept only if both frames are valid
            and finite.

    Returns:
        ``(X0, Xt)``, each ``(n_pairs, F)``.
    """
    x0, xt = [], []
    for i, x in enumerate(series):
        if len(x) <= lag:
            continue
        ok = np.isfinite(x).all(axis=1)
        if valid is not None:
            ok &= valid[i]
        keep = ok[:-lag] & ok[lag:]
        x0.append(x[:-lag][keep])
        xt.append(x[lag:][keep])
    n_features = series[0].shape[1] if series else 0
    if not x0:
        return np.empty((0, n_features)), np.empty((0, n_features))
    return np.concatenate(x0).astype(np.float64), np.concatenate(xt).astype(np.float64)


def _inv_sqrt(matrix: np.ndarray, epsilon: float) -> np.ndarray:
    """``M^-1/2`` restricted to eigenvalues above ``epsilon``, shape ``(F, k)``."""
    values, vectors = np.linalg.eigh(matrix)
    keep = values > epsilon
    return vectors[:, keep] / np.sqrt(values[keep])


@dataclass(frozen=True)
class TICAModel:
    """A fitted tICA.

    Attributes:
        mean: ``(F,)`` feature mean.
        eigenvalues: ``(K,)`` autocorrelations of the TICs at the lag, descending.
        eigenvectors: ``(F, K)`` coefficients; ``(x - mean) @ eigenvectors`` are the TICs (unit
            variance, deeptime ``scaling=None``).
        cov_00: ``(F, F)`` instantaneous covariance.
    """

    mean: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    cov_00: np.ndarray

    def transform(self, features: np.ndarray) -> np.ndarray:
        """TIC projections ``(T, K)`` of features ``(T, F)``."""
        return (features - self.mean) @ self.eigenvectors

    def feature_loadings(self, component: int = 0) -> np.ndarray:
        """Correlation of each feature with one TIC, ``(F,)`` (structural loadings)."""
        v = self.eigenvectors[:, component]
        std = np.sqrt(np.diag(self.cov_00))
        with np.errstate(invalid="ignore", divide="ignore"):
            loadings = (self.cov_00 @ v) / (std * np.sqrt(v @ self.cov_00 @ v))
        return np.where(std > 0, loadings, 0.0)


def fit_tica(x0: np.ndarray, xt: np.ndarray, epsilon: float = EPSILON) -> TICAModel:
    """tICA from lagged pairs (reversible estimate), see the module docstring.

    Args:
        x0, xt: ``(n, F)`` instantaneous and time-lagged features.

    Returns:
        the fitted model, components sorted by decreasing eigenvalue.
    """
    mean = 0.5 * (x0.mean(axis=0) + xt.mean(axis=0))
    a, b = x0 - mean, xt - mean
    n = len(a)
    c00 = (a.T @ a + b.T @ b) / (2 * n)
    c0t = (a.T @ b + b.T @ a) / (2 * n)
    whiten = _inv_sqrt(c00, epsilon)
    values, vectors = np.linalg.eigh(whiten.T @ c0t @ whiten)
    order = np.argsort(values)[::-1]
    return TICAModel(mean, values[order], whiten @ vectors[:, order], c00)


def vamp2_score(x0: np.ndarray, xt: np.ndarray, epsilon: float = EPSILON) -> float:
    """VAMP-2 score (dimensionless, >= 1) of features at one lag, from lagged pairs.

    ``1 + ||C00^-1/2 C0t Ctt^-1/2||_F^2`` with separately mean-free ``x0`` and ``xt``.
    """
    a = x0 - x0.mean(axis=0)
    b = xt - xt.mean(axis=0)
    n = len(a)
    koopman = _inv_sqrt(a.T @ a / n, epsilon).T @ (a.T @ b / n) @ _inv_sqrt(b.T @ b / n, epsilon)
    return float(1.0 + (koopman**2).sum())
