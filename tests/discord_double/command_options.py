"""Turning a test's ``{"option": value}`` into the typed options Discord would send.

The Discord client validates options before sending an interaction (types, required
options, choices, ranges, channel types), so a bot never sees an invalid one; the builder
raises ``ValueError`` where the client would refuse, instead of sending what cannot happen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .payloads import channel_json, role_json, user_json

if TYPE_CHECKING:
    from .state import World


class OptionBuilder:
    """Turns ``{"option": value}`` into typed options, filling ``resolved`` for channels etc."""

    def __init__(
        self,
        world: World,
        resolved: dict[str, dict[str, Any]],
        permissions: int,
        focused: str | None,
    ) -> None:
        self.world = world
        self.resolved = resolved
        self.permissions = permissions
        self.focused = focused

    def build(
        self, defs: list[dict[str, Any]], path: list[str], values: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if path:
            for d in defs:
                if d["name"] == path[0] and d["type"] in (1, 2):
                    inner = self.build(d.get("options", []), path[1:], values)
                    return [{"type": d["type"], "name": d["name"], "options": inner}]
            raise LookupError(f"no subcommand {path[0]!r}; defined: {[d['name'] for d in defs]}")
        if any(d["type"] in (1, 2) for d in defs):
            raise ValueError("this command has subcommands; name one")
        by_name = {d["name"]: d for d in defs}
        options: list[dict[str, Any]] = []
        for name, value in values.items():
            found = by_name.get(name)
            if found is None:
                raise ValueError(f"option {name!r} is not defined; defined: {sorted(by_name)}")
            d = found
            if name == self.focused:
                options.append(
                    {"type": d["type"], "name": name, "value": str(value), "focused": True}
                )
            else:
                options.append({"type": d["type"], "name": name, "value": self._value(d, value)})
        if self.focused is None:
            missing = [d["name"] for d in defs if d.get("required") and d["name"] not in values]
            if missing:
                raise ValueError(f"required options missing: {missing}")
        elif self.focused not in values:
            raise ValueError(f"focused option {self.focused!r} needs a value (the typed text)")
        return options

    def _value(self, d: dict[str, Any], value: Any) -> Any:
        kind = d["type"]
        if kind == 3:
            result: Any = str(value)
            if not d.get("min_length", 0) <= len(result) <= d.get("max_length", 6000):
                raise ValueError(f"{d['name']}: length outside the option's limits")
        elif kind in (4, 10):
            result = int(value) if kind == 4 else float(value)
            if ("min_value" in d and result < d["min_value"]) or (
                "max_value" in d and result > d["max_value"]
            ):
                raise ValueError(f"{d['name']}: {result} outside the option's range")
        elif kind == 5:
            result = bool(value)
        elif kind == 7:
            channel = self.world.channel(int(value))
            types = d.get("channel_types")
            if types and channel.type not in types:
                raise ValueError(f"{d['name']}: channel type {channel.type} not in {types}")
            self.resolved.setdefault("channels", {})[str(channel.id)] = channel_json(channel) | {
                "permissions": str(self.permissions)
            }
            result = str(channel.id)
        elif kind == 6:
            user = self.world.users[int(value)]
            self.resolved.setdefault("users", {})[str(user.id)] = user_json(user)
            result = str(user.id)
        elif kind == 8:
            role = next(
                g.roles[int(value)] for g in self.world.guilds.values() if int(value) in g.roles
            )
            self.resolved.setdefault("roles", {})[str(role.id)] = role_json(role)
            result = str(role.id)
        else:
            raise NotImplementedError(f"option type {kind} is not supported by the double")
        choices = d.get("choices")
        if choices and result not in [c["value"] for c in choices]:
            raise ValueError(f"{d['name']}: {result!r} is not one of the declared choices")
        return result
