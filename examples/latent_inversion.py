"""Two code paths that take the same two locks in opposite orders.

Adding a user to a group locks the users, then the groups; renaming a group locks the
groups, then the users.  Run one after the other they never meet, and every test
passes - until the day they run at the same time and deadlock.
"""

from __future__ import annotations

import threading


class Registry:
    def __init__(self) -> None:
        self.users_lock = threading.Lock()
        self.groups_lock = threading.Lock()
        self.members: dict[str, set[str]] = {"staff": set()}

    def add_user_to_group(self, user: str, group: str) -> None:
        with self.users_lock, self.groups_lock:
            self.members[group].add(user)

    def rename_group(self, old: str, new: str) -> None:
        with self.groups_lock, self.users_lock:
            self.members[new] = self.members.pop(old)


def run() -> dict[str, set[str]]:
    reg = Registry()
    adder = threading.Thread(target=reg.add_user_to_group, args=("ann", "staff"))
    adder.start()
    adder.join()
    renamer = threading.Thread(target=reg.rename_group, args=("staff", "team"))
    renamer.start()
    renamer.join()
    return reg.members


if __name__ == "__main__":
    print(run())
