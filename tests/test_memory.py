"""PeakMemory: a block that allocates and touches 256 MB reads at least that much; an empty block reads little."""

import torch

from convlab.memory import PeakMemory


def test_peak_memory_sees_an_allocation_freed_inside_the_block():
    with PeakMemory("cpu") as mem:
        x = torch.ones(64, 2**20)  # 256 MB, written so the pages are resident
        del x
    assert mem.method.startswith("cpu")
    if "VmHWM" in mem.method:
        assert mem.mb >= 200, mem.mb


def test_peak_memory_of_an_empty_block_is_small():
    torch.ones(64, 2**20)  # an earlier peak must not count in a later block
    with PeakMemory(torch.device("cpu")) as mem:
        pass
    assert 0 <= mem.mb < 50
    assert mem.bytes == int(mem.bytes)
