"""Error kinds shared by every layer; free of Django so engine modules can import them alone."""


class TransientError(Exception):
    """A failure worth retrying: a service was down, a lock was held, a timeout."""
