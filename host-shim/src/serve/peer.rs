//! A Unix listener that serves only peers whose uid it was told to trust
//! (`SO_PEERCRED`); other connections are closed unanswered.

use axum::serve::Listener;
use tokio::net::{UnixListener, UnixStream};

/// Accepts connections from trusted uids only.
#[derive(Debug)]
pub struct PeerChecked {
    inner: UnixListener,
    uids: Vec<u32>,
}

impl PeerChecked {
    /// Wraps `inner`, trusting `uids`.
    pub fn new(inner: UnixListener, uids: Vec<u32>) -> Self {
        Self { inner, uids }
    }
}

impl Listener for PeerChecked {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = Listener::accept(&mut self.inner).await;
            match io.peer_cred() {
                Ok(cred) if self.uids.contains(&cred.uid()) => return (io, addr),
                Ok(cred) => tracing::warn!(
                    "refused a connection from uid {} (pid {:?}): not a trusted peer",
                    cred.uid(),
                    cred.pid()
                ),
                Err(e) => tracing::warn!("refused a connection without peer credentials: {e}"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
