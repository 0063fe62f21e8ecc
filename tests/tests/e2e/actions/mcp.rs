//! `airlock mcp` with real MCP clients over its stdio: a JSON-RPC session
//! driven line by line from Rust against a proxy already running, and the
//! official MCP TypeScript SDK's `Client` with its `StdioClientTransport`
//! (pinned in tests/node/package-lock.json), for which `airlock mcp`
//! starts its own in-process proxy.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::*;

/// `airlock mcp --tenant acme` on a home, spoken to line by line.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Every line it wrote to stdout.
    transcript: String,
}

impl Session {
    fn start(home: &Path, stderr: &Path) -> Session {
        let mut child = Command::new(airlock_bin())
            .args(["mcp", "--tenant", "acme"])
            .env("AIRLOCK_HOME", home)
            .env_remove("AIRLOCK_CONFIG")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Session { child, stdin, stdout, next_id: 0, transcript: String::new() }
    }

    async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    async fn read(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
            .await
            .expect("airlock mcp answered within 30s")
            .unwrap()
            .expect("airlock mcp closed stdout");
        self.transcript.push_str(&line);
        self.transcript.push('\n');
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout holds only JSON-RPC ({e}): {line}"))
    }

    /// A request; its response (asserting the id).
    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send_line(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()).await;
        let answer = self.read().await;
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(answer["jsonrpc"], "2.0");
        answer
    }

    async fn result(&mut self, method: &str, params: Value) -> Value {
        let answer = self.request(method, params).await;
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    async fn call(&mut self, tool: &str, arguments: Value) -> (bool, Value) {
        let result = self.result("tools/call", json!({"name": tool, "arguments": arguments})).await;
        let text = result["content"][0]["text"].as_str().unwrap();
        assert_eq!(result["content"][0]["type"], "text");
        (result["isError"].as_bool().unwrap(), serde_json::from_str(text).unwrap())
    }

    /// Closes stdin; the server must exit cleanly.
    async fn finish(mut self) -> String {
        drop(self.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "airlock mcp exited with {status}");
        self.transcript
    }
}

