"""What machine a result came from: recorded next to every benchmark, rollout and fidelity run.

Two runs of the same model, seed and settings agree bit for bit only on the same kind of CPU:
PyTorch picks its vectorized kernels by instruction set (``cpu_capability``: AVX2, AVX512, ...),
their rounding differs, and an autoregressive rollout amplifies the difference within a few
frames. The record says whether two results could have been identical.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str, md_engine: bool = True) -> dict[str, Any]:
    """CPU model, its kernel instruction set as PyTorch uses it, cores, Python and torch
    versions, torch threads, the device and its GPU, and OpenMM's version if ``md_engine``."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }
    if md_engine:
        try:
            import openmm

            info["openmm"] = openmm.__version__
        except ImportError:
            pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
