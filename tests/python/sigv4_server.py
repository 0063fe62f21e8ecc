"""A TLS upstream that checks every request's AWS SigV4 signature with
botocore's own signer (botocore.auth.SigV4Auth / S3SigV4Auth, given the
real keys and the request's X-Amz-Date), and a small S3-like object store
behind it (PUT and GET /bucket/key).

Payloads are checked as the service would: a hex x-amz-content-sha256
against the body; UNSIGNED-PAYLOAD not at all; signed aws-chunked bodies
(STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]) chunk by chunk, each chunk's
and the trailer's signature chained from the request's and computed with
botocore's signing key (the string to sign as the S3 API Reference,
"Transferring payload in multiple chunks", gives it); unsigned aws-chunked
bodies decoded. A request the signer does not verify is answered 403 with
the reason; nothing is stored.

Other paths answer JSON: what was verified, and the Authorization header as
it arrived (an echo airlock must scrub). GET /__stats (direct, not through
airlock) counts verified and refused requests.

Usage: sigv4_server.py --cert C --key K --port-file F --access-key-id A
       --secret-access-key S [--session-token T] --region R
"""
import argparse
import datetime
import hashlib
import hmac
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SIGNED = ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


class Refused(Exception):
    pass


def parse_authorization(value):
    algorithm, _, rest = value.partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise Refused("not a SigV4 Authorization")
    parts = dict(p.strip().split("=", 1) for p in rest.split(","))
    scope = parts["Credential"].split("/")
    return scope, parts["SignedHeaders"].split(";"), parts["Signature"]


def decode_chunks(body, chain=None):
    """The data of an aws-chunked body, and its trailer lines. With `chain`
    (a function from (previous signature, chunk data) to the expected
    signature, and one from (previous, trailer lines) for the trailer),
    each signature is checked."""
    data, pos, previous, trailer = b"", 0, None, []
    while True:
        end = body.index(b"\r\n", pos)
        line = body[pos:end].decode()
        pos = end + 2
        size_text, _, ext = line.partition(";")
        size = int(size_text, 16)
        chunk = body[pos:pos + size]
        if chain is not None:
            name, _, signature = ext.partition("=")
            if name != "chunk-signature":
                raise Refused("a chunk has no chunk-signature")
            expected = chain["chunk"](chunk)
            if signature != expected:
                raise Refused(f"chunk {len(data)}+{size} signature does not verify")
        data += chunk
        pos += size
        if size == 0:
            break
        if body[pos:pos + 2] != b"\r\n":
            raise Refused("a chunk is not followed by CRLF")
        pos += 2
    rest = body[pos:]
    if rest == b"\r\n":
        return data, trailer
    lines = rest.decode().split("\r\n")
    if lines[-2:] != ["", ""]:
        raise Refused(f"the trailer does not end in an empty line: {rest!r}")
    for line in lines[:-2]:
        name, _, value = line.partition(":")
        if name.lower() == "x-amz-trailer-signature":
            if chain is None:
                raise Refused("an unsigned body's trailer is signed")
            if value != chain["trailer"](trailer):
                raise Refused("the trailer signature does not verify")
        else:
            trailer.append((name.lower(), value.strip()))
    return data, trailer


class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.objects = {}
        self.stats = {"verified": 0, "refused": 0, "last_refusal": None, "payloads": {}}


