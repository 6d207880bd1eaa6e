"""simulate(): ATLAS output, resumption after a kill, sanity checks."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from xml.etree import ElementTree

import mdtraj
import numpy as np
import pytest
from simulate_consts import N_FRAMES, NAME, SAVE_EVERY_PS

from starmd.errors import StarmdInputError, StarmdSimulationError
from starmd.outputs import try_lock
from starmd.simulate import atlas, check_frame, simulate
from starmd.simulate.protocols import openmm_seed
from starmd.simulate.replica import ReplicaJob, replica_seed, run_replica, thermostat_seed

TINY = dict(
    save_every_ps=SAVE_EVERY_PS,
    platform="CPU",
    threads=1,
    equilibrate_ps=0.4,
    name=NAME,
    progress=False,
)


def test_no_two_replica_runs_share_a_thermostat_stream():
    """Every (replica, continuation) of a build draws its own Langevin noise: with ``seed +
    continuation`` replica 1's first continuation reused replica 2's first run's stream."""
    seeds = [
        openmm_seed(thermostat_seed(replica_seed(base, r), call))
        for base in (0, 1)
        for r in range(1, 5)
        for call in range(30)
    ]
    assert len(set(seeds)) == len(seeds)
    assert all(0 < s < 2**31 for s in seeds)
    assert thermostat_seed(1001, 3) == thermostat_seed(1001, 3)  # reproducible
    assert thermostat_seed(-5, 0) >= 0


def _load(out_dir: Path, replica: int = 1) -> mdtraj.Trajectory:
    return mdtraj.load(
        str(atlas.replica_xtc(out_dir, NAME, replica)), top=str(atlas.topology_pdb(out_dir, NAME))
    )


def test_tiny_run_writes_a_valid_atlas_folder(tiny_run):
    out_dir, metadata = tiny_run
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [f"{NAME}.pdb", f"{NAME}.json", f"{NAME}_prod_R1_fit.xtc", "state"]
    )
    top = mdtraj.load(str(out_dir / f"{NAME}.pdb"))
    assert top.n_residues == 20
    assert not any(a.element.symbol == "H" for a in top.topology.atoms)
    assert [r.name for r in top.topology.residues][:3] == ["ASN", "LEU", "TYR"]
    assert [r.resSeq for r in top.topology.residues] == list(range(1, 21))
    traj = _load(out_dir)
    assert traj.n_frames == N_FRAMES
    assert traj.n_atoms == top.n_atoms
    np.testing.assert_allclose(traj.time, SAVE_EVERY_PS * np.arange(1, N_FRAMES + 1))
    ca = top.topology.select("name CA")
    assert (mdtraj.rmsd(traj, top, atom_indices=ca) < 0.3).all()  # nm: folded, aligned
    on_disk = json.loads((out_dir / f"{NAME}.json").read_text())
    assert on_disk == metadata
    assert metadata["force_field"] == ["amber99sbildn.xml", "amber99_obc.xml"]
    assert metadata["temperature_k"] == 300.0 and metadata["step_fs"] == 4.0
    assert metadata["save_every_ps"] == SAVE_EVERY_PS
    assert metadata["replicas"][0]["frames"] == N_FRAMES
    assert metadata["replicas"][0]["seed"] == 1
    assert metadata["replicas"][0]["platform"] == "CPU"
    assert metadata["ns_per_day"] > 0 and metadata["openmm_version"]


def test_saved_state_has_finite_energy(tiny_run):
    import gzip

    import openmm

    out_dir, _ = tiny_run
    system = openmm.XmlSerializer.deserialize(
        gzip.decompress(atlas.system_xml(out_dir, NAME).read_bytes()).decode()
    )
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU")
    )
    context.setState(
        openmm.XmlSerializer.deserialize(atlas.replica_state_xml(out_dir, NAME, 1).read_text())
    )
    state = context.getState(getEnergy=True)
    assert math.isfinite(state.getPotentialEnergy()._value)
    assert math.isfinite(state.getKineticEnergy()._value)
    assert state.getTime()._value == pytest.approx(N_FRAMES * SAVE_EVERY_PS)


