//! Reading a planned secret from its backend: environment, a mounted
//! directory (path confined to it), or OpenBao/Vault KVv2 with version pins
//! and the deleted/destroyed distinction.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use ephemera_core::secrets::{Location, ResolveError};
use serde_json::Value;

use crate::sensitive::Sensitive;

/// How long a KVv2 read may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// One client, so one connection pool, per store address; built as every
/// provider client is (no redirects; an `https://` address only over TLS).
fn client(address: &str) -> Result<reqwest::Client, ResolveError> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, reqwest::Client>>> = OnceLock::new();
    let mut clients = CLIENTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(client) = clients.get(address) {
        return Ok(client.clone());
    }
    let client = crate::provider_http::client(address, None, TIMEOUT)
        .map_err(|e| ResolveError::StoreUnavailable(e.to_string()))?;
    clients.insert(address.to_owned(), client.clone());
    Ok(client)
}

/// Reads the value at `location`.
pub async fn read(location: &Location) -> Result<Sensitive, ResolveError> {
    match location {
        Location::Env { var } => std::env::var(var)
            .map(Sensitive::new)
            .map_err(|_| ResolveError::NotFound),
        Location::File { dir, path } => read_file(dir, path),
        Location::Kv2 {
            address,
            token_file,
            mount,
            path,
            field,
            version,
        } => read_kv2(address, token_file, mount, path, field.as_deref(), *version).await,
    }
}

fn read_file(dir: &str, path: &str) -> Result<Sensitive, ResolveError> {
    let root = std::fs::canonicalize(dir)
        .map_err(|e| ResolveError::StoreUnavailable(format!("directory {dir}: {e}")))?;
    let full = std::fs::canonicalize(root.join(path)).map_err(|_| ResolveError::NotFound)?;
    // Symlinks and `..` could lead out of the mount: resolve, then confine.
    if !full.starts_with(&root) {
        return Err(ResolveError::NotFound);
    }
    let text = std::fs::read_to_string(&full).map_err(|_| ResolveError::NotFound)?;
    Ok(Sensitive::new(text.trim_end_matches('\n')))
}

async fn read_kv2(
    address: &str,
    token_file: &str,
    mount: &str,
    path: &str,
    field: Option<&str>,
    version: Option<u64>,
) -> Result<Sensitive, ResolveError> {
    let unavailable = |e: String| ResolveError::StoreUnavailable(e);
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| unavailable(format!("{token_file}: {e}")))?;
    let mut url = format!("{}/v1/{mount}/data/{path}", address.trim_end_matches('/'));
    if let Some(v) = version {
        url.push_str(&format!("?version={v}"));
    }
    let response = client(address)?
        .get(&url)
        .header("X-Vault-Token", token.trim())
        .send()
        .await
        .map_err(|e| unavailable(crate::provider_http::describe(&e)))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let metadata = &body["data"]["metadata"];
    match status {
        200 => {}
        404 if metadata["destroyed"] == Value::Bool(true) => {
            return Err(ResolveError::VersionDestroyed);
        }
        404 if metadata["deletion_time"]
            .as_str()
            .is_some_and(|t| !t.is_empty()) =>
        {
            return Err(ResolveError::VersionDeleted);
        }
        404 => return Err(ResolveError::NotFound),
        other => return Err(unavailable(format!("store answered {other}"))),
    }
    let data = &body["data"]["data"];
    match field {
        Some(f) => match data.get(f) {
            Some(Value::String(s)) => Ok(Sensitive::new(s.clone())),
            Some(other) => Ok(Sensitive::new(other.to_string())),
            None => Err(ResolveError::FieldMissing(f.to_owned())),
        },
        None => Ok(Sensitive::new(data.to_string())),
    }
}
