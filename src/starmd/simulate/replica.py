"""One replica of a reference MD run: equilibrate, grow in chunks, save resumable state.

:func:`run_replica` is what :func:`starmd.simulate.engine.simulate` runs for every replica
(through :mod:`starmd.simulate.progress`, in this process or a worker process): it holds the
replica's lock file, and after each chunk appends the frames to the replica's XTC, saves the
OpenMM state as portable XML and updates the progress record, in that order, so a killed run
resumes exactly. :func:`check_frame` stops a replica whose energy or bonds have blown up.
"""

from __future__ import annotations

import gzip
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from starmd.errors import StarmdInputError, StarmdSimulationError, located
from starmd.outputs import try_lock
from starmd.simulate import atlas
from starmd.simulate.protocols import get_protocol, make_integrator, openmm_seed

MAX_BOND_NM = 0.35
"""A covalent heavy-atom bond longer than this (nm) means the coordinates have exploded."""

ProgressCallback = Callable[["ReplicaProgress"], None]


@dataclass(frozen=True)
class ReplicaProgress:
    """Progress of one replica, reported after equilibration and after every chunk.

    Attributes:
        name: protein name.
        replica: replica index, from 1.
        frames_done: production frames written so far.
        frames_total: production frames requested.
        save_every_ps: time between frames, ps.
        ns_per_day: production speed, simulated ns over production wall time, ns/day
            (0 before any chunk).
        done: whether the replica has reached ``frames_total``.
    """

    name: str
    replica: int
    frames_done: int
    frames_total: int
    save_every_ps: float
    ns_per_day: float
    done: bool

    @property
    def simulated_ns(self) -> float:
        """Production time simulated so far, ns."""
        return self.frames_done * self.save_every_ps / 1000.0


AMINO_ACIDS = frozenset(
    "ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL "
    "HID HIE HIP CYX ASH GLH LYN".split()
)


def heavy_protein_atoms(topology: Any) -> list[int]:
    """Indices of the heavy atoms of amino-acid residues in an OpenMM topology."""
    return [
        atom.index
        for atom in topology.atoms()
        if atom.residue.name in AMINO_ACIDS
        and atom.element is not None
        and atom.element.symbol != "H"
    ]


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name if empty)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


@dataclass(frozen=True)
class ReplicaJob:
    """Everything a (possibly separate) process needs to run one replica; picklable."""

    out_dir: str
    name: str
    replica: int
    seed: int
    n_frames: int
    save_every_ps: float
    equilibrate_ps: float
    chunk_frames: int
    platform: str
    threads: int | None


def replica_seed(seed: int, replica: int) -> int:
    """Seed of replica ``replica`` (1-based) of a run with base ``seed`` (:func:`base_seed`
    inverts it)."""
    return seed * 1000 + replica


def check_seed(seed: int, replicas: int) -> None:
    """Refuse a base seed whose replica seeds (:func:`replica_seed`) do not fit OpenMM's
    32-bit seeds (the velocities are drawn with the replica seed itself).

    Raises:
        StarmdInputError: ``"--seed N: need 0 to MAX ..."``.
    """
    largest = (2**31 - 1 - replicas) // 1000
    if not 0 <= seed <= largest:
        raise StarmdInputError(
            f"--seed {seed}: need 0 to {largest} with {replicas} replica(s) (replica i runs "
            "with seed*1000+i, an OpenMM 32-bit seed)"
        )


def base_seed(replica_seed: int, replica: int) -> int:
    """The base ``--seed`` a replica's seed was made from (:func:`replica_seed` inverted)."""
    return (replica_seed - replica) // 1000


def thermostat_seed(replica_seed: int, call: int) -> int:
    """Seed of the thermostat's random stream for a replica's ``call``-th run (0: the first,
    k: its k-th continuation; OpenMM cannot save the stream, so each continuation draws a new
    one). Hashed from both numbers, so no two (replica, call) pairs share a stream: with
    ``replica_seed + call`` replica 1's first continuation repeated replica 2's first run."""
    return int(np.random.SeedSequence([replica_seed % (1 << 64), call]).generate_state(1)[0])


