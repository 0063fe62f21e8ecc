"""An agent that signs AWS requests with placeholder credentials, as an
AWS SDK would, and sends them through airlock.

  sigv4_agent.py raw KIND --endpoint URL --region R --service S
      [--access-key-id ID] [--proxy URL --ca FILE]
    One request signed with botocore's SigV4Auth (S3SigV4Auth for s3) with
    access key id ID (default: $AWS_ACCESS_KEY_ID) and a dummy secret key,
    sent with `requests`. KIND: get, put-hashed, put-unsigned, put-chunks,
    put-chunks-trailer (signed aws-chunked bodies, their chunk signatures
    computed with the dummy key as an SDK would), post (no
    x-amz-content-sha256: the service hashes the body; post-ACTION calls
    STS action ACTION), get-bare (an S3
    GET without x-amz-content-sha256), presigned (a presigned GET URL). Prints {"status", "body"} as JSON.

  sigv4_agent.py boto3 --endpoint URL
    boto3's S3 client with its default credential chain (the environment
    `airlock run` sets): put_object, upload_fileobj (a streamed body),
    get_object; prints what came back as JSON.
"""
import argparse
import hashlib
import io
import json
import os
import sys
import zlib
import base64

import requests
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

DUMMY_SECRET = "agent-does-not-know-the-real-key"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CHUNK = 64 * 1024


def payload(n, seed):
    return bytes((seed * 7 + i * 31 + (i >> 8)) % 256 for i in range(n))


def chunked(data, signer, request, seed_signature, trailer):
    """An aws-chunked body of `data` in 64 KiB chunks, each signed in the
    chain that starts at `seed_signature`."""
    amz_date = request.context["timestamp"]
    scope = signer.credential_scope(request)
    previous = seed_signature
    out = b""
    pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] + [b""]
    for piece in pieces:
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256,
                         hashlib.sha256(piece).hexdigest()])
        previous = signer.signature(sts, request)
        out += b"%x;chunk-signature=%s\r\n" % (len(piece), previous.encode())
        if piece:
            out += piece + b"\r\n"
    if trailer:
        crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        canonical = f"x-amz-checksum-crc32:{crc}\n"
        sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous,
                         hashlib.sha256(canonical.encode()).hexdigest()])
        out += f"x-amz-checksum-crc32:{crc}\r\nx-amz-trailer-signature:{signer.signature(sts, request)}\r\n\r\n".encode()
    else:
        out += b"\r\n"
    return out


class DeclaredS3Auth(S3SigV4Auth):
    """botocore's S3 signer, keeping the x-amz-content-sha256 the request
    declares (it would put its own choice in its place), as SDKs that sign
    unsigned or chunked payloads do."""

    def _modify_request_before_signing(self, request):
        declared = request.headers.get("X-Amz-Content-SHA256")
        super()._modify_request_before_signing(request)
        if declared is not None:
            del request.headers["X-Amz-Content-SHA256"]
            request.headers["X-Amz-Content-SHA256"] = declared


