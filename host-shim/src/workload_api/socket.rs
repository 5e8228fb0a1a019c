//! Where the Workload API listens: a Unix socket, named as clients name it
//! in `SPIFFE_ENDPOINT_SOCKET` (`unix:PATH` or `unix://PATH`).

use std::path::{Path, PathBuf};

use crate::serve::{self, BindError};

/// The Workload API's socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadApiSocket(PathBuf);

/// Why the Workload API cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Not `unix:` with an absolute path.
    #[error(
        "{0:?}: the Workload API listens on a Unix socket: unix:/ABSOLUTE/PATH (or unix:///ABSOLUTE/PATH)"
    )]
    Address(String),
    /// The socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The gRPC server stopped with an error.
    #[error("workload API: {0}")]
    Serve(String),
}

impl std::str::FromStr for WorkloadApiSocket {
    type Err = SocketError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let path = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| SocketError::Address(s.to_owned()))?;
        Ok(Self(path.into()))
    }
}

impl WorkloadApiSocket {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Binds the socket, 0666: the app reaches it through the directory it
    /// mounts; who can enter that directory is the boundary.
    pub fn bind(&self) -> Result<tokio::net::UnixListener, SocketError> {
        Ok(serve::bind_shared(&self.0)?)
    }
}

impl std::fmt::Display for WorkloadApiSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unix:{}", self.0.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_a_unix_socket_are_accepted() {
        for text in ["unix:/run/spire/api.sock", "unix:///run/spire/api.sock"] {
            let socket: WorkloadApiSocket = text.parse().unwrap();
            assert_eq!(socket.path(), Path::new("/run/spire/api.sock"));
        }
    }

    #[test]
    fn tcp_and_relative_paths_are_refused() {
        for text in [
            "tcp:127.0.0.1:8081",
            "unix:api.sock",
            "unix:",
            "/run/api.sock",
        ] {
            assert!(
                matches!(
                    text.parse::<WorkloadApiSocket>(),
                    Err(SocketError::Address(_))
                ),
                "{text}"
            );
        }
    }
}
