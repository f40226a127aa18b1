"""Micro-batching: concurrent requests share one forward pass, run off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Gather items submitted within `wait_ms` (at most `max_batch`) into one `run_batch` call.

    `run_batch(items) -> results` (same order) runs in `executor`; with a one-thread
    executor every use of the model is serialised. The queue and its worker task are made
    lazily on the running event loop."""

    def __init__(self, run_batch: Callable[[list[T]], list[R]], executor: Executor, *,
                 max_batch: int = 32, wait_ms: float = 5.0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run_batch, self.executor = run_batch, executor
        self.max_batch, self.wait_s = max_batch, max(0.0, wait_ms) / 1000
        self.forward_calls = 0
        self.items = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue = asyncio.Queue()
        self._worker: asyncio.Task | None = None

    async def submit(self, item: T) -> R:
        """The result for one item, computed in a batch with whatever else is waiting."""
        future = asyncio.get_running_loop().create_future()
        self._ensure_worker().put_nowait((item, future))
        return await future

    def stats(self) -> dict[str, float]:
        """Forward calls, items served and the mean batch size so far."""
        mean = self.items / self.forward_calls if self.forward_calls else 0.0
        return {"forward_calls": self.forward_calls, "items": self.items,
                "mean_batch": round(mean, 2)}

    def close(self) -> None:
        """Stop the worker task (pending submissions are cancelled)."""
        if self._worker is not None:
            self._worker.cancel()
            self._worker, self._loop = None, None

    def _ensure_worker(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._work())
        return self._queue

    async def _work(self) -> None:
        while True:  # no local keeps a batch alive while idle: its images are freed at once
            await self._run(await self._next_batch())

    async def _next_batch(self) -> list[tuple[T, asyncio.Future]]:
        batch = [await self._queue.get()]
        if self.wait_s and self._queue.qsize() < self.max_batch - 1:
            await asyncio.sleep(self.wait_s)
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return [entry for entry in batch if not entry[1].done()]

    async def _run(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        if not batch:
            return
        items = [item for item, _ in batch]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self.run_batch, items)
        except Exception as error:  # noqa: BLE001 -- each waiting request gets it; the worker lives on
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.forward_calls += 1
        self.items += len(items)
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
