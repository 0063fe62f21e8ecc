#!/usr/bin/env python3
"""Small in-memory OAuth2 token endpoint for end-to-end tests.

Built on Authlib's framework-agnostic RFC 6749 server classes
(``authlib.oauth2.rfc6749.AuthorizationServer``, ``ClientCredentialsGrant``,
``RefreshTokenGrant``, ``ResourceProtector``) and RFC 6750 bearer tokens
(``BearerTokenGenerator``, ``BearerTokenValidator``), served by a small WSGI
adapter over ``wsgiref`` + ``ssl`` (threaded, HTTPS only, 127.0.0.1 only).

Endpoints:
  POST /token                 RFC 6749 token endpoint (client_credentials, refresh_token), and
                              RFC 7523 jwt-bearer assertions verified by google-auth
  GET  /api/whoami            protected resource (Bearer token)
  GET  /stats                 counters for tests
  POST /app/installations/{id}/access_tokens   GitHub App installation tokens (app JWT
                              verified with joserfc), with --github-app-key-out
  POST /admin/fail?on=1|0     force every /token call to fail with invalid_grant
  POST /admin/reset-stats     zero the counters (tokens are kept)

Nothing is written to disk except --port-file and the optional --log.
"""

import argparse
import json
import os
import secrets
import socketserver
import ssl
import sys
import threading
import time
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientMixin,
    InvalidGrantError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    RefreshTokenGrant,
    ResourceProtector,
    TokenMixin,
    scope_to_list,
    list_to_scope,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator

CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
JSON_HEADERS = [
    ("Content-Type", "application/json"),
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
]


# --------------------------------------------------------------------------
# logging (optional file, never secrets)
# --------------------------------------------------------------------------
class Log:
    def __init__(self, path):
        self._fh = open(path, "a", buffering=1, encoding="utf-8") if path else None
        self._lock = threading.Lock()

    def __call__(self, msg):
        if not self._fh:
            return
        line = time.strftime("%Y-%m-%dT%H:%M:%S") + " " + msg + "\n"
        with self._lock:
            self._fh.write(line)


LOG = Log(None)


# --------------------------------------------------------------------------
# in-memory models
# --------------------------------------------------------------------------
class Client(ClientMixin):
    def __init__(self, client_id, client_secret, grants, scope=""):
        self.client_id = client_id
        self.client_secret = client_secret
        self.grants = list(grants)
        self.scope = scope or ""

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def check_redirect_uri(self, redirect_uri):
        return False

    def get_allowed_scope(self, scope):
        if not scope:
            return self.scope
        allowed = set(scope_to_list(self.scope) or [])
        return list_to_scope([s for s in scope_to_list(scope) if s in allowed])

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(
            client_secret.encode("utf-8"), self.client_secret.encode("utf-8")
        )

    def check_endpoint_auth_method(self, method, endpoint):
        return method in CLIENT_AUTH_METHODS

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type in self.grants


class AccessToken(TokenMixin):
    def __init__(self, access_token, client_id, scope, expires_in):
        self.access_token = access_token
        self.client_id = client_id
        self.scope = scope or ""
        self.issued_at = time.time()
        self.expires_in = expires_in
        self.revoked = False

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        if not self.expires_in:
            return False
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self):
        return self.revoked

    def get_user(self):
        return STORE.clients.get(self.client_id)

    def get_client(self):
        return STORE.clients.get(self.client_id)


class RefreshToken(TokenMixin):
    """A refresh-token credential. Refresh tokens never expire here."""

    def __init__(self, refresh_token, client_id, scope):
        self.refresh_token = refresh_token
        self.client_id = client_id
        self.scope = scope or ""
        self.issued_at = time.time()
        self.revoked = False

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return 0

    def is_expired(self):
        return False

    def is_revoked(self):
        return self.revoked

    def get_user(self):
        return STORE.clients.get(self.client_id)

    def get_client(self):
        return STORE.clients.get(self.client_id)


