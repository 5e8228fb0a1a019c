//! Canonical secret URIs: `file://<mount>/<path>`,
//! `openbao+kv2://<mount>/<path>#<field>?version=<n>`, `hashicorp+kv2://…`.
//!
//! Parsing is strict: allow-listed providers and engines, path segments of
//! `[A-Za-z0-9._-]+` (no `.`, no `..` anywhere, no empty segment, no
//! percent-encoding),
//! no wildcards, one fragment at most, no duplicate or unknown query keys,
//! no `mount` in the query, and the mount must be one the tenant may use.
//! The canonical form lower-cases the scheme and sorts query parameters.

use std::collections::BTreeMap;
use std::fmt;

/// Where a secret lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// A mounted directory.
    File,
    /// OpenBao, KV version 2.
    OpenBaoKv2,
    /// HashiCorp Vault, KV version 2.
    HashiCorpKv2,
}

impl Provider {
    /// The canonical scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::OpenBaoKv2 => "openbao+kv2",
            Self::HashiCorpKv2 => "hashicorp+kv2",
        }
    }

    /// True for the KVv2 engines (fields and versions apply).
    pub fn is_kv2(self) -> bool {
        !matches!(self, Self::File)
    }
}

/// Why a string is not an acceptable secret URI. [`UriError::code`] is the
/// stable code operators and tools match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// A path segment, mount or field is empty, `.`, holds `..`, is
    /// percent-encoded or holds a character outside `[A-Za-z0-9._-]`; a
    /// second `#`; a scheme without `://`, or an empty one.
    #[error("ILLEGAL_SEGMENT: {0}")]
    IllegalSegment(String),
    /// A wildcard (`*`).
    #[error("INVALID_WILDCARD: secret URIs name one secret, never a pattern")]
    InvalidWildcard,
    /// Not an allow-listed provider and engine.
    #[error("UNSUPPORTED_ENGINE: {0}")]
    UnsupportedEngine(String),
    /// A duplicate, unknown or malformed query parameter.
    #[error("AMBIGUOUS_QUERY: {0}")]
    AmbiguousQuery(String),
    /// `mount` given in the query as well as in the authority.
    #[error("DOUBLE_MOUNT_SOURCE: the mount comes from the URI authority only")]
    DoubleMountSource,
    /// The mount is not among the tenant's allowed mounts.
    #[error("TENANT_MOUNT_MISMATCH: mount {0:?} is not allowed for this tenant")]
    TenantMountMismatch(String),
}

impl UriError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::IllegalSegment(_) => "ILLEGAL_SEGMENT",
            Self::InvalidWildcard => "INVALID_WILDCARD",
            Self::UnsupportedEngine(_) => "UNSUPPORTED_ENGINE",
            Self::AmbiguousQuery(_) => "AMBIGUOUS_QUERY",
            Self::DoubleMountSource => "DOUBLE_MOUNT_SOURCE",
            Self::TenantMountMismatch(_) => "TENANT_MOUNT_MISMATCH",
        }
    }
}

/// A validated secret URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretUri {
    provider: Provider,
    mount: String,
    path: Vec<String>,
    field: Option<String>,
    query: BTreeMap<String, String>,
}

fn check_segment(what: &str, segment: &str) -> Result<(), UriError> {
    let bad = |why: &str| {
        Err(UriError::IllegalSegment(format!(
            "{what} {segment:?} {why}"
        )))
    };
    if segment.is_empty() {
        return bad("is empty");
    }
    if segment == "." || segment.contains("..") {
        return bad("is or holds a relative segment");
    }
    if segment.contains('%') {
        return bad("is percent-encoded");
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("may only hold [A-Za-z0-9._-]");
    }
    Ok(())
}

