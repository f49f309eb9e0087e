"""The base class of errors caused by user input; the CLI prints their message without a traceback."""


class TunescopeError(Exception):
    """An error whose message names the problem and the fix."""
