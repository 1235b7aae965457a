"""A cache whose refresh calls a slow backend while holding the cache's lock.

The backend takes 30 s; every reader of the cache waits for all of it.
"""

from __future__ import annotations

import threading
import time


class Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, int] = {}

    def refresh(self) -> None:
        with self.lock:
            time.sleep(30)  # the slow backend call, made while holding the lock
            self.data = {"answer": 42}

    def get(self, key: str) -> int | None:
        with self.lock:
            return self.data.get(key)


def run() -> int | None:
    cache = Cache()
    refresher = threading.Thread(target=cache.refresh, name="refresher")
    refresher.start()
    time.sleep(0.1)
    return cache.get("answer")


if __name__ == "__main__":
    print(run())
