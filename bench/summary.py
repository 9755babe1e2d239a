"""Cost of the end-of-run posterior summary (``summarize``) at several sizes of MCMC draws.

For each (chains, draws, elements) size: median wall and CPU seconds over several repeats
(machines here are shared and noisy), and the largest peak memory the summary adds on top of
the draws (Linux only: the peak RSS is reset through /proc/self/clear_refs before each run).
Reports the machine first.

Run: .venv/bin/python bench/summary.py [--repeats N] [--sizes 4x1000x100 4x100000x100 ...]
"""

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ppl.inference.results.summary import summarize

_SIZES = ("4x1000x100", "4x10000x100", "4x100000x10", "4x100000x100")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(key: str) -> int | None:
    if not _STATUS.exists():
        return None
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        return False
    return True


def machine() -> str:
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs (load {load}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), numpy {np.__version__}, "
            f"Python {platform.python_version()}")


def run(size: str, repeats: int) -> str:
    chains, draws, elements = (int(v) for v in size.split("x"))
    x = torch.randn(chains, draws, elements, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    walls, cpus, peaks = [], [], []
    for _ in range(repeats):
        tracked = _reset_peak()
        before = _status_bytes("VmRSS")
        wall, cpu = time.perf_counter(), time.process_time()
        summarize({"x": x})
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        if tracked and before is not None:
            peaks.append(_status_bytes("VmHWM") - before)
    mib = x.nbytes / 2**20
    # The largest: later repeats reuse memory the allocator kept from the first.
    peak = (f"peak +{max(peaks) / 2**20:7.1f} MiB ({max(peaks) / x.nbytes:.2f}x the draws)"
            if peaks else "peak n/a")
    return (f"{size:>14}  draws {mib:7.1f} MiB  wall {statistics.median(walls):7.2f} s  "
            f"cpu {statistics.median(cpus):7.2f} s  {peak}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=list(_SIZES),
                        help="chains x draws x elements, e.g. 4x100000x100")
    args = parser.parse_args()
    print(machine())
    summarize({"warm": torch.randn(2, 100, 2)})
    for size in args.sizes:
        print(run(size, args.repeats), flush=True)


if __name__ == "__main__":
    main()
