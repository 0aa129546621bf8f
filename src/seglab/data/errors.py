"""The one error type of the data layer."""


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message names the file and how to fix it."""
