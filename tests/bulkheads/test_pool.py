"""Worker pools: bounded concurrency and a per-call timeout."""

from __future__ import annotations

import asyncio

import pytest

from bulkheads import HandlerTimeoutError, PoolConfig, WorkerPool


class TestWorkerPool:
    async def test_never_runs_more_than_its_size(self) -> None:
        pool = WorkerPool("p", PoolConfig(size=3, timeout_s=5))
        running = peak = 0

        async def work() -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

        await asyncio.gather(*(pool.run(work) for _ in range(20)))
        assert peak == 3
        assert pool.in_use == 0

    async def test_a_call_past_its_timeout_is_cancelled_and_frees_its_slot(self) -> None:
        pool = WorkerPool("p", PoolConfig(size=1, timeout_s=0.05))
        cancelled = asyncio.Event()

        async def hang() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with pytest.raises(HandlerTimeoutError, match="timeout"):
            await pool.run(hang)
        assert cancelled.is_set()

        async def quick() -> str:
            return "ok"

        assert await pool.run(quick) == "ok"

    async def test_errors_of_the_work_pass_through(self) -> None:
        pool = WorkerPool("p", PoolConfig(size=1, timeout_s=1))

        async def boom() -> None:
            raise KeyError("x")

        with pytest.raises(KeyError):
            await pool.run(boom)
        assert pool.in_use == 0

    def test_max_ack_pending_admits_a_pool_and_a_waiting_message_per_replica(self) -> None:
        assert PoolConfig(size=7, max_replicas=3).max_ack_pending == 24

    @pytest.mark.parametrize("kwargs", [{"size": 0}, {"timeout_s": 0}, {"max_replicas": 0}])
    def test_impossible_pools_are_refused(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError, match="must"):
            PoolConfig(**kwargs)  # type: ignore[arg-type]
