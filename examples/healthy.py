"""A healthy threaded program: queues, thread pools, timers, condition variables, sleeps.

Everything here waits, sleeps and contends - and always makes progress.  Watched, it
must give no verdict at all.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time


def pipeline(items: int = 200) -> int:
    """A producer and two consumers over a bounded queue."""
    jobs: queue.Queue[int | None] = queue.Queue(maxsize=8)
    done: queue.Queue[int] = queue.Queue()

    def consume() -> None:
        while (item := jobs.get()) is not None:
            done.put(item * 2)
            jobs.task_done()
        jobs.task_done()

    workers = [threading.Thread(target=consume) for _ in range(2)]
    for w in workers:
        w.start()
    for i in range(items):
        jobs.put(i)
    for _ in workers:
        jobs.put(None)
    jobs.join()
    for w in workers:
        w.join()
    return sum(done.get() for _ in range(items))


def pool() -> int:
    """Futures: map, as_completed, wait, and work that submits more work."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
        squares = sum(ex.map(lambda x: x * x, range(50)))
        futures = [ex.submit(time.sleep, 0.01) for _ in range(8)]
        concurrent.futures.wait(futures)
        more = [ex.submit(lambda n: n + 1, i) for i in range(10)]
        total = sum(f.result() for f in concurrent.futures.as_completed(more))
    return squares + total


def timers() -> bool:
    fired = threading.Event()
    timer = threading.Timer(0.05, fired.set)
    timer.start()
    never = threading.Timer(60, fired.clear)
    never.start()
    never.cancel()
    ok = fired.wait(5)
    timer.join()
    never.join()
    return ok


class BoundedBuffer:
    """A buffer of at most `size` items, with condition variables."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[int] = []
        self.cond = threading.Condition()

    def put(self, item: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: len(self.items) < self.size)
            self.items.append(item)
            self.cond.notify_all()

    def take(self) -> int:
        with self.cond:
            self.cond.wait_for(lambda: bool(self.items))
            item = self.items.pop(0)
            self.cond.notify_all()
            return item


def buffer(items: int = 100) -> int:
    buf = BoundedBuffer(4)
    got: list[int] = []
    taker = threading.Thread(target=lambda: got.extend(buf.take() for _ in range(items)))
    taker.start()
    for i in range(items):
        buf.put(i)
    taker.join()
    return sum(got)


def sleepers() -> int:
    """Threads that mostly sleep, outside any lock, and take a shared RLock briefly."""
    lock = threading.RLock()
    count = [0]

    def nap() -> None:
        time.sleep(0.3)
        with lock, lock:  # re-entrant
            count[0] += 1
        time.sleep(0.2)

    threads = [threading.Thread(target=nap) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count[0]


def limits() -> int:
    """A bounded semaphore lets two of five workers in at a time; a barrier lines them up."""
    gate = threading.BoundedSemaphore(2)
    line = threading.Barrier(5)
    inside = [0]
    most = [0]
    guard = threading.Lock()

    def work() -> None:
        line.wait()
        with gate:
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return most[0]


def run() -> dict[str, object]:
    return {
        "pipeline": pipeline(),
        "pool": pool(),
        "timers": timers(),
        "buffer": buffer(),
        "sleepers": sleepers(),
        "limits": limits(),
    }


if __name__ == "__main__":
    print(run())
