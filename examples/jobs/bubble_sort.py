"""Bubble sort as a checkpointable job: one pass per safe point.

The state is a dict ``{"items": [...], "passes": n}``; after every pass the
job yields its state, so a worker may stop it there and another machine
resume it. Submit it with::

    marketctl submit examples/jobs/bubble_sort.py:sort --name "Bubble Sort" --price 5.2 \
        --args '{"items": [5, 3, 9, 1, 7]}'
"""


def sort(state):
    items = list(state["items"])
    passes = state.get("passes", 0)
    while True:
        swapped = False
        for i in range(len(items) - 1 - passes):
            if items[i] > items[i + 1]:
                items[i], items[i + 1] = items[i + 1], items[i]
                swapped = True
        passes += 1
        if not swapped or passes >= len(items):
            return items
        yield {"items": items, "passes": passes}
