//! Byte relays between TCP and Unix sockets, for putting a client in a
//! network namespace whose only way out is the proxy: inside, a TCP
//! listener on the namespace's own 127.0.0.1 relays to a Unix socket (file
//! system paths cross network namespaces); outside, that socket relays to
//! the proxy's 127.0.0.1 address. No other address is ever involved.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// Relays every connection accepted on `listener` to the Unix socket at
/// `to`, until the task is aborted.
pub fn tcp_to_unix(listener: TcpListener, to: PathBuf) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut unix) = UnixStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    })
}

/// Listens on a Unix socket at `path` and relays every connection to `to`,
/// until the task is aborted.
pub fn unix_to_tcp(path: &Path, to: SocketAddr) -> std::io::Result<JoinHandle<()>> {
    let listener = UnixListener::bind(path)?;
    Ok(tokio::spawn(async move {
        while let Ok((mut unix, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut tcp) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
                }
            });
        }
    }))
}
