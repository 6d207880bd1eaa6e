import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from starmd.diffusion import igso3
from starmd.diffusion.igso3 import (
    IGSO3Spec,
    IGSO3Table,
    default_cache_dir,
    igso3_angle_pdf,
    igso3_angle_score,
    igso3_log_density,
    load_igso3_table,
)

SMALL_SPEC = IGSO3Spec(min_sigma=0.2, max_sigma=1.4, num_sigma=40, num_omega=300)


def _angle_integral(sigma, panels=64, nodes=40):
    """High-order Gauss-Legendre quadrature of the angle marginal over [0, pi]."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.linspace(0, math.pi, panels + 1)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1] - edges[0]) / 2
    omega = torch.from_numpy((mid[:, None] + half * x).ravel())
    pdf = igso3_angle_pdf(omega, torch.tensor(sigma, dtype=torch.float64)).numpy()
    return float((pdf * np.tile(half * w, panels)).sum())


def _reference_cdf(sigma):
    """The angle CDF by cumulative Simpson on a fine grid (independent of the tables)."""
    omega = np.linspace(0, math.pi, 40001)
    pdf = igso3_angle_pdf(torch.from_numpy(omega), torch.tensor(sigma, dtype=torch.float64))
    cdf = integrate.cumulative_simpson(pdf.numpy(), x=omega, initial=0.0)
    return lambda w: np.interp(w, omega, cdf)


@pytest.mark.parametrize("sigma", [0.02, 0.1, 0.5, 0.999, 1.0, 1.5, 3.0])
def test_density_integrates_to_one_over_so3(sigma):
    assert _angle_integral(sigma) == pytest.approx(1.0, abs=1e-10)


def test_series_and_closed_form_agree_where_both_converge():
    omega = torch.linspace(0.01, math.pi, 400, dtype=torch.float64)
    for sigma in [0.6, 0.8, 1.2]:
        s = torch.full_like(omega, sigma)
        series = igso3_log_density(omega, s, closed_form_below=0.5)
        closed = igso3_log_density(omega, s, closed_form_below=2.0)
        torch.testing.assert_close(series, closed, atol=1e-9, rtol=0)
        torch.testing.assert_close(
            igso3_angle_score(omega, s, closed_form_below=0.5),
            igso3_angle_score(omega, s, closed_form_below=2.0),
            atol=1e-8,
            rtol=0,
        )


@pytest.mark.parametrize("sigma", [0.05, 0.3, 0.99, 1.0, 1.5, 2.5])
def test_angle_score_matches_autograd_and_finite_differences_of_log_density(sigma):
    omega = torch.linspace(0.05, math.pi - 0.05, 60, dtype=torch.float64, requires_grad=True)
    s = torch.full_like(omega, sigma)
    log_f = igso3_log_density(omega, s)
    (grad,) = torch.autograd.grad(log_f.sum(), omega)
    score = igso3_angle_score(omega.detach(), s)
    torch.testing.assert_close(score, grad, rtol=1e-8, atol=1e-8)
    h = 1e-5
    w = omega.detach()
    fd = (igso3_log_density(w + h, s) - igso3_log_density(w - h, s)) / (2 * h)
    torch.testing.assert_close(score, fd, rtol=1e-5, atol=1e-5)


def test_angle_score_vanishes_at_zero_and_pi():
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5], dtype=torch.float64)
    for end in [0.0, math.pi]:
        score = igso3_angle_score(torch.full_like(sigma, end), sigma)
        torch.testing.assert_close(score, torch.zeros_like(score), atol=1e-8, rtol=0)


def test_small_sigma_limit_is_the_gaussian_rotation_vector():
    """Angle marginal -> Maxwell(sigma), the norm of a N(0, sigma^2 I_3) rotation vector."""
    errors = []
    for sigma in [0.2, 0.05, 0.01]:
        omega = torch.linspace(1e-4, 6 * sigma, 500, dtype=torch.float64)
        pdf = igso3_angle_pdf(omega, torch.tensor(sigma, dtype=torch.float64))
        maxwell = torch.from_numpy(stats.maxwell.pdf(omega.numpy(), scale=sigma))
        errors.append(((pdf - maxwell).abs().max() / maxwell.max()).item())
        score = igso3_angle_score(omega, torch.tensor(sigma, dtype=torch.float64))
        # Gaussian score along the angle: d/dw log(exp(-w^2 / 2 sigma^2)) = -w / sigma^2
        rel = ((score + omega / sigma**2).abs() / (omega / sigma**2)).max().item()
        assert rel < 0.1 * sigma
    assert errors[0] > errors[1] > errors[2]
    assert errors[-1] < 1e-4


@pytest.mark.parametrize("sigma", [0.1, 0.37, 1.0, 1.23, 1.5])
def test_sampled_angles_follow_the_analytic_marginal(sigma):
    table = load_igso3_table(IGSO3Spec(), cache_dir=None)
    g = torch.Generator().manual_seed(11)
    angles = table.sample_angle(torch.full((3000,), sigma, dtype=torch.float64), g)
    assert torch.all((angles >= 0) & (angles <= math.pi))
    assert stats.kstest(angles.numpy(), _reference_cdf(sigma)).pvalue > 0.01


def test_compiled_inverse_cdf_equals_the_tensor_one_bit_for_bit():
    """The compiled inverse CDF (CPU default) and the tensor reference give the same angles
    from the same variates: scales across the table (its ends, float32 rounding beyond them,
    grid rows exactly), several shapes, the empty draw."""
    table = load_igso3_table(IGSO3Spec(), cache_dir=None)
    lo, hi = table.spec.min_sigma, table.spec.max_sigma
    sigma = torch.cat(
        [
            torch.linspace(lo, hi, 997, dtype=torch.float64),
            table.sigma[::37],
            torch.tensor([lo - 1e-6, hi + 1e-6], dtype=torch.float64),
        ]
    )
    for shape in ((len(sigma),), (1, len(sigma))):
        draws = sigma.reshape(shape)
        compiled = table.sample_angle(draws, torch.Generator().manual_seed(4))
        reference = table.sample_angle(draws, torch.Generator().manual_seed(4), compiled=False)
        assert compiled.shape == reference.shape == draws.shape
        assert torch.equal(compiled, reference)
    assert table.sample_angle(torch.zeros(0), torch.Generator()).shape == (0,)
    with pytest.raises(ValueError, match="outside"):
        table.sample_angle(torch.tensor([0.5, 2.0]), torch.Generator().manual_seed(0))


def test_table_cdf_and_score_scaling_match_direct_quadrature():
    table = IGSO3Table.compute(SMALL_SPEC)
    for row in [0, 17, 39]:
        sigma = table.sigma[row].item()
        ref = _reference_cdf(sigma)(table.omega.numpy())
        np.testing.assert_allclose(table.cdf[row].numpy(), ref, atol=1e-7)
        omega = np.linspace(0, math.pi, 20001)
        w = torch.from_numpy(omega)
        s = torch.tensor(sigma, dtype=torch.float64)
        second_moment = integrate.simpson(
            (igso3_angle_score(w, s) ** 2 * igso3_angle_pdf(w, s)).numpy(), x=omega
        )
        assert table.score_rms[row].item() == pytest.approx(math.sqrt(second_moment / 3), 1e-6)


def test_cache_file_name_encodes_every_parameter():
    names = {SMALL_SPEC.file_name()}
    changes = dict(
        min_sigma=0.25,
        max_sigma=1.45,
        num_sigma=41,
        num_omega=301,
        series_terms=80,
        closed_form_below=0.9,
        quadrature_nodes=5,
    )
    assert set(changes) == {f.name for f in dataclasses.fields(IGSO3Spec)}
    for field, value in changes.items():
        names.add(dataclasses.replace(SMALL_SPEC, **{field: value}).file_name())
    assert len(names) == len(changes) + 1


def test_table_is_saved_once_and_reloaded_from_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(igso3, "_MEMORY_CACHE", {})
    first = load_igso3_table(SMALL_SPEC, tmp_path)
    assert (tmp_path / SMALL_SPEC.file_name()).is_file()
    assert load_igso3_table(SMALL_SPEC, tmp_path) is first  # in-memory hit

    monkeypatch.setattr(igso3, "_MEMORY_CACHE", {})

    def fail(spec):
        raise AssertionError("table recomputed although a cache file exists")

    monkeypatch.setattr(IGSO3Table, "compute", classmethod(lambda cls, spec: fail(spec)))
    second = load_igso3_table(SMALL_SPEC, tmp_path)
    torch.testing.assert_close(second.cdf, first.cdf, rtol=0, atol=0)
    torch.testing.assert_close(second.score_rms, first.score_rms, rtol=0, atol=0)


def test_unwritable_cache_dir_falls_back_to_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(igso3, "_MEMORY_CACHE", {})
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    table = load_igso3_table(SMALL_SPEC, blocker / "cache")
    assert table.cdf.shape == (SMALL_SPEC.num_sigma, SMALL_SPEC.num_omega)
    assert list(tmp_path.iterdir()) == [blocker]


def test_corrupt_cache_file_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setattr(igso3, "_MEMORY_CACHE", {})
    (tmp_path / SMALL_SPEC.file_name()).write_bytes(b"garbage")
    table = load_igso3_table(SMALL_SPEC, tmp_path)
    assert torch.all(table.cdf[:, -1] == 1.0)
    reloaded = torch.load(tmp_path / SMALL_SPEC.file_name(), weights_only=True)
    torch.testing.assert_close(reloaded["cdf"], table.cdf)


def test_cache_dir_is_overridable_by_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STARMD_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("STARMD_CACHE_DIR")
    assert default_cache_dir().parts[-2:] == (".cache", "starmd")


def test_invalid_series_parameters_are_rejected():
    with pytest.raises(ValueError, match="too short"):
        IGSO3Spec(series_terms=5)
    with pytest.raises(ValueError, match="closed_form_below"):
        IGSO3Spec(closed_form_below=0.1)
    table = load_igso3_table(IGSO3Spec(), cache_dir=None)
    with pytest.raises(ValueError, match="outside"):
        table.sample_angle(torch.tensor([2.0]), torch.Generator().manual_seed(0))
