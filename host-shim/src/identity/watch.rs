//! Watching the identity files: file events on their directories (atomic
//! replace, rename, Kubernetes' symlink swap) plus a periodic re-check.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::identity::source::{IdentitySource, Reload};

/// How long to wait after an event for the rest of a multi-file update.
const SETTLE: Duration = Duration::from_millis(15);
/// Fallback re-check period (filesystems without events).
const RESCAN: Duration = Duration::from_secs(2);
/// How often a WIT near its expiry is warned about.
const WIT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Reloads `source` on every change until the process ends.
pub async fn run(source: Arc<IdentitySource>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the files (our own reloads) raises access events: only
        // changes count, or every reload would trigger the next one.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = tx.send(());
        }
    });
    let dirs: BTreeSet<PathBuf> = source
        .files()
        .iter()
        .map(|p| {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
        })
        .collect();
    let _watcher = match watcher {
        Ok(mut w) => {
            for dir in &dirs {
                if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(
                        "cannot watch {}: {e}; relying on periodic checks",
                        dir.display()
                    );
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!("file events unavailable ({e}); relying on periodic checks");
            None
        }
    };
    let mut rescan = tokio::time::interval(RESCAN);
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
            }
            _ = rescan.tick() => {}
        }
        match source.reload() {
            Ok(Reload::Changed { generation }) => {
                tracing::info!("identity generation {generation} served");
            }
            Ok(Reload::Unchanged) => {}
            Err(e) => tracing::error!("identity reload refused, keeping the last good one: {e}"),
        }
        source.check_wit_expiry(crate::clock::unix_now(), WIT_WARNING_INTERVAL);
    }
}