class Store:
    def __init__(self):
        # One lock serialises all token-endpoint work, so concurrent refreshes
        # of the same refresh token are deterministic (first wins, later ones
        # get invalid_grant once the token is rotated).
        self.lock = threading.RLock()
        self.clients = {}
        self.access_tokens = {}
        self.refresh_tokens = {}  # insertion-ordered: issuance order
        self.fail_token_endpoint = False
        self.reset_stats()

    def reset_stats(self):
        self.token_requests = 0
        self.by_grant = {"refresh_token": 0, "client_credentials": 0}
        self.issued_by_grant = {"refresh_token": 0, "client_credentials": 0}
        self.errors_by_code = {}
        self.whoami = {"ok": 0, "unauthorized": 0}

    def stats(self):
        with self.lock:
            return {
                "token_requests": self.token_requests,
                "by_grant": dict(self.by_grant),
                "issued_by_grant": dict(self.issued_by_grant),
                "errors": dict(self.errors_by_code),
                "refresh_tokens_issued": [
                    rt.refresh_token
                    for rt in self.refresh_tokens.values()
                    if not rt.revoked
                ],
                "refresh_tokens_revoked": [
                    rt.refresh_token for rt in self.refresh_tokens.values() if rt.revoked
                ],
                "whoami": dict(self.whoami),
                "fail_mode": self.fail_token_endpoint,
            }


STORE = Store()


def load_clients(spec):
    if not isinstance(spec, list):
        raise ValueError("client config must be a JSON list")
    for entry in spec:
        client = Client(
            entry["client_id"],
            entry["client_secret"],
            entry.get("grants", ["client_credentials", "refresh_token"]),
            entry.get("scope", ""),
        )
        STORE.clients[client.client_id] = client
        for rt in entry.get("refresh_tokens", []):
            STORE.refresh_tokens[rt] = RefreshToken(rt, client.client_id, client.scope)


# --------------------------------------------------------------------------
# Authlib glue
# --------------------------------------------------------------------------
class CIHeaders(dict):
    """Case-insensitive header mapping built from a WSGI environ."""

    def __init__(self, environ):
        super().__init__()
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                self[key[5:].replace("_", "-")] = value
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                self[key.replace("_", "-")] = environ[key]

    def __setitem__(self, key, value):
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)


class FormPayload(OAuth2Payload):
    def __init__(self, multi):
        self._multi = multi
        self._single = {k: v[0] for k, v in multi.items()}

    @property
    def data(self):
        return self._single

    @property
    def datalist(self):
        return self._multi


class WsgiOAuth2Request(OAuth2Request):
    def __init__(self, environ, form_multi):
        uri = "https://{}{}".format(
            environ.get("HTTP_HOST") or "127.0.0.1", environ.get("PATH_INFO", "/")
        )
        if environ.get("QUERY_STRING"):
            uri += "?" + environ["QUERY_STRING"]
        super().__init__(environ["REQUEST_METHOD"], uri, headers=CIHeaders(environ))
        self._args = {
            k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()
        }
        self.payload = FormPayload(form_multi)

    @property
    def args(self):
        return self._args

    @property
    def form(self):
        return self.payload.data


