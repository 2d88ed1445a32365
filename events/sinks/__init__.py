"""Event sinks: chosen events of the log, out as CloudEvents.

    selectors.py   which sinks want a type (the wildcard subscription's gate)
    handlers.py    the subscriber of every chosen event: one delivery task per sink
    sending.py     the wire: an HTTP POST signed with Standard Webhooks headers, or an AMQP publish
    services.py    sinks created and changed; one attempt, recorded, and the retry it schedules
    tasks.py       the delivery task and the sweep of retries that are due
"""
