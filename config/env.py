"""One reader for environment variables: a malformed value stops start-up with its name."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ImproperlyConfigured):
    """The environment gives a setting that is missing or malformed. An operator's mistake, not a
    bug: the message names the variable and what to set, so manage.py prints it without a traceback."""


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise SettingsError(f"Environment variable {name} is required.")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingsError(f"{name}={value!r} is not a boolean (use 1/0, true/false).")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise SettingsError(f"{name}={number} must be at least {minimum}.")
    return number


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a number.") from None


def env_float_pair(name: str, default: tuple[float, float]) -> tuple[float, float]:
    """Two numbers written "a,b" (such as soft,hard time limits)."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        first, second = (float(part) for part in value.split(","))
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not two numbers separated by a comma.") from None
    return first, second


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_secret(name: str, *, file: Path) -> str:
    """A secret from the variable `name` when set and not empty, else the contents of `file` (written
    once, as `make run` writes the secret key, so that every process finds it without the
    variable), else ''."""
    value = os.environ.get(name)
    if value:
        return value
    try:
        return file.read_text().strip()
    except FileNotFoundError:
        return ""
    except OSError as error:
        raise SettingsError(f"{file} cannot be read ({error.strerror}): fix it, or set {name}.") from None
