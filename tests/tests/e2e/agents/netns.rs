//! A container-like agent: curl in its own network namespace, whose only
//! way out is the proxy. The namespace has nothing but `lo`; `ns-relay`
//! listens on the namespace's 127.0.0.1 and relays to a Unix socket in the
//! test's temp dir, which the test relays to a running `airlock serve` on
//! the host's 127.0.0.1. The client gets its variables from `airlock env`,
//! as a container would. No address but 127.0.0.1 is ever involved.

use std::time::Duration;

use super::*;

/// Runs `sh -c SCRIPT` in a fresh network namespace with `lo` up; the
/// client command is in `$CLIENT`.
async fn in_namespace(script: &str, client: &str) -> Output {
    Command::new("unshare")
        .args(["--net", "sh", "-c", &format!("set -e\nip link set lo up\n{script}")])
        .env("CLIENT", client)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn curl_in_a_network_namespace_reaches_only_the_proxy() {
    require_tool("curl", "curl");
    require_tool("unshare", "util-linux");
    require_tool("ip", "iproute2");
    let probe = std::process::Command::new("unshare").args(["--net", "true"]).output().unwrap();
    if !probe.status.success() {
        eprintln!(
            "SKIPPED curl_in_a_network_namespace_reaches_only_the_proxy: cannot create a network namespace here \
             (unshare --net: {}); it needs root or CAP_SYS_ADMIN",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    let upstream = Upstream::start(Protocols::Both).await;
    let home = home(&upstream);
    let mut airlock = Served::start(&home.path, "warn").await;
    let addr = airlock.addr;
    let work = TempHome::new("netns");
    let socket = work.path.join("proxy.sock");
    let relay = airlock_tests::relay::unix_to_tcp(&socket, addr).unwrap();

    // The namespace reaches the proxy on its own 127.0.0.1 at the same port;
    // `airlock env` prints the variables for that view (the config it reads
    // names the address the proxy actually got: the home's says port 0).
    let config = std::fs::read_to_string(home.path.join("airlock.toml")).unwrap();
    let view = work.path.join("namespace.toml");
    std::fs::write(&view, config.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""))).unwrap();
    let env = Command::new(airlock_bin())
        .arg("--config")
        .arg(&view)
        .args(["env", "--tenant", "acme", "--format", "sh", "--proxy-host", "127.0.0.1"])
        .env("AIRLOCK_HOME", &home.path)
        .output()
        .await
        .unwrap();
    assert!(env.status.success(), "{}", String::from_utf8_lossy(&env.stderr));
    let env_text = String::from_utf8(env.stdout).unwrap();
    assert!(env_text.contains(&format!("@127.0.0.1:{}'", addr.port())), "{env_text}");
    let env_file = work.path.join("env.sh");
    std::fs::write(&env_file, &env_text).unwrap();

    let url = format!("https://api.acme.test:{}/echo", upstream.port());
    let curl = format!("curl -sS --connect-timeout 5 --max-time 20 -H \"Authorization: Bearer $ACME_API_KEY\" {url}");
    let through_proxy = format!(
        ". {}\nexec {} 127.0.0.1:{} {} -- sh -c \"$CLIENT\"",
        env_file.display(),
        env!("CARGO_BIN_EXE_ns-relay"),
        addr.port(),
        socket.display()
    );
    let out = in_namespace(&through_proxy, &curl).await;
    check_client_output("curl in a network namespace", &out);
    assert_eq!(upstream.seen().len(), 1, "curl went through airlock to the upstream");
    assert_eq!(upstream.seen()[0].header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));

    // Without the proxy there is no way out: the routed name does not
    // resolve (curl exit 6), and the host's 127.0.0.1 is not this
    // namespace's (exit 7: nothing listens on the upstream's port here).
    let no_proxy = format!(
        ". {}\nunset HTTPS_PROXY https_proxy HTTP_PROXY http_proxy\nexec sh -c \"$CLIENT\"",
        env_file.display()
    );
    let out = in_namespace(&no_proxy, &curl).await;
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    let direct = curl.replace("api.acme.test", "127.0.0.1");
    let out = in_namespace(&no_proxy, &direct).await;
    assert_eq!(out.status.code(), Some(7), "{}", output_text(&out));
    assert_eq!(upstream.seen().len(), 1, "nothing but the proxied request reached the upstream");

    // serve writes the audit record once the response is done; wait for it.
    let audit_path = home.path.join("audit.jsonl");
    let audited = || !airlock_tests::audit_records(&audit_path).is_empty();
    assert!(wait_for(Duration::from_secs(10), audited).await, "serve wrote an audit record");
    relay.abort();
    airlock.child.start_kill().unwrap();
    airlock.child.wait().await.unwrap();
    assert_no_secret("airlock serve's log", &airlock.log(), &[ACME_SECRET]);
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let verified = airlock::audit::verify(&audit_path, None).unwrap();
    assert_eq!(verified.map(|v| v.records), Ok(2), "{audit}");
}
