"""A lock-heavy test, as a user's suite would have one: bench/bench_watch_overhead.py runs it
plain and under --rmapstress-watch.

Bank transfers between accounts, each with its own lock, taken two at a time in a fixed
order; an audit trail through a bounded queue.Queue; a condition variable counting the
finished transfers.  Four threads, tens of thousands of lock operations each.
"""

from __future__ import annotations

import queue
import threading

ACCOUNTS = 16
TRANSFERS = 120_000
THREADS = 4


class Account:
    def __init__(self, number: int) -> None:
        self.number = number
        self.balance = 1_000
        self.lock = threading.Lock()


def test_transfers_balance() -> None:
    accounts = [Account(i) for i in range(ACCOUNTS)]
    audit: queue.Queue[tuple[int, int, int] | None] = queue.Queue(maxsize=256)
    done = threading.Condition()
    finished = [0]
    logged: list[tuple[int, int, int]] = []

    def auditor() -> None:
        while (entry := audit.get()) is not None:
            logged.append(entry)

    def teller(seed: int) -> None:
        x = seed
        for _ in range(TRANSFERS):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            a, b = accounts[x % ACCOUNTS], accounts[(x >> 8) % ACCOUNTS]
            if a is b:
                continue
            first, second = (a, b) if a.number < b.number else (b, a)
            with first.lock, second.lock:
                amount = x % 50
                a.balance -= amount
                b.balance += amount
            if x % 8 == 0:
                audit.put((a.number, b.number, amount))
        with done:
            finished[0] += 1
            done.notify_all()

    log = threading.Thread(target=auditor)
    log.start()
    tellers = [threading.Thread(target=teller, args=(i + 1,)) for i in range(THREADS)]
    for t in tellers:
        t.start()
    with done:
        assert done.wait_for(lambda: finished[0] == THREADS, timeout=60)
    for t in tellers:
        t.join()
    audit.put(None)
    log.join()
    assert sum(acc.balance for acc in accounts) == ACCOUNTS * 1_000
    assert logged
