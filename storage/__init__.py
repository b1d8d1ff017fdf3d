"""All SQL lives here: schema migrations, typed records, one repository per table family."""

from storage.articles import ArticleRepo, CommentRepo
from storage.db import Database, DatabaseCorruptError, open_database
from storage.lock import DatabaseInUseError, DatabaseLock
from storage.migrations import SCHEMA_VERSION, DatabaseTooNewError
from storage.outbox import Outbox
from storage.subscriptions import (
    DuplicateSubscriptionError,
    SubscriptionGoneError,
    SubscriptionRepo,
)

__all__ = [
    "SCHEMA_VERSION",
    "ArticleRepo",
    "CommentRepo",
    "Database",
    "DatabaseCorruptError",
    "DatabaseInUseError",
    "DatabaseLock",
    "DatabaseTooNewError",
    "DuplicateSubscriptionError",
    "Outbox",
    "SubscriptionGoneError",
    "SubscriptionRepo",
    "open_database",
]