def raw(args):
    access_key_id = args.access_key_id or os.environ["AWS_ACCESS_KEY_ID"]
    credentials = Credentials(access_key_id, DUMMY_SECRET)
    kind = args.kind
    # get-bare: an S3 GET signed as a generic SigV4 client signs it,
    # without x-amz-content-sha256 (curl before 8.x, hand-written signers).
    s3_style = args.service == "s3" and kind != "get-bare"
    signer = (DeclaredS3Auth if s3_style else SigV4Auth)(credentials, args.service, args.region)
    data = payload(args.size, 1) if kind not in ("get", "get-bare") else b""
    method = {"get": "GET", "get-bare": "GET", "presigned": "GET"}.get(kind, "POST" if kind.startswith("post") else "PUT")
    path = args.path or ("/bucket/raw-" + kind if method == "PUT" else "/echo/a%20b/c~d?list-type=2&prefix=a%2Fb&x=")
    url = args.endpoint + path
    headers = {}
    if kind == "presigned":
        from botocore.auth import S3SigV4QueryAuth
        request = AWSRequest(method="GET", url=url)
        S3SigV4QueryAuth(credentials, args.service, args.region, expires=300).add_auth(request)
        url = request.url
        headers = {}
        body = None
    else:
        if kind == "put-hashed":
            headers["X-Amz-Content-SHA256"] = hashlib.sha256(data).hexdigest()
        elif kind == "put-unsigned":
            headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        elif kind in ("put-chunks", "put-chunks-trailer"):
            trailer = kind == "put-chunks-trailer"
            headers["X-Amz-Content-SHA256"] = (
                "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" if trailer else "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
            headers["Content-Encoding"] = "aws-chunked"
            headers["X-Amz-Decoded-Content-Length"] = str(len(data))
            if trailer:
                headers["X-Amz-Trailer"] = "x-amz-checksum-crc32"
        elif kind.startswith("post"):
            # post-ACTION: STS's query protocol, Action=ACTION.
            action = kind.split("-", 1)[1] if "-" in kind else "GetCallerIdentity"
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = f"Action={action}&Version=2011-06-15&pad=".encode() + data.hex().encode()
        request = AWSRequest(method=method, url=url, headers=dict(headers), data=data)
        if kind in ("put-chunks", "put-chunks-trailer"):
            # The seed signature covers the encoded length (which the
            # signatures' values do not change).
            request.context["timestamp"] = "20000101T000000Z"
            probe = chunked(data, signer, request, "0" * 64, kind.endswith("trailer"))
            request.headers["Content-Length"] = str(len(probe))
            signer.add_auth(request)
            seed = request.headers["Authorization"].rsplit("Signature=", 1)[1]
            body = chunked(data, signer, request, seed, kind.endswith("trailer"))
            assert len(body) == len(probe)
        else:
            if data:
                request.headers["Content-Length"] = str(len(data))
            signer.add_auth(request)
            body = data
        headers = dict(request.headers.items())
    session = requests.Session()
    session.trust_env = args.proxy is None
    proxies = {"https": args.proxy} if args.proxy else None
    resp = session.request(method, url, headers=headers, data=body, proxies=proxies,
                           verify=args.ca or os.environ.get("AWS_CA_BUNDLE", True), timeout=30)
    print(json.dumps({"status": resp.status_code, "body": resp.text,
                      "data_sha256": hashlib.sha256(data).hexdigest()}))


def with_boto3(args):
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    if args.region:
        # A call airlock refuses: what boto3 makes of the denial.
        s3 = boto3.client("s3", endpoint_url=args.endpoint, region_name=args.region, config=config)
        try:
            s3.get_object(Bucket="bucket", Key="small.bin")
        except ClientError as e:
            print(json.dumps({"status": e.response["ResponseMetadata"]["HTTPStatusCode"],
                              "code": e.response["Error"]["Code"], "said": str(e)}))
            return
        raise SystemExit("the call was not refused")
    s3 = boto3.client("s3", endpoint_url=args.endpoint, config=config)
    small = payload(1000, 2)
    large = payload(300 * 1024 + 7, 3)
    s3.put_object(Bucket="bucket", Key="small.bin", Body=small)
    s3.upload_fileobj(io.BytesIO(large), "bucket", "large.bin")
    got_small = s3.get_object(Bucket="bucket", Key="small.bin")["Body"].read()
    got_large = s3.get_object(Bucket="bucket", Key="large.bin")["Body"].read()
    print(json.dumps({"small": got_small == small, "large": got_large == large,
                      "large_len": len(got_large)}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("raw")
    r.add_argument("kind")
    r.add_argument("--endpoint", required=True)
    r.add_argument("--region", required=True)
    r.add_argument("--service", required=True)
    r.add_argument("--access-key-id")
    r.add_argument("--proxy")
    r.add_argument("--ca")
    r.add_argument("--path")
    r.add_argument("--size", type=int, default=200 * 1024 + 3)
    b = sub.add_parser("boto3")
    b.add_argument("--endpoint", required=True)
    b.add_argument("--region", help="sign for this region instead, and print the refusal")
    args = p.parse_args()
    raw(args) if args.mode == "raw" else with_boto3(args)


if __name__ == "__main__":
    sys.exit(main())
