"""A sorted linked list whose tail was linked back into its middle.

`find` walks the list under the list's lock until it meets the key or the end.  The
list has no end any more: the lookup of a missing key spins for ever, holding the lock,
and everyone else who needs the list waits behind it.
"""

from __future__ import annotations

import threading
import time


class Node:
    def __init__(self, key: int) -> None:
        self.key = key
        self.next: Node | None = None


class SortedList:
    def __init__(self, keys: list[int]) -> None:
        self.lock = threading.Lock()
        self.head: Node | None = None
        for key in sorted(keys, reverse=True):
            node = Node(key)
            node.next = self.head
            self.head = node

    def find(self, key: int) -> Node | None:
        with self.lock:
            node = self.head
            while node is not None and node.key != key:
                node = node.next
            return node

    def insert(self, key: int) -> None:
        with self.lock:
            node = Node(key)
            node.next = self.head
            self.head = node

    def corrupt(self) -> None:
        """The bug: a botched splice links the tail back to the third node."""
        third = self.head.next.next if self.head and self.head.next else None
        node = self.head
        while node is not None and node.next is not None:
            node = node.next
        if node is not None:
            node.next = third


def run() -> bool:
    lst = SortedList([1, 2, 3, 4, 5, 6])
    lst.corrupt()
    finder = threading.Thread(target=lst.find, args=(99,), name="finder")
    finder.start()
    time.sleep(0.1)
    lst.insert(0)  # waits for the lock the finder never gives back
    finder.join()
    return lst.find(0) is not None


if __name__ == "__main__":
    print(run())
