"""Discord's size and shape limits, enforced so a bot that breaks them fails in tests.

These are the limits a feed mirror runs into: 2000-character content, embed field and
total limits, embed URLs that must be absolute http(s), thread names up to 100 characters,
autocomplete choices (at most 25, values up to 100 characters) and command definitions.
Each violation is the 400 / 50035 "Invalid Form Body" Discord sends, naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from . import errors

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_NONCE = 25
MAX_THREAD_NAME = 100
MAX_CHOICES = 25
MAX_CHOICE_TEXT = 100

_EMBED_TEXT_LIMITS = {"title": 256, "description": 4096}
_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")


def _too_long(path: str, limit: int) -> errors.ApiError:
    return errors.invalid_form(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def _required(path: str) -> errors.ApiError:
    return errors.invalid_form(path, "BASE_TYPE_REQUIRED", "This field is required")


def _check_url(path: str, value: Any, *, allow_attachment: bool = False) -> None:
    schemes = (
        ("http://", "https://", "attachment://") if allow_attachment else ("http://", "https://")
    )
    if not isinstance(value, str) or not value.startswith(schemes) or len(value) > 2048:
        raise errors.invalid_form(path, "URL_TYPE_INVALID_URL", "Not a well formed URL.")


def validate_embeds(embeds: Any) -> list[dict[str, Any]]:
    if not isinstance(embeds, list):
        raise errors.invalid_form("embeds", "LIST_TYPE_CONVERT", "Must be an array.")
    if len(embeds) > MAX_EMBEDS:
        raise _too_long("embeds", MAX_EMBEDS)
    total = 0
    for i, embed in enumerate(embeds):
        base = f"embeds.{i}"
        for key, limit in _EMBED_TEXT_LIMITS.items():
            text = embed.get(key) or ""
            if len(text) > limit:
                raise _too_long(f"{base}.{key}", limit)
            total += len(text)
        if "url" in embed:
            _check_url(f"{base}.url", embed["url"])
        for key in ("image", "thumbnail"):
            if key in embed:
                _check_url(f"{base}.{key}.url", embed[key].get("url"), allow_attachment=True)
        author = embed.get("author")
        if author:
            if not author.get("name"):
                raise _required(f"{base}.author.name")
            if len(author["name"]) > 256:
                raise _too_long(f"{base}.author.name", 256)
            total += len(author["name"])
            for key in ("url", "icon_url"):
                if key in author:
                    _check_url(f"{base}.author.{key}", author[key], allow_attachment=True)
        footer = embed.get("footer")
        if footer:
            if len(footer.get("text", "")) > 2048:
                raise _too_long(f"{base}.footer.text", 2048)
            total += len(footer.get("text", ""))
        fields = embed.get("fields", [])
        if len(fields) > 25:
            raise _too_long(f"{base}.fields", 25)
        for j, field in enumerate(fields):
            for key, limit in (("name", 256), ("value", 1024)):
                text = field.get(key)
                if not text:
                    raise _required(f"{base}.fields.{j}.{key}")
                if len(text) > limit:
                    raise _too_long(f"{base}.fields.{j}.{key}", limit)
                total += len(text)
    if total > MAX_EMBED_TOTAL:
        raise errors.invalid_form(
            "embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
        )
    return embeds


def validate_message(body: dict[str, Any], *, creating: bool = True) -> None:
    """Content, embeds and nonce limits; an empty create is 50006 like Discord."""
    content = body.get("content")
    if content is not None:
        if not isinstance(content, str):
            raise errors.invalid_form("content", "BASE_TYPE_STRING", "Must be a string.")
        if len(content) > MAX_CONTENT:
            raise _too_long("content", MAX_CONTENT)
    if body.get("embeds") is not None:
        validate_embeds(body["embeds"])
    nonce = body.get("nonce")
    if nonce is not None and len(str(nonce)) > MAX_NONCE:
        raise _too_long("nonce", MAX_NONCE)
    if creating and not (
        (content or "").strip()
        or body.get("embeds")
        or body.get("attachments")
        or body.get("components")
        or body.get("sticker_ids")
        or body.get("poll")
    ):
        raise errors.empty_message()


def validate_thread_name(name: Any, path: str = "name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise _required(path)
    if len(name) > MAX_THREAD_NAME:
        raise _too_long(path, MAX_THREAD_NAME)
    return name


def validate_choices(choices: Any) -> list[dict[str, Any]]:
    """An autocomplete result: at most 25 choices, names and string values 1-100 characters."""
    if not isinstance(choices, list):
        raise errors.invalid_form("data.choices", "LIST_TYPE_CONVERT", "Must be an array.")
    if len(choices) > MAX_CHOICES:
        raise _too_long("data.choices", MAX_CHOICES)
    for i, choice in enumerate(choices):
        name, value = choice.get("name"), choice.get("value")
        if not name:
            raise _required(f"data.choices.{i}.name")
        if len(name) > MAX_CHOICE_TEXT:
            raise _too_long(f"data.choices.{i}.name", MAX_CHOICE_TEXT)
        if isinstance(value, str) and len(value) > MAX_CHOICE_TEXT:
            raise _too_long(f"data.choices.{i}.value", MAX_CHOICE_TEXT)
    return choices


def _validate_options(options: list[dict[str, Any]], path: str) -> int:
    if len(options) > 25:
        raise _too_long(path, 25)
    seen_optional = False
    size = 0
    for i, option in enumerate(options):
        where = f"{path}.{i}"
        size += _validate_named(option, where)
        if option.get("type") in (1, 2):
            size += _validate_options(option.get("options", []), f"{where}.options")
            continue
        if option.get("required"):
            if seen_optional:
                raise errors.invalid_form(
                    f"{where}.required",
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        choices = option.get("choices", [])
        if len(choices) > MAX_CHOICES:
            raise _too_long(f"{where}.choices", MAX_CHOICES)
        for choice in choices:
            size += len(choice["name"]) + len(str(choice["value"]))
    return size


def _validate_named(item: dict[str, Any], path: str) -> int:
    name = item.get("name", "")
    if not _COMMAND_NAME.match(name) or name != name.lower():
        raise errors.invalid_form(
            f"{path}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
        )
    description = item.get("description", "")
    if not 1 <= len(description) <= 100:
        raise errors.invalid_form(
            f"{path}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
        )
    return len(name) + len(description)


def validate_commands(commands: Any) -> None:
    """Names, descriptions, option order and the 4000-character total per command."""
    if not isinstance(commands, list):
        raise errors.invalid_form("_root", "LIST_TYPE_CONVERT", "Must be an array.")
    for i, command in enumerate(commands):
        if command.get("type", 1) != 1:
            continue
        size = _validate_named(command, str(i))
        size += _validate_options(command.get("options", []), f"{i}.options")
        if size > 4000:
            raise errors.invalid_form(
                str(i), "APPLICATION_COMMAND_TOO_LARGE", "Command exceeds maximum size (4000)"
            )
