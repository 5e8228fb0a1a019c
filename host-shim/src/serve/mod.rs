//! The shim's HTTP API and the listeners it is served on.
//!
//! Two listeners, two audiences:
//! - the **Envoy listener** (the filter's): `GET /v1/identity` (the
//!   identity document, private key included), `GET /healthz`,
//!   `GET /v1/status`, `POST /v1/transactions`, `POST /v1/secrets/resolve`
//!   for the workload itself. By default a Unix socket in a directory only
//!   the shim's and Envoy's users can enter, serving only trusted peer uids;
//!   on TCP (development only, loopback only) every request must carry the
//!   per-start secret.
//! - the **app listener** (optional): `POST /v1/secrets/resolve` for a
//!   caller presenting its own JWT-SVID, and `GET /healthz`.
//!
//! Every request passes [`access::guard`] first. The routes live with the
//! services they serve: [`crate::identity::api`],
//! [`crate::transactions::api`], [`crate::secrets::api`].

pub mod access;
pub mod listen;
pub mod peer;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use axum::Router;

pub use access::{Access, StartSecret};
pub use listen::{Listen, ListenError};

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The socket's directory is reachable by users who must not reach it.
    #[error(
        "{dir}: the shim socket's directory must be entered only by the shim's user{group} \
         (mode {mode:o}, owner uid {owner}); use a private directory"
    )]
    OpenDirectory {
        /// The directory.
        dir: String,
        /// Its mode bits.
        mode: u32,
        /// Its owner.
        owner: u32,
        /// " and group N" when a group is configured.
        group: String,
    },
    /// A file-system or socket call failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Who may connect to the Envoy listener's Unix socket.
#[derive(Debug, Clone, Default)]
pub struct UnixPeers {
    /// Envoy's uid (default: the shim's own).
    pub envoy_uid: Option<u32>,
    /// A group the shim and Envoy share (in a pod: the fsGroup): the
    /// directory becomes 0750 and the socket 0660 with that group.
    pub group: Option<u32>,
}

/// Sets the process umask to 0077: every file and socket the shim creates
/// starts private, so there is no window between creation and `chmod`.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates (0700, or 0750 with `group`) or checks the socket's directory.
fn private_directory(dir: &Path, group: Option<u32>) -> Result<(), BindError> {
    let io = |e| BindError::Io(dir.display().to_string(), e);
    let mode = if group.is_some() { 0o750 } else { 0o700 };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(dir)
            .map_err(io)?;
        if let Some(gid) = group {
            rustix::fs::chown(dir, None, Some(rustix::fs::Gid::from_raw(gid)))
                .map_err(|e| io(e.into()))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    let meta = std::fs::metadata(dir).map_err(io)?;
    let bits = meta.mode() & 0o7777;
    let own = rustix::process::geteuid().as_raw();
    let group_ok = match group {
        Some(gid) => meta.gid() == gid && bits & 0o020 == 0,
        None => bits & 0o070 == 0,
    };
    if meta.uid() != own || bits & 0o007 != 0 || !group_ok {
        return Err(BindError::OpenDirectory {
            dir: dir.display().to_string(),
            mode: bits,
            owner: meta.uid(),
            group: group.map(|g| format!(" and group {g}")).unwrap_or_default(),
        });
    }
    Ok(())
}

fn bind_unix(
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> Result<tokio::net::UnixListener, BindError> {
    let io = |e| BindError::Io(path.display().to_string(), e);
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            std::fs::remove_file(path).map_err(io)?;
        }
        Ok(_) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io)?;
    if let Some(gid) = group {
        rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))
            .map_err(|e| io(e.into()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(listener)
}

/// A bound listener, ready to serve.
#[derive(Debug)]
pub enum Bound {
    /// Loopback TCP.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket serving trusted peers only.
    Private(peer::PeerChecked),
    /// A Unix socket anyone who can reach it may connect to (the app's).
    Shared(tokio::net::UnixListener),
}

/// Binds the Envoy listener: a Unix socket in a private directory, served
/// to Envoy's uid and the shim's own only; or loopback TCP.
pub async fn bind_envoy(listen: &Listen, peers: &UnixPeers) -> Result<Bound, BindError> {
    match listen {
        Listen::Tcp(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .map(Bound::Tcp)
            .map_err(|e| BindError::Io(addr.to_string(), e)),
        Listen::Unix(path) => {
            if let Some(dir) = path.parent() {
                private_directory(dir, peers.group)?;
            }
            let mode = if peers.group.is_some() { 0o660 } else { 0o600 };
            let listener = bind_unix(path, mode, peers.group)?;
            let own = rustix::process::geteuid().as_raw();
            let mut uids = vec![own];
            uids.extend(peers.envoy_uid.filter(|u| *u != own));
            Ok(Bound::Private(peer::PeerChecked::new(listener, uids)))
        }
    }
}

/// Binds the app listener: its callers authenticate with their own
/// JWT-SVIDs, so the socket is open to whoever can reach its directory.
pub async fn bind_app(listen: &Listen) -> Result<Bound, BindError> {
    match listen {
        Listen::Tcp(_) => bind_envoy(listen, &UnixPeers::default()).await,
        Listen::Unix(path) => bind_shared(path).map(Bound::Shared),
    }
}

/// Binds a Unix socket (0666) for the app: who can enter its directory
/// decides who reaches it.
pub fn bind_shared(path: &Path) -> Result<tokio::net::UnixListener, BindError> {
    bind_unix(path, 0o666, None)
}

/// Serves `router` behind `access` on a bound listener until `shutdown`.
pub async fn serve(
    bound: Bound,
    router: Router,
    access: Access,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn_with_state(access, access::guard));
    match bound {
        Bound::Tcp(l) => {
            axum::serve(l, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Bound::Private(l) => {
            axum::serve(l, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Bound::Shared(l) => {
            axum::serve(l, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
