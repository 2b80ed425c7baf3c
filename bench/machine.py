"""What machine a benchmark ran on, in the words every report uses: the project's machines
differ between sessions (AMD EPYC with AVX2 only, Intel Xeon with AMX), so every figure says
which one it comes from."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_features() -> str:
    """The instruction-set extensions that change the figures here: AMX / AVX512-BF16 / AVX2."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    shown = [
        name
        for name, flag in (
            ("AMX", "amx_bf16"),
            ("AVX512-BF16", "avx512_bf16"),
            ("AVX-512", "avx512f"),
            ("AVX2", "avx2"),
        )
        if flag in flags
    ]
    return ", ".join(shown) or "none of AMX, AVX-512, AVX2"


def memory_gib() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().total / 2**30


def load_average() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None
