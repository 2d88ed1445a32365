"""Settings of the event intake and the sinks (a part of config/settings.py, which imports it and
checks them against the broker's visibility timeout)."""

from __future__ import annotations

from config.env import SettingsError, env_float, env_int

# --- Event intake and sinks (events/intake/, events/sinks/) ---------------------------------
# https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md
# https://www.standardwebhooks.com/ and https://docs.celeryq.dev/en/stable/userguide/configuration.html#imports
# POST /api/events/: the largest body taken (413 above it) and the most events in one batch.
EVENTS_MAX_BODY_BYTES = env_int("EVENTS_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
EVENTS_MAX_BATCH = env_int("EVENTS_MAX_BATCH", 1000, minimum=1)
# Recorded events a source's apply task makes into document changes per transaction (short: with
# SQLite, the intake waits for the write lock the apply holds).
EVENTS_APPLY_BATCH = env_int("EVENTS_APPLY_BATCH", 50, minimum=1)
# manage.py events_consume: messages each queue source's consumer holds unacknowledged, and how
# often it looks for queue sources added, changed or deleted.
EVENTS_CONSUME_PREFETCH = env_int("EVENTS_CONSUME_PREFETCH", 50, minimum=1)
EVENTS_CONSUME_RELOAD_SECONDS = env_float("EVENTS_CONSUME_RELOAD_SECONDS", 10.0)
# Sinks: seconds per request; attempts in all (the first and its retries); the backoff's first
# step and cap (x4 an attempt, jittered: seconds, then minutes, then hours); waits up to
# SINK_COUNTDOWN_MAX_SECONDS are Celery countdowns, longer ones wait for the sweep.
SINK_TIMEOUT = env_float("SINK_TIMEOUT", 15.0)
SINK_RETRY_ATTEMPTS = env_int("SINK_RETRY_ATTEMPTS", 8, minimum=1)
SINK_RETRY_BASE_SECONDS = env_float("SINK_RETRY_BASE_SECONDS", 5.0)
SINK_RETRY_MAX_DELAY_SECONDS = env_float("SINK_RETRY_MAX_DELAY_SECONDS", 6 * 3600.0)
SINK_COUNTDOWN_MAX_SECONDS = env_float("SINK_COUNTDOWN_MAX_SECONDS", 900.0)
SINK_SWEEP_SECONDS = env_int("SINK_SWEEP_SECONDS", 30, minimum=5)
if not (SINK_TIMEOUT > 0 and SINK_RETRY_BASE_SECONDS > 0 and SINK_RETRY_MAX_DELAY_SECONDS >= SINK_RETRY_BASE_SECONDS):
    raise SettingsError("SINK_TIMEOUT and SINK_RETRY_BASE_SECONDS must be above 0, SINK_RETRY_MAX_DELAY_SECONDS "
                        "at least SINK_RETRY_BASE_SECONDS.")
