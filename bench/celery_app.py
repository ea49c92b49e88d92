"""The Celery peer of bench/dispatch.py: the same tiny work as a Celery task."""
import os

from celery import Celery

app = Celery("bench", broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://market:market@127.0.0.1:5802//"),
             backend="rpc://")
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=4, result_expires=600,
                worker_hijack_root_logger=False, task_serializer="json", result_serializer="json")


@app.task
def tiny(n):
    return (n + 1) * 2
