r"""The isotropic Gaussian on SO(3) (IGSO3): density, angle marginal, CDF, score and sampling.

IGSO3(sigma) is the law of Brownian motion on SO(3) run for time ``sigma^2`` (generator half the
Laplace-Beltrami operator, unit metric on rotation vectors), started at the identity. Its density
with respect to the normalized Haar measure depends only on the rotation angle ``omega``:

.. math::

    f(\omega; \sigma) = \sum_{l \ge 0} (2l+1)\, e^{-l(l+1)\sigma^2/2}
        \frac{\sin((l+\tfrac12)\omega)}{\sin(\omega/2)}.

The rotation axis is uniform, and the angle has the marginal density on ``[0, pi]``

.. math::

    p(\omega; \sigma) = \frac{1 - \cos\omega}{\pi} f(\omega; \sigma),

where ``(1 - cos omega) / pi`` is the Haar density of the angle. For small ``sigma`` the rotation
vector is approximately ``N(0, sigma^2 I_3)``.

Two exact representations of ``f`` are evaluated, each where it converges fast:

* the series above, truncated after ``series_terms`` terms, for ``sigma >= closed_form_below``.
  It is summed as a cosine series (``sin((l+1/2)w)/sin(w/2) = 1 + 2 sum_{m<=l} cos(m w)``),
  which has no singularity at ``omega = 0``;
* for ``sigma < closed_form_below``, where the series needs many terms and cancels badly at large
  ``omega``, its Poisson-summed dual, the small-sigma closed form (``s = sigma^2``)

  .. math::

      f(\omega; \sigma) = \sqrt{2\pi}\, s^{-3/2} e^{s/8}\,
          \frac{\sum_k (-1)^k (\omega - 2\pi k)\, e^{-(\omega - 2\pi k)^2 / (2s)}}{\sin(\omega/2)},

  summed over ``|k| <= 3`` in log space. Its ``k = 0`` term alone is the Gaussian limit.

The score is ``d/domega log f`` (of the density on SO(3), not of the angle marginal). Tables over
a (sigma, omega) grid of the angle CDF and of the score's root-mean-square are computed once per
:class:`IGSO3Spec`, kept in memory, and stored on disk under a file name that encodes every
parameter; sampling inverts the tabulated CDF by interpolation.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from starmd.diffusion import rng

logger = logging.getLogger(__name__)

_TABLE_FORMAT_VERSION = 1
_NUM_IMAGES = 3  # |k| <= 3 in the closed form: exact to double precision for sigma <= 2
_OMEGA_EPS = 1e-6  # the closed form's 0/0 at omega = 0 is evaluated just beside it
_SCORE_LINEAR_BELOW = 1e-4  # the (odd) score is continued linearly below this angle
_ROW_CHUNK = 64

DEFAULT_SERIES_TERMS = 64
DEFAULT_CLOSED_FORM_BELOW = 1.0


def _check_series_params(series_terms: int, closed_form_below: float) -> None:
    if not 0.5 <= closed_form_below <= 2.0:
        raise ValueError(
            f"closed_form_below={closed_form_below} must lie in [0.5, 2]: below 0.5 the series "
            "cancels catastrophically at large angles, above 2 the closed form needs more images"
        )
    if series_terms * (series_terms + 1) * closed_form_below**2 / 2 < 40:
        raise ValueError(
            f"series_terms={series_terms} is too short for sigma >= {closed_form_below}: the "
            "truncation error exp(-L(L+1) sigma^2 / 2) must be below exp(-40)"
        )


def _cosine_coefficients(sigma: torch.Tensor, series_terms: int) -> torch.Tensor:
    """Cosine coefficients ``a_m`` ``(..., L)`` with ``f = sum_m a_m cos(m omega)``.

    ``a_m = (2 - [m = 0]) sum_{l >= m} c_l`` with ``c_l = (2l+1) exp(-l(l+1) sigma^2 / 2)``,
    from the Dirichlet-kernel identity ``sin((l+1/2) w) / sin(w/2) = 1 + 2 sum_{1<=m<=l} cos(m w)``.
    """
    l = torch.arange(series_terms, dtype=sigma.dtype, device=sigma.device)
    coeff = (2 * l + 1) * torch.exp(-l * (l + 1) * sigma[..., None] ** 2 / 2)
    tail = torch.flip(torch.cumsum(torch.flip(coeff, [-1]), -1), [-1])
    return torch.cat([tail[..., :1], 2 * tail[..., 1:]], dim=-1)


def _series(omega: torch.Tensor, sigma: torch.Tensor, series_terms: int):
    """``(f, df/domega)`` from the truncated series, elementwise over equal-shaped tensors."""
    a = _cosine_coefficients(sigma, series_terms)
    m = torch.arange(series_terms, dtype=omega.dtype, device=omega.device)
    m_omega = m * omega[..., None]
    return (a * torch.cos(m_omega)).sum(-1), -(a * m * torch.sin(m_omega)).sum(-1)


def _series_grid(omega: torch.Tensor, sigma: torch.Tensor, series_terms: int):
    """``(f, df/domega)`` on the grid ``sigma (S,) x omega (N,)`` -> ``(S, N)`` (matmuls)."""
    a = _cosine_coefficients(sigma, series_terms)
    m = torch.arange(series_terms, dtype=omega.dtype, device=omega.device)
    m_omega = omega[:, None] * m
    return a @ torch.cos(m_omega).T, -(a * m) @ torch.sin(m_omega).T


def _closed_form(omega: torch.Tensor, sigma: torch.Tensor):
    """``(log f, d/domega log f)`` from the Poisson-summed (small-sigma) form."""
    s = sigma**2
    k = torch.arange(-_NUM_IMAGES, _NUM_IMAGES + 1, dtype=omega.dtype, device=omega.device)
    sign = 1.0 - 2.0 * (k.abs() % 2)
    w = omega.clamp_min(_OMEGA_EPS)[..., None]
    shifted = w - 2 * math.pi * k
    # image weights relative to the k = 0 Gaussian; exponent <= 0 for omega in [0, pi]
    weight = torch.exp((2 * math.pi * k * w - 2 * math.pi**2 * k**2) / s[..., None])
    images = (sign * shifted * weight).sum(-1)
    d_images = (sign * (1 + shifted * 2 * math.pi * k / s[..., None]) * weight).sum(-1)
    w = w[..., 0]
    half = 0.5 * w
    log_f = (
        s / 8
        + 0.5 * math.log(2 * math.pi)
        - 1.5 * torch.log(s)
        - w**2 / (2 * s)
        + torch.log(images / torch.sin(half))
    )
    score = -w / s + d_images / images - 0.5 * torch.cos(half) / torch.sin(half)
    return log_f, score


def _log_density_and_score(
    omega: torch.Tensor, sigma: torch.Tensor, series_terms: int, closed_form_below: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log f, d/domega log f)`` in float64, both representations blended by ``sigma``."""
    omega, sigma = torch.broadcast_tensors(omega.double(), sigma.double())
    omega = omega.clamp(0.0, math.pi)
    use_series = sigma >= closed_form_below
    # each branch sees only sigmas where it is accurate, so the unused one stays finite (no NaN
    # leaks into gradients through torch.where)
    f, df = _series(omega, sigma.clamp_min(closed_form_below), series_terms)
    f_safe = torch.where(use_series, f, torch.ones_like(f))
    cf_log_f, cf_score = _closed_form(omega, sigma.clamp_max(closed_form_below))
    log_f = torch.where(use_series, torch.log(f_safe), cf_log_f)
    score = torch.where(use_series, df / f_safe, cf_score)
    return log_f, score


