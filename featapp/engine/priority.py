"""Heavy runs at a lower CPU priority than the clicks of a class.

A class shares one process and, on Community Cloud or a school's small server, two cores. A
click (a photo, a layer, a grid) costs a few milliseconds of ONNX Runtime and tens of
Python; a heavy view (occlusion, saliency, a channel's picture, a scan) keeps ONNX Runtime's
threads busy for seconds. At equal priority the operating system shares the cores evenly, so
while one student's occlusion runs, every other student's click waits for its share.

Heavy runs therefore go to one worker thread whose scheduling priority is lowered
(``nice``, :func:`featapp.settings.heavy_nice`). ONNX
Runtime's own worker threads are made by the thread that creates a session and inherit its
priority, so the sessions that only heavy runs use are created on that thread too
(:func:`run_at_heavy_priority` around their constructors). With nothing else to do, the cores go to the heavy run just
as before: a lone student's occlusion is no slower. Lowering a thread's priority needs no
privilege; raising it back would, which is why the work moves to a thread of its own rather
than lowering the caller's.

Only Linux gives each thread its own priority (``setpriority`` on a thread id); elsewhere the
worker runs at the process's priority and nothing else changes. The standard library's
:class:`~concurrent.futures.ThreadPoolExecutor` with one worker is the queue: runs keep the
order they came in, and an exception reaches the caller.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from featapp import settings

__all__ = ["on_heavy_thread", "run_at_heavy_priority", "thread_nice"]

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_heavy_thread = threading.local()


def thread_nice() -> int | None:
    """The calling thread's ``nice`` value on Linux, else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _lower_priority() -> None:
    """Runs once in the worker thread: mark it, and lower its priority by :func:`featapp.settings.heavy_nice`."""
    _heavy_thread.active = True
    current, lower_by = thread_nice(), settings.heavy_nice()
    if current is None or lower_by == 0:
        return
    # A sandbox that forbids it (OSError) leaves the runs at the usual priority.
    with contextlib.suppress(OSError):
        # On Linux, PRIO_PROCESS with a thread id sets that one thread's nice value.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, current + lower_by))


def on_heavy_thread() -> bool:
    """True in the heavy-run worker thread."""
    return getattr(_heavy_thread, "active", False)


def run_at_heavy_priority(work: Callable[[], T]) -> T:
    """Run ``work`` on the heavy-run thread and return what it returns (or raise what it raises).

    The caller waits, as it would for the run itself. Called from the heavy thread (a heavy
    run inside another), it runs at once."""
    global _executor
    if on_heavy_thread():
        return work()
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="featapp-heavy", initializer=_lower_priority
            )
        executor = _executor
    return executor.submit(work).result()
