"""The one exception type for bad input: the CLI prints its message as a single line, no traceback."""


class IICError(Exception):
    """A problem with the user's input (data, options, checkpoint) that the user can fix."""
