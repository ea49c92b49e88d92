"""How the ledger forms a batch from its two queues (pure: no broker)."""
from ledger.agent import take_batch


def test_the_lease_traffic_goes_first_and_each_queue_keeps_its_order():
    # Given two lease reports and three other requests waiting
    leases, inbox = ["l1", "l2"], ["i1", "i2", "i3"]

    # When a batch of four is taken
    batch = take_batch(leases, inbox, 4)

    # Then the reports lead, and what was taken left the lists
    assert batch == ["l1", "l2", "i1", "i2"]
    assert (leases, inbox) == ([], ["i3"])


def test_a_batch_of_lease_traffic_alone_leaves_the_inbox_waiting():
    leases, inbox = [f"l{i}" for i in range(5)], ["i1"]
    assert take_batch(leases, inbox, 3) == ["l0", "l1", "l2"]
    assert (leases, inbox) == (["l3", "l4"], ["i1"])
