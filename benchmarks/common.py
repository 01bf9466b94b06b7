"""Helpers shared by the benchmark scripts: load accounting, the measured code version, report headers."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
QUIET_CORES = 0.2  # a repetition is "quiet" when other processes used less than this many cores


def machine_busy_s() -> float:
    """CPU seconds all processes of this machine have used (user, nice, system, irq, softirq)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS  # minus idle and iowait


def own_cpu_s() -> float:
    """CPU seconds used by this process and its live descendants (workers, renderers)."""
    parents, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            parents[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(cpu.get(pid, 0.0) for pid in tree)


def wait_until_idle(max_wait: float, threshold: float = QUIET_CORES) -> None:
    """Wait up to ``max_wait`` s until other processes use under ``threshold`` cores (1 s windows)."""
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        try:
            machine, own, start = machine_busy_s(), own_cpu_s(), time.perf_counter()
            time.sleep(1.0)
            other = (machine_busy_s() - machine) - (own_cpu_s() - own)
        except (OSError, ValueError, IndexError):
            return
        if other / (time.perf_counter() - start) < threshold:
            return


def code_version(package: str) -> dict[str, Any]:
    """The commit measured and the files under ``package`` that differ from it (read-only git calls)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, timeout=10)
        return result.stdout.strip() if result.returncode == 0 else ""

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "modified": git("diff", "--name-only", "HEAD", "--", package).split(),
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": "", "modified": []}


def report_header(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The first keys of a benchmark's JSON report: its name, settings, machine and measured code."""
    import torch

    return {
        "benchmark": name,
        "settings": {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
        },
        "machine": {
            "cpu_cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "platform": platform.platform(),
        },
        "code": code_version("vla_rl"),
    }