class ClientCredentials(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS


class RefreshTokens(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = False  # switched on by --rotate-refresh-tokens

    def authenticate_refresh_token(self, refresh_token):
        rt = STORE.refresh_tokens.get(refresh_token)
        if rt and not rt.is_revoked():
            return rt
        return None

    def authenticate_user(self, refresh_token):
        # Machine clients: the "resource owner" is the client itself.
        return STORE.clients.get(refresh_token.client_id)

    def revoke_old_credential(self, refresh_token):
        # Authlib always calls this; only revoke when a new one was issued.
        if self.INCLUDE_NEW_REFRESH_TOKEN:
            refresh_token.revoked = True


class TestAuthorizationServer(AuthorizationServer):
    """Framework-agnostic AuthorizationServer: responses are (status, body, headers)."""

    def query_client(self, client_id):
        return STORE.clients.get(client_id)

    def save_token(self, token, request):
        client_id = request.client.get_client_id()
        STORE.access_tokens[token["access_token"]] = AccessToken(
            token["access_token"],
            client_id,
            token.get("scope", ""),
            token.get("expires_in", 0),
        )
        if token.get("refresh_token"):
            STORE.refresh_tokens[token["refresh_token"]] = RefreshToken(
                token["refresh_token"], client_id, token.get("scope", "")
            )
        STORE.issued_by_grant[request.payload.grant_type] = (
            STORE.issued_by_grant.get(request.payload.grant_type, 0) + 1
        )

    def send_signal(self, name, *args, **kwargs):
        pass

    def create_oauth2_request(self, request):
        return request  # already a WsgiOAuth2Request

    def create_json_request(self, request):
        raise NotImplementedError()

    def handle_response(self, status, body, headers):
        return status, body, headers


class Bearer(BearerTokenValidator):
    def authenticate_token(self, token_string):
        return STORE.access_tokens.get(token_string)


JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The service account whose assertions /token accepts (see
# --service-account-out), and the access tokens' lifetime.
SERVICE_ACCOUNT = {}
EXPIRES_IN = [3600]


def make_service_account(path, audience):
    """Writes a Google-shaped service-account JSON key (RSA 2048, PKCS#8)
    to `path` and remembers its public key for jwt-bearer assertions."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    kid = secrets.token_hex(20)
    email = "agent-runner@test-project.iam.gserviceaccount.com"
    doc = {"type": "service_account", "project_id": "test-project", "private_key_id": kid,
           "private_key": private_pem, "client_email": email, "client_id": "1234567890",
           "token_uri": audience}
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    SERVICE_ACCOUNT.update(kid=kid, public_pem=public_pem, email=email, audience=audience)


# The GitHub App whose JWTs /app/installations/{id}/access_tokens
# accepts (see --github-app-key-out).
GITHUB_APP = {}


def make_github_app(path, app_id, installation_id):
    """Writes an app private key (RSA 2048, PKCS#1 PEM, as GitHub issues
    them) to `path` and remembers its public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    GITHUB_APP.update(app_id=app_id, installation_id=installation_id, public_pem=public_pem)


def _random_token(**_kwargs):
    return secrets.token_urlsafe(32)


def build_server(expires_in, rotate):
    RefreshTokens.INCLUDE_NEW_REFRESH_TOKEN = bool(rotate)
    server = TestAuthorizationServer()
    server.register_token_generator(
        "default",
        BearerTokenGenerator(
            access_token_generator=_random_token,
            refresh_token_generator=_random_token,
            expires_generator=lambda client, grant_type: expires_in,
        ),
    )
    server.register_grant(ClientCredentials)
    server.register_grant(RefreshTokens)
    protector = ResourceProtector()
    protector.register_token_validator(Bearer())
    return server, protector


# --------------------------------------------------------------------------
# WSGI application
# --------------------------------------------------------------------------
STATUS_TEXT = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized",
               403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}


class App:
    def __init__(self, auth_server, protector):
        self.auth_server = auth_server
        self.protector = protector

    def __call__(self, environ, start_response):
        try:
            status, body, headers = self.route(environ)
        except Exception as exc:  # pragma: no cover - defensive
            LOG(f"internal error: {exc!r}")
            status, body, headers = 500, {"error": "server_error"}, JSON_HEADERS
        payload = json.dumps(body).encode("utf-8")
        headers = [h for h in headers if h[0].lower() != "content-length"]
        headers.append(("Content-Length", str(len(payload))))
        start_response(f"{status} {STATUS_TEXT.get(status, 'Error')}", headers)
        return [payload]

    def route(self, environ):
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "/")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        routes = {
            "/token": ("POST", self.token),
            "/api/whoami": ("GET", self.whoami),
            "/stats": ("GET", self.stats),
            "/admin/fail": ("POST", self.admin_fail),
            "/admin/reset-stats": ("POST", self.admin_reset),
        }
        if GITHUB_APP and path == f"/app/installations/{GITHUB_APP['installation_id']}/access_tokens":
            routes[path] = ("POST", self.installation_token)
        if path not in routes:
            return 404, {"error": "not_found"}, JSON_HEADERS
        allowed, handler = routes[path]
        if method != allowed:
            return 405, {"error": "method_not_allowed"}, JSON_HEADERS + [("Allow", allowed)]
        return handler(environ, query)

    @staticmethod
    def _read_form(environ):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        ctype = (environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return {}
        return parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)

    def token(self, environ, query):
        form = self._read_form(environ)
        grant_type = (form.get("grant_type") or [""])[0]
        with STORE.lock:
            STORE.token_requests += 1
            STORE.by_grant[grant_type] = STORE.by_grant.get(grant_type, 0) + 1
            if STORE.fail_token_endpoint:
                status, body, headers = InvalidGrantError(description="forced")()
            elif grant_type == JWT_BEARER and SERVICE_ACCOUNT:
                status, body, headers = self.jwt_bearer(form)
            else:
                request = WsgiOAuth2Request(environ, form)
                status, body, headers = self.auth_server.create_token_response(request)
            if status != 200:
                err = body.get("error", "unknown")
                STORE.errors_by_code[err] = STORE.errors_by_code.get(err, 0) + 1
        LOG(f"/token grant_type={grant_type or '-'} -> {status}"
            + ("" if status == 200 else f" {body.get('error')}"))
        return status, body, headers

    def jwt_bearer(self, form):
        """RFC 7523 §2.1: the assertion verified by google-auth (signature
        against the service account's public key by its kid, audience,
        expiry), then a bearer token issued like any other."""
        from google.auth import jwt as google_jwt

        assertion = (form.get("assertion") or [""])[0]
        try:
            claims = google_jwt.decode(
                assertion, certs={SERVICE_ACCOUNT["kid"]: SERVICE_ACCOUNT["public_pem"]},
                audience=SERVICE_ACCOUNT["audience"])
        except Exception as exc:  # google-auth raises ValueError and its own errors
            LOG(f"jwt-bearer assertion refused: {type(exc).__name__}")
            return 400, {"error": "invalid_grant", "error_description": "bad assertion"}, JSON_HEADERS
        if claims.get("iss") != SERVICE_ACCOUNT["email"]:
            return 400, {"error": "invalid_grant", "error_description": "unknown issuer"}, JSON_HEADERS
        token = _random_token()
        STORE.access_tokens[token] = AccessToken(token, claims["iss"], claims.get("scope", ""), EXPIRES_IN[0])
        STORE.issued_by_grant[JWT_BEARER] = STORE.issued_by_grant.get(JWT_BEARER, 0) + 1
        body = {"access_token": token, "token_type": "Bearer", "expires_in": EXPIRES_IN[0]}
        return 200, body, JSON_HEADERS

    def installation_token(self, environ, query):
        """GitHub's installation-token endpoint: the app JWT (RS256, iss the
        app id, at most ten minutes) verified with joserfc, Authlib's JOSE
        library; then a token like any other, answered 201 with expires_at."""
        from joserfc import jwt as jose_jwt
        from joserfc.errors import JoseError
        from joserfc.jwk import RSAKey

        auth = environ.get("HTTP_AUTHORIZATION", "")
        value = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        try:
            token = jose_jwt.decode(value, RSAKey.import_key(GITHUB_APP["public_pem"]), algorithms=["RS256"])
            jose_jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": str(GITHUB_APP["app_id"])},
                exp={"essential": True}, iat={"essential": True},
            ).validate(token.claims)
            if token.claims["exp"] - token.claims["iat"] > 600:
                raise ValueError("longer than ten minutes")
        except (JoseError, ValueError, KeyError) as exc:
            LOG(f"app JWT refused: {type(exc).__name__}")
            with STORE.lock:
                STORE.errors_by_code["bad_app_jwt"] = STORE.errors_by_code.get("bad_app_jwt", 0) + 1
            return 401, {"message": "A JSON web token could not be decoded"}, JSON_HEADERS
        issued = _random_token()
        expires = int(time.time()) + EXPIRES_IN[0]
        with STORE.lock:
            STORE.access_tokens[issued] = AccessToken(issued, f"app-{GITHUB_APP['app_id']}", "", EXPIRES_IN[0])
            STORE.issued_by_grant["github_app"] = STORE.issued_by_grant.get("github_app", 0) + 1
        expires_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        return 201, {"token": issued, "expires_at": expires_at}, JSON_HEADERS

    def whoami(self, environ, query):
        request = WsgiOAuth2Request(environ, {})
        try:
            token = self.protector.validate_request(None, request)
        except OAuth2Error:
            with STORE.lock:
                STORE.whoami["unauthorized"] += 1
            return 401, {"error": "invalid_token"}, JSON_HEADERS + [
                ("WWW-Authenticate", 'Bearer error="invalid_token"')
            ]
        with STORE.lock:
            STORE.whoami["ok"] += 1
        # Echo the token exactly as received in the Authorization header.
        received = request.headers.get("Authorization").split(None, 1)[1]
        return 200, {
            "client_id": token.client_id,
            "token": received,
            "scope": token.get_scope(),
        }, JSON_HEADERS

    def stats(self, environ, query):
        return 200, STORE.stats(), JSON_HEADERS

    def admin_fail(self, environ, query):
        self._read_form(environ)
        on = (query.get("on") or ["1"])[0].lower() in ("1", "true", "yes", "on")
        with STORE.lock:
            STORE.fail_token_endpoint = on
        LOG(f"/admin/fail on={int(on)}")
        return 200, {"fail": on}, JSON_HEADERS

    def admin_reset(self, environ, query):
        self._read_form(environ)
        with STORE.lock:
            STORE.reset_stats()
        return 200, {"reset": True}, JSON_HEADERS