def run_replica(job: ReplicaJob, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run one replica (see :func:`_run_replica`) while holding its lock file.

    Raises:
        StarmdSimulationError: another process is running the same replica, or the run failed.
    """
    out_dir = Path(job.out_dir)
    with try_lock(atlas.replica_lock(out_dir, job.name, job.replica)) as acquired:
        if not acquired:
            raise StarmdSimulationError(
                f"{out_dir}: replica {job.replica} of {job.name} is being run by another process"
            )
        return _run_replica(job, on_progress)


def _run_replica(job: ReplicaJob, on_progress: ProgressCallback | None) -> dict[str, Any]:
    """Equilibrate (unless resuming) and grow one replica to ``job.n_frames`` frames.

    After each chunk of ``job.chunk_frames`` frames: the frames (protein heavy atoms, CA
    superposed on ``{name}.pdb``) are appended to the replica XTC, the OpenMM state is saved as
    portable XML (first as ``*.xml.pending``), the progress record is updated, and the state is
    renamed into place, in that order; the record is what counts (:func:`_committed_state`).

    Returns:
        The replica's progress record.

    Raises:
        StarmdSimulationError: NaN energy or exploding coordinates (names replica and step);
            frames of completed chunks stay on disk.
    """
    import mdtraj
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    from starmd.simulate.platforms import select_platform
    from starmd.structure.io import append_bytes

    out_dir = Path(job.out_dir)
    setup = atlas.read_json(atlas.setup_json(out_dir, job.name))
    if setup is None:
        raise StarmdSimulationError(f"{out_dir}: no system setup found (run simulate first)")
    proto = get_protocol(setup["protocol"]["name"])
    steps_per_frame = round(job.save_every_ps / proto.step_ps)
    system = openmm.XmlSerializer.deserialize(
        gzip.decompress(atlas.system_xml(out_dir, job.name).read_bytes()).decode()
    )
    full = app.PDBFile(str(atlas.full_pdb(out_dir, job.name)))
    heavy = np.array(heavy_protein_atoms(full.topology))
    reference = mdtraj.load(str(atlas.topology_pdb(out_dir, job.name)))
    ca = reference.topology.select("name CA")
    bonds = _heavy_bonds(full.topology, heavy)

    xtc_path = atlas.replica_xtc(out_dir, job.name, job.replica)
    progress_path = atlas.replica_progress_json(out_dir, job.name, job.replica)
    state_path = atlas.replica_state_xml(out_dir, job.name, job.replica)
    record = atlas.read_json(progress_path)
    if record is not None:
        _check_record(record, progress_path, xtc_path)
        if record.get("seed") is not None and record["seed"] != job.seed:
            started = base_seed(record["seed"], job.replica)
            raise StarmdInputError(
                located(
                    progress_path,
                    f"replica {job.replica} was started with --seed {started}; continue it "
                    "with the same seed (or use another output folder)",
                )
            )
    if record is not None and record["frames_done"] >= job.n_frames:
        atlas.truncate_to(xtc_path, record["xtc_bytes"])  # a killed chunk's frames, if any
        _report(on_progress, job, record["frames_done"], record["ns_per_day"])
        return record

    platform, properties = select_platform(job.platform, job.threads)
    seed = thermostat_seed(job.seed, 0 if record is None else record["resumes"] + 1)
    integrator = make_integrator(proto, seed)
    for force in system.getForces():  # explicit solvent: the barostat's moves, seeded alike
        if isinstance(force, openmm.MonteCarloBarostat):
            force.setRandomNumberSeed(openmm_seed(seed + 1))
    context = openmm.Context(system, integrator, platform, properties)
    if record is None or not state_path.is_file():
        context.setPositions(full.positions)
        context.setVelocitiesToTemperature(proto.temperature_k * unit.kelvin, job.seed)
        equilibrate_steps = round(job.equilibrate_ps / proto.step_ps)
        _advance(integrator, equilibrate_steps, job, step=0, where="equilibration")
        _check_state(context, bonds, job, step=equilibrate_steps, where="equilibration")
        context.setTime(0.0)
        context.setStepCount(0)
        record = {
            "replica": job.replica,
            "seed": job.seed,
            "save_every_ps": job.save_every_ps,
            "frames_done": 0,
            "xtc_bytes": 0,
            "time_ps": 0.0,
            "step": 0,
            "equilibrate_ps": job.equilibrate_ps,
            "wall_s": 0.0,
            "ns_per_day": 0.0,
            "platform": platform.getName(),
            "resumes": 0,
        }
        atlas.truncate_to(xtc_path, 0)
        _save_chunk(context, record, state_path, progress_path)
    else:
        context.setState(_committed_state(openmm, state_path, record, progress_path))
        atlas.truncate_to(xtc_path, record["xtc_bytes"])
        record = {**record, "resumes": record["resumes"] + 1, "platform": platform.getName()}

    _report(on_progress, job, record["frames_done"], record["ns_per_day"])
    while record["frames_done"] < job.n_frames:
        started = time.time()
        n_chunk = min(job.chunk_frames, job.n_frames - record["frames_done"])
        frames = np.empty((n_chunk, len(heavy), 3), dtype=np.float32)
        for k in range(n_chunk):
            step = record["step"] + (k + 1) * steps_per_frame
            _advance(integrator, steps_per_frame, job, step=step, where="production")
            frames[k] = _check_state(context, bonds, job, step=step, where="production")[heavy]
        first = record["frames_done"] + 1
        numbers = np.arange(first, first + n_chunk)
        payload = _xtc_bytes(
            mdtraj, frames, reference, ca, numbers * job.save_every_ps, numbers * steps_per_frame
        )
        elapsed = time.time() - started
        xtc_bytes = append_bytes(xtc_path, record["xtc_bytes"], payload)
        time_ps = float(numbers[-1] * job.save_every_ps)
        wall_s = record["wall_s"] + elapsed
        record = {
            **record,
            "frames_done": record["frames_done"] + n_chunk,
            "xtc_bytes": xtc_bytes,
            "time_ps": time_ps,
            "step": int(numbers[-1] * steps_per_frame),
            "wall_s": wall_s,
            "ns_per_day": time_ps / 1000.0 / wall_s * 86400.0,
        }
        _save_chunk(context, record, state_path, progress_path)
        atlas.write_metadata(out_dir, job.name)
        _report(on_progress, job, record["frames_done"], record["ns_per_day"])
    return record


def _read_state(openmm: Any, path: Path) -> Any:
    """The portable OpenMM state saved at ``path``.

    Raises:
        StarmdInputError: truncated or edited beyond what OpenMM can read (named).
    """
    from xml.etree import ElementTree

    try:
        text = path.read_text()
        # OpenMM's own parser can accept a truncated file (particles missing, read as NaN):
        # a file that is not well-formed XML is refused here first
        ElementTree.fromstring(text)
        return openmm.XmlSerializer.deserialize(text)
    except Exception as exc:  # OpenMM raises its own and XML-parser exceptions
        raise StarmdInputError(
            located(path, f"corrupt OpenMM state ({first_line(exc)}); {atlas.CORRUPT_ADVICE}")
        ) from exc


RECORD_COUNTS = ("frames_done", "xtc_bytes", "step", "resumes")


def _check_record(record: dict[str, Any], progress_path: Path, xtc_path: Path) -> None:
    """Check a replica's progress record before anything is cut back to it: its counts are
    counts and the XTC holds at least the bytes it commits to (a hand-edited or truncated
    record must not cost frames).

    Raises:
        StarmdInputError: names the record and what does not fit.
    """
    size = xtc_path.stat().st_size if xtc_path.exists() else 0
    bad = [k for k in RECORD_COUNTS if not (isinstance(record.get(k), int) and record[k] >= 0)]
    if bad:
        problem = f"{', '.join(bad)} missing or not a count"
    elif record["xtc_bytes"] > size:
        problem = f"xtc_bytes {record['xtc_bytes']} > the {size} bytes of {xtc_path.name}"
    else:
        return
    raise StarmdInputError(
        located(progress_path, f"corrupt record ({problem}); {atlas.CORRUPT_ADVICE}")
    )


def _advance(integrator: Any, steps: int, job: ReplicaJob, *, step: int, where: str) -> None:
    """Integrate ``steps`` steps; OpenMM's own NaN detection becomes a StarmdSimulationError."""
    import openmm

    if steps <= 0:
        return
    try:
        integrator.step(steps)
    except openmm.OpenMMException as err:
        raise StarmdSimulationError(
            f"{job.name} replica {job.replica}: {first_line(err).rstrip('.')} before {where} "
            f"step {step}; frames of completed chunks are kept"
        ) from None


def _report(callback: ProgressCallback | None, job: ReplicaJob, frames: int, speed: float) -> None:
    if callback is not None:
        callback(
            ReplicaProgress(
                name=job.name,
                replica=job.replica,
                frames_done=frames,
                frames_total=job.n_frames,
                save_every_ps=job.save_every_ps,
                ns_per_day=speed,
                done=frames >= job.n_frames,
            )
        )


def _save_chunk(
    context: Any, record: dict[str, Any], state_path: Path, progress_path: Path
) -> None:
    """Save the portable state, then the progress record that points into the XTC."""
    import openmm

    from starmd.structure.io import write_atomically

    state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
    pending = _pending_state(state_path)
    write_atomically(pending, openmm.XmlSerializer.serialize(state), durable=True)
    atlas.write_json(progress_path, record)
    os.replace(pending, state_path)


def _pending_state(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".pending")


def _committed_state(openmm: Any, state_path: Path, record: dict, progress_path: Path) -> Any:
    """The saved state the progress record was committed with.

    A chunk is committed as: new state to ``*.xml.pending``, then the record, then the state
    renamed into place. A kill between the first two leaves a pending state newer than the
    record (discarded: the chunk is redone); between the last two, one the record already
    points at (put in place). A state whose time is not the record's is refused: continuing
    from it would skip or repeat frames under continuous time stamps.
    """
    pending = _pending_state(state_path)
    if pending.is_file():
        candidate = _read_state(openmm, pending)
        if _same_time(candidate, record):
            os.replace(pending, state_path)
            return candidate
        pending.unlink()
    state = _read_state(openmm, state_path)
    if not _same_time(state, record):
        import openmm.unit as unit

        saved = state.getTime().value_in_unit(unit.picosecond)
        raise StarmdSimulationError(
            located(
                state_path,
                f"saved at t = {saved:.1f} ps but {progress_path.name} records "
                f"{record['time_ps']:.1f} ps; move this replica's files away to restart it",
            )
        )
    return state


def _same_time(state: Any, record: dict) -> bool:
    import openmm.unit as unit

    return abs(state.getTime().value_in_unit(unit.picosecond) - record["time_ps"]) < 1e-3


def _heavy_bonds(topology: Any, heavy: np.ndarray) -> np.ndarray:
    """Bonds between heavy protein atoms, as an (n_bonds, 2) array of atom indices."""
    heavy_set = set(heavy.tolist())
    pairs = [
        (b[0].index, b[1].index)
        for b in topology.bonds()
        if b[0].index in heavy_set and b[1].index in heavy_set
    ]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _check_state(
    context: Any, bonds: np.ndarray, job: ReplicaJob, *, step: int, where: str
) -> np.ndarray:
    """Positions (nm, (N, 3)) of the context, after checking energy and geometry are sane.

    Raises:
        StarmdSimulationError: potential energy not finite, a coordinate not finite, or a
            covalent heavy-atom bond stretched beyond :data:`MAX_BOND_NM`.
    """
    import openmm.unit as unit

    state = context.getState(getPositions=True, getEnergy=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    check_frame(
        energy, positions, bonds, name=job.name, replica=job.replica, step=step, where=where
    )
    return positions


def check_frame(
    energy_kj_mol: float,
    positions_nm: np.ndarray,
    bonds: np.ndarray,
    *,
    name: str,
    replica: int,
    step: int,
    where: str = "production",
) -> None:
    """Raise :class:`StarmdSimulationError` if a frame is not physical.

    Args:
        energy_kj_mol: potential energy, kJ/mol.
        positions_nm: coordinates, nm, shape (N, 3).
        bonds: (n_bonds, 2) atom index pairs whose length must stay below ``MAX_BOND_NM``.
        name, replica, step, where: used in the message.
    """
    problem = None
    if not math.isfinite(energy_kj_mol):
        problem = f"potential energy is {energy_kj_mol}"
    elif not np.isfinite(positions_nm).all():
        problem = "coordinates are not finite"
    elif len(bonds):
        lengths = np.linalg.norm(positions_nm[bonds[:, 0]] - positions_nm[bonds[:, 1]], axis=1)
        worst = int(np.argmax(lengths))
        if lengths[worst] > MAX_BOND_NM:
            problem = (
                f"coordinates exploded (bond {bonds[worst, 0]}-{bonds[worst, 1]} is "
                f"{lengths[worst]:.2f} nm)"
            )
    if problem is not None:
        raise StarmdSimulationError(
            f"{name} replica {replica}: {problem} at {where} step {step}; "
            "frames of completed chunks are kept"
        )


def _xtc_bytes(
    mdtraj: Any,
    frames_nm: np.ndarray,
    reference: Any,
    ca: np.ndarray,
    times_ps: np.ndarray,
    steps: np.ndarray,
) -> bytes:
    """Encode frames as XTC after superposing them on ``reference`` by the CA atoms."""
    from starmd.structure.io import xtc_bytes

    traj = mdtraj.Trajectory(frames_nm, reference.topology)
    traj.superpose(reference, atom_indices=ca)
    return xtc_bytes(traj.xyz, times_ps, steps)