def handler(args, store):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def answer(self, status, body, content_type="application/json", extra=()):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def verify(self, body):
            """The body as the service reads it (aws-chunked decoded), the
            payload kind, the signed headers and the canonical request."""
            auth = self.headers.get("Authorization")
            if auth is None:
                raise Refused("no Authorization")
            (akid, date, region, service, term), signed, signature = parse_authorization(auth)
            if akid != args.access_key_id:
                raise Refused(f"unknown access key id {akid[:4]}…")
            if (region, service, term) != (args.region, self.server_service(), "aws4_request"):
                raise Refused(f"scope {region}/{service}")
            amz_date = self.headers["X-Amz-Date"]
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
            if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 900 or date != amz_date[:8]:
                raise Refused("X-Amz-Date is not now")
            if args.session_token:
                if self.headers.get("X-Amz-Security-Token") != args.session_token:
                    raise Refused("wrong or missing session token")
                if "x-amz-security-token" not in signed:
                    raise Refused("the session token is not signed")
            elif "X-Amz-Security-Token" in self.headers:
                raise Refused("a session token was sent")
            headers = {}
            for name in signed:
                values = self.headers.get_all(name)
                if values is None:
                    raise Refused(f"signed header {name} is missing")
                headers[name] = ",".join(values)
            declared = self.headers.get("X-Amz-Content-SHA256")
            if service == "s3" and declared is None:
                raise Refused("Missing required header for this request: x-amz-content-sha256")
            # botocore's signer over the request as it arrived.
            credentials = Credentials(args.access_key_id, args.secret_access_key, args.session_token)
            signer = (S3SigV4Auth if service == "s3" else SigV4Auth)(credentials, service, region)
            request = AWSRequest(method=self.command, url=f"https://{self.headers['Host']}{self.path}",
                                 headers=headers, data=body)
            request.context["timestamp"] = amz_date
            canonical = signer.canonical_request(request)
            string_to_sign = signer.string_to_sign(request, canonical)
            if signer.signature(string_to_sign, request) != signature:
                raise Refused("the signature does not verify (botocore)")
            self.canonical = canonical
            scope = f"{date}/{region}/{service}/aws4_request"
            kind = declared or "hashed by the service"
            if declared in SIGNED:
                state = {"previous": signature}

                def chunk(data):
                    sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, state["previous"],
                                     EMPTY_SHA256, hashlib.sha256(data).hexdigest()])
                    state["previous"] = signer.signature(sts, request)
                    return state["previous"]

                def trailer(fields):
                    canonical_trailer = "".join(f"{n}:{v}\n" for n, v in sorted(fields))
                    sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, state["previous"],
                                     hashlib.sha256(canonical_trailer.encode()).hexdigest()])
                    return signer.signature(sts, request)

                data, fields = decode_chunks(body, {"chunk": chunk, "trailer": trailer})
                self.check_decoded(data, fields)
            elif declared == UNSIGNED_TRAILER:
                data, fields = decode_chunks(body)
                self.check_decoded(data, fields)
            elif declared in (None, "UNSIGNED-PAYLOAD"):
                data = body
            else:
                if hashlib.sha256(body).hexdigest() != declared:
                    raise Refused("XAmzContentSHA256Mismatch")
                data = body
            return data, kind, signed

        def check_decoded(self, data, fields):
            if int(self.headers.get("X-Amz-Decoded-Content-Length", -1)) != len(data):
                raise Refused("x-amz-decoded-content-length does not match the data")
            import zlib, base64
            for name, value in fields:
                if name == "x-amz-checksum-crc32":
                    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
                    if value != crc:
                        raise Refused("the trailer's CRC32 does not match the data")

        def server_service(self):
            host = self.headers["Host"].split(":")[0]
            return host.split(".")[0]

        def handle_one(self):
            if self.path == "/__stats":
                with store.lock:
                    return self.answer(200, json.dumps(store.stats).encode())
            body = self.read_body()
            try:
                data, kind, signed = self.verify(body)
            except (Refused, KeyError, ValueError) as e:
                with store.lock:
                    store.stats["refused"] += 1
                    store.stats["last_refusal"] = str(e)
                return self.answer(403, json.dumps({"error": "SignatureDoesNotMatch", "reason": str(e)}).encode())
            with store.lock:
                store.stats["verified"] += 1
                store.stats["payloads"][kind] = store.stats["payloads"].get(kind, 0) + 1
            path = self.path.split("?")[0]
            if path.startswith("/__error"):
                # S3's SignatureDoesNotMatch error, as it quotes what it got:
                # the access key id, the canonical request, and its bytes in
                # spaced hex.
                canonical = self.canonical.encode()
                xml = ("<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>%s</AWSAccessKeyId>"
                       "<CanonicalRequest>%s</CanonicalRequest><CanonicalRequestBytes>%s</CanonicalRequestBytes>"
                       "</Error>") % (args.access_key_id, self.canonical, " ".join("%02x" % b for b in canonical))
                return self.answer(403, xml.encode(), "application/xml")
            if self.path.startswith("/bucket/"):
                if self.command == "PUT":
                    with store.lock:
                        store.objects[path] = data
                    etag = '"%s"' % hashlib.md5(data).hexdigest()
                    return self.answer(200, b"", "application/xml", [("ETag", etag)])
                if self.command in ("GET", "HEAD"):
                    with store.lock:
                        obj = store.objects.get(path)
                    if obj is None:
                        return self.answer(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
                    etag = '"%s"' % hashlib.md5(obj).hexdigest()
                    return self.answer(200, obj, "application/octet-stream", [("ETag", etag)])
            echo = {"verified": True, "payload": kind, "signed_headers": signed,
                    "authorization": self.headers["Authorization"],
                    "session_token": self.headers.get("X-Amz-Security-Token"),
                    "data_sha256": hashlib.sha256(data).hexdigest(), "data_len": len(data)}
            self.answer(200, json.dumps(echo).encode())

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_one

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--access-key-id", required=True)
    p.add_argument("--secret-access-key", required=True)
    p.add_argument("--session-token")
    p.add_argument("--region", required=True)
    args = p.parse_args()
    store = Store()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(args, store))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
