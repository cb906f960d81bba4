"""Notifications: events to organisations, delivered to their webhooks.

* :mod:`.outbox`: an event is a row written in the transaction of the change it reports (so a
  rolled-back change notifies no one); once committed its id is handed to the wake channel;
* :mod:`.signing`: the ``CDMO-Signature`` header (HMAC-SHA-256 over ``timestamp.body``);
* :mod:`.delivery`: the deliverer thread: event ids appended to a Redis stream (consumer
  group ``deliverers``) or, without Redis, an in-process queue; every due event is POSTed to
  its organisation's webhook, each attempt recorded, failures retried with backoff.

Nothing here runs inside a request: the request only writes rows and puts ids in a queue.
"""
