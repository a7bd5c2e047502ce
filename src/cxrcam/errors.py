"""The one exception type a user is meant to read: entry points print it as a single line."""


class CxrcamError(Exception):
    """A problem with the user's data, configuration or files, with what to do about it."""
