import numpy as np

from starmd.evaluate.plots import (
    distances_figure,
    health_figure,
    rmsf_figure,
    running_mean,
    tica_figure,
    validity_window,
)


def test_running_mean_of_a_constant_series_stays_constant_to_the_ends():
    for window in (1, 4, 5, 60):
        assert np.allclose(running_mean(np.full(60, 0.8), window), 0.8)


def test_running_mean_is_centred_and_skips_missing_samples():
    step = np.r_[np.zeros(10), np.ones(10)]
    smooth = running_mean(step, 5)
    assert smooth[7] == 0.0 and smooth[12] == 1.0 and smooth[9] == 0.4  # centred on the step
    with_gap = np.array([1.0, np.nan, 1.0, 1.0])
    assert np.allclose(running_mean(with_gap, 3), 1.0)


def test_validity_window_follows_one_rule_for_every_series_length():
    assert validity_window(60) == 5  # a short MD series is smoothed too (was: window 1)
    assert validity_window(2000) == 100
    assert validity_window(3) == 3


def _method(n_frames: int, dt_ps: float, rng) -> dict[str, np.ndarray]:
    return {
        "health_time_ps_R1": np.arange(1, n_frames + 1) * dt_ps,
        "health_valid_R1": rng.random(n_frames) > 0.2,
        "health_rmsd_to_initial_R1": rng.random(n_frames),
        "health_radius_of_gyration_R1": 10 + rng.random(n_frames),
    }


def test_health_plot_gives_each_method_its_own_time_axis():
    rng = np.random.default_rng(0)
    series = {"md_reference": _method(50, 10.0, rng), "model": _method(100, 500.0, rng)}
    fig = health_figure("p", series)
    md_row, model_row = fig.axes[:3], fig.axes[3:6]
    assert md_row[0].get_xlim()[1] == 0.5 and model_row[0].get_xlim()[1] == 50.0  # ns
    assert md_row[0].get_ylabel().startswith("MD") and model_row[0].get_ylabel().startswith("model")


def _profiles(rng) -> dict[str, np.ndarray]:
    ca = np.arange(0, 40, 4)
    return {
        "rmsf_ref": rng.random(40),
        "rmsf_gen": rng.random(40),
        "ca_index": ca,
        "ca_residue_number": np.arange(101, 111),
        "ca_distances_ref": 5 + 10 * rng.random(500),
        "ca_distances_gen": 5 + 10 * rng.random(500),
        "rg_ref": 10 + rng.random(100),
        "rg_gen": 10 + rng.random(100),
        "tica_ref": rng.standard_normal((400, 2)),
        "tica_gen": rng.standard_normal((300, 2)),
    }


def test_rmsf_is_drawn_against_residue_numbers_of_the_topology():
    fig = rmsf_figure("p", {"model": _profiles(np.random.default_rng(1))})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "residue number"
    assert list(ax.lines[0].get_xdata()) == list(range(101, 111))


def test_both_histograms_have_labelled_axes():
    fig = distances_figure({"model": _profiles(np.random.default_rng(2))})
    assert all(ax.get_ylabel().startswith("density") for ax in fig.axes)


def test_tica_free_energy_panels_share_a_colour_bar_in_kt():
    fig = tica_figure("p", {"model": _profiles(np.random.default_rng(3))})
    colour_bars = [ax for ax in fig.axes if ax.get_ylabel() == "free energy (kT)"]
    assert len(colour_bars) == 1
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2 and len({im.get_clim() for im in images}) == 1
