"""Subscriptions are data: each app lists (event type -> handler, queue) in its own
`subscriptions.py` as SUBSCRIPTIONS, and this registry collects them from the installed apps.

A new consumer is a new subscription; producers never change for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from django.apps import apps
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class Subscription:
    event_type: str
    handler: str  # dotted path to a callable taking a CloudEvent
    queue: str

    def resolve(self) -> Callable:
        return import_string(self.handler)


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


def subscriptions_for(event_type: str) -> list[Subscription]:
    return [s for s in subscriptions_all() if s.event_type == event_type]


SUBSCRIPTIONS: list[Subscription] = []
