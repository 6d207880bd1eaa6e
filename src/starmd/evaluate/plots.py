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
    plt = _pyplot()
    per_method = {m: _method_arrays(arrays, m) for m in methods}
    per_method = {m: a for m, a in per_method.items() if "rmsf_gen" in a}
    written: dict[str, str] = {}
    if not per_method:
        return written

    fig, ax = plt.subplots(figsize=(8, 3.5))
    richest = _richest(per_method, "rmsf_ref")
    ax.plot(richest["rmsf_ref"][richest["ca_index"]], **REFERENCE_STYLE)
    for m, a in per_method.items():
        ax.plot(a["rmsf_gen"][a["ca_index"]], lw=1.2, label=m)
    ax.set(xlabel="residue (CA order)", ylabel="CA RMSF (A)", title=f"{name}: RMSF")
    ax.legend(fontsize=7)
    written["rmsf"] = _save(fig, plot_dir / "rmsf.png")

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
    axes[0].set(xlabel="CA-CA distance (A)", ylabel="density", title="CA-CA distances")
    axes[1].set(xlabel="radius of gyration (A)", title="Rg")
    axes[1].legend(fontsize=7)
    written["distances"] = _save(fig, plot_dir / "distances.png")

    with_tica = {m: a for m, a in per_method.items() if "tica_ref" in a}
    if with_tica:
        ref_points = _richest(with_tica, "tica_ref")["tica_ref"]
        edges = [np.linspace(*np.percentile(ref_points[:, k], [0.5, 99.5]), 30) for k in range(2)]
        panels = [("MD", ref_points)] + [(m, a["tica_gen"]) for m, a in with_tica.items()]
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3), squeeze=False)
        for ax, (label, points) in zip(axes[0], panels, strict=True):
            h, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=edges)
            with np.errstate(divide="ignore"):
                free_energy = -np.log(h / max(h.sum(), 1))
            free_energy -= (
                np.nanmin(free_energy[np.isfinite(free_energy)])
                if np.isfinite(free_energy).any()
                else 0
            )
            ax.imshow(
                free_energy.T, origin="lower", aspect="auto", cmap="viridis",
                extent=(edges[0][0], edges[0][-1], edges[1][0], edges[1][-1]),
            )  # fmt: skip
            ax.set(title=label, xlabel="TIC 0")
        axes[0][0].set_ylabel("TIC 1")
        fig.suptitle(f"{name}: free energy on the MD's TICs (kT)")
        written["tica_fes"] = _save(fig, plot_dir / "tica_fes.png")

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

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    series = {m: _method_arrays(arrays, m) for m in ["md_reference", *per_method]}
    for m, a in series.items():
        if "health_time_ps_R1" not in a:
            continue
        t_ns = a["health_time_ps_R1"] / 1000.0
        window = max(1, len(t_ns) // 50)
        valid = np.convolve(
            a["health_valid_R1"].astype(float), np.ones(window) / window, mode="same"
        )
        style = REFERENCE_STYLE if m == "md_reference" else {"label": m, "lw": 1.0}
        axes[0].plot(t_ns, 100 * valid, **style)
        axes[1].plot(t_ns, a["health_rmsd_to_initial_R1"], **style)
        axes[2].plot(t_ns, a["health_radius_of_gyration_R1"], **style)
    axes[0].set(
        xlabel="time (ns)", ylabel="valid frames (%)", title="validity (CA+AA), running mean"
    )
    axes[1].set(xlabel="time (ns)", ylabel="CA RMSD to initial (A)", title="drift")
    axes[2].set(xlabel="time (ns)", ylabel="Rg (A)", title="radius of gyration")
    axes[2].legend(fontsize=7)
    written["health"] = _save(fig, plot_dir / "health.png")
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
