"""A small pool of worker processes for CPU work on untrusted bytes, each call under a time limit.

Feed parsing, page scanning and HTML rendering run here, never on the event loop
and never in a thread: a thread cannot be stopped, and one hostile document can
keep html.parser busy for hours. A worker process can be: a call over its time
limit kills its worker (a fresh one is started in its place) and raises
:class:`WorkTimeout`.

Two lanes keep one guild's slow documents from holding up everyone else's quick
ones. Every call starts in the *fast* lane (``size`` at once). A call still
running after ``fast_slice`` seconds moves, worker and all, to the *slow* lane
(``size`` at once too) and its fast slot goes to the next call. When the slow
lane is full, the call's worker is killed and the call waits for a slow slot,
where it starts over: the functions run here must be pure. So at most
``2 × size`` documents are worked on at once (and ``size`` workers wait idle,
ready), a quick document never waits behind more than ``fast_slice`` of
anyone's work per call ahead of it, and slow documents compete only with each
other. A worker a document left big is retired after it.

A worker is started through the ``forkserver`` start method where there is one
(``spawn`` elsewhere; plain ``fork`` is unsafe in a process with threads): the
fork server imports ``preload`` once, and each worker forked from it is ready in
milliseconds. Log records a job emits in a worker are sent back with its answer
and handled by the same-named logger here.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import resource
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Final, Self, TypeVar, cast

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_SIZE: Final = 2
# How long a call may run in the fast lane before it counts as slow.
FAST_SLICE: Final = 0.25
# A worker left this big by a document (allocators keep freed memory) is not kept idle.
RETIRE_RSS: Final = 100 * 1024 * 1024
# How long a closing pool waits for an idle worker to exit before killing it.
_EXIT_GRACE: Final = 2.0
_HEADER: Final = struct.Struct("!Q")
_READY: Final = b"R"
# How long a new worker may take to say it is ready (a loaded machine, a cold disk).
_START_TIMEOUT: Final = 60.0


class WorkerError(Exception):
    """A call to the pool did not return its function's answer."""


class WorkTimeout(WorkerError):
    """The call ran over its time limit; its worker was killed."""

    def __init__(self, limit: float) -> None:
        super().__init__(f"took more than {limit:g} s")
        self.limit = limit


class WorkerCrashed(WorkerError):
    """The worker died during the call (killed from outside, out of memory)."""


class PoolClosed(WorkerError):
    """The pool is closed (the bot is stopping)."""


