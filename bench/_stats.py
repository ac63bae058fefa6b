"""Percentiles and a machine description for benchmark reports."""

from __future__ import annotations

import os
import platform


def percentile(samples: list, p: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(samples: list) -> str:
    return " ".join(f"p{p}={percentile(samples, p) * 1000:.2f}ms" for p in (50, 90, 99)) + \
        f" (n={len(samples)})"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPU ({model}), Python {platform.python_version()}, " \
           f"{platform.system()} {platform.release()}"
