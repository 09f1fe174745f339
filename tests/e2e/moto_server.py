#!/usr/bin/env python3
"""moto's server (what `moto_server` runs), with two fixes to its SQS queues.

1. Speed: how SendMessage reads queue attributes.

moto 5.2's `Queue.attributes` computes every attribute of the queue, among them
ApproximateNumberOfMessages, ...Delayed and ...NotVisible: three scans over all the queue's
messages with a clock read per message and test. SendMessage reads it for one static attribute
(`queue.attributes.get("ContentBasedDeduplication")`), and so does every S3 -> SQS event
notification, so each S3 PUT under `incoming/` costs time in proportion to the messages already
waiting. With the day's mails waiting in the queue the upload is quadratic: 10,000 mails fell to
~5 PUT/s past a few thousand objects, with ~79% of moto's CPU under `Queue.attributes` called from
`send_message` (py-spy; see doc/e2e.md).

Here `Queue.attributes` is a read-only mapping with moto's keys whose values are computed, by the
same expressions as moto's property, when they are read. Only *when* a value is computed changes;
at start-up the mapping is compared with moto's own property on a few queues, and the server
refuses to start when they differ (a moto upgrade that changed the property).

2. Lost deletes: moto's server is threaded, and `Queue.delete_message` replaces the queue's
message list with a copy that leaves the message out, under no lock. Two DeleteMessageBatch calls
at once (four ingest workers) each write back their own copy, and the message the other removed is
back: 81 messages of a 10,000-mail run stayed in the queue though every delete had answered
Successful, and four threads draining 3,000 messages left 20 behind (112 with fix 1 alone).
Here the copy is made under the queue's own lock (the one moto's `add_message` appends under), so
deletes happen one after another: 0 left. Receives stay unlocked: two threads may still
receive the same message at once, which standard queues may do too (at-least-once delivery).

Usage: python moto_server.py [moto_server options], e.g. -H 127.0.0.1 -p 5000.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from moto.core.utils import camelcase_to_underscores
from moto.sqs import models as sqs_models

MOTO_ATTRIBUTES = sqs_models.Queue.attributes
MOTO_DELETE_MESSAGE = sqs_models.Queue.delete_message


class LazyQueueAttributes(Mapping):
    """`Queue.attributes` of moto 5.2, each value computed on access."""

    def __init__(self, queue: Any):
        self._queue = queue
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:
            names += queue.KMS_ATTRIBUTES
        # Policy and RedrivePolicy are BASE_ATTRIBUTES; moto sets them again (same place in the
        # order) when they are set.
        self._names = list(dict.fromkeys(names))

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        queue = self._queue
        if name == "Policy" and queue.policy:
            value = queue.policy
        elif name == "RedrivePolicy" and queue.redrive_policy:
            value = json.dumps(queue.redrive_policy)
        else:
            value = getattr(queue, camelcase_to_underscores(name))
        if isinstance(value, bool):
            value = str(value).lower()
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def delete_message_locked(queue: Any, receipt_handle: str) -> None:
    """moto's `Queue.delete_message`, under the lock that guards the queue's message list (a
    Condition over an RLock: moto's own `add_message` and `wait_for_messages` take it)."""
    with queue._messages_lock:
        MOTO_DELETE_MESSAGE(queue, receipt_handle)


def _self_check() -> None:
    """The lazy mapping must equal moto's property, key order included, on the kinds of queue
    moto distinguishes (standard, FIFO, KMS, policy, redrive)."""
    account, region = "000000000042", "us-east-1"
    backend = sqs_models.sqs_backends[account][region]
    dlq = backend.create_queue("check-dlq")
    queues = [
        dlq,
        backend.create_queue("check-fifo.fifo", FifoQueue="true", ContentBasedDeduplication="true"),
        backend.create_queue("check-kms", KmsMasterKeyId="alias/check"),
        backend.create_queue(
            "check-redrive",
            RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq.queue_arn, "maxReceiveCount": "3"}),
            Policy=json.dumps({"Version": "2012-10-17", "Statement": []}),
            VisibilityTimeout="20",
        ),
    ]
    backend.send_message("check-redrive", "body")
    try:
        for queue in queues:
            moto_view = MOTO_ATTRIBUTES.fget(queue)
            lazy_view = LazyQueueAttributes(queue)
            # Timestamps cannot move between the two reads: moto stores them at creation.
            if list(moto_view.items()) != list(lazy_view.items()):
                sys.exit(
                    f"moto_server.py: moto's Queue.attributes changed ({queue.name}: {moto_view} vs "
                    f"{dict(lazy_view)}); update LazyQueueAttributes or drop it"
                )
    finally:
        for queue in queues:
            backend.delete_queue(queue.name)


def main() -> int:
    _self_check()
    sqs_models.Queue.attributes = property(LazyQueueAttributes)
    sqs_models.Queue.delete_message = delete_message_locked
    from moto.server import main as moto_main

    return moto_main(sys.argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
