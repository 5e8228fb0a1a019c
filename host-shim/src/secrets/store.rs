//! Reading a planned secret from its backend: environment, a mounted
//! directory (path confined to it), a gopass/`pass` password store, or
//! OpenBao/Vault KVv2 with version pins
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
        Location::Gopass {
            binary,
            store_dir,
            gnupg_home,
            path,
            field,
        } => {
            let output =
                gopass_show(binary, store_dir.as_deref(), gnupg_home.as_deref(), path).await?;
            entry_value(&output, field.as_deref())
        }
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

/// How long a password store read may take (GPG included).
const SHOW_TIMEOUT: Duration = Duration::from_secs(5);

/// `<binary> show -- <path>`, without a shell; stdout only. Neither the
/// command's output nor its stderr is ever logged or returned: stderr only
/// tells "not in the store" from "store unavailable".
async fn gopass_show(
    binary: &str,
    store_dir: Option<&str>,
    gnupg_home: Option<&str>,
    path: &str,
) -> Result<Sensitive, ResolveError> {
    let unavailable = |why: String| ResolveError::StoreUnavailable(why);
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["show", "--", path])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = store_dir {
        command.env("PASSWORD_STORE_DIR", dir);
    }
    if let Some(home) = gnupg_home {
        command.env("GNUPGHOME", home);
    }
    let child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => unavailable(format!("{binary}: no such program")),
        _ => unavailable(format!("{binary}: cannot start: {e}")),
    })?;
    let output = tokio::time::timeout(SHOW_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| unavailable(format!("{binary} show timed out")))?
        .map_err(|e| unavailable(format!("{binary} show: {e}")))?;
    if output.status.success() {
        return String::from_utf8(output.stdout)
            .map(Sensitive::new)
            .map_err(|_| unavailable(format!("{binary} show: output is not UTF-8")));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    // pass: "Error: X is not in the password store."; gopass: "entry is
    // not in the password store".
    if stderr.contains("is not in the password store") {
        return Err(ResolveError::NotFound);
    }
    Err(unavailable(format!(
        "{binary} show failed (exit {}): the store or its GPG key is not usable",
        output
            .status
            .code()
            .map_or_else(|| "by signal".to_owned(), |c| c.to_string())
    )))
}

/// The password (first line) of an entry, or the value of its `key: value`
/// line named `field`.
fn entry_value(entry: &Sensitive, field: Option<&str>) -> Result<Sensitive, ResolveError> {
    let mut lines = entry.expose().lines();
    let Some(field) = field else {
        return Ok(Sensitive::new(lines.next().unwrap_or_default()));
    };
    lines
        .skip(1)
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == field).then(|| Sensitive::new(value.trim()))
        })
        .ok_or_else(|| ResolveError::FieldMissing(field.to_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_the_first_line_and_fields_are_key_value_lines() {
        let entry = Sensitive::new("s3cret\nuser: svc\nurl: https://x:8443/y\n");
        assert_eq!(entry_value(&entry, None).unwrap().expose(), "s3cret");
        assert_eq!(entry_value(&entry, Some("user")).unwrap().expose(), "svc");
        assert_eq!(
            entry_value(&entry, Some("url")).unwrap().expose(),
            "https://x:8443/y"
        );
        assert!(matches!(
            entry_value(&entry, Some("s3cret")),
            Err(ResolveError::FieldMissing(_))
        ));
        assert!(
            matches!(entry_value(&entry, Some("pin")), Err(ResolveError::FieldMissing(f)) if f == "pin")
        );
    }
}