def test_rerun_of_a_finished_run_changes_nothing(tiny_run):
    out_dir, metadata = tiny_run
    before = atlas.replica_xtc(out_dir, NAME, 1).read_bytes()
    again = simulate(
        out_dir / f"{NAME}.pdb", out_dir, ns=N_FRAMES * SAVE_EVERY_PS / 1000, replicas=1, **TINY
    )
    assert atlas.replica_xtc(out_dir, NAME, 1).read_bytes() == before
    assert again["replicas"] == metadata["replicas"]


def test_killed_run_resumes_with_exact_frames_and_continuous_time(prepared_dir, trpcage_pdb):
    frames, every = 30, 0.2  # 0.2 ps = 50 steps per frame, saved every 2 frames
    call = textwrap.dedent(
        f"""
        from starmd.simulate import simulate
        simulate({str(trpcage_pdb)!r}, {str(prepared_dir)!r}, ns={frames * every / 1000},
                 save_every_ps={every}, platform="CPU", threads=1, equilibrate_ps=0.4,
                 chunk_frames=2, name={NAME!r}, progress=False)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", call], env=env)
    progress = atlas.replica_progress_json(prepared_dir, NAME, 1)
    deadline = time.time() + 60
    while time.time() < deadline and child.poll() is None:
        record = atlas.read_json(progress) if progress.exists() else None
        if record and record["frames_done"] >= 4:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed_at = atlas.read_json(progress)["frames_done"]
    assert 4 <= killed_at < frames, "the child should have been killed mid-run"
    committed = atlas.replica_xtc(prepared_dir, NAME, 1).read_bytes()
    committed = committed[: atlas.read_json(progress)["xtc_bytes"]]

    metadata = simulate(
        trpcage_pdb,
        prepared_dir,
        ns=frames * every / 1000,
        **{**TINY, "save_every_ps": every},
        chunk_frames=2,
    )
    traj = _load(prepared_dir)
    assert traj.n_frames == frames
    np.testing.assert_allclose(traj.time, every * np.arange(1, frames + 1), atol=1e-4)
    assert metadata["replicas"][0]["frames"] == frames
    assert metadata["replicas"][0]["resumes"] == 1
    # the saved frames are kept byte for byte; the continuation starts from the saved state
    # (positions, velocities) with a new thermostat seed (OpenMM cannot save its random state)
    assert atlas.replica_xtc(prepared_dir, NAME, 1).read_bytes().startswith(committed)


def test_interrupted_chunk_is_truncated_on_resume(prepared_dir, trpcage_pdb):
    """Frames appended after the last saved state (a kill between the two) are dropped."""
    every = 0.2
    job = ReplicaJob(
        out_dir=str(prepared_dir),
        name=NAME,
        replica=1,
        seed=1,
        n_frames=8,
        save_every_ps=every,
        equilibrate_ps=0.4,
        chunk_frames=2,
        platform="CPU",
        threads=1,
    )
    seen = []

    def stop_after_two_chunks(event):
        seen.append(event.frames_done)
        if event.frames_done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_replica(job, stop_after_two_chunks)
    xtc = atlas.replica_xtc(prepared_dir, NAME, 1)
    with open(xtc, "ab") as handle:  # a half-written chunk
        handle.write(xtc.read_bytes()[:700])
    options = {**TINY, "save_every_ps": every}
    simulate(trpcage_pdb, prepared_dir, ns=8 * every / 1000, chunk_frames=2, **options)
    traj = _load(prepared_dir)
    assert traj.n_frames == 8
    np.testing.assert_allclose(traj.time, every * np.arange(1, 9), atol=1e-4)


def test_larger_ns_extends_every_replica(prepared_dir, trpcage_pdb):
    options = {**TINY, "save_every_ps": 0.2}
    simulate(trpcage_pdb, prepared_dir, ns=0.0004, replicas=2, chunk_frames=2, **options)
    first = _load(prepared_dir, 2).xyz.copy()
    metadata = simulate(trpcage_pdb, prepared_dir, ns=0.0006, replicas=2, chunk_frames=2, **options)
    assert [r["frames"] for r in metadata["replicas"]] == [3, 3]
    assert [r["seed"] for r in metadata["replicas"]] == [1, 2]
    extended = _load(prepared_dir, 2)
    np.testing.assert_allclose(extended.time, [0.2, 0.4, 0.6], atol=1e-4)
    np.testing.assert_allclose(extended.xyz[:2], first, atol=1e-3)


def test_exploding_replica_stops_with_replica_and_step(prepared_dir, trpcage_pdb):
    """Two atoms put on top of each other blow up; completed chunks stay on disk."""
    import openmm

    options = {**TINY, "save_every_ps": 0.2}
    simulate(trpcage_pdb, prepared_dir, ns=0.0004, chunk_frames=2, **options)
    system_xml = atlas.system_xml(prepared_dir, NAME)
    import gzip

    system = openmm.XmlSerializer.deserialize(gzip.decompress(system_xml.read_bytes()).decode())
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU")
    )
    state_xml = atlas.replica_state_xml(prepared_dir, NAME, 1)
    context.setState(openmm.XmlSerializer.deserialize(state_xml.read_text()))
    positions = context.getState(getPositions=True).getPositions(asNumpy=True)._value.copy()
    positions[5] = positions[40] + 0.005
    context.setPositions(positions)
    state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
    state_xml.write_text(openmm.XmlSerializer.serialize(state))

    with pytest.raises(StarmdSimulationError, match=r"trpcage replica 1: .* production step \d+"):
        simulate(trpcage_pdb, prepared_dir, ns=0.0008, chunk_frames=2, **options)
    assert _load(prepared_dir).n_frames == 2


def test_check_frame_rejects_nan_energy_and_stretched_bonds():
    positions = np.zeros((3, 3))
    positions[1, 0] = 0.15
    positions[2, 0] = 0.30
    bonds = np.array([[0, 1], [1, 2]])
    check_frame(-100.0, positions, bonds, name="p", replica=2, step=10)
    with pytest.raises(StarmdSimulationError, match="p replica 2: potential energy is nan"):
        check_frame(float("nan"), positions, bonds, name="p", replica=2, step=10)
    positions[2, 0] = 5.0
    with pytest.raises(StarmdSimulationError, match="exploded .* step 7"):
        check_frame(-100.0, positions, bonds, name="p", replica=1, step=7)
    positions[2, 0] = np.inf
    with pytest.raises(StarmdSimulationError, match="not finite"):
        check_frame(-100.0, positions, bonds, name="p", replica=1, step=7)


def test_replicas_run_in_parallel_worker_processes(prepared_dir, trpcage_pdb, monkeypatch):
    options = {**TINY, "save_every_ps": 0.2}
    metadata = simulate(
        trpcage_pdb, prepared_dir, ns=0.0004, replicas=2, workers=2, chunk_frames=1, **options
    )
    assert [(r["replica"], r["frames"], r["seed"]) for r in metadata["replicas"]] == [
        (1, 2, 1),
        (2, 2, 2),
    ]
    for replica in (1, 2):
        np.testing.assert_allclose(_load(prepared_dir, replica).time, [0.2, 0.4], atol=1e-4)
    # run again at the same length: both replicas are finished, so they are checked in this
    # process and no worker process is started
    import multiprocessing

    def no_spawn(*args, **kwargs):
        raise AssertionError("a worker process was started for finished replicas")

    monkeypatch.setattr(multiprocessing, "get_context", no_spawn)
    again = simulate(
        trpcage_pdb, prepared_dir, ns=0.0004, replicas=2, workers=2, chunk_frames=1, **options
    )
    assert [r["frames"] for r in again["replicas"]] == [2, 2]


def test_prepare_reads_the_folder_unchanged(tiny_run, tmp_path):
    prepare = pytest.importorskip("starmd.data.prepare").prepare
    out_dir, _ = tiny_run
    split_file = tmp_path / "split.csv"
    split_file.write_text(f"name,split\n{NAME},test\n")
    rows = prepare(out_dir, tmp_path / "data", split_files=[split_file])
    assert [(r.name, r.replica, r.frames, r.residues, r.dt_ps, r.split) for r in rows] == [
        (NAME, 1, N_FRAMES, 20, SAVE_EVERY_PS, "test")
    ]


def test_a_replica_running_elsewhere_is_not_touched(prepared_dir, trpcage_pdb):
    with try_lock(atlas.replica_lock(prepared_dir, NAME, 1)) as acquired:
        assert acquired
        with pytest.raises(StarmdSimulationError, match="replica 1 of trpcage is being run"):
            simulate(trpcage_pdb, prepared_dir, ns=0.001, chunk_frames=1, **TINY)
    assert not atlas.replica_lock(prepared_dir, NAME, 1).exists()


def _job(prepared_dir: Path, n_frames: int) -> ReplicaJob:
    return ReplicaJob(
        out_dir=str(prepared_dir),
        name=NAME,
        replica=1,
        seed=1,
        n_frames=n_frames,
        save_every_ps=0.2,
        equilibrate_ps=0.4,
        chunk_frames=2,
        platform="CPU",
        threads=1,
    )


@pytest.mark.parametrize("killed_before", ["record", "rename"])
def test_a_kill_inside_a_chunk_commit_neither_skips_nor_repeats_frames(prepared_dir, killed_before):
    """A chunk is committed as pending state -> record -> rename. Killed before the record, the
    pending state is newer than the record (the chunk is redone); killed before the rename, the
    record already counts it (the pending state is put in place). Frames stay continuous."""
    state = atlas.replica_state_xml(prepared_dir, NAME, 1)
    progress = atlas.replica_progress_json(prepared_dir, NAME, 1)
    pending = state.with_name(state.name + ".pending")
    run_replica(_job(prepared_dir, 2))
    first_state, first_record = state.read_bytes(), progress.read_bytes()
    run_replica(_job(prepared_dir, 4))
    state.rename(pending)  # the second chunk's state, not yet in place
    state.write_bytes(first_state)
    if killed_before == "record":
        progress.write_bytes(first_record)
    record = run_replica(_job(prepared_dir, 6))
    assert record["frames_done"] == 6 and not pending.exists()
    traj = _load(prepared_dir)
    np.testing.assert_allclose(traj.time, 0.2 * np.arange(1, 7), atol=1e-4)
    # the dynamics are as long as the time stamps say (no chunk skipped from an older state)
    saved_time = float(ElementTree.fromstring(state.read_text()).get("time"))
    assert saved_time == pytest.approx(1.2, abs=1e-3)


def test_a_state_that_disagrees_with_its_record_is_refused(prepared_dir):
    run_replica(_job(prepared_dir, 2))
    progress = atlas.replica_progress_json(prepared_dir, NAME, 1)
    record = json.loads(progress.read_text())
    progress.write_text(json.dumps({**record, "time_ps": record["time_ps"] + 0.4}))
    with pytest.raises(StarmdSimulationError, match=r"saved at t = 0\.4 ps but .* records 0\.8 ps"):
        run_replica(_job(prepared_dir, 4))


def test_a_finished_replica_drops_frames_its_record_does_not_count(prepared_dir):
    """A killed chunk's frames past the record go even when no more frames are asked for."""
    run_replica(_job(prepared_dir, 2))
    xtc = atlas.replica_xtc(prepared_dir, NAME, 1)
    committed = xtc.read_bytes()
    xtc.write_bytes(committed + committed[:500])  # a half-written chunk
    record = run_replica(_job(prepared_dir, 2))
    assert record["resumes"] == 0 and xtc.read_bytes() == committed


def test_continuing_with_another_seed_is_refused(prepared_dir):
    """The record keeps the seed a replica started with; another one would mix two streams."""
    run_replica(_job(prepared_dir, 2))
    other = dataclasses.replace(_job(prepared_dir, 4), seed=replica_seed(7, 1))
    with pytest.raises(StarmdInputError, match="started with --seed 0; continue it"):
        run_replica(other)
