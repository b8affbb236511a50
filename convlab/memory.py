"""Peak memory of a block of code, on the CPU or a CUDA device, with a sentence saying what was measured.

with PeakMemory(torch.device("cpu")) as mem:
    model(x)
mem.mb, mem.method        # e.g. 153.1, "cpu: peak RSS above start RSS (VmHWM)"
"""

from __future__ import annotations

import resource

import torch

__all__ = ["PeakMemory"]


def _status_bytes(field: str) -> int:
    """One ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; ``OSError`` where there is none."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kB


class PeakMemory:
    """Context manager: peak memory of the block above the memory in use at its start.

    - CUDA: ``torch.cuda.max_memory_allocated`` above the allocation at the start (tensors only, not the cache).
    - CPU on Linux: peak resident set size (``VmHWM``, reset by writing 5 to ``/proc/self/clear_refs``) above the
      resident size at the start. Memory the allocator kept from earlier work and reuses is not counted again.
    - Elsewhere: the growth of ``getrusage(RUSAGE_SELF).ru_maxrss``, which is 0 unless the block sets a new
      all-time peak of the process.

    After the block, ``bytes`` and ``mb`` hold the number and ``method`` says which of these it is.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.bytes = 0
        self.method = ""
        self._start = 0

    @property
    def mb(self) -> float:
        return self.bytes / 2**20

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.method = "cuda: max_memory_allocated above start"
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._start = _status_bytes("VmRSS")
            _status_bytes("VmHWM")
            self.method = "cpu: peak RSS above start RSS (VmHWM)"
        except OSError:
            self._start = _maxrss_bytes()
            self.method = "cpu: growth of max RSS (0 unless a new process peak)"
        return self

    def __exit__(self, *exc) -> bool:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            end = torch.cuda.max_memory_allocated(self.device)
        elif "VmHWM" in self.method:
            end = _status_bytes("VmHWM")
        else:
            end = _maxrss_bytes()
        self.bytes = max(0, end - self._start)
        return False