#[tokio::test]
async fn an_mcp_session_lists_the_routes_and_calls_through_a_running_proxy() {
    let upstream = Upstream::start(Protocols::Both).await;
    let text = config(&upstream, "");
    let proxy = TestProxy::start(&text).await;
    // The running proxy's home names its address, so the MCP server finds
    // it listening, has it prove it serves this home, and sends actions
    // there.
    let home = &proxy.home;
    let listen = format!("listen = \"{}\"", proxy.addr());
    std::fs::write(home.path.join("airlock.toml"), text.replace("listen = \"127.0.0.1:0\"", &listen)).unwrap();
    let stderr = home.path.join("mcp.log");
    let mut s = Session::start(&home.path, &stderr);

    let init = s
        .result(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}),
        )
        .await;
    assert_eq!(init["protocolVersion"], "2025-06-18");
    assert_eq!(init["serverInfo"]["name"], "airlock");
    assert!(init["capabilities"]["tools"].is_object() && init["capabilities"]["resources"].is_object());
    s.send_line(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string()).await;
    assert_eq!(s.result("ping", json!({})).await, json!({}));

    // The schema comes from acme's routes: exact hosts only.
    let tools = s.result("tools/list", json!({})).await;
    let names: Vec<&str> = tools["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api_request", "list_services"]);
    let schema = &tools["tools"][0]["inputSchema"];
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["service"]["enum"], json!(["echo", "by-ip", "limited"]));
    assert_eq!(schema["properties"]["method"]["enum"], json!(["GET", "HEAD", "OPTIONS", "POST"]));
    assert_eq!(schema["required"], json!(["service", "method", "path"]));
    let described = schema["properties"]["service"]["description"].as_str().unwrap();
    assert!(described.contains("limited") && described.contains("/v3/a/*"), "{described}");

    let (is_error, services) = s.call("list_services", json!({})).await;
    assert!(!is_error);
    let echo = services.as_array().unwrap().iter().find(|x| x["service"] == "echo").unwrap();
    assert_eq!(echo["methods"], json!(["GET", "HEAD", "OPTIONS", "POST"]));
    assert_eq!(echo["paths"], json!(["*"]));
    assert_eq!(echo["base_url"], format!("https://api.acme.test:{}", upstream.port()));
    assert_eq!(echo["credential"]["placeholder"], ACME_PLACEHOLDER);
    let limited = services.as_array().unwrap().iter().find(|x| x["service"] == "limited").unwrap();
    assert_eq!(limited["methods"], json!(["GET", "HEAD", "OPTIONS"]));
    assert_eq!(limited["paths"], json!(["/v3/a/*"]));
    let resource = s.result("resources/read", json!({"uri": "airlock://services"})).await;
    let listed: Value = serde_json::from_str(resource["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(listed, services);

    // A call end to end: the upstream gets the key, the agent the
    // scrubbed echo, the running proxy's audit the record.
    let auth = format!("Bearer {ACME_PLACEHOLDER}");
    let (is_error, answer) = s
        .call(
            "api_request",
            json!({"service": "echo", "method": "GET", "path": "/mcp", "query": {"n": 1}, "headers": {"authorization": auth}}),
        )
        .await;
    assert!(!is_error, "{answer}");
    assert_eq!(answer["decision"], "allow");
    assert_eq!(answer["status"], 200);
    assert!(answer["body"].as_str().unwrap().contains(&auth), "{answer}");
    let seen = upstream.seen();
    assert_eq!(seen.last().unwrap().path, "/mcp?n=1");
    assert_eq!(seen.last().unwrap().header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));
    let record = audit_record(&proxy, answer["request_id"].as_str().unwrap()).await;
    assert_eq!((record["decision"].as_str(), record["route"].as_str()), (Some("allow"), Some("echo")));

    // A denial is a tool error carrying the code and the next step.
    let before = upstream.seen().len();
    let (is_error, answer) =
        s.call("api_request", json!({"service": "limited", "method": "GET", "path": "/v2/x"})).await;
    assert!(is_error);
    assert_eq!(answer["decision"], "deny");
    assert_eq!(answer["error"]["code"], "path_not_allowed");
    assert!(answer["error"]["next_step"].as_str().unwrap().contains("/v3/a/*"), "{answer}");
    let (is_error, answer) = s.call("api_request", json!({"service": "echo", "method": "DELETE", "path": "/"})).await;
    assert!(is_error);
    assert_eq!(answer["error"]["code"], "method_not_allowed");
    assert_eq!(upstream.seen().len(), before, "denied calls never reach the upstream");

    // Protocol errors are JSON-RPC errors.
    let unknown_tool = s.request("tools/call", json!({"name": "rm_rf", "arguments": {}})).await;
    assert_eq!(unknown_tool["error"]["code"], -32602);
    let unknown_method = s.request("prompts/list", json!({})).await;
    assert_eq!(unknown_method["error"]["code"], -32601);
    s.send_line("this is not json").await;
    let parse_error = s.read().await;
    assert_eq!((parse_error["error"]["code"].as_i64(), &parse_error["id"]), (Some(-32700), &Value::Null));
    // An unknown protocol version is answered with the newest served.
    let init = s.result("initialize", json!({"protocolVersion": "1999-01-01", "capabilities": {}})).await;
    assert_eq!(init["protocolVersion"], "2025-11-25");

    // The proxy stops and another program takes its port: the next call
    // has it prove itself first, and it gets the health check alone,
    // nothing of the tenant's.
    let addr = proxy.addr();
    proxy.proxy.shutdown().await;
    let squatter = tokio::net::TcpListener::bind(addr).await.unwrap();
    let heard = tokio::spawn(async move {
        let (mut conn, _) = squatter.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let healthy = "HTTP/1.1 200 OK\r\nx-airlock-version: 0.1.0\r\nx-airlock-proof: 00\r\ncontent-length: 0\r\n\r\n";
        tokio::io::AsyncWriteExt::write_all(&mut conn, healthy.as_bytes()).await.unwrap();
        // Whatever else comes on the connection.
        let more = tokio::time::timeout(Duration::from_secs(2), async {
            let n = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await.unwrap_or(0);
            buf[..n].to_vec()
        })
        .await
        .unwrap_or_default();
        got.extend_from_slice(&more);
        String::from_utf8_lossy(&got).into_owned()
    });
    let result = s
        .result(
            "tools/call",
            json!({"name": "api_request", "arguments": {"service": "echo", "method": "GET", "path": "/x"}}),
        )
        .await;
    assert_eq!(result["isError"], true, "{result}");
    let said = result["content"][0]["text"].as_str().unwrap();
    assert!(said.contains("did not prove it is this home's airlock"), "{said}");
    let heard = heard.await.unwrap();
    assert!(heard.starts_with("GET /v1/health HTTP/1.1\r\n") && heard.contains("x-airlock-challenge: "), "{heard}");
    assert!(!heard.to_ascii_lowercase().contains("authorization") && !heard.contains("/v1/actions"), "{heard}");

    let transcript = s.finish().await;
    let log = std::fs::read_to_string(&stderr).unwrap();
    for (what, text) in [("airlock mcp's stdout", &transcript), ("airlock mcp's stderr", &log)] {
        assert_clean(what, text);
        assert!(!text.contains(ACME_TOKEN), "{what} shows the tenant token");
    }
}

