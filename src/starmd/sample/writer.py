"""The trajectory files of ``starmd generate``: topology PDB, one XTC per replica, resume state.

Frames are written in chunks: at each commit the rollout's state (:meth:`Rollout.state_dict`:
its KV cache and last frame) is saved to ``{name}.rollout.{frames}.pt``, each chunk is encoded as
XTC (:func:`starmd.structure.io.xtc_bytes`) and appended to the replica's file (XTC frames are
self-contained, so concatenation is a valid XTC), then ``{name}.progress.json`` records the
committed frames, byte lengths and state file, atomically; the state file of the commit before is
removed only then. An interrupted run therefore leaves valid, shorter trajectories; a resumed one
truncates them to the last commit (:func:`open_outputs`) and restores the rollout from the saved
state (:func:`restore_history`), so it writes the same bytes as an uninterrupted run. Output
folders of earlier versions have no state file: their history is re-encoded from the written
(superposed, 0.001 nm precision) frames, and the continuation is only approximately the
uninterrupted one.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from starmd.errors import StarmdInputError, located
from starmd.sample.rollout import Rollout
from starmd.structure import geometry
from starmd.structure.io import (
    NM_TO_ANGSTROM,
    append_bytes,
    atomic_write,
    build_topology,
    write_atomically,
    xtc_bytes,
)
from starmd.structure.polish import PolishSettings, plan_polish, polish
from starmd.structure.protein import Protein
from starmd.structure.rigid import Rigid
from starmd.structure.superpose import superpose

log = logging.getLogger(__name__)


class TrajectoryWriter:
    """Buffers frames per replica and commits chunks to the XTC files + progress file.

    ``progress_state`` is the resume record (:func:`open_outputs`): per replica the committed
    ``frames`` and XTC ``bytes``; the writer updates it at every commit.
    """

    def __init__(
        self,
        out_dir: Path,
        name: str,
        protein: Protein,
        atom_mask: np.ndarray,
        replicas: int,
        progress_state: dict,
        polish: PolishSettings | None = None,
    ):
        self.out_dir = out_dir
        self.name = name
        self.atom_mask = atom_mask
        self.topology, self.slots = build_topology(protein, atom_mask)
        self.ca_columns = np.flatnonzero(self.slots[:, 1] == 1)
        self.reference: np.ndarray | None = None
        self.buffers: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(replicas)]
        self.state = progress_state
        self.progress_path = out_dir / f"{name}.progress.json"
        self.polish = polish
        self.polish_plan = plan_polish(self.topology) if polish is not None else None
        self.polish_s = 0.0

    def path(self, replica: int) -> Path:
        return self.out_dir / f"{self.name}_R{replica + 1}.xtc"

    def written(self, positions: np.ndarray) -> np.ndarray:
        """The heavy atoms written for frames ``(F, L, 15, 3)``: ``(F, n_atoms, 3)`` Angstrom in
        the topology's order, polished (:mod:`starmd.structure.polish`) when the writer was
        given polish settings. Every frame is polished on its own, so the result does not depend
        on which frames are passed together."""
        xyz = positions[:, self.slots[:, 0], self.slots[:, 1]]
        if self.polish is None or len(xyz) == 0:
            return xyz
        start = time.perf_counter()
        # the written frames are judged by the evaluation's checks (RefinementLedger.add_written)
        polished = polish(xyz, self.polish_plan, self.polish, measure=False).xyz
        self.polish_s += time.perf_counter() - start
        return polished

    def xyz_nm(self, xyz: np.ndarray) -> np.ndarray:
        """Written heavy atoms ``(n_atoms, 3)`` Angstrom (:meth:`written`) -> nm, superposed on
        frame 0 by CA (the first frame seen is frame 0: it becomes the reference)."""
        xyz = xyz / NM_TO_ANGSTROM
        if self.reference is None:
            self.reference = xyz
            return xyz
        return superpose(xyz[None], self.reference, self.ca_columns)[0]

    def write_topology(self, written0: np.ndarray) -> Path:
        """Write ``{name}.pdb``: the heavy-atom topology at frame 0, ``written0`` its written
        heavy atoms ``(n_atoms, 3)`` Angstrom (:meth:`written`, polished as every frame is; it
        also becomes the superposition reference)."""
        import mdtraj

        xyz0 = self.xyz_nm(written0)
        traj0 = mdtraj.Trajectory(xyz0[None].astype(np.float32), self.topology)
        return atomic_write(self.out_dir / f"{self.name}.pdb", lambda tmp: traj0.save_pdb(tmp))

    def add(self, replica: int, t: int, xyz: np.ndarray) -> None:
        """Buffer frame ``t`` of ``replica`` (0-based): its written heavy atoms ``(n_atoms, 3)``
        Angstrom (:meth:`written`)."""
        self.buffers[replica].append((t, self.xyz_nm(xyz)))

    def state_path(self, frames: int) -> Path:
        """The rollout state saved when ``frames`` frames were committed."""
        return self.out_dir / f"{self.name}.rollout.{frames}.pt"

    def commit(self, dt_ps: float, rollout_state: dict | None = None) -> None:
        """Append the buffered frames (time stamps ``t * dt_ps``) and record the commit, with
        ``rollout_state`` (:meth:`Rollout.state_dict` after the last buffered frame; None keeps
        the recorded one)."""
        previous = self.state.get("rollout_state")
        if rollout_state is not None:
            path = self.state_path(rollout_state["frame"] + 1)
            serialized = io.BytesIO()  # torch's own file writer would turn a full disk into
            torch.save(rollout_state, serialized)  # "RuntimeError: basic_ios::clear"
            write_atomically(path, serialized.getvalue(), durable=True)
            self.state["rollout_state"] = path.name
        for r, buffer in enumerate(self.buffers):
            if not buffer:
                continue
            steps = np.array([t for t, _ in buffer])
            numbers = np.arange(int(steps[0]), int(steps[0]) + len(buffer))
            data = xtc_bytes(np.stack([x for _, x in buffer]), steps * dt_ps, numbers)
            record = self.state["replicas"][r]
            record["bytes"] = append_bytes(self.path(r), record["bytes"], data)
            record["frames"] = int(steps[-1]) + 1
            buffer.clear()
        write_atomically(self.progress_path, json.dumps(self.state, indent=1))
        if previous is not None and previous != self.state.get("rollout_state"):
            (self.out_dir / previous).unlink(missing_ok=True)

    def finish(self) -> None:
        """Remove the resume record and rollout states of a finished run."""
        remove_resume_files(self.out_dir, self.name)


def remove_resume_files(out_dir: Path, name: str) -> None:
    """Delete ``{name}``'s progress record and saved rollout states in ``out_dir``."""
    (out_dir / f"{name}.progress.json").unlink(missing_ok=True)
    for path in out_dir.glob(f"{name}.rollout.*.pt"):
        path.unlink(missing_ok=True)


