"""Offline 3D trajectory viewer of the HTML report: a few evenly spaced frames of the reference
MD and of each loaded method, as multi-model PDB text played side by side by the vendored
3Dmol.js (``starmd/assets/viewer``, BSD-3-Clause), inlined so the report needs no network."""

from __future__ import annotations

import html
import tempfile
from importlib import resources
from pathlib import Path

import mdtraj as md
import numpy as np

from starmd.evaluate.trajectories import ProteinFiles
from starmd.structure.io import load_pdb_quietly

# 30 backbone frames are ~0.27 MB of PDB text for a 40-residue protein; side chains would
# roughly double that, and the cartoon the viewer draws needs only N, CA, C and O.
VIEWER_FRAMES = 30


def viewer_models(files: ProteinFiles, n_frames: int = VIEWER_FRAMES) -> tuple[str, str]:
    """Multi-model PDB text of the first trajectory of ``files``.

    ``n_frames`` evenly spaced finite frames, backbone atoms (N, CA, C, O), each superposed on
    the first by CA.

    Returns:
        (PDB text, caption: frames shown and the time they span).
    """
    traj = md.load(str(files.xtcs[0]), top=load_pdb_quietly(files.pdb).topology)
    traj = traj.atom_slice(traj.topology.select("backbone"))
    finite = np.flatnonzero(np.isfinite(traj.xyz).all(axis=(1, 2)))
    if len(finite) == 0:
        return "", f"{files.xtcs[0].name}: no finite frame"
    picked = finite[np.unique(np.linspace(0, len(finite) - 1, n_frames).round().astype(int))]
    traj = traj[picked]
    traj.superpose(traj, 0, atom_indices=traj.topology.select("name CA"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.pdb"
        traj.save_pdb(str(path))
        lines = path.read_text().splitlines()
    # ATOM records up to the coordinates (column 54): 3Dmol.js takes the element from the atom
    # name when the element column is absent, and the rest (occupancy, B) is unused here.
    kept = [line[:54].rstrip() for line in lines if line[:6].strip() in ("MODEL", "ATOM", "ENDMDL")]
    span_ns = (traj.time[-1] - traj.time[0]) / 1000.0 if len(traj.time) > 1 else 0.0
    caption = f"{files.xtcs[0].name}: {len(picked)} frames over {span_ns:.3g} ns"
    return "\n".join(kept) + "\nEND\n", caption


def write_viewer_models(
    reference: ProteinFiles, methods: dict[str, ProteinFiles], folder: Path
) -> dict[str, dict[str, str]]:
    """Write ``{label}.pdb`` frames for the MD (replica 1) and every loaded method.

    Returns:
        label -> ``{"file": name inside folder, "caption": ...}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for label, files in {"MD": reference, **methods}.items():
        text, caption = viewer_models(files)
        if not text:
            continue
        name = f"{label}.pdb"
        (folder / name).write_text(text)
        written[label] = {"file": name, "caption": caption}
    return written


def viewer_library() -> str:
    """The vendored 3Dmol.js source, to inline in a ``<script>`` element."""
    return (resources.files("starmd") / "assets/viewer/3Dmol-min.js").read_text()


# Starts every viewer of the page; a browser without WebGL gets a line of text instead.
_START = """
document.querySelectorAll("div.mol").forEach(function (el) {
  try {
    var v = $3Dmol.createViewer(el, {backgroundColor: "white"});
    v.addModelsAsFrames(document.getElementById(el.dataset.frames).textContent, "pdb");
    v.setStyle({}, {cartoon: {color: "spectrum"}});
    v.zoomTo(); v.render(); v.animate({loop: "forward", reps: 0, interval: 200});
  } catch (err) { el.textContent = "3D viewer unavailable (WebGL?): " + err; }
});
"""


def viewer_section(models: dict[str, dict[str, str]], folder: Path, key: int) -> str:
    """HTML of one protein's side-by-side viewers, frames embedded as PDB text."""
    parts = ["<div class='viewers'>"]
    for i, (label, entry) in enumerate(models.items()):
        path = folder / entry["file"]
        if not path.is_file():
            continue
        frames_id = f"frames-{key}-{i}"
        parts.append(
            f"<figure><div class='mol' data-frames='{frames_id}'></div><figcaption>"
            f"<b>{html.escape(label)}</b> {html.escape(entry['caption'])}</figcaption></figure>"
            f"<pre hidden id='{frames_id}'>{html.escape(path.read_text())}</pre>"
        )
    parts.append("</div>")
    return "".join(parts)


def viewer_scripts() -> str:
    """The library and the start-up code, once per page, after every viewer section."""
    return f"<script>{viewer_library()}</script><script>{_START}</script>"
