//! Reading a planned secret from its backend: environment, a mounted
//! directory (path confined to it), or OpenBao/Vault KVv2 with version pins
//! and the deleted/destroyed distinction, over the shared OpenBao
//! connection with the store's own token file.

use std::path::Path;
use std::time::Duration;

use ephemera_core::secrets::{Location, ResolveError};
use serde_json::Value;

use crate::provider::http::describe;
use crate::provider::openbao::{OpenBao, TokenFile};
use crate::sensitive::Sensitive;

/// How long a KVv2 read may take.
const TIMEOUT: Duration = Duration::from_secs(3);

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
    let token = TokenFile::shared(Path::new(token_file))
        .token()
        .map_err(|e| unavailable(e.to_string()))?;
    let server = OpenBao::shared(address, None).map_err(|e| unavailable(e.to_string()))?;
    let pin = version.map(|v| format!("?version={v}")).unwrap_or_default();
    let response = server
        .request(
            reqwest::Method::GET,
            &format!("{mount}/data/{path}{pin}"),
            &token,
            TIMEOUT,
        )
        .send()
        .await
        .map_err(|e| unavailable(describe(&e)))?;
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
