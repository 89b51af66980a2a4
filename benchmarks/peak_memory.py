"""A peak-memory window for the benchmark scripts: CUDA's allocator statistics, or the process's resident high-water
mark on CPU (Linux `/proc/self/status`, reset through `/proc/self/clear_refs`)."""

from __future__ import annotations

import gc
import resource
from pathlib import Path


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class PeakMemory:
    """`with PeakMemory(device) as window: ...`, then `window.peak_mib` (the peak inside the window) and `window.mib`
    (the peak above the level at entry, never negative); `window.method` says how it was measured."""

    def __init__(self, device: str):
        self.device, self.peak_mib, self.mib, self.method = device, 0.0, 0.0, ""

    def __enter__(self):
        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            self.method = "CUDA max_memory_allocated"
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
            self.start = _status_kib("VmRSS") * 1024
            self.method = "resident high-water mark (VmHWM), reset at the start of the window"
        except (OSError, KeyError):
            self.start = 0
            self.method = "process resident high-water mark (ru_maxrss: includes everything before the window)"
        return self

    def __exit__(self, *exc):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            try:
                peak = _status_kib("VmHWM") * 1024
            except (OSError, KeyError):
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        # The kernel's resident counters are batched per thread (tens of KiB): a window that allocates nothing can
        # read a high-water mark slightly below the level read at entry. Such a reading is 0, not a negative peak.
        self.peak_mib, self.mib = peak / 2**20, max(peak - self.start, 0) / 2**20
        return False