class RemoteTraceback(Exception):
    """Where in the worker an unexpected exception was raised (its ``__cause__``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WorkerPool:
    """Runs picklable module-level functions in worker processes, at most ``2 × size`` at once."""

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        *,
        preload: Sequence[str] = (),
        fast_slice: float = FAST_SLICE,
        start_method: str | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.size = size
        self.fast_slice = fast_slice
        if start_method is None:
            methods = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        self._context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Takes effect when this process starts its fork server (on the first worker).
            self._context.set_forkserver_preload([__name__, *preload])
        self._fast = asyncio.Semaphore(size)
        self._slow = asyncio.Semaphore(size)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._exiting: list[BaseProcess] = []
        self._spawning: set[asyncio.Future[_Worker]] = set()
        self._closed = False
        self._calls = 0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def pids(self) -> list[int]:
        """The live workers' process ids (busy and idle)."""
        return [w.pid for w in [*self._busy, *self._idle]]

    @property
    def calls(self) -> int:
        """Calls in progress: running in a worker or waiting for one."""
        return self._calls

    async def run(self, func: Callable[..., T], *args: Any, limit: float) -> T:
        """``func(*args)`` in a worker; its answer, or its exception raised here.

        Raises :class:`WorkTimeout` when the call runs longer than ``limit``
        seconds (from when a worker took it up), :class:`WorkerCrashed` when the
        worker dies, :class:`PoolClosed` after :meth:`close`. A cancelled call
        kills its worker, so nothing is left busy.
        """
        if self._closed:
            raise PoolClosed("the worker pool is closed")
        request = pickle.dumps((func, args), protocol=pickle.HIGHEST_PROTOCOL)
        loop = asyncio.get_running_loop()
        fast = slow = False
        worker: _Worker | None = None
        self._calls += 1
        try:
            await self._fast.acquire()
            fast = True
            worker = await self._checkout()
            started = loop.time()
            exchange = worker.start(request)
            if not await _finished(exchange, min(limit, self.fast_slice)):
                if limit <= self.fast_slice:
                    raise self._over(func, limit, worker)
                if not self._slow.locked():
                    # A slow document: it carries on in the slow lane, worker and all.
                    await self._slow.acquire()  # free: returns at once
                    slow = True
                    self._fast.release()
                    fast = False
                    if not await _finished(exchange, limit - (loop.time() - started)):
                        raise self._over(func, limit, worker)
                else:
                    # The slow lane is full: wait for it without holding a worker, then
                    # start over there.
                    self._discard(worker)
                    worker = None
                    self._fast.release()
                    fast = False
                    await self._slow.acquire()
                    slow = True
                    worker = await self._checkout()
                    exchange = worker.start(request)
                    if not await _finished(exchange, limit):
                        raise self._over(func, limit, worker)
            if exchange.cancelled():  # by close()
                raise PoolClosed("the worker pool closed during the call")
            ok, value, trace, records, rss = pickle.loads(exchange.result())  # or WorkerCrashed
            self._checkin(worker, retire=rss > RETIRE_RSS)
            worker = None
            return cast(T, _answer(ok, value, trace, records))
        finally:
            self._calls -= 1
            if worker is not None:
                self._discard(worker)
            if fast:
                self._fast.release()
            if slow:
                self._slow.release()

    @staticmethod
    def _over(func: Callable[..., Any], limit: float, worker: _Worker | None) -> WorkTimeout:
        target = getattr(func, "func", func)  # a functools.partial's function
        name = getattr(target, "__qualname__", repr(target))
        pid = worker.pid if worker else 0
        log.warning("%s ran over its %g s: its worker (pid %d) is killed", name, limit, pid)
        return WorkTimeout(limit)

    async def start(self) -> None:
        """Start ``size`` workers now, so that the first documents need not wait for them.

        The first worker of a process also starts its fork server, which imports
        ``preload``: a few tenths of a second, better spent before the bot connects.
        """
        if self._closed:
            raise PoolClosed("the worker pool is closed")
        wanted = self.size - len(self._idle) - len(self._spawning)
        # Shielded: a worker started for a cancelled caller still joins the idle ones.
        await asyncio.shield(asyncio.gather(*(self._spawn() for _ in range(wanted))))

    async def close(self) -> None:
        """Stop every worker and wait for them to exit; calls still running fail."""
        if self._closed:
            return
        self._closed = True
        if self._spawning:
            await asyncio.gather(*self._spawning, return_exceptions=True)
        for worker in self._idle:
            worker.stop()  # the worker sees the end of its socket and exits
            self._exiting.append(worker.process)
        self._idle.clear()
        for worker in list(self._busy):
            self._discard(worker)
        await asyncio.to_thread(_join, self._exiting)
        self._exiting.clear()

    # --- workers ----------------------------------------------------------------------

    async def _checkout(self) -> _Worker:
        while True:
            if self._closed:
                raise PoolClosed("the worker pool is closed")
            self._reap()
            while self._idle:
                worker = self._idle.pop()
                if worker.process.is_alive():
                    self._busy.add(worker)
                    return worker
                self._discard(worker)
            # The new worker joins the idle ones, from where this caller takes it, or
            # anyone if this caller was cancelled meanwhile.
            worker = await asyncio.shield(self._spawn())
            if self._closed:
                raise PoolClosed("the worker pool is closed")
            if worker in self._idle:
                self._idle.remove(worker)
                self._busy.add(worker)
                return worker

    def _spawn(self) -> asyncio.Future[_Worker]:
        """Start a worker: off the loop, since starting a process blocks."""
        spawning = asyncio.ensure_future(asyncio.to_thread(_start_worker, self._context))
        self._spawning.add(spawning)
        spawning.add_done_callback(self._spawned)
        return spawning

    def _spawned(self, spawning: asyncio.Future[_Worker]) -> None:
        self._spawning.discard(spawning)
        if spawning.cancelled():
            return
        if (exc := spawning.exception()) is not None:
            log.warning("Could not start a worker process: %s", exc)
            return
        worker = spawning.result()
        if self._closed:
            worker.kill()
            self._exiting.append(worker.process)
        else:
            self._idle.append(worker)

    def _checkin(self, worker: _Worker, *, retire: bool) -> None:
        self._busy.discard(worker)
        if retire or self._closed or len(self._idle) >= self.size:
            worker.stop()  # grown big, or more idle workers than the fast lane can use
            self._exiting.append(worker.process)
            self._replenish()
        else:
            self._idle.append(worker)

    def _discard(self, worker: _Worker) -> None:
        """Kill a worker whose answer will never be read (timed out, cancelled, closing)."""
        self._busy.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        if not worker.killed:
            worker.kill()
            self._exiting.append(worker.process)
        self._replenish()

    def _replenish(self) -> None:
        """Start a worker in place of one that went, so the next document finds it ready."""
        if not self._closed and len(self._idle) + len(self._spawning) < self.size:
            self._spawn()

    def _reap(self) -> None:
        """Forget workers that have exited (``exitcode`` collects them without waiting)."""
        self._exiting = [p for p in self._exiting if p.exitcode is None]


