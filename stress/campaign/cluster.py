"""The Dask executor: the same cases on an existing Dask distributed scheduler.

Each case is one task, `stress.campaign.worker.call(fn_name, args)`, so the cluster's
workers need the project installed (the case function is imported there by name)
but nothing of this machine's files: a case's files come back inside its result and
the campaign writes them here.  A worker process runs its cases one after the other
(several threads per worker only queue); start workers with `--nthreads 1` and as
many processes as cores.  To recycle worker processes on a cluster use Dask's own
`--lifetime` / `--lifetime-restart`.  A task whose worker died (the harness's
emergency exit, say) comes back as a lost case once the scheduler gives up on it:
Dask first tries it on `distributed.scheduler.allowed-failures` (3) more workers.
"""

from __future__ import annotations

import contextlib
import queue
import time
from typing import Any

from stress.campaign.executor import Case, Finished
from stress.campaign.store import folder_name
from stress.campaign.worker import call


class ClusterError(Exception):
    """The scheduler cannot be reached or used: one line."""


class DaskPool:
    """Cases as Dask tasks, at most as many in flight as the cluster has worker threads."""

    def __init__(
        self, address: str, fn_name: str, *, limit: int | None = None, timeout_s: float = 10.0
    ) -> None:
        try:
            from distributed import Client as _Client
        except ImportError as exc:  # pragma: no cover - a main dependency
            raise ClusterError(f"--cluster needs dask[distributed] installed ({exc})") from None
        client_cls: Any = _Client  # distributed's Client is not fully typed
        self.address = address
        self.fn_name = fn_name
        self.limit = limit
        try:
            self.client: Any = client_cls(address, timeout=f"{timeout_s}s", set_as_default=False)
        except Exception as exc:
            raise ClusterError(
                f"--cluster {address}: cannot connect: {type(exc).__name__}: {exc}".splitlines()[0]
            ) from None
        try:
            self.client.wait_for_workers(1, timeout=timeout_s)
        except Exception:
            self.client.close()
            raise ClusterError(
                f"--cluster {address}: no worker joined within {timeout_s:g} s"
            ) from None
        self._threads = 1
        self._checked = 0.0
        self._refresh()
        self._futures: dict[Any, tuple[Case, float]] = {}
        self._done: queue.Queue[Any] = queue.Queue()
        self._serial = 0
        self._token = f"{time.time_ns():x}"

    @property
    def description(self) -> str:
        return f"Dask scheduler {self.address}: {self._threads} worker thread(s)"

    def _refresh(self) -> None:
        with contextlib.suppress(Exception):  # keep the last figure; the scheduler may be busy
            self._threads = max(1, sum(self.client.nthreads().values()))
        self._checked = time.monotonic()

    @property
    def slots(self) -> int:
        if time.monotonic() - self._checked > 5.0:
            self._refresh()
        return min(self._threads, self.limit) if self.limit else self._threads

    def busy(self) -> int:
        return len(self._futures)

    def running(self) -> list[tuple[Case, str, float]]:
        return [(case, "cluster", since) for case, since in self._futures.values()]

    def submit(self, case: Case) -> None:
        self._serial += 1
        key = f"rmapstress-case-{self._token}-{self._serial}-{folder_name(case.key)}"
        fut = self.client.submit(call, self.fn_name, case.args, key=key, pure=False, retries=0)
        self._futures[fut] = (case, time.time())
        fut.add_done_callback(self._done.put)  # called from the client's thread

    def poll(self, timeout: float) -> list[Finished]:
        ready: list[Any] = []
        try:
            ready.append(self._done.get(timeout=timeout))
            while True:
                ready.append(self._done.get_nowait())
        except queue.Empty:
            pass
        out: list[Finished] = []
        for fut in ready:
            entry = self._futures.pop(fut, None)
            if entry is None:
                continue
            case, since = entry
            status = fut.status
            if status == "finished":
                try:
                    out.append(Finished(case, fut.result(), started_at=since))
                    continue
                except Exception as exc:
                    why = f"its result could not be fetched: {type(exc).__name__}: {exc}"
            elif status == "error":
                err = fut.exception()
                why = f"the cluster lost it: {type(err).__name__}: {err}"
            else:
                why = f"the cluster dropped it (task {status})"
            out.append(Finished(case, None, lost=why.splitlines()[0], started_at=since))
            fut.release()
        return out

    def shutdown(self, *, kill: bool) -> None:
        if kill and self._futures:
            # The scheduler may be going or gone: then there is nothing more to cancel.
            with contextlib.suppress(Exception):
                self.client.cancel(list(self._futures), force=True)
        self._futures.clear()
        with contextlib.suppress(Exception):
            self.client.close(timeout=10)
