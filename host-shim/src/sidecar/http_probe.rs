//! A minimal HTTP/1.1 GET for readiness probes of Envoy's admin listener
//! (a Unix socket, or loopback TCP when asked for).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::serve::Listen;

async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    path: &str,
) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

/// `GET path` on `at`: (status, body), or `None` on any failure.
pub async fn get(at: &Listen, path: &str) -> Option<(u16, String)> {
    let attempt = async {
        match at {
            Listen::Tcp(addr) => {
                exchange(tokio::net::TcpStream::connect(addr).await.ok()?, path).await
            }
            Listen::Unix(p) => exchange(tokio::net::UnixStream::connect(p).await.ok()?, path).await,
        }
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}
