"""The benchmarks' shared helpers that turn machine counters into the figures their JSON lines carry."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _harness import cpu_counters, cpu_shares  # noqa: E402


def test_cpu_shares_split_the_machines_time_into_busy_and_stolen():
    # user nice system idle iowait irq softirq steal, in ticks
    before = [1000, 0, 200, 5000, 50, 0, 10, 100]
    after = [1570, 0, 400, 5100, 60, 0, 30, 200]  # 1,000 ticks: 790 working, 100 idle, 10 iowait, 100 stolen
    assert cpu_shares(before, after) == {"busy_pct": 79.0, "steal_pct": 10.0}
    assert cpu_shares(None, after) == {} and cpu_shares(before, None) == {}


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux's /proc/stat")
def test_cpu_counters_read_this_machines_stat_line():
    first = cpu_counters()
    second = cpu_counters()
    assert len(first) == 8 and all(later >= earlier for earlier, later in zip(first, second, strict=True))
