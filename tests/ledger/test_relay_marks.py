"""The relay's batch marks for the scheduler, pure."""
from broker_setup.amqp import Outgoing
from broker_setup.topology import LEASES_EXCHANGE
from ledger.relay_marks import mark_scheduler_batch


def verdict(seq: int, event_type: str) -> Outgoing:
    return Outgoing(b"{}", event_type, user_id="ledger", message_id=f"e{seq}", headers={"seq": seq})


def test_the_scheduler_verdicts_of_one_publish_carry_the_batch_and_its_size():
    # Given a deposit's verdicts: a payment nobody schedules, three jobs ready, and a lease delivery
    items = [verdict(7, "payment.posted"), verdict(8, "job.ready"), verdict(9, "job.ready"),
             Outgoing(b"{}", "w1", user_id="ledger", message_id="l", exchange=LEASES_EXCHANGE),
             verdict(10, "job.ready")]
    # When marked
    marked = mark_scheduler_batch(items)
    # Then the three job.ready say batch 8 of 3; the rest are left as they were
    assert [m.headers for m in marked] == [{"seq": 7}, {"seq": 8, "batch": 8, "batch_size": 3},
                                           {"seq": 9, "batch": 8, "batch_size": 3}, None,
                                           {"seq": 10, "batch": 8, "batch_size": 3}]


def test_a_single_scheduler_verdict_is_not_marked():
    items = [verdict(3, "job.ready"), verdict(4, "payment.posted")]
    assert mark_scheduler_batch(items) == items
