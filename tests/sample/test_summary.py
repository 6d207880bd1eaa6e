"""The end-of-run summary of starmd generate and the input record in its sidecar."""

import hashlib

from starmd.cli import main
from starmd.sample.summary import health_line, validity_line
from tests.conftest import STRUCTURES


def test_cli_ends_with_frames_time_speed_health_and_input(tiny_model_path, tmp_path, capsys):
    structure = STRUCTURES / "1a8o.pdb"  # 88 waters and 4 MSE
    args = ["generate", str(structure), "-o", str(tmp_path), "--model", str(tiny_model_path)]
    main(args + ["--frames", "4", "--dt", "100ps", "--steps", "2", "--replicas", "2"])
    lines = capsys.readouterr().out.strip().splitlines()[-6:]
    assert lines[0].startswith("1a8o: 2 replica(s) x 4 frames at 100 ps = 300 ps simulated")
    assert lines[1].startswith("speed: ") and "simulated ns per wall-second" in lines[1]
    assert lines[2].startswith("health: ") and "of 6 generated frames" in lines[2]
    assert lines[3].startswith("validity: ") and "of written frames pass" in lines[3]
    assert lines[4] == "input: stripped 88 water; renamed MSE->MET x4"
    assert lines[5].endswith("1a8o.pdb, 1a8o_R1.xtc..1a8o_R2.xtc, 1a8o.json")


def test_the_sidecar_records_the_full_input_digest_and_what_was_stripped(tiny_model_path, tmp_path):
    import json

    structure = STRUCTURES / "1ubi.pdb"
    args = ["generate", str(structure), "-o", str(tmp_path), "--model", str(tiny_model_path)]
    main(args + ["--frames", "2", "--dt", "100ps", "--steps", "1"])
    record = json.loads((tmp_path / "1ubi.json").read_text())["input"]
    assert record["sha256"] == hashlib.sha256(structure.read_bytes()).hexdigest()
    assert record["stripped"]["water"] == {"HOH": 81}
    assert record["alternate_locations"] == [] and record["chains"] is None


def test_health_counts_each_kind_per_replica():
    sidecar = {
        "name": "p",
        "frames_written": [11, 11],
        "flagged_count": 5,
        "health": [
            {"nan_frames": 0, "break_frames": 2, "clash_frames": 3, "stopped_at": None},
            {"nan_frames": 0, "break_frames": 0, "clash_frames": 1, "stopped_at": 7},
        ],
    }
    assert health_line(sidecar) == (
        "health: 5 of 20 generated frames flagged (R1: 2 CA-CA break, 3 clash; "
        "R2: 1 clash, stopped at frame 7); listed in p.json"
    )
    sidecar["refinement"] = {"polish_ms_per_frame": 40.0}  # the screen precedes the polish
    assert health_line(sidecar).startswith("health: 5 of 20 generated frames flagged before the")
    sidecar.update(flagged_count=0, health=[{"nan_frames": 0}] * 2)
    assert health_line(sidecar).startswith("health: no flagged frame among 20 generated")


def test_validity_line_pools_the_replicas_by_frames():
    def replica(frames, raw_clash, written_valid):
        return {
            "frames": frames,
            "raw": {"aa_clash_pct": raw_clash},
            "refined": {"aa_clash_pct": 90.0},
            "written": {"valid_pct": written_valid},
        }

    sidecar = {"refinement": {"replicas": [replica(30, 100.0, 90.0), replica(10, 80.0, 50.0)]}}
    assert validity_line(sidecar) == (
        "validity: 80% of written frames pass the all-atom check (CA+AA, as starmd evaluate; "
        "raw network output: 95% with a heavy-atom clash)"
    )
    for r in sidecar["refinement"]["replicas"]:
        del r["written"]  # --no-polish
    assert validity_line(sidecar).startswith("validity: refined frames, 90% with a heavy-atom")
    assert validity_line({"refinement": None}) is None  # --no-refine
