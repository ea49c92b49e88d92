"""The relay's hand-over of fresh outbox rows between the database thread
and the loop thread: under concurrent offers, every row arrives once, in
order. (The deque it replaces was read and cleared in two steps: rows
offered in between were dropped, or the read died of "deque mutated
during iteration".)"""
import threading

from ledger.handover import Handover

OFFERS, ROWS_PER_OFFER = 20_000, 5


def test_rows_offered_while_being_taken_arrive_once_and_in_order():
    # Given a caught-up relay's hand-over
    handover = Handover()
    handover.catch_up()
    done = threading.Event()

    def writer():
        for offer in range(OFFERS):
            handover.offer([{"id": offer * ROWS_PER_OFFER + i} for i in range(ROWS_PER_OFFER)])
        done.set()

    # When the writer thread offers while this thread takes, as fast as both can
    taken = []
    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        taken.extend(row["id"] for row in handover.take())
    thread.join()
    taken.extend(row["id"] for row in handover.take())

    # Then every row was taken exactly once, in the order offered
    assert taken == list(range(OFFERS * ROWS_PER_OFFER))


def test_nothing_is_handed_over_while_the_relay_is_behind():
    # Given a relay reading the table (behind)
    handover = Handover()

    # When the writer offers rows
    accepted = handover.offer([{"id": 1}])

    # Then it is told to leave them to the table, and none wait in the hand-over
    assert accepted is False
    assert handover.take() == []
    # and falling behind drops what was offered but not taken (it is in the table)
    handover.catch_up()
    assert handover.offer([{"id": 2}]) is True
    handover.fall_behind()
    assert handover.take() == []
