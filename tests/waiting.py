"""Waiting for something to happen, never for a fixed time.

A test that sleeps a fixed time either waits too long on a quiet machine or too little on a busy
one. These helpers poll a condition until it holds and fail, saying what did not happen, only
after a generous deadline: the deadline is a hang guard, not a figure the test checks (how fast
things happen is bench/'s to say).

Example:
    >>> box = []
    >>> wait_until(lambda: box.append(1) or len(box) >= 3, timeout=5)
    True
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

POLL_EVERY = 0.02  # seconds between two looks at the condition


def wait_until(condition: Callable[[], T], timeout: float = 30.0, message: str = "", every: float = POLL_EVERY) -> T:
    """Call ``condition`` every ``every`` seconds until it returns something true, and return that;
    raise AssertionError (with ``message``) if it has not after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: its wait is the pause between polls
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"still false after {timeout} s: {condition}")
        pause.wait(every)


async def until_true(condition: Callable[[], T | Awaitable[T]], timeout: float = 30.0, message: str = "",
                     every: float = POLL_EVERY) -> T:
    """:func:`wait_until` for an event loop: ``condition`` may be a plain or an async function, and the
    loop keeps running between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"still false after {timeout} s: {condition}")
        await asyncio.sleep(every)


def wait_for_port(port: int, proc, timeout: float = 30.0, what: str = "the server") -> None:
    """Wait until something listens on 127.0.0.1:``port``; raise RuntimeError at once if ``proc`` (the
    subprocess that should listen there) exits first, or after ``timeout`` seconds."""
    import socket

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited (code {proc.returncode}) before it listened on port {port}") from None
            return False

    try:
        wait_until(listening, timeout)
    except AssertionError:
        raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s") from None
