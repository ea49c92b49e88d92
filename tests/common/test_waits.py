"""The agent loops' waits (pure asyncio: no broker)."""
import asyncio

from common.waits import Wakeup, first_of


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 5))


def test_news_that_came_while_the_loop_was_busy_is_not_missed():
    async def scenario():
        # Given a wakeup set before anyone waits
        wake = Wakeup()
        wake.set()
        # When / Then the wait returns at once, and the next one waits again
        return await wake.wait(10), await wake.wait(0.01)

    assert run(scenario()) == (True, False)


def test_a_followed_event_wakes_the_waiter():
    async def scenario():
        wake, stop = Wakeup(), asyncio.Event()
        wake.follow(stop)
        asyncio.get_running_loop().call_later(0.01, stop.set)
        woken = await wake.wait(10)
        wake.close()
        return woken

    assert run(scenario()) is True


def test_close_leaves_no_watcher_behind():
    async def scenario():
        before = asyncio.all_tasks()
        wake, stop = Wakeup(), asyncio.Event()
        wake.follow(stop)
        watchers = asyncio.all_tasks() - before
        wake.close()
        await asyncio.sleep(0)
        return len(watchers), all(w.cancelled() for w in watchers)

    assert run(scenario()) == (1, True)


def test_first_of_cancels_the_rest():
    async def scenario():
        done, pending = await first_of(asyncio.sleep(0), asyncio.sleep(10))
        await asyncio.sleep(0)
        return done.done() and not done.cancelled(), pending.cancelled()

    assert run(scenario()) == (True, True)


def test_an_appender_collects_deliveries_and_wakes_the_loop():
    async def scenario():
        wake, delivered = Wakeup(), []
        take = wake.appender(delivered)
        await take("first")
        await take("second")
        return await wake.wait(0.01), delivered

    assert run(scenario()) == (True, ["first", "second"])