class _Worker:
    """One worker process, the parent's end of its socket, and the call it is running."""

    def __init__(self, process: BaseProcess, sock: socket.socket) -> None:
        self.process = process
        self.sock = sock
        self.pid = process.pid or 0
        self.task: asyncio.Task[bytearray] | None = None
        self.killed = False

    def start(self, request: bytes) -> asyncio.Task[bytearray]:
        """Send ``request`` and read the reply, in a task the caller waits on as it likes."""
        self.task = asyncio.create_task(self._exchange(request))
        return self.task

    async def _exchange(self, request: bytes) -> bytearray:
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(self.sock, _HEADER.pack(len(request)))
            await loop.sock_sendall(self.sock, request)
            (size,) = _HEADER.unpack(await self._read(_HEADER.size))
            return await self._read(size)
        except OSError as exc:
            raise WorkerCrashed(f"the worker process stopped ({exc})") from None

    async def _read(self, size: int) -> bytearray:
        loop = asyncio.get_running_loop()
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            count = await loop.sock_recv_into(self.sock, view[got:])
            if count == 0:
                raise WorkerCrashed("the worker process stopped")
            got += count
        return buffer

    def stop(self) -> None:
        """Close the socket of an idle worker: it exits on its own."""
        self.sock.close()

    def kill(self) -> None:
        """Kill the process now; its socket closes once the running exchange is cancelled.

        Closing a socket the event loop still watches could let a new socket with the
        same descriptor lose its watch when the old exchange's clean-up runs.
        """
        self.killed = True
        if self.process.exitcode is None:
            self.process.kill()
        task = self.task
        if task is None or task.done():
            if task is not None and not task.cancelled():
                task.exception()  # retrieved: it was a WorkerCrashed nobody needs
            self.sock.close()
            return
        task.cancel()
        task.add_done_callback(self._closed_after)

    def _closed_after(self, task: asyncio.Task[bytearray]) -> None:
        if not task.cancelled():
            task.exception()
        self.sock.close()


def _start_worker(context: Any) -> _Worker:
    """A new worker, once it says it is ready (its start-up imports are done)."""
    parent, child = socket.socketpair()
    process = context.Process(
        target=_serve,
        args=(child, logging.getLogger().getEffectiveLevel()),
        name="blogmirror-worker",
        daemon=True,
    )
    try:
        process.start()
    finally:
        child.close()
    try:
        parent.settimeout(_START_TIMEOUT)
        if parent.recv(1) != _READY:
            raise OSError("it exited while starting")
    except OSError as exc:
        parent.close()
        process.kill()
        process.join()
        raise WorkerCrashed(f"a worker process did not start ({exc})") from None
    parent.setblocking(False)
    return _Worker(process, parent)


def _join(processes: Sequence[BaseProcess]) -> None:
    """Wait for each process to exit, killing any that outstays the grace period."""
    for process in processes:
        process.join(_EXIT_GRACE)
        if process.exitcode is None:
            process.kill()
            process.join()


async def _finished(task: asyncio.Task[Any], within: float) -> bool:
    """Whether ``task`` finished within ``within`` seconds (it is not cancelled if not)."""
    done, _ = await asyncio.wait({task}, timeout=max(within, 0))
    return bool(done)


def _answer(ok: bool, value: Any, trace: str, records: list[logging.LogRecord]) -> Any:
    """The function's answer, or its exception raised; the worker's log records handled here."""
    for record in records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    if ok:
        return value
    if trace:
        value.__cause__ = RemoteTraceback(trace)
    raise value


# --- in the worker process ----------------------------------------------------------------


class _Records(logging.Handler):
    """Keeps a job's log records, made picklable, to send back with its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = record.getMessage()
        record.args = None
        record.exc_info = None
        self.records.append(record)


def _serve(sock: socket.socket, log_level: int) -> None:
    """A worker's life: run each request on its socket until the parent closes it."""
    # Ctrl-C in a terminal signals the whole process group: the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    records = _Records()
    root = logging.getLogger()
    root.handlers[:] = [records]
    root.setLevel(log_level)
    with sock:
        sock.sendall(_READY)
        while (request := _receive(sock)) is not None:
            records.records.clear()
            trace = ""
            try:
                func, args = pickle.loads(request)
                del request
                answer: tuple[bool, Any] = (True, func(*args))
            except Exception as exc:
                answer = (False, _portable(exc))
                if not _expected(exc):
                    trace = traceback.format_exc()
            rss, logged = _resident_bytes(), records.records
            try:
                reply = pickle.dumps((*answer, trace, logged, rss), pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                failure = WorkerError(f"the answer could not be sent back: {exc!r}")
                reply = pickle.dumps((False, failure, trace, [], rss), pickle.HIGHEST_PROTOCOL)
            del answer
            try:
                sock.sendall(_HEADER.pack(len(reply)))
                sock.sendall(reply)
            except OSError:
                return  # the parent is gone (killed, or it gave up on this call)
            del reply


def _portable(exc: Exception) -> Exception:
    """``exc``, or a plain ``WorkerError`` saying what it was if it cannot be rebuilt there."""
    try:
        pickle.loads(pickle.dumps(exc, pickle.HIGHEST_PROTOCOL))
    except Exception:
        return WorkerError(f"{type(exc).__name__}: {exc}")
    return exc


def _resident_bytes() -> int:
    """This process's resident set now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _expected(exc: Exception) -> bool:
    """A domain error (a moderator-facing message) needs no traceback."""
    return any(cls.__name__ == "BlogMirrorError" for cls in type(exc).__mro__)


def _receive(sock: socket.socket) -> bytearray | None:
    header = _receive_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    return _receive_exactly(sock, size)


def _receive_exactly(sock: socket.socket, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = sock.recv_into(view[got:])
        if count == 0:
            return None
        got += count
    return buffer