# --------------------------------------------------------------------------
# threaded HTTPS WSGI server
# --------------------------------------------------------------------------
class QuietHandler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        LOG("%s %s" % (self.address_string(), fmt % args))

    def get_environ(self):
        env = super().get_environ()
        env["HTTPS"] = "on"
        env["wsgi.url_scheme"] = "https"
        return env


class ThreadingHTTPSWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, ssl_context):
        self.ssl_context = ssl_context
        super().__init__(addr, QuietHandler)

    def finish_request(self, request, client_address):
        # TLS handshake runs in the per-connection worker thread, so a slow or
        # broken client never stalls the accept loop.
        request.settimeout(30)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            LOG(f"tls handshake failed from {client_address[0]}: {exc}")
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        LOG(f"connection error from {client_address[0]}: {sys.exc_info()[1]!r}")


def main(argv=None):
    global LOG
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    p.add_argument("--key", required=True, help="server private key (PEM)")
    p.add_argument("--port-file", required=True, help="file that receives the port")
    p.add_argument("--expires-in", type=int, default=3600, help="access token lifetime (s)")
    p.add_argument("--rotate-refresh-tokens", action="store_true",
                   help="issue a new refresh_token on refresh and revoke the old one")
    p.add_argument("--clients", help="JSON file with the client list "
                   "(else env TOKEN_SERVER_CLIENTS=<json> or TOKEN_SERVER_CLIENTS_FILE)")
    p.add_argument("--log", help="append a request/event log here (no secrets)")
    p.add_argument("--service-account-out", help="write a service-account JSON key here and accept "
                   "jwt-bearer assertions it signs (RFC 7523), verified with google-auth")
    p.add_argument("--github-app-key-out", help="write a GitHub App private key here and serve "
                   "POST /app/installations/{id}/access_tokens for JWTs it signs")
    p.add_argument("--github-app-id", type=int, default=123)
    p.add_argument("--github-installation-id", type=int, default=456)
    p.add_argument("--audience", help="the token endpoint URL assertions must name, {port} standing for "
                   "the port (with --service-account-out)")
    args = p.parse_args(argv)

    LOG = Log(args.log)
    if args.clients:
        with open(args.clients, encoding="utf-8") as fh:
            spec = json.load(fh)
    elif os.environ.get("TOKEN_SERVER_CLIENTS"):
        spec = json.loads(os.environ["TOKEN_SERVER_CLIENTS"])
    elif os.environ.get("TOKEN_SERVER_CLIENTS_FILE"):
        with open(os.environ["TOKEN_SERVER_CLIENTS_FILE"], encoding="utf-8") as fh:
            spec = json.load(fh)
    else:
        p.error("no clients configured: use --clients FILE or TOKEN_SERVER_CLIENTS")
    load_clients(spec)

    EXPIRES_IN[0] = args.expires_in
    if args.github_app_key_out:
        make_github_app(args.github_app_key_out, args.github_app_id, args.github_installation_id)
    auth_server, protector = build_server(args.expires_in, args.rotate_refresh_tokens)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)

    httpd = ThreadingHTTPSWSGIServer(("127.0.0.1", 0), ctx)
    httpd.set_app(App(auth_server, protector))
    port = httpd.server_address[1]
    if args.service_account_out:
        make_service_account(args.service_account_out, (args.audience or "").replace("{port}", str(port)))

    tmp = args.port_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f"{port}\n")
    os.replace(tmp, args.port_file)  # atomic: readers never see a partial file
    LOG(f"listening on https://127.0.0.1:{port} expires_in={args.expires_in} "
        f"rotate={args.rotate_refresh_tokens} clients={sorted(STORE.clients)}")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
