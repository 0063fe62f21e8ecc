"""A real gRPC server and client (grpcio, raw bytes, no generated code) for
airlock's end-to-end tests (tests/tests/e2e/grpc.rs).

    grpc_peer.py server --cert CERT --key KEY [--compression gzip]
        serves the service below on 127.0.0.1:0 over TLS, prints its port,
        and runs until its standard input closes.

    grpc_peer.py client --target HOST:PORT [--root CA] [--name-override NAME]
                        [--auth VALUE] [--compression gzip] SCENARIO...
        runs each scenario on one channel and prints one JSON line per
        scenario: {"scenario": ..., ...what the client saw}. A proxy comes
        from the environment (https_proxy / grpc_proxy), as for any grpcio
        client.

Every answer reports what the server received in a form the redactor
leaves alone (a SHA-256 of the authorization metadata), so a test can tell
that the upstream saw the real key while the client only sees the
placeholder. The `leak` method hands the authorization value it received
straight back: in the message, in initial and trailing metadata, as text
and as `-bin`.
"""

import argparse
import hashlib
import json
import queue
import sys
import time
from concurrent import futures

import grpc

SERVICE = "/airlock.test.Echo/"
LARGE = 3 * 1024 * 1024


def auth_of(context):
    for key, value in context.invocation_metadata():
        if key == "authorization":
            return value
    return ""


def seen(context, payload=b""):
    """What the server received, without quoting the authorization value."""
    meta = {}
    for key, value in context.invocation_metadata():
        if key.startswith("x-client-"):
            meta[key] = value.hex() if isinstance(value, bytes) else value
    return {
        "auth_sha256": hashlib.sha256(auth_of(context).encode()).hexdigest(),
        "meta": meta,
        "payload": payload.decode("latin-1"),
    }


def encode(obj):
    return json.dumps(obj, sort_keys=True).encode()


# === the server ===


def unary(request, context):
    context.send_initial_metadata([("x-server-initial", "i1"), ("x-server-initial-bin", b"\x00\xfe\x01")])
    context.set_trailing_metadata([("x-server-trailing", "t1"), ("x-server-trailing-bin", b"\xff\x00\x02")])
    return encode(seen(context, request))


def server_stream(request, context):
    count = int(request.decode())
    for i in range(count):
        yield encode({"i": i, "text": "message %d" % i})
    if request.endswith(b"!"):
        return
    context.set_trailing_metadata([("x-stream-end", str(count))])


def server_stream_then_fail(request, context):
    yield b"first"
    yield b"second"
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota gone after two messages")


def client_stream(request_iterator, context):
    parts = [r.decode() for r in request_iterator]
    return encode({"count": len(parts), "joined": "|".join(parts), "auth_sha256": seen(context)["auth_sha256"]})


def bidi(request_iterator, context):
    for r in request_iterator:
        yield b"echo:" + r


def fail(request, context):
    context.set_trailing_metadata([("x-error-detail", "thing 42"), ("x-error-detail-bin", b"\x08\x2a")])
    context.abort(grpc.StatusCode.NOT_FOUND, "thing 42 was not found")


def large(request, context):
    digest = hashlib.sha256(request).hexdigest()
    return digest.encode() + b"\n" + bytes((i * 7) % 251 for i in range(LARGE))


def slow(request, context):
    # Waits for the client's deadline (or ten minutes at most).
    deadline = time.monotonic() + 600
    while context.is_active() and time.monotonic() < deadline:
        time.sleep(0.05)
    return b"too late"


def sleepy(request, context):
    time.sleep(float(request.decode()))
    return b"slept"


def slow_stream(request, context):
    yield b"before"
    time.sleep(float(request.decode()))
    yield b"after"


def leak(request, context):
    auth = auth_of(context)
    context.send_initial_metadata([("x-leak-initial", auth), ("x-leak-initial-bin", auth.encode())])
    context.set_trailing_metadata([("x-leak", auth), ("x-leak-bin", auth.encode())])
    # The value at the start of a protobuf-like field (tag, length, value),
    # so a change of its length would show.
    raw = auth.encode()
    return b"\x0a" + bytes([len(raw)]) + raw + b"\x12\x03end" + b" " + encode(seen(context))