def igso3_log_density(
    omega: torch.Tensor,
    sigma: torch.Tensor,
    series_terms: int = DEFAULT_SERIES_TERMS,
    closed_form_below: float = DEFAULT_CLOSED_FORM_BELOW,
) -> torch.Tensor:
    """``log f(omega; sigma)``: log-density of IGSO3 on SO(3) w.r.t. the normalized Haar measure.

    Args:
        omega: rotation angles in ``[0, pi]`` (radians), any shape.
        sigma: IGSO3 scale(s), broadcastable against ``omega``.
        series_terms: length ``L`` of the truncated series (for ``sigma >= closed_form_below``).
        closed_form_below: below this sigma the small-sigma closed form is used.

    Returns:
        float64 tensor of the broadcast shape.
    """
    _check_series_params(series_terms, closed_form_below)
    return _log_density_and_score(omega, sigma, series_terms, closed_form_below)[0]


def igso3_angle_pdf(
    omega: torch.Tensor,
    sigma: torch.Tensor,
    series_terms: int = DEFAULT_SERIES_TERMS,
    closed_form_below: float = DEFAULT_CLOSED_FORM_BELOW,
) -> torch.Tensor:
    """Density of the rotation angle, ``p(omega) = (1 - cos omega) / pi * f(omega; sigma)``.

    Integrates to 1 over ``omega`` in ``[0, pi]``. Shapes and arguments as
    :func:`igso3_log_density`; float64 result.
    """
    log_f = igso3_log_density(omega, sigma, series_terms, closed_form_below)
    omega = omega.double()
    return (1 - torch.cos(omega)) / math.pi * torch.exp(log_f)


