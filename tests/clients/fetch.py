"""One request by a real Python client, for the conformance suite.

Reads a JSON spec from the file named by the environment variable FETCH_SPEC_FILE:
  {"client": "requests"|"httpx", "method", "url", "headers": [[n, v]...],
   "body_b64": str|null, "ca": path, "proxy": url|null, "resolve": {host: ip}}
and prints one JSON line: {"status", "headers": [[n, v]...], "body_b64"}
or {"error": text}. With no proxy, the names in "resolve" are mapped to
their address inside this process (as curl's --resolve does).
"""
import base64
import json
import os
import socket
import sys

with open(os.environ["FETCH_SPEC_FILE"]) as f:
    spec = json.load(f)
resolve = spec.get("resolve") or {}
if resolve and not spec.get("proxy"):
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real(resolve.get(host, host), *args, **kwargs)

    socket.getaddrinfo = getaddrinfo

body = base64.b64decode(spec["body_b64"]) if spec.get("body_b64") is not None else None
headers = [tuple(h) for h in spec.get("headers", [])]
try:
    if spec["client"] == "requests":
        import requests

        proxies = {"https": spec["proxy"], "http": spec["proxy"]} if spec.get("proxy") else {"https": None, "http": None}
        with requests.Session() as s:
            s.trust_env = False
            r = s.request(spec["method"], spec["url"], headers=dict(headers), data=body, verify=spec["ca"],
                          proxies=proxies, timeout=30, allow_redirects=False)
            out = {"status": r.status_code, "headers": [[k, v] for k, v in r.raw.headers.items()],
                   "body_b64": base64.b64encode(r.content).decode()}
    else:
        import httpx

        with httpx.Client(proxy=spec.get("proxy"), verify=spec["ca"], trust_env=False, timeout=30) as c:
            r = c.request(spec["method"], spec["url"], headers=headers, content=body)
            out = {"status": r.status_code, "headers": [[k, v] for k, v in r.headers.multi_items()],
                   "body_b64": base64.b64encode(r.content).decode()}
except Exception as e:  # the harness reports it with the case
    out = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(out))
sys.stdout.flush()