def handlers():
    u = grpc.unary_unary_rpc_method_handler
    us = grpc.unary_stream_rpc_method_handler
    su = grpc.stream_unary_rpc_method_handler
    ss = grpc.stream_stream_rpc_method_handler
    methods = {
        "Unary": u(unary),
        "ServerStream": us(server_stream),
        "ServerStreamThenFail": us(server_stream_then_fail),
        "ClientStream": su(client_stream),
        "Bidi": ss(bidi),
        "Fail": u(fail),
        "Large": u(large),
        "Slow": u(slow),
        "Sleepy": u(sleepy),
        "SlowStream": us(slow_stream),
        "Leak": u(leak),
    }
    return grpc.method_handlers_generic_handler("airlock.test.Echo", methods)


def serve(args):
    with open(args.cert, "rb") as f:
        cert = f.read()
    with open(args.key, "rb") as f:
        key = f.read()
    compression = grpc.Compression.Gzip if args.compression == "gzip" else None
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        handlers=[handlers()],
        compression=compression,
        options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)],
    )
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    print(port, flush=True)
    # Until the test closes our stdin (or goes away).
    sys.stdin.read()
    server.stop(0)


# === the client ===


def status_of(err):
    return {
        "code": err.code().name,
        "details": err.details(),
        "trailing": metadata(err.trailing_metadata()),
    }


def metadata(md):
    out = {}
    for key, value in md or ():
        if key.startswith("x-") and not key.startswith("x-airlock-request-id"):
            out[key] = value.hex() if isinstance(value, bytes) else value
    return out


def call_metadata(args, extra=()):
    md = [("x-client-meta", "v1"), ("x-client-meta-bin", b"\x00\x01\xff")]
    if args.auth is not None:
        md.append(("authorization", args.auth))
    return md + list(extra)