/// The node_modules with the MCP SDK that scripts/test.sh installs from
/// tests/node/package-lock.json.
fn sdk() -> PathBuf {
    let dir = std::env::var_os("AIRLOCK_TEST_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-node/node_modules"));
    let sdk = dir.join("@modelcontextprotocol/sdk");
    assert!(
        sdk.join("package.json").is_file(),
        "{} lacks @modelcontextprotocol/sdk: run scripts/test.sh (it installs tests/node/package-lock.json into target/test-node)",
        dir.display()
    );
    sdk
}

#[tokio::test]
async fn the_official_typescript_sdk_client_calls_through_airlock_mcp() {
    require_tool("node", "nodejs");
    let sdk = sdk();
    let upstream = Upstream::start(Protocols::Both).await;
    // listen on port 0: `airlock mcp` starts its own proxy in-process.
    let home = TempHome::new("mcp-sdk");
    std::fs::write(home.path.join("airlock.toml"), config(&upstream, "")).unwrap();
    store_standard_secrets(&home.path);
    let js = |p: &str| serde_json::to_string(&sdk.join(p).display().to_string()).unwrap();
    let airlock = serde_json::to_string(&airlock_bin().display().to_string()).unwrap();
    let auth = format!("Bearer {ACME_PLACEHOLDER}");
    let script = format!(
        r#"
const {{ Client }} = require({client});
const {{ StdioClientTransport }} = require({stdio});
(async () => {{
  const transport = new StdioClientTransport({{
    command: {airlock}, args: ["mcp", "--tenant", "acme"], env: {{ ...process.env }}, stderr: "pipe",
  }});
  let stderr = "";
  transport.stderr.on("data", (d) => {{ stderr += d; }});
  const client = new Client({{ name: "airlock-e2e", version: "1.0.0" }});
  await client.connect(transport);
  const tools = await client.listTools();
  const allowed = await client.callTool({{
    name: "api_request",
    arguments: {{ service: "echo", method: "GET", path: "/sdk", headers: {{ authorization: "{auth}" }} }},
  }});
  const denied = await client.callTool({{ name: "api_request", arguments: {{ service: "beta", method: "GET", path: "/" }} }});
  const services = await client.readResource({{ uri: "airlock://services" }});
  console.log(JSON.stringify({{
    server: client.getServerVersion(), protocol: transport.protocolVersion ?? null,
    tools: tools.tools, allowed, denied, services, stderr,
  }}));
  await client.close();
}})().catch((e) => {{ console.error(e); process.exit(1); }});
"#,
        client = js("dist/cjs/client/index.js"),
        stdio = js("dist/cjs/client/stdio.js"),
    );
    let out = Command::new("node")
        .args(["-e", &script])
        .env("AIRLOCK_HOME", &home.path)
        .env_remove("AIRLOCK_CONFIG")
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node failed: {stdout}{stderr}");
    assert_clean("the SDK client's output", &format!("{stdout}{stderr}"));
    assert!(!stdout.contains(ACME_TOKEN));
    let got: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(got["server"]["name"], "airlock");
    let api = got["tools"].as_array().unwrap().iter().find(|t| t["name"] == "api_request").unwrap();
    assert_eq!(api["inputSchema"]["properties"]["service"]["enum"], json!(["echo", "by-ip", "limited"]));

    assert_eq!(got["allowed"]["isError"], false, "{}", got["allowed"]);
    let answer: Value = serde_json::from_str(got["allowed"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(answer["decision"], "allow");
    assert!(answer["body"].as_str().unwrap().contains(&auth), "{answer}");
    assert_eq!(upstream.seen().len(), 1);
    assert_eq!(upstream.seen()[0].header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));

    // acme has no service "beta" (that is tenant beta's route).
    assert_eq!(got["denied"]["isError"], true);
    let answer: Value = serde_json::from_str(got["denied"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(answer["error"]["code"], "host_not_allowed");
    let listed = got["services"]["contents"][0]["text"].as_str().unwrap();
    assert!(listed.contains("\"limited\""), "{listed}");

    // The in-process proxy audited both calls in the home.
    let records = audit_records(&home.path.join("audit.jsonl"));
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0]["request_id"], answer_id(&got["allowed"]));
    assert_eq!(records[1]["code"], "host_not_allowed");
}

fn answer_id(result: &Value) -> Value {
    let answer: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    answer["request_id"].clone()
}
