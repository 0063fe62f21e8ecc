//! airlock end to end: real clients (curl, python3, a Rust client) through
//! the real proxy to real TLS upstreams on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod actions;
mod agents;
mod audit;
mod ca;
mod channels;
mod conformance;
mod credentials;
mod fidelity;
mod grpc;
mod hostile;
mod load;
mod mtls;
mod oauth2;
mod operator;
mod policy;
mod redact;
mod secrets_cli;
mod shutdown;
mod sigv4;
mod skeleton;
mod throttle;
mod vault;
mod ws_credentials;
