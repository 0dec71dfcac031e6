"""What every benchmark here reports about the machine, and peak memory (Linux).

`Machine()` notes the load average when a benchmark starts; `machine.line()` is the setup line
printed under each table (torch version, threads, CPU, bf16 support, load average at start and
end), so that a table always says on what, and under how much other load, it was measured.

Peak memory is the process's peak resident set (VmHWM in /proc/self/status); `reset_peak()` sets
it back to the current RSS, so a benchmark can measure the peak of one phase.
"""
from __future__ import annotations

import math
import os
import platform
import sys
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_support() -> str:
    """Whether the CPU has native bf16 arithmetic (AVX512-BF16), which bf16 autocast needs to pay off."""
    return "native bf16 (AVX512-BF16)" if torch.cpu._is_avx512_bf16_supported() else "no native bf16"


def load_average() -> float:
    return os.getloadavg()[0]


class Machine:
    """Notes the 1-minute load average at creation; `line()` adds it again at the end."""

    def __init__(self) -> None:
        self.load_at_start = load_average()

    def line(self, threads: int | None = None) -> str:
        threads = threads if threads is not None else torch.get_num_threads()
        return (
            f"torch {torch.__version__}, {threads} threads, {cpu_name()} ({os.cpu_count()} cores), {bf16_support()}, "
            f"load average {self.load_at_start:.2f} at start, {load_average():.2f} at end"
        )


def status_mib(field: str) -> float:
    """A memory field of /proc/self/status (Linux), in MiB."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def can_measure_memory() -> bool:
    return STATUS.exists() and CLEAR_REFS.exists()


def reset_peak() -> None:
    """Set the peak RSS (VmHWM) back to the current RSS."""
    CLEAR_REFS.write_text("5")


def rss_mib() -> float:
    return status_mib("VmRSS") if STATUS.exists() else math.nan


def peak_rss_mib() -> float:
    """The process's peak RSS since it started or since the last `reset_peak()` (NaN off Linux)."""
    return status_mib("VmHWM") if STATUS.exists() else math.nan


def write_results(path: str | None, title: str, lines: list[str]) -> None:
    """Write a benchmark's markdown `lines` to `path` (if given) under "`title`, from `<the command>`:",
    the command being how this script was just run, so the file says how to regenerate it."""
    if not path:
        return
    command = " ".join([".venv/bin/python", f"experiments/benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    Path(path).write_text(f"{title}, from `{command}`:\n\n" + "\n".join(lines) + "\n")
