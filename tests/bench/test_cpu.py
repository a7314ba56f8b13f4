"""The benchmark's CPU meter reads what real processes spent, part by part, and only
between its start and its reading."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from bench.cpu import CpuMeter, cpu_seconds, medians

SPIN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
SPIN_NOW = SPIN + "print('spun', flush=True)\nimport sys\nsys.stdin.readline()\n"
"""Spins 0.3 s of CPU at once, says so, then waits (for its stdin to close)."""
SPIN_WHEN_TOLD = (
    "import sys\nsys.stdin.readline()\n"
    + SPIN
    + "print('done', flush=True)\nsys.stdin.readline()\n"
)
"""Waits for a line on its stdin, spins 0.3 s of CPU, says so, then waits again: a process
that ended may be reaped before the meter reads it, and a reaped one counts nothing."""


async def _python(code: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )


async def test_only_what_a_process_spent_after_the_start_counts() -> None:
    before, during = await _python(SPIN_NOW), await _python(SPIN_WHEN_TOLD)
    try:
        # Said, not read from /proc: its ticks of 10 ms, user and system time each
        # rounded down, can show a spin of 0.3 s as 0.29 s for good.
        assert before.stdout is not None
        assert await asyncio.wait_for(before.stdout.readline(), 30) == b"spun\n"
        meter = CpuMeter({"before": lambda: [before.pid], "during": lambda: [during.pid]})
        meter.start()
        assert during.stdin is not None
        assert during.stdout is not None
        during.stdin.write(b"go\n")
        assert await asyncio.wait_for(during.stdout.readline(), 30) == b"done\n"
        used = meter.per_call_us(3)
    finally:
        for proc in (before, during):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    assert used["during"] >= 0.25 * 1e6 / 3  # its 0.3 s spin, shared by 3 calls
    assert used["before"] < 0.05 * 1e6 / 3  # its spin was over before the start


async def test_a_process_that_ended_before_the_reading_is_left_out() -> None:
    ended = await _python("pass")
    meter = CpuMeter({"gone": lambda: [ended.pid]})
    meter.start()
    await ended.wait()  # reaped: its /proc entry is gone
    assert meter.per_call_us(1) == {"gone": 0.0}


def test_cpu_seconds_include_this_process_s_own_work() -> None:
    start = cpu_seconds(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert cpu_seconds(os.getpid()) - start >= 0.15


def test_medians_are_taken_part_by_part() -> None:
    runs = [{"a": 1.0, "b": 30.0}, {"a": 3.0, "b": 10.0}, {"a": 2.0, "b": 20.0}]
    assert medians(runs) == {"a": 2.0, "b": 20.0}
