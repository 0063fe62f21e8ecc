"""A WebSocket agent for the end-to-end tests: python `websockets` through
airlock (CONNECT with proxy credentials, TLS trusting airlock's CA).

    ws_agent.py PROXY_URL CA_FILE WSS_URL STEPS_JSON

STEPS_JSON is a list of [kind, data] pairs, each sent then answered by one
message read back: kind "text" or "binary" sends one message (binary: the
data's UTF-8 bytes); "text_fragments" and "binary_fragments" send a list
as one fragmented message (one frame per item, as websockets does for an
iterable). Prints one JSON list: per step {"text": …} or {"binary": …}
(decoded as UTF-8, replacing what is not), or {"closed": code, "reason": …}
when the socket was closed instead (and the steps stop); a refused
handshake prints [{"status": …, "denied": x-airlock-denied}].
"""

import asyncio
import json
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def run(proxy, ca, url, steps):
    context = ssl.create_default_context(cafile=ca)
    out = []
    try:
        async with connect(url, proxy=proxy, ssl=context, open_timeout=20, close_timeout=10) as ws:
            for kind, data in steps:
                if kind == "text":
                    message = data
                elif kind == "binary":
                    message = data.encode()
                elif kind == "text_fragments":
                    message = list(data)
                elif kind == "binary_fragments":
                    message = [part.encode() for part in data]
                else:
                    raise ValueError(kind)
                try:
                    await ws.send(message)
                    reply = await asyncio.wait_for(ws.recv(), 20)
                except ConnectionClosed as e:
                    close = e.rcvd
                    out.append({"closed": close.code if close else None, "reason": close.reason if close else None})
                    break
                if isinstance(reply, str):
                    out.append({"text": reply})
                else:
                    out.append({"binary": reply.decode("utf-8", "replace")})
    except InvalidStatus as e:
        out.append({"status": e.response.status_code, "denied": e.response.headers.get("x-airlock-denied")})
    return out


def main():
    proxy, ca, url, steps = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    print(json.dumps(asyncio.run(run(proxy, ca, url, steps))))


if __name__ == "__main__":
    main()