impl SecretUri {
    /// Parses and validates `text`; with `allowed_mounts`, the mount must be
    /// one of them.
    pub fn parse(text: &str, allowed_mounts: Option<&[String]>) -> Result<Self, UriError> {
        if text.contains('*') {
            return Err(UriError::InvalidWildcard);
        }
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            UriError::IllegalSegment("missing the \"://\" after <provider>+<engine>".into())
        })?;
        if scheme.is_empty() {
            return Err(UriError::IllegalSegment("empty scheme".into()));
        }
        let provider = match scheme.to_ascii_lowercase().as_str() {
            "file" => Provider::File,
            "openbao+kv2" => Provider::OpenBaoKv2,
            "hashicorp+kv2" => Provider::HashiCorpKv2,
            other => {
                return Err(UriError::UnsupportedEngine(format!(
                    "{other:?} (supported: file, openbao+kv2, hashicorp+kv2)"
                )));
            }
        };
        // Path up to the first '#' or '?'; then at most one '#field' and one
        // '?query', in either order.
        let path_end = rest.find(['#', '?']).unwrap_or(rest.len());
        let (path_text, mut tail) = rest.split_at(path_end);
        let mut field = None;
        let mut query_text = None;
        while let Some(marker) = tail.chars().next() {
            let body = &tail[1..];
            let end = body.find(['#', '?']).unwrap_or(body.len());
            let part = &body[..end];
            match marker {
                '#' if field.is_none() => field = Some(part.to_owned()),
                '#' => return Err(UriError::IllegalSegment("a second '#' fragment".into())),
                _ if query_text.is_none() => query_text = Some(part.to_owned()),
                _ => return Err(UriError::AmbiguousQuery("a second '?' query".into())),
            }
            tail = &body[end..];
        }
        let mut segments = path_text.split('/');
        let mount = segments.next().unwrap_or_default().to_owned();
        check_segment("mount", &mount)?;
        let path: Vec<String> = segments.map(str::to_owned).collect();
        if path.is_empty() {
            return Err(UriError::IllegalSegment(
                "no secret path after the mount".into(),
            ));
        }
        for segment in &path {
            check_segment("path segment", segment)?;
        }
        if let Some(f) = &field {
            if !provider.is_kv2() {
                return Err(UriError::IllegalSegment(
                    "file secrets have no #field".into(),
                ));
            }
            check_segment("field", f)?;
        }
        let mut query = BTreeMap::new();
        if let Some(q) = query_text {
            for pair in q.split('&') {
                let (key, value) = pair.split_once('=').ok_or_else(|| {
                    UriError::AmbiguousQuery(format!("{pair:?} is not key=value"))
                })?;
                let key = key.to_ascii_lowercase();
                if key == "mount" {
                    return Err(UriError::DoubleMountSource);
                }
                if query.contains_key(&key) {
                    return Err(UriError::AmbiguousQuery(format!("{key:?} is given twice")));
                }
                match key.as_str() {
                    "version" if provider.is_kv2() => {
                        let ok = !value.is_empty()
                            && value.bytes().all(|b| b.is_ascii_digit())
                            && !value.starts_with('0');
                        if !ok {
                            return Err(UriError::AmbiguousQuery(format!(
                                "version {value:?} is not a positive integer"
                            )));
                        }
                    }
                    _ => {
                        return Err(UriError::AmbiguousQuery(format!(
                            "unknown parameter {key:?} for {}",
                            provider.scheme()
                        )));
                    }
                }
                query.insert(key, value.to_owned());
            }
        }
        if let Some(allowed) = allowed_mounts
            && !allowed.contains(&mount)
        {
            return Err(UriError::TenantMountMismatch(mount));
        }
        Ok(Self {
            provider,
            mount,
            path,
            field,
            query,
        })
    }

    /// The provider and engine.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The mount (KV engine mount, or the directory's name).
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// The path below the mount, `/`-joined.
    pub fn path(&self) -> String {
        self.path.join("/")
    }

    /// The field of a KVv2 secret.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The pinned KVv2 version.
    pub fn version(&self) -> Option<u64> {
        self.query.get("version").and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for SecretUri {
    /// The canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}/{}",
            self.provider.scheme(),
            self.mount,
            self.path.join("/")
        )?;
        if let Some(field) = &self.field {
            write!(f, "#{field}")?;
        }
        for (i, (k, v)) in self.query.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}