def scenario(name, channel, args):
    md = call_metadata(args)
    timeout = 60
    comp = grpc.Compression.Gzip if args.compression == "gzip" else None

    def uu(method):
        return channel.unary_unary(SERVICE + method)

    if name == "unary":
        body, call = uu("Unary").with_call(b"hello", metadata=md, timeout=timeout, compression=comp)
        return {
            "code": call.code().name,
            "body": json.loads(body),
            "initial": metadata(call.initial_metadata()),
            "trailing": metadata(call.trailing_metadata()),
        }
    if name == "server_stream":
        call = channel.unary_stream(SERVICE + "ServerStream")(b"7", metadata=md, timeout=timeout)
        messages = [json.loads(m) for m in call]
        return {"code": call.code().name, "messages": messages, "trailing": metadata(call.trailing_metadata())}
    if name == "server_stream_fail":
        call = channel.unary_stream(SERVICE + "ServerStreamThenFail")(b"", metadata=md, timeout=timeout)
        got = []
        try:
            for m in call:
                got.append(m.decode())
        except grpc.RpcError as e:
            return {"messages": got, **status_of(e)}
        return {"messages": got, "code": "OK"}
    if name == "client_stream":
        parts = (("part-%d" % i).encode() for i in range(6))
        body, call = channel.stream_unary(SERVICE + "ClientStream").with_call(parts, metadata=md, timeout=timeout)
        return {"code": call.code().name, "body": json.loads(body)}
    if name == "bidi":
        # Interleaved: each message is sent only once the answer to the
        # previous one has arrived, so nothing may sit in a buffer.
        outbox = queue.Queue()

        def requests():
            while True:
                item = outbox.get()
                if item is None:
                    return
                yield item

        call = channel.stream_stream(SERVICE + "Bidi")(requests(), metadata=md, timeout=timeout)
        answers = []
        for i in range(8):
            outbox.put(("ping %d" % i).encode())
            answers.append(next(call).decode())
        outbox.put(None)
        rest = [m.decode() for m in call]
        return {"code": call.code().name, "answers": answers, "rest": rest}
    if name == "error":
        try:
            uu("Fail")(b"", metadata=md, timeout=timeout)
        except grpc.RpcError as e:
            return status_of(e)
        return {"code": "OK"}
    if name == "large":
        payload = bytes((i * 13) % 256 for i in range(LARGE))
        body = uu("Large")(payload, metadata=md, timeout=120)
        digest, _, rest = body.partition(b"\n")
        return {
            "request_sha256_seen": digest.decode(),
            "request_sha256": hashlib.sha256(payload).hexdigest(),
            "response_len": len(rest),
            "response_sha256": hashlib.sha256(rest).hexdigest(),
        }
    if name == "deadline":
        try:
            uu("Slow")(b"", metadata=md, timeout=1.5)
        except grpc.RpcError as e:
            return {"code": e.code().name}
        return {"code": "OK"}
    if name == "concurrent":
        calls = [uu("Unary").future(("c%d" % i).encode(), metadata=md, timeout=120) for i in range(64)]
        payloads = sorted(json.loads(c.result())["payload"] for c in calls)
        return {"count": len(payloads), "payloads": payloads}
    if name == "leak":
        body, call = uu("Leak").with_call(b"", metadata=md, timeout=timeout, compression=comp)
        return {
            "code": call.code().name,
            "body": body.decode("latin-1"),
            "initial": metadata(call.initial_metadata()),
            "trailing": metadata(call.trailing_metadata()),
        }
    if name.startswith("sleepy:"):
        # A unary call whose answer comes only after this many seconds.
        body = uu("Sleepy")(name.split(":", 1)[1].encode(), metadata=md, timeout=timeout)
        return {"body": body.decode()}
    if name.startswith("slow_stream:"):
        # A server stream quiet for this many seconds between its messages.
        call = channel.unary_stream(SERVICE + "SlowStream")(name.split(":", 1)[1].encode(), metadata=md, timeout=timeout)
        return {"messages": [m.decode() for m in call]}
    if name.startswith("method:"):
        # One unary call to the named method, the outcome whatever it is.
        try:
            body, call = uu(name.split(":", 1)[1]).with_call(b"", metadata=md, timeout=timeout)
            return {"code": call.code().name, "body": body.decode("latin-1")}
        except grpc.RpcError as e:
            return status_of(e)
    if name.startswith("no_deadline:"):
        # A unary call to a method with an argument, with no deadline.
        _, method, arg = name.split(":", 2)
        try:
            return {"code": "OK", "body": uu(method)(arg.encode(), metadata=md).decode()}
        except grpc.RpcError as e:
            return status_of(e)
    if name == "plain":
        # One unary call, the outcome whatever it is.
        try:
            body, call = uu("Unary").with_call(b"plain", metadata=md, timeout=timeout)
            return {"code": call.code().name, "body": json.loads(body)}
        except grpc.RpcError as e:
            return status_of(e)
    raise SystemExit("unknown scenario " + name)


def client(args):
    # No --root: grpcio's default roots (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH,
    # else its bundled ones), as a client that trusts its environment.
    root = None
    if args.root:
        with open(args.root, "rb") as f:
            root = f.read()
    options = [("grpc.max_receive_message_length", 8 * 1024 * 1024), ("grpc.max_send_message_length", 8 * 1024 * 1024)]
    if args.name_override:
        options.append(("grpc.ssl_target_name_override", args.name_override))
    creds = grpc.ssl_channel_credentials(root_certificates=root)
    comp = grpc.Compression.Gzip if args.compression == "gzip" else None
    with grpc.secure_channel(args.target, creds, options=options, compression=comp) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        for name in args.scenarios:
            try:
                result = scenario(name, channel, args)
            except grpc.RpcError as e:
                result = {"unexpected": True, **status_of(e)}
            print(json.dumps({"scenario": name, **result}, sort_keys=True), flush=True)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--compression")
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--root")
    c.add_argument("--name-override")
    c.add_argument("--auth")
    c.add_argument("--compression")
    c.add_argument("scenarios", nargs="+")
    args = parser.parse_args()
    if args.mode == "server":
        serve(args)
    else:
        client(args)


if __name__ == "__main__":
    main()
