"""The application's error and the REST API's exception handler: every error is JSON with a
`detail` a person can act on.

Services refuse with `ApplicationError` (or a subclass naming its status); views do not catch
it, this handler answers it. DRF already answers its own exceptions with `{"detail": ...}`,
except validation errors (a map of field -> messages) and Django's request-size guards (which it
leaves to Django's HTML 400). This handler turns those into the same shape: `detail` is one
readable sentence (`error_message`), and for validation errors `errors` keeps the per-field
messages for programs.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

AUTHENTICATE_HINT = (
    "Authentication credentials were not provided. Send the header 'Authorization: Token <key>' "
    "(an administrator creates a key with 'python manage.py drf_create_token <username>'), or sign in."
)


class ApplicationError(Exception):
    """A request refused, or failed, for a reason a person can act on: `message` says what to do,
    `status` is the HTTP status it answers with (a subclass sets its own, or pass `status=`).
    The API's exception handler answers `{"detail": message}`; the chat socket sends the message
    in an error frame."""

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        exc = _api_exception(exc)
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge("The form fields are too large; send the content as a file.")
    elif isinstance(exc, TooManyFilesSent):
        exc = exceptions.ParseError("Too many files in one request; send fewer at a time.")
    elif isinstance(exc, TooManyFieldsSent):
        exc = exceptions.ParseError("Too many form fields in one request.")
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError("The request is malformed.")
    elif isinstance(exc, exceptions.NotAuthenticated) and exc.detail == exceptions.NotAuthenticated.default_detail:
        exc.detail = exceptions.ErrorDetail(AUTHENTICATE_HINT, code=exc.detail.code)

    response = exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, dict) and set(data) == {"detail"}:
        return response
    if isinstance(data, list):
        response.data = {"detail": error_message(data)}
    elif isinstance(data, dict):
        response.data = {"detail": "Invalid input. " + error_message(data), "errors": data}
    return response


def _api_exception(error: ApplicationError) -> exceptions.APIException:
    translated = exceptions.APIException(error.message)
    translated.status_code = error.status
    return translated


def error_message(detail: Any) -> str:
    """One readable text from validation errors (an exception's `.detail`, `serializer.errors`):
    a list's messages in order; a map's as "field: messages" for each field, the field left
    unnamed for errors of the whole input (non_field_errors)."""
    if isinstance(detail, dict):
        return " ".join(" ".join(_messages(messages)) if field == "non_field_errors"
                        else f"{field}: {' '.join(_messages(messages))}" for field, messages in detail.items())
    return " ".join(_messages(detail))


def _messages(value: Any) -> list[str]:
    """Flatten DRF's nested error lists/maps into plain sentences."""
    if isinstance(value, dict):
        return [f"{key}: {message}" for key, inner in value.items() for message in _messages(inner)]
    if isinstance(value, list | tuple):
        return [message for item in value for message in _messages(item)]
    return [str(value)]


def api_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: a URL under /api/ that matches no endpoint (a malformed id included) answers
    JSON like every other API error; other paths get Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"No API endpoint at {request.path}; the endpoints are listed at /api/docs/."},
                            status=404)
    return page_not_found(request, exception)
