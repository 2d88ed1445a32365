"""The Elasticsearch engine's side of the interface's error contract (see SearchIndex): what is
worth retrying becomes TransientError, what is not raises as it is (an ApiError, or BulkItemError
naming the refused items of a bulk write)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, NotFoundError

from events.errors import TransientError

P = ParamSpec("P")
T = TypeVar("T")

# Busy or briefly unavailable: worth retrying later. The same statuses as the client's own
# retries (elastic_transport's default retry_on_status); anything else, 400 above all, and 500
# as well, is permanent.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})


class BulkItemError(Exception):
    """Elasticsearch refused items of a write for a reason that retrying will not fix."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        shown = "; ".join(f"{item}: {reason}" for item, reason in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"Elasticsearch refused {len(failures)} item(s): {shown}{more}")


def error_reason(error: Any) -> str:
    """An item's or a response's error, with its causes, as one line."""
    if not isinstance(error, dict):
        return str(error)
    reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    return f"{reason} (caused by {error_reason(cause)})" if cause else reason


def index_missing(error: NotFoundError) -> bool:
    return error.error == "index_not_found_exception"


def classified(method: Callable[P, T]) -> Callable[P, T]:
    """Turn the failures worth retrying into TransientError; let the rest (a 400) raise as they are."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except (TransportConnectionError, ConnectionTimeout) as error:
            raise TransientError(f"Elasticsearch unreachable: {error}") from error
        except ApiError as error:
            if error.meta.status in TRANSIENT_STATUSES:
                raise TransientError(f"Elasticsearch busy or unavailable: {error}") from error
            raise

    return wrapper


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one item of a bulk or by-query request."""

    id: str
    status: int
    error: Any = None


def items_check(results: Iterable[ItemResult], *, skip: Iterable[int] = (),
                transient: Iterable[int] = ()) -> list[str]:
    """Raise for failed items (TransientError if each is worth retrying, else BulkItemError);
    return the ids of those that failed with a status in `skip`."""
    skip, transient = set(skip), set(transient) | TRANSIENT_STATUSES
    skipped: list[str] = []
    busy: list[str] = []
    refused: list[tuple[str, str]] = []
    for result in results:
        if result.status < 300:
            continue
        if result.status in skip:
            skipped.append(result.id)
        elif result.status in transient:
            busy.append(f"{result.id}: {result.status} {error_reason(result.error)}")
        else:
            refused.append((result.id, f"{result.status} {error_reason(result.error)}"))
    if refused:
        raise BulkItemError(refused)
    if busy:
        raise TransientError(f"Elasticsearch could not write {len(busy)} item(s) now: {busy[0]}")
    return skipped
