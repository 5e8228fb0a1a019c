//! Where a shim listener is: a Unix socket (the default) or, for
//! development outside a pod, a loopback TCP port.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A listener address: `unix:PATH` or `tcp:HOST:PORT` (loopback only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// `unix:` without a path.
    #[error("unix: needs a socket path")]
    EmptyPath,
    /// `tcp:` with something that is not an IP address and port.
    #[error("{0:?} is not tcp:IP:PORT")]
    BadTcp(String),
    /// A TCP address other peers could reach.
    #[error("{0} is not a loopback address: the shim never listens beyond this host")]
    NotLoopback(SocketAddr),
    /// Neither form.
    #[error("{0:?} is neither unix:PATH nor tcp:127.0.0.1:PORT")]
    Unknown(String),
}

impl std::str::FromStr for Listen {
    type Err = ListenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            return match path {
                "" => Err(ListenError::EmptyPath),
                path => Ok(Self::Unix(path.into())),
            };
        }
        let Some(addr) = s.strip_prefix("tcp:") else {
            return Err(ListenError::Unknown(s.to_owned()));
        };
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| ListenError::BadTcp(s.to_owned()))?;
        if !addr.ip().is_loopback() {
            return Err(ListenError::NotLoopback(addr));
        }
        Ok(Self::Tcp(addr))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_sockets_and_loopback_tcp_are_accepted() {
        assert_eq!(
            "unix:/run/e/shim.sock".parse::<Listen>(),
            Ok(Listen::Unix("/run/e/shim.sock".into()))
        );
        assert!(matches!(
            "tcp:127.0.0.1:15080".parse::<Listen>(),
            Ok(Listen::Tcp(_))
        ));
        assert!(matches!(
            "tcp:[::1]:15080".parse::<Listen>(),
            Ok(Listen::Tcp(_))
        ));
    }

    #[test]
    fn a_non_loopback_address_is_a_configuration_error() {
        for text in ["tcp:0.0.0.0:15080", "tcp:10.0.0.7:15080", "tcp:[::]:1"] {
            assert!(
                matches!(text.parse::<Listen>(), Err(ListenError::NotLoopback(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn tcp_must_be_asked_for_by_name() {
        assert_eq!(
            "127.0.0.1:15080".parse::<Listen>(),
            Err(ListenError::Unknown("127.0.0.1:15080".into()))
        );
        assert_eq!("unix:".parse::<Listen>(), Err(ListenError::EmptyPath));
        assert!(matches!(
            "tcp:localhost:1".parse::<Listen>(),
            Err(ListenError::BadTcp(_))
        ));
    }
}