def igso3_angle_score(
    omega: torch.Tensor,
    sigma: torch.Tensor,
    series_terms: int = DEFAULT_SERIES_TERMS,
    closed_form_below: float = DEFAULT_CLOSED_FORM_BELOW,
) -> torch.Tensor:
    """``d/domega log f(omega; sigma)`` (radian^-1), the IGSO3 score along the rotation angle.

    Zero at ``omega = 0`` and, by symmetry, at ``omega = pi``; about ``-omega / sigma^2`` for small
    sigma. Shapes and arguments as :func:`igso3_log_density`; float64 result.
    """
    _check_series_params(series_terms, closed_form_below)
    omega = omega.double()
    safe = omega.clamp_min(_SCORE_LINEAR_BELOW)
    score = _log_density_and_score(safe, sigma, series_terms, closed_form_below)[1]
    return torch.where(omega < _SCORE_LINEAR_BELOW, score * omega / safe, score)


def igso3_score(
    rotvec: torch.Tensor,
    sigma: torch.Tensor,
    series_terms: int = DEFAULT_SERIES_TERMS,
    closed_form_below: float = DEFAULT_CLOSED_FORM_BELOW,
) -> torch.Tensor:
    """Score of IGSO3 at the rotation ``exp(hat(rotvec))`` as a rotation vector ``(..., 3)``.

    ``grad log f = (d/domega log f)(omega) * rotvec / omega`` with ``omega = |rotvec|``: the
    gradient of a class function is along the rotation axis, identical in the body and the space
    frame. ``sigma`` broadcasts against ``rotvec.shape[:-1]``. Result in ``rotvec``'s dtype.
    """
    _check_series_params(series_terms, closed_form_below)
    omega = torch.linalg.vector_norm(rotvec.double(), dim=-1)
    safe = omega.clamp_min(_SCORE_LINEAR_BELOW)
    score = _log_density_and_score(safe, sigma, series_terms, closed_form_below)[1]
    # score(omega) / omega is even in omega and smooth: constant below the threshold
    return (score / safe).to(rotvec.dtype)[..., None] * rotvec


# ---------------------------------------------------------------------------------------------
# tables


@dataclass(frozen=True)
class IGSO3Spec:
    """Every parameter of an IGSO3 table; two tables with equal specs are identical.

    Attributes:
        min_sigma, max_sigma: range of the (uniform) sigma grid, radians.
        num_sigma: sigma grid points (>= 2).
        num_omega: angle grid points on ``[0, pi]``, both ends included (>= 2).
        series_terms: truncation length ``L`` of the series.
        closed_form_below: sigma below which the closed form replaces the series.
        quadrature_nodes: Gauss-Legendre nodes per grid interval for the CDF and score moments.
    """

    min_sigma: float = 0.1
    max_sigma: float = 1.5
    num_sigma: int = 1000
    num_omega: int = 1000
    series_terms: int = DEFAULT_SERIES_TERMS
    closed_form_below: float = DEFAULT_CLOSED_FORM_BELOW
    quadrature_nodes: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.min_sigma < self.max_sigma:
            raise ValueError(f"need 0 < min_sigma < max_sigma, got {self}")
        if self.num_sigma < 2 or self.num_omega < 2 or self.quadrature_nodes < 1:
            raise ValueError(f"grid sizes too small: {self}")
        _check_series_params(self.series_terms, self.closed_form_below)

    def file_name(self) -> str:
        """Cache file name encoding every parameter and the table format version."""
        return (
            f"igso3_v{_TABLE_FORMAT_VERSION}_sigma{self.min_sigma:.8g}-{self.max_sigma:.8g}"
            f"_nsigma{self.num_sigma}_nomega{self.num_omega}_L{self.series_terms}"
            f"_closedbelow{self.closed_form_below:.8g}_quad{self.quadrature_nodes}.pt"
        )


