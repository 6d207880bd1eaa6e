"""Write a copy of a model whose stored settings differ only where sampling reads them.

A model file carries its training configuration, and generation reads part of it: the elastic
prior's parameters (``diffusion.reference_*``: the restoring fraction of the contact springs,
their stiffness, the flat bottom) and the sampler defaults (``sampling.*``). This script copies
the weights unchanged and rewrites those entries, so a setting can be scored by ``starmd
fidelity`` like any model, e.g. the restoring springs weaker at sampling than in training::

    python benchmarks/sampling_variant.py starmd-small -o runs/r04.safetensors \\
        --set diffusion.reference_contact_restoring=0.4
    starmd fidelity corpus/md -o runs/fid -m starmd-small -m r04=runs/r04.safetensors

The network was trained with the original values; a variant is a sampling-time setting to be
chosen on the validation proteins, not a retrained model. Only ``diffusion.reference_*`` and
``sampling.*`` keys are accepted: the other settings either change nothing at sampling or
describe the weights themselves (the noise schedule, the architecture).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from starmd.errors import StarmdError, StarmdInputError
from starmd.modelfile import read_config, resolve_model
from starmd.structure.io import atomic_write

SAMPLING_KEYS = ("diffusion.reference_", "sampling.")


def write_variant(source: Path, out: Path, changes: list[str]) -> dict[str, str]:
    """Copy ``source`` to ``out`` with each ``section.key=value`` of ``changes`` applied to its
    stored configuration; returns the changed keys with their old and new values."""
    for item in changes:
        if "=" not in item or not item.startswith(SAMPLING_KEYS):
            raise StarmdInputError(
                f"--set {item!r}: expected diffusion.reference_*=VALUE or sampling.*=VALUE"
            )
    config = read_config(source)  # one-line errors for a missing, corrupt or foreign file
    with safe_open(str(source), "pt") as fh:
        metadata = dict(fh.metadata() or {})
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    before = config.to_dict()
    for item in changes:
        config.apply_override(item)
    after = config.to_dict()
    changed = {}
    for item in changes:
        section, key = item.split("=", 1)[0].split(".", 1)
        changed[f"{section}.{key}"] = f"{before[section][key]} -> {after[section][key]}"
    metadata["config"] = json.dumps(after)
    metadata["derived"] = json.dumps(
        {"from": source.name, "sampling_changes": changed, "weights": "unchanged"}
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="bundled model name or .safetensors file")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output .safetensors")
    parser.add_argument(
        "--set",
        dest="changes",
        action="append",
        required=True,
        metavar="KEY=VALUE",
        help="a diffusion.reference_* or sampling.* setting (repeatable)",
    )
    args = parser.parse_args()
    try:
        changed = write_variant(resolve_model(args.model), args.out, args.changes)
    except (StarmdError, OSError) as exc:
        sys.exit(f"error: {exc}")
    for key, change in changed.items():
        print(f"{key}: {change}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
