"""Per-protein matplotlib figures (PNG) of the evaluation: RMSF, distances and Rg, tICA free
energy, autocorrelations, and validity / drift over time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REFERENCE_STYLE = {"color": "black", "lw": 2.0, "label": "MD"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _method_arrays(arrays: dict[str, np.ndarray], method: str) -> dict[str, np.ndarray]:
    prefix = f"{method}/"
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _save(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path.name


def _richest(
    per_method: dict[str, dict[str, np.ndarray]], key: str
) -> dict[str, np.ndarray] | None:
    """The method arrays with the largest ``key`` (most shared atoms) to draw the MD curve from."""
    candidates = [a for a in per_method.values() if key in a]
    return max(candidates, key=lambda a: a[key].size) if candidates else None


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean of a ``(T,)`` series over ``window`` samples.

    Only samples that exist enter each mean: NaN samples are skipped and the window shrinks at
    the ends instead of being padded, so a constant series stays constant to its first and
    last sample (``np.convolve(mode="same")`` pads with zeros and bends both ends down).

    Returns:
        ``(T,)`` float; NaN where the window holds no finite sample.
    """
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    start = np.clip(np.arange(len(values)) - window // 2, 0, len(values))
    stop = np.clip(start + window, 0, len(values))
    n = counts[stop] - counts[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[stop] - sums[start]) / n, np.nan)


