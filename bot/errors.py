"""Domain exceptions. Each carries a message a moderator can act on.

Feed errors are split into transient ones (worth retrying soon: timeouts, 5xx,
429) and permanent ones (the URL is wrong or is not a feed). Both are recorded
on the subscription and shown by ``/blog status``; both back off, but only a
transient error honours ``Retry-After``.
"""

from __future__ import annotations


class BlogMirrorError(Exception):
    """Base for expected failures; ``str(exc)`` is safe to show to a user."""

    #: The process's exit status when this error stops ``python -m bot``.
    exit_status = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class AnotherInstanceError(BlogMirrorError):
    """Another blogmirror process holds the database; two would race each other's deliveries."""

    exit_status = 2


class CannotStartError(BlogMirrorError):
    """Starting again as is would fail the same way: the operator must fix something first
    (the token, the database file). Exit status 2, so a service manager need not retry."""

    exit_status = 2


class FeedError(BlogMirrorError):
    """Fetching or reading a feed failed."""

    transient = False

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class TransientFeedError(FeedError):
    """Worth retrying: timeouts, connection failures, 5xx, 429."""

    transient = True


class PermanentFeedError(FeedError):
    """Retrying soon will not help: 404/410, not a feed, blocked address, bad URL."""


class InvalidFeedURLError(PermanentFeedError):
    """The URL is not an http(s) URL we may fetch."""


class BlockedAddressError(PermanentFeedError):
    """The URL resolves to a loopback, private, link-local or multicast address."""


class FeedTooLargeError(PermanentFeedError):
    """The body is over ``MAX_FEED_BYTES``."""


class NotAFeedError(PermanentFeedError):
    """The body is an HTML page, plain text or empty, not an Atom/RSS feed."""


class FeedParseError(TransientFeedError):
    """The body looked like a feed but is malformed or truncated.

    Transient: a truncated body is usually a connection cut short or a blog in
    the middle of publishing. Nothing from a body that fails this way is used.
    """
