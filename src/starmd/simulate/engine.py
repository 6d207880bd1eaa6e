"""Reference MD with OpenMM: set up once, then grow replicas chunk by chunk, resumably.

:func:`simulate` is the public entry point (``starmd simulate`` wraps it). The work splits in
two steps whose results are saved under ``{out_dir}/state`` (see :mod:`starmd.simulate.atlas`):

1. setup (once per folder): PDBFixer cleaning, system building, energy minimization;
2. one replica (independently, possibly in parallel processes; :mod:`starmd.simulate.replica`):
   velocities from the replica's seed, equilibration, then production in chunks; after each
   chunk the frames are appended to the replica's XTC and a portable XML state is saved, so a
   killed run continues exactly where its last chunk ended.
"""

from __future__ import annotations

import gzip
import math
import time
from pathlib import Path
from typing import Any

from starmd.errors import StarmdInputError
from starmd.outputs import output_lock
from starmd.simulate import atlas
from starmd.simulate.progress import run_jobs
from starmd.simulate.protocols import Protocol, build_system, get_protocol
from starmd.simulate.replica import (
    AMINO_ACIDS,
    ReplicaJob,
    check_seed,
    first_line,
    heavy_protein_atoms,
    replica_seed,
)
from starmd.structure.provenance import file_sha256


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
    check_seed(seed, replicas)
    if chunk_frames < 1:
        raise StarmdInputError(f"chunk_frames {chunk_frames}: need at least 1")
    from starmd.simulate.platforms import select_platform

    platform_obj, properties = select_platform(platform, threads)
    with output_lock(atlas.setup_lock(out_dir, name), "simulate"):  # one setup per folder
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

    started = time.time()
    try:
        run_jobs(jobs, workers=workers, show=progress)
    except StarmdInputError:
        raise  # corrupt resume files: every file stays as it is
    except BaseException:
        atlas.write_metadata(out_dir, name, setup=setup, wall_s_this_call=time.time() - started)
        raise
    atlas.write_metadata(out_dir, name, setup=setup, wall_s_this_call=time.time() - started)
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
            already holds a run with another protocol or of another structure (checksum).
    """
    from starmd.structure.io import write_atomically

    structure_path = Path(structure_path)
    setup_path = atlas.setup_json(out_dir, name)
    existing = atlas.read_json(setup_path)
    if existing is not None:
        if existing["protocol"]["name"] != proto.name:
            raise StarmdInputError(
                f"{out_dir}: holds a run with protocol {existing['protocol']['name']!r}, "
                f"not {proto.name!r}; use another output folder"
            )
        recorded = existing.get("structure_sha256")
        own_topology = atlas.topology_pdb(out_dir, name)  # continuing from the run's own file
        if (
            recorded
            and structure_path.is_file()
            and structure_path.resolve() != own_topology.resolve()
            and file_sha256(structure_path) != recorded
        ):
            raise StarmdInputError(
                f"{out_dir}: holds a run of another structure than {structure_path} (its "
                "checksum differs); use another output folder"
            )
        return existing
    if not structure_path.is_file():
        raise StarmdInputError(f"{structure_path}: no such file")

    import openmm
    import openmm.app as app
    import openmm.unit as unit

    from starmd.simulate.fixing import check_chain_breaks, fix_structure

    topology, positions = fix_structure(structure_path, keep=keep)
    check_chain_breaks(topology, positions, structure_path)
    try:
        system, topology, positions = build_system(proto, topology, positions)
    except Exception as err:
        raise StarmdInputError(
            f"{structure_path}: force field cannot parametrize it ({first_line(err)})"
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
        "structure_sha256": file_sha256(structure_path),
        "protocol": proto.to_json(),
        "n_atoms_system": system.getNumParticles(),
        "n_atoms_heavy_protein": len(heavy),
        "n_residues": sum(1 for r in topology.residues() if r.name in AMINO_ACIDS),
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