def open_outputs(
    out_dir: Path, name: str, replicas: int, identity: dict, resume: bool, overwrite: bool
) -> dict:
    """The resume record of a run into ``out_dir``: a fresh one (the XTC files created empty),
    or, with ``resume``, the recorded one with the XTC files cut back to its last commit.

    ``identity`` (input digest, model, settings) must match the recorded one to resume.
    """
    progress_path = out_dir / f"{name}.progress.json"
    existing = [out_dir / f"{name}_R{r + 1}.xtc" for r in range(replicas)]
    if resume and progress_path.exists():
        state = read_progress(progress_path, existing)
        if state.get("identity") != identity:
            raise StarmdInputError(
                located(
                    progress_path,
                    "was written with other settings, model or structure, or by an earlier "
                    "starmd version (other random streams); cannot resume, use --overwrite",
                )
            )
        for r, path in enumerate(existing):
            committed = state["replicas"][r]["bytes"]
            with open(path, "r+b") as fh:
                fh.truncate(committed)
        return state
    if resume:
        raise StarmdInputError(located(progress_path, "nothing to resume (no progress file)"))
    if any(p.exists() for p in existing) and not overwrite:
        raise StarmdInputError(located(existing[0], "exists; pass --overwrite or --resume"))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_resume_files(out_dir, name)  # an overwritten run's, never to be resumed
        for path in existing:
            path.write_bytes(b"")
    except OSError as exc:
        raise StarmdInputError(located(out_dir, f"cannot write output ({exc.strerror})")) from exc
    return {"identity": identity, "replicas": [{"frames": 0, "bytes": 0} for _ in range(replicas)]}


