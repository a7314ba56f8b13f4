"""Fresh random ids, many from one read of the operating system's random source.

A tool call makes several ids (the owner of its claim, the message ids of its
outputs). ``uuid.uuid4`` reads the random source once per id, a system call each
time; on a loaded virtual machine those calls were the largest single item of a
tool call's own handling in the profile. Reading the source once for a batch of
ids keeps them exactly as random (the same source, no user-space generator) at a
fraction of the cost.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

ID_BYTES = 16
"""128 random bits, as in a version 4 UUID (which spends 6 of them on its version)."""
IDS_PER_READ = 256


class RandomIds:
    """A source of fresh random ids (32 hex characters), valid as task and message ids.

    Safe across threads without a lock: taking the next item of a list iterator is
    one step under the interpreter lock, so no two callers get the same id, and two
    callers that both find the batch used up each make a batch of their own.
    """

    def __init__(self) -> None:
        self._batch: Iterator[str] = iter(())
        # A forked child must not hand out the ids its parent has yet to hand out.
        os.register_at_fork(after_in_child=self._forget)

    def __call__(self) -> str:
        try:
            return next(self._batch)
        except StopIteration:
            self._batch = _read_batch()
            return next(self._batch)

    def _forget(self) -> None:
        self._batch = iter(())


def _read_batch() -> Iterator[str]:
    raw = os.urandom(ID_BYTES * IDS_PER_READ)
    return iter([raw[i : i + ID_BYTES].hex() for i in range(0, len(raw), ID_BYTES)])


new_id = RandomIds()
"""The process's id source: ``new_id()`` gives a fresh random id."""
