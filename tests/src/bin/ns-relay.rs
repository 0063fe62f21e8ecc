//! Runs a command with a TCP listener beside it that relays to a Unix
//! socket: inside a network namespace that has only `lo`, this is the
//! client's one way out (to whatever serves the socket outside).
//!
//! `ns-relay LISTEN_ADDR UNIX_SOCKET -- COMMAND [ARG]...`
//!
//! The listener is bound before the command starts, so the command never
//! races it; the exit status is the command's (125 when ns-relay itself
//! fails).

use std::net::SocketAddr;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, socket, dashes, command @ ..] = args.as_slice() else { usage("too few arguments") };
    if dashes != "--" || command.is_empty() {
        usage("the command goes after --");
    }
    let listen: SocketAddr = listen.parse().unwrap_or_else(|_| usage("LISTEN_ADDR takes ip:port"));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot listen on {listen}: {e}")));
    let relay = airlock_tests::relay::tcp_to_unix(listener, socket.into());
    let status = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .status()
        .await
        .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", command[0])));
    relay.abort();
    ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1))
}

fn usage(msg: &str) -> ! {
    fail(&format!("{msg}\nusage: ns-relay LISTEN_ADDR UNIX_SOCKET -- COMMAND [ARG]..."))
}

fn fail(msg: &str) -> ! {
    eprintln!("ns-relay: {msg}");
    std::process::exit(125)
}
