"""The container's HEALTHCHECK: is the bot's own HTTP server answering ``/healthz``?

Only the standard library (the slim image has no curl). With ``WEB_PORT`` unset the bot
runs no server, so there is nothing to probe and the check passes. It asks 127.0.0.1,
inside the container, so ``WEB_HOST`` must be 127.0.0.1 (the default) or 0.0.0.0.
Exit status 0 is healthy; anything else, with one line saying why, is not.
"""

import os
import sys
import urllib.request

TIMEOUT_SECONDS = 4


def main() -> int:
    port = os.environ.get("WEB_PORT", "").strip()
    if not port:
        return 0
    url = f"http://127.0.0.1:{port}/healthz"
    # No proxy, whatever HTTP_PROXY says: the server is in this container.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS):
            return 0  # urlopen raises on any status >= 400
    except Exception as exc:  # refused, timeout, 503: all mean unhealthy
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
