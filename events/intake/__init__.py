"""Intake of pushed CloudEvents: over HTTP (`POST /api/events/`, events/apis.py) and from a
broker (`manage.py events_consume`, consumer.py).

    binding.py     the wire: HTTP binary/structured/batch and AMQP messages -> validated events
    changes.py     what an event does: upsert or delete one document (or become one)
    auth.py        which push source a request comes from (bearer secret, Standard Webhooks)
    services.py    record the events (idempotent by source + id) and publish one
                   `freshet.events.received` for them
    apply.py       the subscriber of that event: each recorded change, in order, through
                   ingestion.services (imported lazily: events/ is the backbone ingestion imports)
    consumer.py    the long-running broker consumer
"""
