"""The SSRF guard: which addresses a feed fetch may connect to.

A feed URL is typed by any server member, so without a guard the bot could be
pointed at its own host, the cloud metadata service or the local network.
Unless ``ALLOW_PRIVATE_ADDRESSES`` is set, no connection goes to loopback,
private, link-local, multicast or reserved addresses:

* host names are checked by ``GuardedResolver``, installed on the HTTP session,
  i.e. on the very addresses aiohttp is about to connect to (no gap between
  check and use for DNS rebinding to exploit);
* IP-literal hosts, which aiohttp never hands to a resolver, are checked by
  ``check_literal_host`` on every request hop before connecting.

``bot.fetch`` wires both in; nothing here does any HTTP.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from bot.errors import BlockedAddressError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger(__name__)


def literal_ip(host: str) -> IPAddress | None:
    """The address an IP-literal host names, or None for a host name.

    Legacy IPv4 spellings (``127.1``, ``2130706433``, ``0x7f.0.0.1``) count as
    literals too: the C library still maps them onto addresses.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if ":" in host:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def forbidden_kind(ip: IPAddress) -> str | None:
    """Why connecting to ``ip`` is refused, or None when it is a public address.

    IPv6 forms that embed an IPv4 address (mapped, 6to4, Teredo) are judged by
    the embedded address too, so ``::ffff:127.0.0.1`` cannot sneak through.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        for inner in embedded:
            if inner is not None and (kind := forbidden_kind(inner)) is not None:
                return kind
    checks = (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        # Deprecated IPv6 site-local (fec0::/10): still routed inside some networks.
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("reserved", ip.is_reserved),
        # Shared address space (100.64/10), documentation ranges and the like.
        ("non-public", not ip.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


def check_literal_host(url: URL) -> None:
    """Refuse ``url`` if its host is an IP literal in a forbidden range.

    Host names pass: they are judged at connect time by ``GuardedResolver``.
    """
    host = url.raw_host or ""
    ip = literal_ip(host)
    if ip is not None and (kind := forbidden_kind(ip)) is not None:
        # The host is the address: naming its kind tells the moderator nothing new.
        detail = "" if kind == "private" else f" ({kind})"
        raise BlockedAddressError(
            f"The feed host {host} is a private address{detail}; "
            "set ALLOW_PRIVATE_ADDRESSES=true to allow it."
        )


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses host names resolving to forbidden addresses.

    It wraps aiohttp's default resolver and checks *every* address returned, since
    aiohttp may try any of them (happy eyeballs). Names under ``.invalid`` fail
    at once without a DNS query, as RFC 6761 asks, which also lets tests exercise
    DNS failure without traffic leaving the machine.
    """

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and raise ``BlockedAddressError`` if any address is forbidden."""
        name = host.rstrip(".").lower()
        if name == "invalid" or name.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            for result in results:
                # A scoped IPv6 address ("fe80::1%eth0") is link-local whatever the scope.
                ip = ipaddress.ip_address(result["host"].split("%", 1)[0])
                if (kind := forbidden_kind(ip)) is not None:
                    # Any guild's moderator reads the message: it must not turn the bot
                    # into a DNS oracle for the operator's network. The operator gets
                    # the answers in the log.
                    log.debug(
                        "Refused %s: it resolves to %s (%s is %s)",
                        host,
                        ", ".join(r["host"] for r in results),
                        ip,
                        kind,
                    )
                    raise BlockedAddressError(
                        f"The feed host {host} resolves to a private address; "
                        "set ALLOW_PRIVATE_ADDRESSES=true to allow it."
                    )
        return results

    async def close(self) -> None:
        """Release the wrapped resolver."""
        await self._inner.close()
