"""Mutation audit: does the test suite notice a small deliberate bug behind each README claim?

Each mutation replaces one exact code snippet (its anchor) in one file of a temporary copy of the
tree (``src/``, ``tests/``, ``pyproject.toml``), runs the tests meant to guard it there and
reports whether they fail. The working tree is never modified.

    python scripts/mutation_audit.py                 # all mutations, table on stdout
    python scripts/mutation_audit.py --only rmsf_r --only tica_corr
    python scripts/mutation_audit.py --list          # mutations, files and guarding tests
    python scripts/mutation_audit.py --markdown audit.md

Before the mutations, the guarding tests run once on the unmodified copy (skip with
``--no-baseline``): a test that already fails there proves nothing. A mutation whose anchor is
not found exactly once (the code moved or changed) is reported as "anchor not found" or
"anchor ambiguous" and not run; update its ``file``/``anchor`` below. Exit status: 0 when every
mutation was caught, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "tests", "pyproject.toml")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")

ASSEMBLY = "tests/evaluate/test_metric_assembly.py"
ROLLOUT = "tests/sample/test_rollout_matches_training.py"
VS_BASE = "tests/sample/test_bundled_models_vs_base.py"
LOSSES = "tests/train/test_losses_by_hand.py"
RESUME = "tests/sample/test_resume_history.py"
UPDATE = "update = self.reference_update(s)\n"  # the denoiser's final, learned update
INDENT = " " * 8


@dataclass(frozen=True)
class Mutation:
    """One deliberate bug: in ``file``, the exact text ``anchor`` becomes ``replacement``."""

    name: str
    claim: str
    file: str
    anchor: str
    replacement: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "rmsf_r",
        "RMSF r computed as pearson(reference, reference)",
        "src/starmd/evaluate/protein.py",
        '"rmsf_r": paper.pearson(rmsf_ref, rmsf_gen),',
        '"rmsf_r": paper.pearson(rmsf_ref, rmsf_ref),',
        (ASSEMBLY,),
    ),
    Mutation(
        "tica_corr",
        "tICA correlation computed MD vs MD",
        "src/starmd/evaluate/protein.py",
        "paper.pearson(contrib_ref, contrib_gen)",
        "paper.pearson(contrib_ref, contrib_ref)",
        (ASSEMBLY,),
    ),
    Mutation(
        "pc_cosine",
        "PC1 cosine uses MD's PC1 twice",
        "src/starmd/evaluate/ensemble.py",
        "gen = fit_pca(generated_ca, 1).components[0]",
        "gen = fit_pca(reference_ca, 1).components[0]",
        (ASSEMBLY,),
    ),
    Mutation(
        "coverage_f1",
        "coverage F1 as an arithmetic mean",
        "src/starmd/evaluate/paper.py",
        "f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0",
        "f1 = (recall + precision) / 2",
        (ASSEMBLY,),
    ),
    Mutation(
        "rollout_time",
        "rollout feeds the noisy frame with time stamp t-1 instead of t",
        "src/starmd/sample/rollout.py",
        "tokens = self._tokens(frames, torsions, tau, t, base)",
        "tokens = self._tokens(frames, torsions, tau, t - 1, base)",
        (ROLLOUT,),
    ),
    Mutation(
        "trans_update_reversed",
        "learned translation update reversed",
        "src/starmd/model/denoiser.py",
        UPDATE,
        UPDATE + INDENT + "update = Rigid(update.rots, -update.trans)\n",
        (VS_BASE,),
    ),
    Mutation(
        "trans_update_doubled",
        "learned translation update doubled",
        "src/starmd/model/denoiser.py",
        UPDATE,
        UPDATE + INDENT + "update = Rigid(update.rots, 2 * update.trans)\n",
        (VS_BASE,),
    ),
    Mutation(
        "trans_update_zero",
        "learned translation update set to zero",
        "src/starmd/model/denoiser.py",
        UPDATE,
        UPDATE + INDENT + "update = Rigid(update.rots, 0 * update.trans)\n",
        (VS_BASE,),
    ),
    Mutation(
        "torsion_pi_periodic",
        "torsion loss without the pi-periodic alternative for symmetric side chains",
        "src/starmd/train/losses.py",
        "err = torch.minimum(((pred_sin_cos - true) ** 2).sum(-1), "
        "((pred_sin_cos - alt) ** 2).sum(-1))",
        "err = ((pred_sin_cos - true) ** 2).sum(-1)",
        (LOSSES,),
    ),
    Mutation(
        "resume_shifted_frames",
        "generate --resume restores its history one frame shifted (frames t-1 as t)",
        "src/starmd/sample/writer.py",
        "xyz = traj.xyz[first:start] * NM_TO_ANGSTROM",
        "xyz = traj.xyz[first - 1 : start - 1] * NM_TO_ANGSTROM",
        (RESUME,),
    ),
    Mutation(
        "resume_shifted_times",
        "generate --resume restores its history one frame shifted (frame t cached as t-1)",
        "src/starmd/sample/writer.py",
        "        rollout.push_clean(\n            t,\n",
        "        rollout.push_clean(\n            t - 1,\n",
        (RESUME,),
    ),
    Mutation(
        "resume_state_ignored",
        "generate --resume ignores the saved rollout state (history re-read from the XTC)",
        "src/starmd/sample/writer.py",
        "if saved is not None and (writer.out_dir / saved).is_file():",
        "if False:",
        (RESUME,),
    ),
    Mutation(
        "resume_cache_dropped",
        "generate --resume restores the last frame but not the KV cache",
        "src/starmd/sample/rollout.py",
        'self.cache.load_state_dict(state["cache"], self.device)',
        "self.cache.reset()",
        (RESUME,),
    ),
    Mutation(
        "resume_last_frame_shifted",
        "generate --resume stages the saved last frame t with time stamp t-1",
        "src/starmd/sample/rollout.py",
        'self.stage_clean(int(state["frame"]), frames, torsions)',
        'self.stage_clean(int(state["frame"]) - 1, frames, torsions)',
        (RESUME,),
    ),
)


def copy_tree(target: Path) -> None:
    """The parts of the repository the tests need, into ``target``."""
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=IGNORED)
        else:
            shutil.copy2(source, target / name)


def apply(mutation: Mutation, tree: Path) -> str | None:
    """Apply ``mutation`` in ``tree``; returns None, or why it could not be applied."""
    path = tree / mutation.file
    if not path.is_file():
        return f"anchor not found: {mutation.file} does not exist"
    text = path.read_text()
    count = text.count(mutation.anchor)
    if count != 1:
        what = "anchor not found" if count == 0 else f"anchor ambiguous ({count} matches)"
        return f"{what} in {mutation.file}: {mutation.anchor.strip()!r}"
    path.write_text(text.replace(mutation.anchor, mutation.replacement))
    return None


def run_tests(tree: Path, tests: tuple[str, ...], python: str) -> tuple[bool, list[str], float]:
    """Run ``tests`` in ``tree`` (default suite markers); returns (passed, failing test ids,
    seconds)."""
    env = dict(os.environ, PYTHONPATH=f"{tree / 'src'}{os.pathsep}{tree}", OMP_NUM_THREADS="1")
    cmd = [python, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-rfE"]
    start = time.perf_counter()
    result = subprocess.run(
        [*cmd, *tests], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    failing = [
        line.split()[1]
        for line in result.stdout.splitlines()
        if line.startswith(("FAILED ", "ERROR ")) and len(line.split()) > 1
    ]
    return result.returncode == 0, failing, time.perf_counter() - start


def audit(mutations: list[Mutation], python: str, baseline: bool) -> list[dict]:
    rows = []
    if baseline:
        guarded = tuple(sorted({t for m in mutations for t in m.tests}))
        with tempfile.TemporaryDirectory(prefix="starmd-audit-") as tmp:
            copy_tree(Path(tmp))
            passed, failing, seconds = run_tests(Path(tmp), guarded, python)
        print(f"baseline (unmodified tree): {'pass' if passed else 'FAIL'} in {seconds:.0f} s")
        if not passed:
            print("  failing without any mutation: " + ", ".join(failing or ["(see pytest)"]))
            sys.exit(2)
    for m in mutations:
        with tempfile.TemporaryDirectory(prefix="starmd-audit-") as tmp:
            tree = Path(tmp)
            copy_tree(tree)
            problem = apply(m, tree)
            if problem:
                row = {"caught": problem, "failing": [], "seconds": 0.0}
            else:
                passed, failing, seconds = run_tests(tree, m.tests, python)
                row = {"caught": "no" if passed else "yes", "failing": failing, "seconds": seconds}
        rows.append({"mutation": m, **row})
        print(f"{m.name}: {row['caught']} ({row['seconds']:.0f} s)", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| mutation | deliberate bug | file | test(s) run | caught | failing tests |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        m = row["mutation"]
        failing = "<br>".join(f"`{t.split('/')[-1]}`" for t in row["failing"]) or "-"
        tests = ", ".join(f"`{t}`" for t in m.tests)
        lines.append(
            f"| {m.name} | {m.claim} | `{m.file}` | {tests} | {row['caught']} | {failing} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="mutation name (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmodified run")
    parser.add_argument("--python", default=sys.executable, help="interpreter with pytest")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in args.only if n not in known]
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(unknown)}; known: {', '.join(known)}")
    mutations = [known[n] for n in args.only] if args.only else list(MUTATIONS)
    if args.list:
        for m in mutations:
            print(f"{m.name}: {m.claim}\n  {m.file}\n  tests: {', '.join(m.tests)}")
        return
    rows = audit(mutations, args.python, baseline=not args.no_baseline)
    text = table(rows)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    sys.exit(0 if all(row["caught"] == "yes" for row in rows) else 1)


if __name__ == "__main__":
    main()
