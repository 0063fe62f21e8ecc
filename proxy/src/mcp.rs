//! `airlock mcp`: approved-action requests over the Model Context Protocol
//! (JSON-RPC 2.0, one message per line on stdin/stdout).
//!
//! The server exposes two tools: `api_request`, whose input schema is
//! generated from the tenant's routes (service and method enums), and
//! `list_services`, which — like the resource `airlock://services` — lists
//! each service with its base URL, methods, paths and where the
//! placeholder goes. A call becomes an envelope POSTed to `/v1/actions` on
//! a running airlock, so it is decided, injected, scrubbed and audited by
//! the proxy's one pipeline; this module never sees a secret, only the
//! tenant's token (which it never prints) and scrubbed answers.
//!
//! Written by hand rather than with the official `rmcp` crate: the subset
//! served here (initialize, ping, tools, resources) is a few hundred lines
//! of serde_json, while `rmcp` would add about twenty crates (chrono,
//! futures, schemars and its derive, uuid, a second sha2/digest stack) and
//! its typed tool macros do not help with a schema generated at run time.
//! The end-to-end tests drive this server with the official TypeScript SDK
//! client.
//!
//! stdout carries only protocol messages; logs go to stderr.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use airlock_policy::Policy;
use airlock_policy::host::HostPattern;

use crate::actions::{PATH, VERB};

/// Protocol versions served, newest first; a client asking for another gets
/// the newest.
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The URI of the service listing resource.
pub const SERVICES_URI: &str = "airlock://services";

/// The largest answer read from the proxy (its bodies are capped by
/// `[limits] max_action_response`; base64 and JSON escaping grow them).
const MAX_ANSWER: usize = 256 << 20;

/// Why the MCP server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The tenant is not in the config.
    #[error("no tenant '{0}' in the config")]
    UnknownTenant(String),
    /// Reading stdin or writing stdout failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One tenant's MCP server, talking to the proxy at an address.
pub struct Server {
    tenant: String,
    /// `Basic base64(tenant:token)`.
    credentials: String,
    proxy: SocketAddr,
    services: Value,
    tools: Value,
    /// The home the proxy must prove it serves before each request.
    instance: Option<crate::instance::Instance>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("tenant", &self.tenant).field("proxy", &self.proxy).finish_non_exhaustive()
    }
}

impl Server {
    /// The server for `tenant`, sending actions to the proxy at `proxy`.
    pub fn new(policy: &Policy, tenant: &str, proxy: SocketAddr) -> Result<Server, McpError> {
        let (_, t) = policy.tenant_by_name(tenant).ok_or_else(|| McpError::UnknownTenant(tenant.to_owned()))?;
        let services = services(policy, tenant);
        let tools = tools(&services);
        let credentials = format!("Basic {}", STANDARD.encode(format!("{}:{}", t.name, t.token())));
        Ok(Server { tenant: t.name.clone(), credentials, proxy, services, tools, instance: None })
    }

    /// Before each request, has the proxy prove on the same connection
    /// that it serves the home of `instance` (a health check with a fresh
    /// challenge, [`crate::instance`]); a listener that cannot is sent
    /// nothing of the tenant's. Without it, the proxy is trusted as found.
    pub fn verify_proxy(mut self, instance: crate::instance::Instance) -> Server {
        self.instance = Some(instance);
        self
    }

