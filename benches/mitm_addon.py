"""The mitmproxy side of airlock's load harness (benches/src/bin/loadbench.rs).

It does what airlock does on the request path, minus policy, redaction and
audit: swap the agent's placeholder for the real key in the Authorization and
X-Api-Key headers. It also sends the harness's made-up host names to the
local upstream (airlock's `[proxy] resolve` does the same), keeping the host
name as SNI so the upstream's certificate is verified against it.

Run by the harness as `mitmdump -s benches/mitm_addon.py` with:
  AIRLOCK_BENCH_PLACEHOLDER  what the agent sends
  AIRLOCK_BENCH_KEY          the real key
  AIRLOCK_BENCH_UPSTREAM     ip:port every CONNECT is sent to
"""

import os

from mitmproxy import http
from mitmproxy.proxy import server_hooks

PLACEHOLDER = os.environ["AIRLOCK_BENCH_PLACEHOLDER"]
KEY = os.environ["AIRLOCK_BENCH_KEY"]
_ip, _port = os.environ["AIRLOCK_BENCH_UPSTREAM"].rsplit(":", 1)
UPSTREAM = (_ip, int(_port))
HEADERS = ("authorization", "x-api-key")


class Swap:
    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        # The SNI was already set from the CONNECT host; only the address
        # changes, like a hosts-file entry.
        data.server.address = UPSTREAM

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        for name in HEADERS:
            value = flow.request.headers.get(name)
            if value is not None and PLACEHOLDER in value:
                flow.request.headers[name] = value.replace(PLACEHOLDER, KEY)


addons = [Swap()]
