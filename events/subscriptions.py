"""Subscriptions are data: each app lists (event type -> handler, queue) in its own
`subscriptions.py` as SUBSCRIPTIONS, and this registry collects them from the installed apps.

A new consumer is a new subscription; producers never change for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.apps import apps
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class Subscription:
    event_type: str
    handler: str  # dotted path to a callable taking a CloudEvent
    queue: str
    # Exact values the event's data must hold for a delivery (all of them); empty: every event.
    # A filter, as in the CloudEvents Subscriptions API: an event the handler would ignore costs
    # no task.
    when: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # A dotted path to `gate(event_type) -> bool`, asked when an event is routed: for a subscriber
    # whose choice of events is data of its own (the sinks' chosen types, with event_type "*":
    # every type), so the events nobody chose cost no task.
    gate: str = ""

    def resolve(self) -> Callable:
        return import_string(self.handler)

    def admits(self, event_type: str) -> bool:
        return not self.gate or bool(import_string(self.gate)(event_type))

    def wants(self, data: Mapping[str, Any] | None) -> bool:
        data = data or {}
        return all(key in data and data[key] == value for key, value in self.when.items())


@cache
def subscriptions_all() -> tuple[Subscription, ...]:
    found: list[Subscription] = []
    for config in apps.get_app_configs():
        try:
            module = importlib.import_module(f"{config.name}.subscriptions")
        except ModuleNotFoundError as error:
            if error.name != f"{config.name}.subscriptions":
                raise
            continue
        found.extend(getattr(module, "SUBSCRIPTIONS", ()))
    return tuple(found)


WILDCARD = "*"


def subscriptions_for(event_type: str, data: Mapping[str, Any] | None = None) -> list[Subscription]:
    """The subscriptions of `event_type` (those of "*", every type, after the others); with
    `data`, only those whose filter it passes. Gates are asked by the router, not here."""
    matching = [s for s in subscriptions_all() if s.event_type == event_type] + [
        s for s in subscriptions_all() if s.event_type == WILDCARD]
    return [s for s in matching if data is None or s.wants(data)]


def subscription_of(handler: str) -> Subscription | None:
    """The subscription whose handler is the dotted path `handler` (deliveries name it)."""
    return next((s for s in subscriptions_all() if s.handler == handler), None)


SUBSCRIPTIONS: list[Subscription] = [
    # Pushed CloudEvents (events/intake/): once recorded, their changes are made in order.
    Subscription("freshet.events.received", "events.intake.apply.received_apply", queue="sync"),
    # Event sinks (events/sinks/): every type some enabled sink chose goes out, nothing else.
    Subscription(WILDCARD, "events.sinks.handlers.event_to_sinks", queue="sinks",
                 gate="events.sinks.selectors.sinks_want"),
]
