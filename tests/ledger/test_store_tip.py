"""The write transaction refuses a state that does not follow from the log's
tip: a state holding folds that were never committed (a failed batch whose
reload also failed) cannot append again, on SQLite and PostgreSQL."""
import pytest

from contracts.envelope import Codec
from ledger.errors import StaleState
from ledger.ingest import Incoming, decode_all, plan_batch
from ledger.store import LedgerStore, is_transient

CODEC = Codec()
NOW = "2026-11-22T10:00:00.000000Z"


def planned(state, event_type, payload):
    _, body = CODEC.encode(event_type, payload)
    decoded, _ = decode_all(CODEC, [Incoming(body, "operator")])
    return plan_batch(state, decoded, set(), NOW)


def test_a_state_with_uncommitted_folds_cannot_append(engine):
    # Given a state that folded a batch the database never committed
    store = LedgerStore(engine)
    state = store.load_state()
    planned(state, "account.opened", {"account": "fay", "email": "fay@example.com"})
    assert state.last_seq > 0

    # When it tries to append the next batch
    plan = planned(state, "account.deposited", {"account": "fay", "amount": 5})
    with pytest.raises(StaleState) as raised:
        with store.transaction():
            store.check_tip(state.last_seq - len(plan.events), plan.events[0]["prev_hash"])
            store.write(plan, state)

    # Then nothing is written, and the error is one to reload and retry on
    assert is_transient(raised.value)
    assert store.last_seq() == 0
    store.close()


def test_a_state_at_the_tip_appends(engine):
    # Given a fresh state at the log's tip
    store = LedgerStore(engine)
    state = store.load_state()
    before = (state.last_seq, state.last_hash)

    # When it appends a batch after checking the tip
    plan = planned(state, "account.opened", {"account": "gus", "email": "gus@example.com"})
    with store.transaction():
        store.check_tip(*before)
        store.write(plan, state)

    # Then the log ends where the state does, and the check passes again
    assert store.last_seq() == state.last_seq
    with store.transaction():
        store.check_tip(state.last_seq, state.last_hash)
    store.close()
