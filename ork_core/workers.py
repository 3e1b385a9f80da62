"""The threads that run synchronous ``run`` methods.

Python cannot stop a thread. When a synchronous task times out or the run is cancelled,
ork gives up on its thread; `concurrent.futures.ThreadPoolExecutor` would then keep the
whole process alive at exit until that thread returns (its workers are joined at
interpreter exit). These workers are daemon threads, so `ork run` ends when the run ends,
and a thread that was given up on does not hold a slot: a new one is started when every
thread is busy (the scheduler already bounds how many tasks run at once).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any


def _call(thunk: Callable[[], Any]) -> Any:
    return thunk()


def run_sync(pool: DaemonPool, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """`loop.run_in_executor` without the concurrent.futures.Future in between.

    The worker sets the asyncio future's result with one ``call_soon_threadsafe``; on a run
    of many tiny tasks the Future chaining of run_in_executor was a measurable share.
    """
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.cancelled():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the run is over and its loop closed: nobody waits for this result any more

    pool.submit_plain(work)
    return future


class DaemonPool(Executor):
    """A grow-on-demand pool of daemon worker threads with the `Executor.submit` shape."""

    def __init__(self, name: str = "ork-task") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if kwargs:
            args = (lambda: fn(*args, **kwargs),)
            fn = _call
        future: Future[Any] = Future()
        self._put((future, fn, args))
        return future

    def submit_plain(self, fn: Callable[[], None]) -> None:
        """Run `fn` on a worker, with no Future: it reports back by itself."""
        self._put((None, fn, ()))

    def _put(self, item: tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...]]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            self._queue.put(item)
            if not self._idle.acquire(blocking=False):
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if future is None:
                fn()
            elif future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to whoever awaits the future
                    future.set_exception(exc)
            del item, future, fn, args
            self._idle.release()

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = False) -> None:
        """Stop idle workers; busy ones end after their current call (never waited for)."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None and item[0] is not None:
                        item[0].cancel()
            for _ in range(self._threads):
                self._queue.put(None)