class IGSO3Table:
    """Tabulated IGSO3 angle CDF and score RMS on a (sigma, omega) grid, with sampling.

    Attributes:
        spec: the parameters.
        sigma: sigma grid ``(num_sigma,)``, float64.
        omega: angle grid ``(num_omega,)`` on ``[0, pi]``, float64.
        cdf: angle CDF ``(num_sigma, num_omega)``; each row rises from 0 to exactly 1.
        score_rms: ``sqrt(E[(d/domega log f)^2] / 3)`` per sigma ``(num_sigma,)``: the RMS of one
            component of the IGSO3 score vector.
    """

    def __init__(
        self,
        spec: IGSO3Spec,
        sigma: torch.Tensor,
        omega: torch.Tensor,
        cdf: torch.Tensor,
        score_rms: torch.Tensor,
    ) -> None:
        expected = (spec.num_sigma, spec.num_omega)
        if sigma.shape != expected[:1] or omega.shape != expected[1:] or cdf.shape != expected:
            raise ValueError(f"IGSO3 table shapes do not match {spec}")
        if score_rms.shape != expected[:1]:
            raise ValueError(f"IGSO3 score table shape does not match {spec}")
        self.spec = spec
        self.sigma = sigma
        self.omega = omega
        self.cdf = cdf
        self.score_rms = score_rms
        # rows offset by 2 * row index make one globally sorted array: one searchsorted call
        # inverts each sample's own row
        offsets = 2.0 * torch.arange(spec.num_sigma, dtype=torch.float64)[:, None]
        self._flat_cdf = (cdf + offsets).reshape(-1)

    @classmethod
    def compute(cls, spec: IGSO3Spec) -> IGSO3Table:
        """Build the tables (about a second for the default 1000 x 1000 grid)."""
        sigma = torch.linspace(spec.min_sigma, spec.max_sigma, spec.num_sigma, dtype=torch.float64)
        omega = torch.linspace(0.0, math.pi, spec.num_omega, dtype=torch.float64)
        gl_x, gl_w = np.polynomial.legendre.leggauss(spec.quadrature_nodes)
        half_width = 0.5 * (omega[1] - omega[0])
        mid = 0.5 * (omega[1:] + omega[:-1])
        nodes = (mid[:, None] + half_width * torch.from_numpy(gl_x)[None, :]).reshape(-1)
        weights = (half_width * torch.from_numpy(gl_w)).repeat(spec.num_omega - 1)
        log_f = torch.empty(spec.num_sigma, nodes.numel(), dtype=torch.float64)
        score = torch.empty_like(log_f)
        use_series = sigma >= spec.closed_form_below
        f, df = _series_grid(nodes, sigma[use_series], spec.series_terms)
        log_f[use_series], score[use_series] = torch.log(f), df / f
        cf_rows = (~use_series).nonzero()[:, 0]
        for rows in torch.split(cf_rows, _ROW_CHUNK):
            log_f[rows], score[rows] = _closed_form(nodes[None, :], sigma[rows, None])
        pdf = (1 - torch.cos(nodes)) / math.pi * torch.exp(log_f) * weights
        increments = pdf.reshape(spec.num_sigma, spec.num_omega - 1, -1).sum(-1)
        moments = (pdf * score**2).sum(-1)
        increments = increments.clamp_min(0.0)
        cdf = torch.cat(
            [torch.zeros(spec.num_sigma, 1, dtype=torch.float64), torch.cumsum(increments, -1)],
            dim=-1,
        )
        total = cdf[:, -1:]
        if not torch.all((total - 1).abs() < 1e-6):
            raise RuntimeError(f"IGSO3 angle density does not integrate to 1 for {spec}")
        score_rms = torch.sqrt(moments / total[:, 0] / 3)
        return cls(spec, sigma, omega, cdf / total, score_rms)

    def _check_range(self, smallest: float, largest: float) -> None:
        """Refuse scales outside the table (beyond float32 rounding of its ends)."""
        lo, hi = self.spec.min_sigma, self.spec.max_sigma
        tol = 1e-5 * hi  # float32 rounding of sigma(tau) at the ends
        if smallest < lo - tol or largest > hi + tol:
            raise ValueError(
                f"sigma in [{smallest:.6g}, {largest:.6g}] outside the IGSO3 table range "
                f"[{lo}, {hi}]"
            )

    def _sigma_bracket(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower grid index and interpolation weight of each sigma (float64)."""
        lo, hi = self.spec.min_sigma, self.spec.max_sigma
        if sigma.numel():
            self._check_range(sigma.min().item(), sigma.max().item())
        pos = ((sigma - lo) / (hi - lo) * (self.spec.num_sigma - 1)).clamp(
            0, self.spec.num_sigma - 1
        )
        index = pos.floor().long().clamp_max(self.spec.num_sigma - 2)
        return index, pos - index

    def _row_quantile(self, row: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Angle at which the CDF of table row ``row`` reaches ``u`` (linear interpolation)."""
        width = self.spec.num_omega
        j = torch.searchsorted(self._flat_cdf, u + 2.0 * row, right=True)
        j_local = (j - row * width).clamp(1, width - 1)
        hi = row * width + j_local
        c_lo = self._flat_cdf[hi - 1] - 2.0 * row
        c_hi = self._flat_cdf[hi] - 2.0 * row
        t = ((u - c_lo) / (c_hi - c_lo).clamp_min(1e-300)).clamp(0.0, 1.0)
        return self.omega[j_local - 1] + t * (self.omega[1] - self.omega[0])

    def sample_angle(
        self, sigma: torch.Tensor, generator: rng.RandomSource, compiled: bool = True
    ) -> torch.Tensor:
        """IGSO3 rotation angles, one per element of ``sigma``, by inverse-CDF sampling.

        Quantiles are interpolated linearly in omega within a table row and linearly in sigma
        between the two neighbouring rows (exact for the small-sigma Maxwell limit, whose
        quantiles are proportional to sigma).

        Args:
            sigma: IGSO3 scales inside the table range, any shape.
            generator: source of the uniform variates (on ``sigma``'s device).
            compiled: invert the CDF in the compiled loop of :mod:`starmd.diffusion.kernels`
                (the same expressions, equal bit for bit); False: tensor operations (the
                reference).

        Returns:
            angles in ``[0, pi]``, ``sigma``'s shape, float64.
        """
        sigma64 = sigma.detach().double().cpu()
        u = rng.uniform(sigma.shape, generator, torch.float64, sigma.device)
        u = u.cpu().reshape(-1)
        if not compiled or sigma.numel() == 0:
            index, weight = self._sigma_bracket(sigma64.reshape(-1))
            angle = (1 - weight) * self._row_quantile(index, u) + weight * self._row_quantile(
                index + 1, u
            )
            return angle.reshape(sigma.shape).to(sigma.device)
        from starmd.diffusion.kernels import igso3_quantiles  # numba: imported on first use

        flat = sigma64.reshape(-1).numpy()
        self._check_range(float(flat.min()), float(flat.max()))
        angle = igso3_quantiles(
            np.ascontiguousarray(flat),
            u.numpy(),
            self._flat_cdf.numpy(),
            self.omega.numpy(),
            self.spec.min_sigma,
            self.spec.max_sigma,
            self.spec.num_sigma,
        )
        return torch.from_numpy(angle).reshape(sigma.shape).to(sigma.device)

    def score_scaling(self, sigma: torch.Tensor) -> torch.Tensor:
        """RMS of one IGSO3 score component at ``sigma`` (linear in sigma between grid rows)."""
        sigma64 = sigma.detach().double().cpu()
        index, weight = self._sigma_bracket(sigma64)
        rms = (1 - weight) * self.score_rms[index] + weight * self.score_rms[index + 1]
        return rms.to(device=sigma.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "sigma": self.sigma,
            "omega": self.omega,
            "cdf": self.cdf,
            "score_rms": self.score_rms,
        }


def default_cache_dir() -> Path:
    """``$STARMD_CACHE_DIR`` if set, else ``~/.cache/starmd``."""
    env = os.environ.get("STARMD_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "starmd"


_MEMORY_CACHE: dict[IGSO3Spec, IGSO3Table] = {}


def load_igso3_table(spec: IGSO3Spec, cache_dir: Path | None) -> IGSO3Table:
    """The table for ``spec``: from memory, else from ``cache_dir``, else computed (and saved).

    ``cache_dir=None`` keeps the table in memory only. A cache directory that cannot be created
    or written, or a cache file that cannot be read, is logged and otherwise ignored.
    """
    table = _MEMORY_CACHE.get(spec)
    if table is not None:
        return table
    path = None if cache_dir is None else Path(cache_dir) / spec.file_name()
    if path is not None and path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            table = IGSO3Table(spec, **state)
        except Exception as err:  # any unreadable cache (truncated, foreign, old format)
            logger.warning("ignoring unreadable IGSO3 cache %s (%s); recomputing", path, err)
    if table is None:
        table = IGSO3Table.compute(spec)
        if path is not None:
            _save_atomically(table, path)
    _MEMORY_CACHE[spec] = table
    return table


def _save_atomically(table: IGSO3Table, path: Path) -> None:
    """Write the cache atomically (concurrent processes never read a partial file); a cache
    that cannot be written is only a warning."""
    import io

    from starmd.structure.io import write_atomically

    serialized = io.BytesIO()  # torch's file writer reports a full disk as a RuntimeError
    torch.save(table.state_dict(), serialized)
    try:
        write_atomically(path, serialized.getvalue())
    except OSError as err:
        logger.warning("cannot write IGSO3 cache %s (%s); keeping it in memory only", path, err)