    /// Serves messages from `input` until it ends, answering on `output`.
    /// Requests are handled concurrently (a slow API call does not hold up
    /// a ping); every answer is one line.
    pub async fn serve(
        self,
        input: impl AsyncRead + Unpin,
        mut output: impl AsyncWrite + Unpin + Send + 'static,
    ) -> Result<(), McpError> {
        let this = Arc::new(self);
        let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let mut line = msg.to_string();
                line.push('\n');
                output.write_all(line.as_bytes()).await?;
                output.flush().await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut input = BufReader::new(input);
        while let Some(line) = next_line(&mut input, MAX_MESSAGE).await? {
            let Line::Message(line) = line else {
                let _ = tx.send(error(Value::Null, -32600, "invalid request: a message line is over 64 MiB"));
                continue;
            };
            if line.trim().is_empty() {
                continue;
            }
            let this = Arc::clone(&this);
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(answer) = this.on_line(&line).await {
                    let _ = tx.send(answer);
                }
            });
        }
        drop(tx);
        // Answers to requests still in flight are written before exiting.
        writer.await.map_err(std::io::Error::other)??;
        Ok(())
    }

    /// One line: a message or a batch (an array, allowed before 2025-06-18).
    async fn on_line(&self, line: &str) -> Option<Value> {
        let msg: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => return Some(error(Value::Null, -32700, "parse error: each line must be one JSON-RPC message")),
        };
        match msg {
            Value::Array(batch) if !batch.is_empty() => {
                let mut out = Vec::new();
                for m in batch {
                    out.extend(self.on_message(m).await);
                }
                (!out.is_empty()).then_some(Value::Array(out))
            }
            other => self.on_message(other).await,
        }
    }

    /// One message; `None` for notifications and responses.
    async fn on_message(&self, msg: Value) -> Option<Value> {
        let Value::Object(msg) = msg else {
            return Some(error(Value::Null, -32600, "invalid request: not a JSON-RPC object"));
        };
        let id = msg.get("id").cloned();
        let Some(method) = msg.get("method").and_then(Value::as_str) else {
            // A response to a request of ours (we send none), or junk.
            return id
                .filter(|_| !msg.contains_key("result") && !msg.contains_key("error"))
                .map(|id| error(id, -32600, "invalid request: no method"));
        };
        let Some(id) = id.filter(|id| id.is_string() || id.is_number()) else {
            debug!(method, "notification");
            return None;
        };
        if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Some(error(id, -32600, "invalid request: jsonrpc must be \"2.0\""));
        }
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        debug!(method, "request");
        Some(match self.call(method, &params).await {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err((code, message)) => error(id, code, &message),
        })
    }

    async fn call(&self, method: &str, params: &Value) -> Result<Value, (i64, String)> {
        match method {
            "initialize" => {
                let asked = params.get("protocolVersion").and_then(Value::as_str);
                let version = asked.filter(|v| PROTOCOL_VERSIONS.contains(v)).unwrap_or(PROTOCOL_VERSIONS[0]);
                Ok(json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}, "resources": {"listChanged": false}},
                    "serverInfo": {"name": "airlock", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": format!(
                        "airlock performs HTTP API calls for tenant '{}' with credentials you never see. \
                         Call list_services to see each service's methods and paths, then api_request. \
                         Put a service's placeholder where the API expects its key (e.g. \
                         `authorization: Bearer <placeholder>`); airlock swaps in the real key. A denial \
                         names a code and a next_step.",
                        self.tenant
                    ),
                }))
            }
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({"tools": self.tools})),
            "tools/call" => {
                let name = params.get("name").and_then(Value::as_str).unwrap_or("");
                let args = params.get("arguments").cloned().unwrap_or_else(|| json!({}));
                match name {
                    "api_request" => Ok(self.api_request(&args).await),
                    "list_services" => Ok(tool_result(pretty(&self.services), false)),
                    _ => Err((-32602, format!("unknown tool '{name}'; the tools are api_request and list_services"))),
                }
            }
            "resources/list" => Ok(json!({"resources": [{
                "uri": SERVICES_URI,
                "name": "services",
                "title": "Services this tenant may call",
                "description": "Each service with its base URL, allowed methods and paths, and where its placeholder goes",
                "mimeType": "application/json",
            }]})),
            "resources/templates/list" => Ok(json!({"resourceTemplates": []})),
            "resources/read" => match params.get("uri").and_then(Value::as_str) {
                Some(SERVICES_URI) => Ok(json!({"contents": [{
                    "uri": SERVICES_URI,
                    "mimeType": "application/json",
                    "text": pretty(&self.services),
                }]})),
                _ => Err((-32002, format!("resource not found; the only resource is {SERVICES_URI}"))),
            },
            _ => Err((-32601, format!("method '{method}' not found"))),
        }
    }

    /// Sends the action and turns the answer into a tool result: the
    /// answer's JSON as text, an error when airlock denied it.
    async fn api_request(&self, args: &Value) -> Value {
        let Some(args) = args.as_object() else {
            return tool_result("arguments must be an object".into(), true);
        };
        let text = |k: &str| args.get(k).and_then(Value::as_str);
        let (Some(service), Some(method), Some(path)) = (text("service"), text("method"), text("path")) else {
            return tool_result("service, method and path are required strings (see list_services)".into(), true);
        };
        let mut envelope = json!({
            "tenant": self.tenant,
            "service": service,
            "verb": VERB,
            "method": method.to_ascii_uppercase(),
            "path": path,
        });
        for key in ["query", "headers", "body", "body_encoding"] {
            if let Some(v) = args.get(key).filter(|v| !v.is_null()) {
                envelope[key] = v.clone();
            }
        }
        match self.post(&envelope).await {
            Ok((status, answer)) => {
                let denied = answer.get("decision").and_then(Value::as_str) != Some("allow");
                if denied {
                    debug!(status, "action denied");
                }
                tool_result(pretty(&answer), denied)
            }
            Err(reason) => {
                warn!(proxy = %self.proxy, %reason, "the action API could not be reached");
                tool_result(
                    format!(
                        "airlock's action API at {} could not be reached: {reason}; \
                         ask the operator to check that `airlock serve` is running",
                        self.proxy
                    ),
                    true,
                )
            }
        }
    }

    /// POSTs an envelope to the proxy — once it has proved itself on the
    /// connection, when [`Server::verify_proxy`] asked for it; the answer's
    /// status and JSON.
    async fn post(&self, envelope: &Value) -> Result<(u16, Value), String> {
        let tcp = tokio::net::TcpStream::connect(self.proxy).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        if let Some(instance) = &self.instance {
            let challenge = crate::instance::new_challenge();
            let check = Request::get(crate::listener::HEALTH_PATH)
                .header(header::HOST, self.proxy.to_string())
                .header(crate::instance::CHALLENGE_HEADER, &challenge)
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let resp = sender.send_request(check).await.map_err(|e| e.to_string())?;
            let proof =
                resp.headers().get(crate::instance::PROOF_HEADER).and_then(|p| p.to_str().ok()).map(str::to_owned);
            // The answer's body is read (bounded) so the connection can
            // carry the request.
            Limited::new(resp.into_body(), MAX_ANSWER).collect().await.map_err(|e| e.to_string())?;
            if !proof.is_some_and(|p| instance.verify(&challenge, self.proxy, &p)) {
                return Err(format!(
                    "what listens on {} did not prove it is this home's airlock; nothing was sent to it",
                    self.proxy
                ));
            }
            sender.ready().await.map_err(|e| e.to_string())?;
        }
        let req = Request::post(PATH)
            .header(header::HOST, self.proxy.to_string())
            .header(header::AUTHORIZATION, &self.credentials)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(envelope.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_ANSWER).collect().await.map_err(|e| e.to_string())?;
        let answer = serde_json::from_slice(&body.to_bytes())
            .map_err(|_| format!("the answer (HTTP {status}) is not airlock's JSON"))?;
        Ok((status, answer))
    }
}

