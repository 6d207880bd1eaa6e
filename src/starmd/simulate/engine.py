"""Reference MD with OpenMM: set up once, then grow replicas chunk by chunk, resumably.

:func:`simulate` is the public entry point (``starmd simulate`` wraps it). The work splits in
two steps whose results are saved under ``{out_dir}/state`` (see :mod:`starmd.simulate.atlas`):

1. setup (once per folder): PDBFixer cleaning, system building, energy minimization;
2. one replica (independently, possibly in parallel processes): velocities from the replica's
   seed, equilibration, then production in chunks; after each chunk the frames are appended to
   the replica's XTC and a portable XML state is saved, so a killed run continues exactly where
   its last chunk ended.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from starmd.errors import StarmdInputError, StarmdSimulationError
from starmd.simulate import atlas
from starmd.simulate.protocols import Protocol, build_system, get_protocol, make_integrator
from starmd.structure.io import append_bytes, write_atomically, xtc_bytes

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


def replica_seed(seed: int, replica: int) -> int:
    """Seed of replica ``replica`` (1-based) of a run with base ``seed``."""
    return seed * 1000 + replica


def default_name(structure_path: str | Path) -> str:
    """Protein name derived from a structure file name (``/x/1ENH.pdb`` -> ``1ENH``)."""
    return Path(structure_path).name.split(".")[0]


def simulate(
    structure_path: str | Path,
    out_dir: str | Path,
    *,
    ns: float,
    replicas: int = 1,
    protocol: str = "implicit",
    save_every_ps: float = 10.0,
    seed: int = 0,
    platform: str = "auto",
    threads: int | None = None,
    equilibrate_ps: float = 50.0,
    chunk_frames: int = 10,
    name: str | None = None,
    workers: int = 1,
    keep: tuple[str, ...] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or continue) reference MD of one protein and write it in the ATLAS layout.

    Re-running the same call after an interruption continues every replica from its last saved
    chunk; asking for more ``ns`` later extends the replicas (asking for less leaves them as
    they are). The XTC of each replica holds
    frames at ``save_every_ps, 2 * save_every_ps, ...`` ps of production (continuous time).

    Args:
        structure_path: input PDB/mmCIF (cleaned with PDBFixer; heterogens and water removed).
        out_dir: output folder (created).
        ns: production length per replica, nanoseconds.
        replicas: number of independent replicas (seeds ``seed * 1000 + i``).
        protocol: ``implicit`` (CPU default), ``implicit-gbn2`` or ``explicit`` (GPU).
        save_every_ps: time between saved frames, ps (must be a multiple of the time step).
        seed: base random seed.
        platform: ``auto`` (CUDA > OpenCL > CPU) or a platform name.
        threads: CPU threads per replica (CPU platform only; ``None`` = OpenMM's default).
        equilibrate_ps: equilibration before production, ps (not saved).
        chunk_frames: frames between saved states (the unit of resumption).
        name: protein name used in file names (default: the structure's file stem).
        workers: replicas run in parallel processes (1 = sequentially in this process).
        keep: heterogen residue names to keep (e.g. ``("CA",)``); all others are removed.
        progress: show a progress bar per replica (rich), or log lines when not a terminal.

    Returns:
        The run's metadata (also written to ``{out_dir}/{name}.json``).

    Raises:
        StarmdInputError: bad input file or option, or ``out_dir`` holds an incompatible run.
        StarmdSimulationError: a replica produced NaN energies or exploding coordinates.
    """
    out_dir = Path(out_dir)
    name = name or default_name(structure_path)
    proto = get_protocol(protocol)
    n_frames = _frames_for(ns, save_every_ps, proto)
    if replicas < 1:
        raise StarmdInputError(f"--replicas {replicas}: need at least 1")
    if chunk_frames < 1:
        raise StarmdInputError(f"chunk_frames {chunk_frames}: need at least 1")
    from starmd.simulate.platforms import select_platform

    platform_obj, properties = select_platform(platform, threads)
    setup = prepare_system(
        structure_path, out_dir, name, proto, keep=keep, platform=(platform_obj, properties)
    )
    _check_save_interval(out_dir, name, save_every_ps)
    jobs = [
        ReplicaJob(
            out_dir=str(out_dir),
            name=name,
            replica=i,
            seed=replica_seed(seed, i),
            n_frames=n_frames,
            save_every_ps=save_every_ps,
            equilibrate_ps=equilibrate_ps,
            chunk_frames=chunk_frames,
            platform=platform_obj.getName(),
            threads=threads,
        )
        for i in range(1, replicas + 1)
    ]
    from starmd.simulate.progress import run_jobs

    started = time.time()
    try:
        run_jobs(jobs, workers=workers, show=progress)
    finally:
        write_metadata(out_dir, name, setup=setup, wall_s_this_call=time.time() - started)
    return atlas.read_json(atlas.metadata_json(out_dir, name)) or {}


