"""Memory of a worker process, measured: resident memory now and at its peak (host), allocated memory (GPU), and
the extra peak over a block of code (weight sync, a benchmark step)."""
from __future__ import annotations

import ctypes
import functools
import resource

import torch


def status_kb(key: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now, VmHWM: peak since start or the last reset)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_mb() -> float:
    return status_kb("VmRSS") / 1024


# the highest peaks seen before `ExtraPeakMemory` reset the counters (host KiB, GPU bytes): a process's peak is
# the maximum of these and the counters' current values
_peaks_before_reset = {"host_kb": 0, "gpu_bytes": 0}


def peak_memory_mb(device: torch.device) -> dict:
    """Peak resident host memory of this process since it started, and on GPU the peak allocated memory (also
    across the resets `ExtraPeakMemory` makes: the kernel's high-water mark and `getrusage` both restart there)."""
    host_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, status_kb("VmHWM"),
                  _peaks_before_reset["host_kb"])
    stats = {"host_peak_rss_mb": host_kb / 1024}
    if device.type == "cuda":
        peak = max(torch.cuda.max_memory_allocated(), _peaks_before_reset["gpu_bytes"])
        stats["gpu_peak_allocated_mb"] = peak / 2**20
    return stats


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:          # not glibc: nothing to hand back; measures are then an upper bound
        return None


def release_freed_host_memory(device: torch.device = torch.device("cpu")) -> None:
    """Hand host memory that was freed but kept by the C allocator back to the OS (glibc `malloc_trim`): glibc keeps
    freed buffers under 32 MB and grows its heap for the next ones, so a loop of bucket-sized buffers would otherwise
    stay resident, and a high-water mark measured next would count pages it merely reuses. Nothing to do for
    buffers on a GPU."""
    if device.type == "cpu" and _libc() is not None:
        _libc().malloc_trim(0)


def releasing_between(items: list, device: torch.device):
    """Each of `items` (a weight sync's buckets), freed host memory handed back to the OS between two of them: one
    item's buffers resident, not all (16 MB buckets: ~1 GB otherwise). Not after the last: that memory is what the
    next phase reuses (handed back, it would be page-faulted in again)."""
    for index, item in enumerate(items):
        if index:
            release_freed_host_memory(device)
        yield item


class ExtraPeakMemory:
    """Extra peak memory of this process over a block, in MiB: host RSS on CPU (the kernel's high-water mark,
    reset at entry, after freed memory went back to the OS), allocated memory on GPU. With `measure=False` it does
    nothing and `extra_mb` stays None: on CPU the measure itself costs the next block, which page-faults back in
    the memory handed to the OS (the weight sync measures its first time only: `actors/weight_sync.py`)."""

    def __init__(self, device: torch.device, measure: bool = True):
        self.device, self.measure = device, measure
        self.extra_mb = 0.0 if measure else None

    def __enter__(self):
        if not self.measure:
            return self
        if self.device.type == "cuda":
            _peaks_before_reset["gpu_bytes"] = max(_peaks_before_reset["gpu_bytes"], torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        else:
            release_freed_host_memory()
            _peaks_before_reset["host_kb"] = max(_peaks_before_reset["host_kb"], status_kb("VmHWM"),
                                                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self.before = status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if not self.measure:
            return
        peak = torch.cuda.max_memory_allocated() if self.device.type == "cuda" else status_kb("VmHWM") * 1024
        self.extra_mb = max(0.0, (peak - self.before) / 2**20)
