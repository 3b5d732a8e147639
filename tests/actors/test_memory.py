"""A process's reported peak memory is its whole life's, also after the per-block measures (`ExtraPeakMemory`, used
around every weight sync) reset the kernel's high-water mark; the block's own extra peak is still its own."""
import subprocess
import sys

SCRIPT = """
import torch
from actors.memory import ExtraPeakMemory, peak_memory_mb, release_freed_host_memory, rss_mb
cpu = torch.device("cpu")
big = torch.ones(400 * 2**20 // 4)          # 400 MB, touched
del big
release_freed_host_memory()
now = rss_mb()
with ExtraPeakMemory(cpu) as block:
    small = torch.ones(2**20)
print(now, peak_memory_mb(cpu)["host_peak_rss_mb"], block.extra_mb)
"""


def test_peak_memory_is_the_whole_life_peak_after_a_block_measure():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    now, peak, extra = map(float, done.stdout.split())
    assert peak >= now + 350          # the 400 MB freed before the block still counts
    assert extra < 50                 # the block itself allocated 4 MB
