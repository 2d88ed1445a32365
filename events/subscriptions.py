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

    def resolve(self) -> Callable:
        return import_string(self.handler)

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


def subscriptions_for(event_type: str, data: Mapping[str, Any] | None = None) -> list[Subscription]:
    """The subscriptions of `event_type`; with `data`, only those whose filter it passes."""
    return [s for s in subscriptions_all()
            if s.event_type == event_type and (data is None or s.wants(data))]


def subscription_of(handler: str) -> Subscription | None:
    """The subscription whose handler is the dotted path `handler` (deliveries name it)."""
    return next((s for s in subscriptions_all() if s.handler == handler), None)


SUBSCRIPTIONS: list[Subscription] = []
