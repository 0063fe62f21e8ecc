//! A stand-in API for the README walkthrough: an HTTPS echo server with its
//! own test CA, printing the `Authorization` header of each request it gets.
//!
//! `echo-upstream --listen 127.0.0.1:9443 --ca-out echo-ca.pem [--name api.example.com]`

use std::net::SocketAddr;

use airlock_tests::upstream::{Protocols, Upstream};

#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = "127.0.0.1:9443".parse().expect("valid default");
    let mut ca_out = std::path::PathBuf::from("echo-ca.pem");
    let mut names = vec!["api.example.com".to_owned(), "127.0.0.1".to_owned()];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--listen" => listen = value.parse().unwrap_or_else(|_| usage("--listen takes ip:port")),
            "--ca-out" => ca_out = value.into(),
            "--name" => names.push(value),
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let upstream = Upstream::start_on(listen, Protocols::Both, &names, true).await;
    std::fs::write(&ca_out, upstream.ca.pem())
        .unwrap_or_else(|e| usage(&format!("cannot write {}: {e}", ca_out.display())));
    eprintln!(
        "echo-upstream on https://{} (names: {}); its CA is in {}",
        upstream.addr,
        names.join(", "),
        ca_out.display()
    );
    let _ = tokio::signal::ctrl_c().await;
}

fn usage(msg: &str) -> ! {
    eprintln!("echo-upstream: {msg}\nusage: echo-upstream [--listen IP:PORT] [--ca-out FILE] [--name HOST]...");
    std::process::exit(2)
}
