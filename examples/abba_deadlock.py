"""Two transfers between the same two accounts, in opposite directions.

Each locks its source account, then its destination: one locks alice then bob, the
other bob then alice.  Both get their first lock, and each waits for ever for the
other's: the ABBA deadlock.
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
        time.sleep(0.05)  # some bookkeeping: long enough for the other transfer to start
        with dst.lock:
            src.balance -= amount
            dst.balance += amount


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
