"""The server's limit on glibc's malloc arenas (featapp.app.server.fewer_malloc_arenas)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from featapp.app.server import MALLOC_ARENAS, fewer_malloc_arenas

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


def test_the_limit_is_set_unless_the_environment_sets_its_own(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert fewer_malloc_arenas(MALLOC_ARENAS) is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert fewer_malloc_arenas(MALLOC_ARENAS) is False


def test_threads_that_allocate_at_once_share_the_arenas():
    """In a fresh process, 16 threads allocating together make at most MALLOC_ARENAS arenas
    (glibc's malloc_info lists one <heap> per arena), against many without the limit."""
    script = f"""
import ctypes, os, sys, threading
sys.path.insert(0, {str(__import__("pathlib").Path(__file__).resolve().parents[2])!r})
if sys.argv[1] == "limit":
    from featapp.app.server import fewer_malloc_arenas
    assert fewer_malloc_arenas()
barrier = threading.Barrier(16)
def work():
    barrier.wait()
    keep = [bytearray(4096) for _ in range(2000)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(16)]
[t.start() for t in threads]
[t.join() for t in threads]
libc = ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
stream = libc.fdopen(os.dup(1), b"w")
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fflush(ctypes.c_void_p(stream))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "MALLOC_ARENA_MAX"}

    def arenas(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, env=env, check=True)
        return out.stdout.count("<heap nr=")

    assert arenas("limit") <= MALLOC_ARENAS < arenas("default")
