"""Average the weights of model files of one architecture (a "model soup"), written as one
model file with the first file's configuration and sampling defaults.

Several fine-tunes of the same starting weights (another training seed, more data) sit in one
basin of the loss; their parameter-wise mean often generalizes better than any one of them
(Wortsman et al., "Model soups", ICML 2022). Judge the result like any candidate: by the
fidelity protocol on the validation proteins.

    python scripts/average_models.py runs/s0/model.safetensors runs/s1/model.safetensors \\
        runs/s2/model.safetensors -o soup.safetensors
"""

from __future__ import annotations

import argparse

from starmd.errors import StarmdError
from starmd.modelfile import average_models, resolve_model, save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", nargs="+", help="model files (.safetensors or .ckpt) or bundled model names"
    )
    parser.add_argument("-o", "--out", required=True, help="model file to write (.safetensors)")
    parser.add_argument(
        "--weights", type=float, nargs="+", help="one weight per model file (default: equal)"
    )
    args = parser.parse_args()
    soup = average_models([resolve_model(m) for m in args.models], args.weights)
    print(save_model(soup.model, soup.config, args.out))


if __name__ == "__main__":
    try:
        main()
    except (StarmdError, OSError) as exc:  # a missing or mismatched model file: one line
        raise SystemExit(f"error: {exc}") from None
