"""The one error type of the data layer."""

from seglab.errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset that cannot be used as it is; the message names the file and how to fix it."""
