"""Fresh ids: random, never handed out twice, not even across a fork or by threads."""

from __future__ import annotations

import os
import re
import threading

from contracts.ids import IDS_PER_READ, RandomIds
from contracts.wire import MESSAGE_ID_PATTERN, TASK_ID_PATTERN


def test_ids_are_32_hex_characters_and_valid_task_and_message_ids() -> None:
    new_id = RandomIds()
    for value in (new_id() for _ in range(IDS_PER_READ + 1)):
        assert re.fullmatch(r"[0-9a-f]{32}", value)
        assert re.fullmatch(TASK_ID_PATTERN, value)
        assert re.fullmatch(MESSAGE_ID_PATTERN, value)


def test_no_id_comes_twice_across_many_batches() -> None:
    new_id = RandomIds()
    ids = [new_id() for _ in range(IDS_PER_READ * 40)]
    assert len(set(ids)) == len(ids)


def test_threads_taking_ids_at_once_never_share_one() -> None:
    new_id = RandomIds()
    taken: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(taken))

    def take(into: list[str]) -> None:
        start.wait()
        into.extend(new_id() for _ in range(IDS_PER_READ * 10))

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [value for into in taken for value in into]
    assert len(ids) == 8 * IDS_PER_READ * 10
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    """The parent's batch is read before the fork; the child must read its own."""
    new_id = RandomIds()
    new_id()  # the batch is read; IDS_PER_READ - 1 ids are left in it
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave at once
        os.close(read_end)
        os.write(write_end, "".join(new_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        child = reader.read()
    os.waitpid(pid, 0)
    child_ids = {child[i : i + 32] for i in range(0, len(child), 32)}
    assert len(child_ids) == 4
    parents_rest = {new_id() for _ in range(IDS_PER_READ - 1)}
    assert not child_ids & parents_rest