def read_progress(path: Path, trajectories: list[Path]) -> dict:
    """The resume record at ``path``, checked against the replica ``trajectories`` it
    describes before anything is cut back to it.

    Raises:
        StarmdInputError: the record is truncated, not JSON, or does not fit the files (a
            replica count, frame count or byte length that cannot be right).
    """
    try:
        state = json.loads(path.read_text())
        records = state["replicas"]
        if len(records) != len(trajectories):
            raise ValueError(f"{len(records)} replicas recorded, {len(trajectories)} requested")
        for record, trajectory in zip(records, trajectories, strict=True):
            frames, size = record["frames"], record["bytes"]
            if not (isinstance(frames, int) and isinstance(size, int) and frames >= 0):
                raise ValueError("frames and bytes must be counts")
            if not 0 <= size <= (trajectory.stat().st_size if trajectory.exists() else 0):
                raise ValueError(f"{trajectory.name} is shorter than the {size} bytes recorded")
    except (ValueError, TypeError, KeyError) as exc:
        raise StarmdInputError(
            located(
                path,
                f"corrupt progress record ({exc}); nothing was changed: restore it, or start "
                "afresh with --overwrite",
            )
        ) from exc
    return state


def restore_history(
    rollout: Rollout,
    writer: TrajectoryWriter,
    protein: Protein,
    start: int,
    replicas: int,
    context: int | None,
) -> bool:
    """Bring a new rollout to where the interrupted one stopped (``start`` frames committed).

    Exactly from the saved rollout state when there is one (returns True); otherwise, for
    output folders written before states were saved, by re-encoding frame 0 and the last
    ``context`` frames before ``start`` (None = all) from the written trajectories, with a
    warning that the continuation is approximate (returns False).
    """
    if any(r["frames"] != start for r in writer.state["replicas"]):
        raise StarmdInputError("replicas were stopped at different frames; resume not possible")
    inputs = rollout.inputs
    frame0 = rollout.atoms(inputs.init_frames, inputs.init_torsions)[0].cpu().numpy()
    writer.xyz_nm(writer.written(frame0[None])[0])  # sets the superposition reference
    saved = writer.state.get("rollout_state")
    if saved is not None and (writer.out_dir / saved).is_file():
        rollout.load_state_dict(_read_rollout_state(writer.out_dir / saved, start))
        return True
    log.warning(
        "%s: no saved rollout state (written by an earlier version); resuming from the written "
        "frames, so the continuation only approximates the uninterrupted run",
        writer.progress_path,
    )
    _reencode_history(rollout, writer, protein, start, replicas, context)
    return False


def _read_rollout_state(path: Path, start: int) -> dict:
    """The rollout state saved in ``path`` after frame ``start - 1``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise StarmdInputError(located(path, f"unreadable rollout state ({exc})")) from exc
    if state.get("frame") != start - 1:
        raise StarmdInputError(located(path, f"does not end at frame {start - 1}; cannot resume"))
    return state


def _reencode_history(
    rollout: Rollout,
    writer: TrajectoryWriter,
    protein: Protein,
    start: int,
    replicas: int,
    context: int | None,
) -> None:
    """Encode frame 0 and the last ``context`` frames before ``start`` (None = all), re-read
    from the written trajectories, into the cache of ``rollout``. Approximate: the XTC frames
    are superposed on frame 0 and rounded to 0.001 nm, and the re-encoded frames attend only to
    each other, not to the history the interrupted run's cache was built from; with the atom
    polish the written frames also differ from the cached (refined) ones by the polish's moves."""
    import mdtraj

    inputs = rollout.inputs
    rollout.push_clean(0, inputs.init_frames, inputs.init_torsions)
    context = context if context is not None else start
    first = max(1, start - context)
    positions = []
    for r in range(replicas):
        traj = mdtraj.load(str(writer.path(r)), top=writer.topology)
        xyz = traj.xyz[first:start] * NM_TO_ANGSTROM
        pos = np.zeros((len(xyz), *inputs.cond.aatype.shape[1:], 15, 3))
        pos[:, writer.slots[:, 0], writer.slots[:, 1]] = xyz
        positions.append(pos)
    stacked = torch.from_numpy(np.stack(positions, 1))  # (T, B, L, 15, 3)
    cond = inputs.cond
    aatype = torch.from_numpy(protein.aatype)
    atom_mask = torch.from_numpy(writer.atom_mask)
    linked = torch.from_numpy(protein.linked_prev)
    dtype, device = inputs.init_torsions.dtype, inputs.init_torsions.device
    for k, t in enumerate(range(first, start)):
        pos = stacked[k] - inputs.centre.double().cpu()[:, None, None]
        frames = geometry.atoms_to_frames(pos)
        torsions, _ = geometry.atoms_to_torsions(pos, aatype, atom_mask, linked)
        rollout.push_clean(
            t,
            Rigid(frames.rots.to(device, dtype), frames.trans.to(device, dtype)),
            torch.where(cond.torsion_mask, torsions.to(device, dtype), 0.0),
        )