def validity_window(n_frames: int) -> int:
    """Running-mean window of a validity series: 5% of its frames, at least 5 (or all of a
    shorter series); one rule for MD and every method."""
    return max(1, min(n_frames, max(5, n_frames // 20)))


def _ca_residue_axis(a: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """x values and label of a per-CA profile: residue numbers from the topology where they
    increase along the chain(s), else the CA order (numbering restarts across chains)."""
    numbers = a.get("ca_residue_number")
    if numbers is not None and len(numbers) and np.all(np.diff(numbers) > 0):
        return numbers, "residue number"
    return np.arange(len(a["ca_index"])), "residue (CA order; numbering restarts across chains)"


def rmsf_figure(name: str, per_method: dict[str, dict[str, np.ndarray]]):
    """CA RMSF of the MD and every method against residue number."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    richest = _richest(per_method, "rmsf_ref")
    x, xlabel = _ca_residue_axis(richest)
    ax.plot(x, richest["rmsf_ref"][richest["ca_index"]], **REFERENCE_STYLE)
    for m, a in per_method.items():
        x, _ = _ca_residue_axis(a)
        ax.plot(x, a["rmsf_gen"][a["ca_index"]], lw=1.2, label=m)
    ax.set(xlabel=xlabel, ylabel="CA RMSF (A)", title=f"{name}: RMSF")
    ax.legend(fontsize=7)
    return fig


def distances_figure(per_method: dict[str, dict[str, np.ndarray]]):
    """Histograms of CA-CA distances and of the radius of gyration, MD against every method."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    richest = _richest(per_method, "ca_distances_ref")
    bins = np.linspace(0, np.nanmax(richest["ca_distances_ref"]) * 1.2, 60)
    axes[0].hist(
        richest["ca_distances_ref"], bins=bins, density=True, histtype="step", **REFERENCE_STYLE
    )
    rg_ref = richest["rg_ref"][np.isfinite(richest["rg_ref"])]
    rg_all = np.concatenate(
        [rg_ref] + [a["rg_gen"][np.isfinite(a["rg_gen"])] for a in per_method.values()]
    )
    lo, hi = np.percentile(rg_all, [0.5, 99.5]) if len(rg_all) else (0, 1)
    rg_bins = np.linspace(lo - 0.5, hi + 0.5, 50)
    axes[1].hist(rg_ref, bins=rg_bins, density=True, histtype="step", **REFERENCE_STYLE)
    for m, a in per_method.items():
        axes[0].hist(a["ca_distances_gen"], bins=bins, density=True, histtype="step", label=m)
        axes[1].hist(
            a["rg_gen"][np.isfinite(a["rg_gen"])],
            bins=rg_bins,
            density=True,
            histtype="step",
            label=m,
        )
    axes[0].set(xlabel="CA-CA distance (A)", ylabel="density (1/A)", title="CA-CA distances")
    axes[1].set(xlabel="radius of gyration (A)", ylabel="density (1/A)", title="Rg")
    axes[1].legend(fontsize=7)
    return fig


def _free_energy(points: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """-ln p on the 2D grid ``edges`` (kT), shifted so its minimum is 0; inf where empty."""
    h, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=edges)
    with np.errstate(divide="ignore"):
        free_energy = -np.log(h / max(h.sum(), 1))
    finite = np.isfinite(free_energy)
    return free_energy - (free_energy[finite].min() if finite.any() else 0.0)


def tica_figure(name: str, with_tica: dict[str, dict[str, np.ndarray]]):
    """Free energy on the MD's first two TICs, MD and every method on one colour scale (kT)."""
    plt = _pyplot()
    ref_points = _richest(with_tica, "tica_ref")["tica_ref"]
    edges = [np.linspace(*np.percentile(ref_points[:, k], [0.5, 99.5]), 30) for k in range(2)]
    panels = [("MD", ref_points)] + [(m, a["tica_gen"]) for m, a in with_tica.items()]
    surfaces = [(label, _free_energy(points, edges)) for label, points in panels]
    top = max((f[np.isfinite(f)].max() for _, f in surfaces if np.isfinite(f).any()), default=1)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3 * len(panels) + 1, 3.2), squeeze=False, layout="constrained"
    )
    for ax, (label, free_energy) in zip(axes[0], surfaces, strict=True):
        image = ax.imshow(
            np.ma.masked_invalid(free_energy.T), origin="lower", aspect="auto", cmap="viridis",
            vmin=0, vmax=top,
            extent=(edges[0][0], edges[0][-1], edges[1][0], edges[1][-1]),
        )  # fmt: skip
        ax.set(title=label, xlabel="TIC 0")
    axes[0][0].set_ylabel("TIC 1")
    fig.suptitle(f"{name}: free energy on the MD's TICs (empty bins white)")
    fig.colorbar(image, ax=list(axes[0]), label="free energy (kT)", fraction=0.04, pad=0.02)
    return fig


def health_figure(name: str, series: dict[str, dict[str, np.ndarray]]):
    """Validity (running mean), drift and Rg against time, one row per method so that each
    keeps its own time axis (0.5 ns of MD next to 50 ns of model stays readable)."""
    plt = _pyplot()
    rows = [(m, a) for m, a in series.items() if "health_time_ps_R1" in a]
    fig, axes = plt.subplots(
        len(rows), 3, figsize=(12, 2.3 * len(rows) + 0.6), squeeze=False, sharey="col"
    )
    for row, (m, a) in zip(axes, rows, strict=True):
        t_ns = a["health_time_ps_R1"] / 1000.0
        valid = a["health_valid_R1"].astype(float)
        window = validity_window(len(valid))
        style = {"color": "black", "lw": 1.5} if m == "md_reference" else {"lw": 1.2}
        label = "MD (replica 1)" if m == "md_reference" else m
        row[0].plot(t_ns, 100 * running_mean(valid, window), **style)
        row[0].set(ylim=(-5, 105), ylabel=f"{label}\nvalid frames (%)")
        row[0].text(0.99, 0.05, f"window {window} frames", transform=row[0].transAxes,
                    ha="right", fontsize=7)  # fmt: skip
        row[1].plot(t_ns, a["health_rmsd_to_initial_R1"], **style)
        row[1].set(ylabel="CA RMSD to initial (A)")
        row[2].plot(t_ns, a["health_radius_of_gyration_R1"], **style)
        row[2].set(ylabel="Rg (A)")
        for ax in row:
            ax.set_xlim(0, t_ns[-1] if len(t_ns) else 1)
            ax.set_xlabel("time (ns)")
    for ax, title in zip(
        axes[0], ("validity (CA+AA), centred running mean", "drift", "radius of gyration"),
        strict=True,
    ):  # fmt: skip
        ax.set_title(title)
    fig.suptitle(f"{name}: health over time (replica 1 of each method)")
    return fig


def protein_plots(
    name: str, arrays: dict[str, np.ndarray], methods: list[str], plot_dir: Path
) -> dict[str, str]:
    """Write the protein's figures.

    Args:
        name: protein name (titles).
        arrays: content of ``arrays.npz`` (keys ``{method}/{array}``).
        methods: method labels in table order.
        plot_dir: output folder.

    Returns:
        figure kind -> file name inside ``plot_dir``.
    """
    per_method = {m: _method_arrays(arrays, m) for m in methods}
    per_method = {m: a for m, a in per_method.items() if "rmsf_gen" in a}
    written: dict[str, str] = {}
    if not per_method:
        return written
    written["rmsf"] = _save(rmsf_figure(name, per_method), plot_dir / "rmsf.png")
    written["distances"] = _save(distances_figure(per_method), plot_dir / "distances.png")
    with_tica = {m: a for m, a in per_method.items() if "tica_ref" in a}
    if with_tica:
        written["tica_fes"] = _save(tica_figure(name, with_tica), plot_dir / "tica_fes.png")

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for m, a in per_method.items():
        axes[0].plot(a["lags_ps"], a["autocorr_gen"], marker=".", label=m)
        axes[1].plot(a["lags_ps"], a["rmsd_lag_gen"], marker=".", label=m)
    richest = _richest(per_method, "autocorr_ref")
    axes[0].plot(richest["lags_ps"], richest["autocorr_ref"], **REFERENCE_STYLE)
    axes[1].plot(richest["lags_ps"], richest["rmsd_lag_ref"], **REFERENCE_STYLE)
    axes[0].set(
        xscale="log", xlabel="lag (ps)", ylabel="autocorrelation", title="top-PC autocorrelation"
    )
    axes[1].set(xscale="log", xlabel="lag (ps)", ylabel="CA RMSD (A)", title="RMSD vs lag")
    axes[1].legend(fontsize=7)
    written["autocorrelation"] = _save(fig, plot_dir / "autocorrelation.png")

    series = {m: _method_arrays(arrays, m) for m in ["md_reference", *per_method]}
    written["health"] = _save(health_figure(name, series), plot_dir / "health.png")
    if "geometry_c_n" in series.get("md_reference", {}):
        written["local_geometry"] = _save(
            _local_geometry_figure(name, series), plot_dir / "local_geometry.png"
        )
    return written


# (array key, axis label, histogram range) of the local-geometry panels.
_GEOMETRY_PANELS = (
    ("geometry_c_n", "C(i)-N(i+1) (A)", (1.0, 2.5)),
    ("geometry_ca_ca", "CA(i)-CA(i+1) (A)", (3.0, 5.0)),
    ("geometry_ca_c_n", "CA-C-N angle (deg)", (90.0, 150.0)),
    ("geometry_c_n_ca", "C-N-CA angle (deg)", (90.0, 150.0)),
    ("geometry_omega", "omega (deg)", (-180.0, 180.0)),
)


def _local_geometry_figure(name: str, series: dict[str, dict[str, np.ndarray]]):
    """Histograms of peptide-bond geometry, MD (reference replica 1) against every method;
    values outside a panel's range are clipped into its edge bins so they stay visible."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(_GEOMETRY_PANELS), figsize=(3.2 * len(_GEOMETRY_PANELS), 3.2))
    for ax, (key, label, (lo, hi)) in zip(axes, _GEOMETRY_PANELS, strict=True):
        bins = np.linspace(lo, hi, 61)
        for m, a in series.items():
            if key not in a or len(a[key]) == 0:
                continue
            style = REFERENCE_STYLE if m == "md_reference" else {"label": m, "lw": 1.0}
            ax.hist(np.clip(a[key], lo, hi), bins=bins, density=True, histtype="step", **style)
        ax.set(xlabel=label, yscale="log")
    axes[0].set_ylabel("density")
    axes[-1].legend(fontsize=7)
    fig.suptitle(f"{name}: local geometry")
    return fig