/// The longest message line read (an envelope is bounded further by the
/// proxy's `max_request_body`); a longer one is skipped with an error, not
/// buffered.
const MAX_MESSAGE: usize = 64 << 20;

/// One line of input.
#[derive(Debug, PartialEq)]
enum Line {
    Message(String),
    /// Over the limit: skipped up to its newline.
    TooLong,
}

/// Reads one line of at most `max` bytes (not counting the newline), or
/// `None` at the end of input.
async fn next_line(input: &mut (impl AsyncBufRead + Unpin), max: usize) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            if buf.is_empty() && !too_long {
                return Ok(None);
            }
            break;
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        if !too_long && buf.len() + chunk.len() > max {
            too_long = true;
            buf = Vec::new();
        }
        if !too_long {
            buf.extend_from_slice(chunk);
        }
        let used = newline.map_or(available.len(), |i| i + 1);
        input.consume(used);
        if newline.is_some() {
            break;
        }
    }
    Ok(Some(if too_long { Line::TooLong } else { Line::Message(String::from_utf8_lossy(&buf).into_owned()) }))
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn tool_result(text: String, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// The tenant's services: every route with an exact host (a wildcard route
/// names no one host an action could go to).
pub fn services(policy: &Policy, tenant: &str) -> Value {
    let Some((_, t)) = policy.tenant_by_name(tenant) else { return json!([]) };
    let list: Vec<Value> = t
        .routes
        .iter()
        .filter(|r| matches!(r.host, HostPattern::Exact(_)))
        .map(|r| {
            let paths: Vec<&str> = r.paths().collect();
            json!({
                "service": r.name,
                "base_url": format!("https://{}", r.authority()),
                "methods": r.methods,
                "paths": if paths.is_empty() { vec!["*"] } else { paths },
                "credential": {
                    "placeholder": r.placeholder,
                    "headers": r.headers,
                    "how": format!(
                        "put {} in one of these headers, as the API expects its key (e.g. `Bearer {}`); \
                         airlock swaps in the real key",
                        r.placeholder, r.placeholder
                    ),
                },
            })
        })
        .collect();
    Value::Array(list)
}

/// The tools, with `api_request`'s schema generated from `services`. The
/// per-service methods and paths are in the descriptions rather than a
/// top-level `oneOf`, which several model APIs refuse in tool schemas.
pub fn tools(services: &Value) -> Value {
    let list = services.as_array().map(Vec::as_slice).unwrap_or_default();
    let names: Vec<&Value> = list.iter().filter_map(|s| s.get("service")).collect();
    let mut methods: Vec<String> = Vec::new();
    let mut described = String::new();
    for s in list {
        let m: Vec<String> =
            s["methods"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        let p: Vec<&str> = s["paths"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        for x in &m {
            if !methods.contains(x) {
                methods.push(x.clone());
            }
        }
        described.push_str(&format!(
            "\n- {} ({}): methods {}; paths {}; credential: {} in header {}",
            s["service"].as_str().unwrap_or(""),
            s["base_url"].as_str().unwrap_or(""),
            m.join(", "),
            p.join(", "),
            s["credential"]["placeholder"].as_str().unwrap_or(""),
            s["credential"]["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" or "),
        ));
    }
    let mut service = Map::new();
    service.insert("type".into(), "string".into());
    service.insert("enum".into(), Value::Array(names.into_iter().cloned().collect()));
    service.insert("description".into(), format!("The service (an airlock route) to call:{described}").into());
    json!([
        {
            "name": "api_request",
            "title": "API request through airlock",
            "description": format!(
                "Make an HTTP request to one of this tenant's APIs through airlock, which checks it against \
                 policy, adds the real credential, scrubs secrets from the answer and audits it. Put the \
                 service's placeholder where the API expects its key. The answer is JSON: status, headers, \
                 body (utf-8 or base64), truncated; a denial has an error with code and next_step.\
                 \nServices:{described}"
            ),
            "inputSchema": {
                "type": "object",
                "properties": {
                    "service": Value::Object(service),
                    "method": {
                        "type": "string",
                        "enum": methods,
                        "description": "HTTP method; each service allows only its listed methods",
                    },
                    "path": {
                        "type": "string",
                        "description": "Request path starting with '/', e.g. /v3/a/123/calls.json; must match the service's paths",
                    },
                    "query": {
                        "type": "object",
                        "description": "Query parameters (values: string, number, boolean, or arrays of them)",
                        "additionalProperties": {},
                    },
                    "headers": {
                        "type": "object",
                        "description": "Request headers, e.g. {\"authorization\": \"Bearer <placeholder>\", \"accept\": \"application/json\"}",
                        "additionalProperties": {"type": "string"},
                    },
                    "body": {
                        "description": "Request body: a string sent as is, or any JSON value sent as JSON",
                    },
                    "body_encoding": {
                        "type": "string",
                        "enum": ["utf-8", "base64"],
                        "description": "How a string body is encoded (default utf-8)",
                    },
                },
                "required": ["service", "method", "path"],
                "additionalProperties": false,
            },
        },
        {
            "name": "list_services",
            "title": "Services airlock allows",
            "description": "List this tenant's services: base URL, allowed methods and paths, and where the placeholder goes.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
        },
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_over_the_limit_are_skipped_not_buffered() {
        let input = format!("{{\"a\":1}}\n{}\n{{\"b\":2}}\r\n{}", "x".repeat(100), "y".repeat(5));
        // A small read buffer, so lines arrive in pieces.
        let mut input = BufReader::with_capacity(7, input.as_bytes());
        let mut got = Vec::new();
        while let Some(line) = next_line(&mut input, 20).await.unwrap() {
            got.push(line);
        }
        let message = |s: &str| Line::Message(s.to_owned());
        assert_eq!(got, [message("{\"a\":1}"), Line::TooLong, message("{\"b\":2}\r"), message("yyyyy")]);
    }
}
