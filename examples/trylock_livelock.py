"""Two transfers that try to avoid a deadlock by backing off - and never get anywhere.

Each holds its source account's lock and tries the destination's with a short timeout;
on failure it backs off for a moment and tries again, still holding the first lock.
Each holds what the other tries: both keep trying, for ever, each time in vain.
"""

from __future__ import annotations

import threading
import time


class Account:
    def __init__(self, name: str, balance: int) -> None:
        self.name = name
        self.balance = balance
        self.lock = threading.Lock()


def transfer(src: Account, dst: Account, amount: int) -> None:
    with src.lock:
        time.sleep(0.05)
        while not dst.lock.acquire(timeout=0.01):
            time.sleep(0.01)  # back off, then try again
        try:
            src.balance -= amount
            dst.balance += amount
        finally:
            dst.lock.release()


def run() -> tuple[int, int]:
    alice, bob = Account("alice", 100), Account("bob", 100)
    t1 = threading.Thread(target=transfer, args=(alice, bob, 10), name="alice-to-bob")
    t2 = threading.Thread(target=transfer, args=(bob, alice, 20), name="bob-to-alice")
    t1.start()
    t2.start()
    t1.join()
    t2.join()
    return alice.balance, bob.balance


if __name__ == "__main__":
    print(run())
