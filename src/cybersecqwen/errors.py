"""The one error type for mistakes a user can make (bad path, bad file, unknown name).

The CLI prints it as one line and exits 2; anything else is a bug and keeps its traceback.
"""


class CybersecqwenError(Exception):
    """A user-caused problem; the message names the offending input and how to fix it."""


class LimitExceeded(CybersecqwenError):
    """An input over one of the server's work bounds (the message names the bound): HTTP 413."""

    status = 413


class UpstreamError(CybersecqwenError):
    """The OpenAI-compatible upstream failed or answered something unusable (the message names it): HTTP 502, or 504
    when it timed out. Never scored as an answer."""

    status = 502


class UpstreamTimeout(UpstreamError):
    status = 504