def _frames_for(ns: float, save_every_ps: float, proto: Protocol) -> int:
    """Number of frames for ``ns`` of production; checks the save interval fits the step."""
    if not ns > 0:
        raise StarmdInputError(f"--ns {ns}: must be positive")
    if not save_every_ps > 0:
        raise StarmdInputError(f"--save-every-ps {save_every_ps}: must be positive")
    steps = save_every_ps / proto.step_ps
    if abs(steps - round(steps)) > 1e-6:
        raise StarmdInputError(
            f"--save-every-ps {save_every_ps}: not a multiple of the {proto.step_fs} fs time step"
        )
    frames = round(ns * 1000.0 / save_every_ps)
    if frames < 1:
        raise StarmdInputError(f"--ns {ns}: shorter than one save interval ({save_every_ps} ps)")
    return frames


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_system(
    structure_path: str | Path,
    out_dir: Path,
    name: str,
    proto: Protocol,
    keep: tuple[str, ...] = (),
    platform: tuple[Any, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Clean, parametrize and minimize the structure once; reuse the saved result afterwards.

    Minimization (to 10 kJ/mol/nm, at most 5,000 iterations) runs on ``platform``, an
    ``(openmm.Platform, properties)`` pair (default: CPU).

    Writes ``{name}.pdb`` (heavy-atom protein topology, minimized coordinates), the serialized
    system, the minimized full-atom structure and ``state/{name}_setup.json``.

    Returns:
        The setup record (protocol, input checksum, atom counts).

    Raises:
        StarmdInputError: the structure cannot be cleaned or parametrized, or ``out_dir``
            already holds a run with another protocol.
    """
    structure_path = Path(structure_path)
    setup_path = atlas.setup_json(out_dir, name)
    existing = atlas.read_json(setup_path)
    if existing is not None:
        if existing["protocol"]["name"] != proto.name:
            raise StarmdInputError(
                f"{out_dir}: holds a run with protocol {existing['protocol']['name']!r}, "
                f"not {proto.name!r}; use another output folder"
            )
        return existing
    if not structure_path.is_file():
        raise StarmdInputError(f"{structure_path}: no such file")

    import openmm
    import openmm.app as app
    import openmm.unit as unit

    from starmd.simulate.fixing import fix_structure

    topology, positions = fix_structure(structure_path, keep=keep)
    try:
        system, topology, positions = build_system(proto, topology, positions)
    except Exception as err:
        raise StarmdInputError(
            f"{structure_path}: force field cannot parametrize it ({_first_line(err)})"
        ) from None
    platform_obj, properties = platform or (openmm.Platform.getPlatformByName("CPU"), {})
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform_obj, properties)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 5000)
    state = context.getState(getPositions=True, getEnergy=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not math.isfinite(energy):
        raise StarmdInputError(f"{structure_path}: energy is not finite after minimization")
    minimized = state.getPositions(asNumpy=True)

    atlas.state_dir(out_dir).mkdir(parents=True, exist_ok=True)
    write_atomically(
        atlas.system_xml(out_dir, name),
        gzip.compress(openmm.XmlSerializer.serialize(system).encode(), mtime=0),
        durable=True,
    )
    write_atomically(
        atlas.full_pdb(out_dir, name), _pdb_text(app, topology, minimized), durable=True
    )
    heavy = heavy_protein_atoms(topology)
    heavy_top, heavy_pos = _subset(app, topology, minimized, heavy)
    write_atomically(
        atlas.topology_pdb(out_dir, name), _pdb_text(app, heavy_top, heavy_pos), durable=True
    )
    record = {
        "name": name,
        "structure": str(structure_path),
        "structure_sha256": _file_sha256(structure_path),
        "protocol": proto.to_json(),
        "n_atoms_system": system.getNumParticles(),
        "n_atoms_heavy_protein": len(heavy),
        "n_residues": sum(1 for r in topology.residues() if r.name in _AMINO),
        "minimized_energy_kj_mol": energy,
        "openmm_version": openmm.version.version,
    }
    atlas.write_json(setup_path, record)
    return record


def _check_save_interval(out_dir: Path, name: str, save_every_ps: float) -> None:
    """Existing replicas can only be continued at the save interval they were started with."""
    for path in sorted(atlas.state_dir(out_dir).glob(f"{name}_R*.json")):
        record = atlas.read_json(path) or {}
        if abs(record.get("save_every_ps", save_every_ps) - save_every_ps) > 1e-9:
            raise StarmdInputError(
                f"{out_dir}: replica {record['replica']} is saved every "
                f"{record['save_every_ps']} ps, not {save_every_ps} ps; use another output folder"
            )


_AMINO = frozenset(
    "ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL "
    "HID HIE HIP CYX ASH GLH LYN".split()
)


def heavy_protein_atoms(topology: Any) -> list[int]:
    """Indices of the heavy atoms of amino-acid residues in an OpenMM topology."""
    return [
        atom.index
        for atom in topology.atoms()
        if atom.residue.name in _AMINO and atom.element is not None and atom.element.symbol != "H"
    ]


def _subset(app: Any, topology: Any, positions: Any, indices: list[int]) -> tuple[Any, Any]:
    """Topology and positions restricted to ``indices`` (residue names/numbers preserved)."""
    modeller = app.Modeller(topology, positions)
    keep = set(indices)
    modeller.delete([a for a in topology.atoms() if a.index not in keep])
    return modeller.topology, modeller.positions


def _pdb_text(app: Any, topology: Any, positions: Any) -> str:
    import io

    buffer = io.StringIO()
    app.PDBFile.writeFile(topology, positions, buffer, keepIds=True)
    return buffer.getvalue()


def _first_line(err: BaseException) -> str:
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


def run_replica(job: ReplicaJob, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run one replica (see :func:`_run_replica`) while holding its lock file.

    Raises:
        StarmdSimulationError: another process is running the same replica, or the run failed.
    """
    out_dir = Path(job.out_dir)
    with atlas.exclusive(atlas.replica_lock(out_dir, job.name, job.replica)) as acquired:
        if not acquired:
            raise StarmdSimulationError(
                f"{out_dir}: replica {job.replica} of {job.name} is being run by another process"
            )
        return _run_replica(job, on_progress)


def _run_replica(job: ReplicaJob, on_progress: ProgressCallback | None) -> dict[str, Any]:
    """Equilibrate (unless resuming) and grow one replica to ``job.n_frames`` frames.

    After each chunk of ``job.chunk_frames`` frames: the frames (protein heavy atoms, CA
    superposed on ``{name}.pdb``) are appended to the replica XTC, the OpenMM state is saved as
    portable XML, and the progress record is updated, in that order.

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
    if record is not None and record["frames_done"] >= job.n_frames:
        _report(on_progress, job, record["frames_done"], record["ns_per_day"])
        return record

    platform, properties = select_platform(job.platform, job.threads)
    integrator = make_integrator(proto, job.seed + (0 if record is None else record["resumes"] + 1))
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
        context.setState(openmm.XmlSerializer.deserialize(state_path.read_text()))
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
        write_metadata(out_dir, job.name)
        _report(on_progress, job, record["frames_done"], record["ns_per_day"])
    return record


def _advance(integrator: Any, steps: int, job: ReplicaJob, *, step: int, where: str) -> None:
    """Integrate ``steps`` steps; OpenMM's own NaN detection becomes a StarmdSimulationError."""
    import openmm

    if steps <= 0:
        return
    try:
        integrator.step(steps)
    except openmm.OpenMMException as err:
        raise StarmdSimulationError(
            f"{job.name} replica {job.replica}: {_first_line(err).rstrip('.')} before {where} "
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

    state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
    write_atomically(state_path, openmm.XmlSerializer.serialize(state), durable=True)
    atlas.write_json(progress_path, record)


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
    traj = mdtraj.Trajectory(frames_nm, reference.topology)
    traj.superpose(reference, atom_indices=ca)
    return xtc_bytes(traj.xyz, times_ps, steps)


def write_metadata(
    out_dir: Path,
    name: str,
    *,
    setup: dict[str, Any] | None = None,
    wall_s_this_call: float | None = None,
) -> dict[str, Any]:
    """Assemble ``{name}.json`` from the setup record and every replica's progress record."""
    setup = setup or atlas.read_json(atlas.setup_json(out_dir, name)) or {}
    proto = setup.get("protocol", {})
    replicas = []
    save_every_ps = None
    for path in sorted(atlas.state_dir(out_dir).glob(f"{name}_R*.json")):
        record = atlas.read_json(path)
        if record is None:
            continue
        save_every_ps = record["save_every_ps"]
        replicas.append(
            {
                "replica": record["replica"],
                "trajectory": atlas.replica_xtc(out_dir, name, record["replica"]).name,
                "seed": record["seed"],
                "frames": record["frames_done"],
                "simulated_ns": record["time_ps"] / 1000.0,
                "wall_s": round(record["wall_s"], 1),
                "ns_per_day": round(record["ns_per_day"], 2),
                "platform": record["platform"],
                "resumes": record["resumes"],
            }
        )
    replicas.sort(key=lambda r: r["replica"])
    speeds = [r["ns_per_day"] for r in replicas if r["ns_per_day"] > 0]
    metadata = {
        "name": name,
        "topology": atlas.topology_pdb(out_dir, name).name,
        "structure": setup.get("structure"),
        "structure_sha256": setup.get("structure_sha256"),
        "protocol": proto.get("name"),
        "force_field": proto.get("force_field"),
        "solvent": proto.get("solvent"),
        "nonbonded_cutoff_nm": proto.get("nonbonded_cutoff_nm"),
        "temperature_k": proto.get("temperature_k"),
        "step_fs": proto.get("step_fs"),
        "hydrogen_mass_amu": proto.get("hydrogen_mass_amu"),
        "friction_per_ps": proto.get("friction_per_ps"),
        "pressure_bar": proto.get("pressure_bar"),
        "save_every_ps": save_every_ps,
        "time_unit": "ps",
        "n_residues": setup.get("n_residues"),
        "n_atoms_system": setup.get("n_atoms_system"),
        "n_atoms_trajectory": setup.get("n_atoms_heavy_protein"),
        "openmm_version": setup.get("openmm_version"),
        "replicas": replicas,
        "total_simulated_ns": sum(r["simulated_ns"] for r in replicas),
        "total_wall_s": round(sum(r["wall_s"] for r in replicas), 1),
        "ns_per_day": round(float(np.mean(speeds)), 2) if speeds else None,
    }
    if wall_s_this_call is not None:
        metadata["wall_s_last_call"] = round(wall_s_this_call, 1)
    atlas.write_json(atlas.metadata_json(out_dir, name), metadata)
    return metadata
