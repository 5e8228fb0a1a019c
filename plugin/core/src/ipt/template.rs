//! Path templates (`/objects/{bucket}/{key*}`) and the resource templates
//! they fill (`arn:aws:s3:::{bucket}/{key}`, `secret/data/{header.x-tenant}/{id}`).

use std::collections::BTreeMap;

use super::resource::{Resource, ResourceError};

/// Longest value one variable may take.
pub const MAX_VALUE_LEN: usize = 256;

/// Why a template or a request could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template itself is malformed (configuration error).
    #[error("template {template:?}: {reason}")]
    Malformed {
        /// The template.
        template: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A variable's value is unusable (`..`, wildcard, empty segment, too long).
    #[error("value of {{{name}}} is not allowed: {reason}")]
    BadValue {
        /// The variable.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The resource template names a variable the request does not supply.
    #[error("no value for {{{0}}}")]
    Missing(String),
    /// The filled-in resource is not a concrete resource.
    #[error("mapped resource is invalid: {0}")]
    Resource(#[from] ResourceError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One(String),
    Rest(String),
}

/// A request path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
}

fn malformed(template: &str, reason: &'static str) -> TemplateError {
    TemplateError::Malformed {
        template: template.to_owned(),
        reason,
    }
}

fn variable_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl PathTemplate {
    /// Parses `/literal/{name}/{rest*}`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let body = text
            .strip_prefix('/')
            .ok_or_else(|| malformed(text, "must start with '/'"))?;
        let parts: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(inner) => match inner.strip_suffix('*') {
                    Some(name) if variable_name(name) => {
                        if i + 1 != parts.len() {
                            return Err(malformed(text, "{name*} must be the last segment"));
                        }
                        Segment::Rest(name.to_owned())
                    }
                    None if variable_name(inner) => Segment::One(inner.to_owned()),
                    _ => return Err(malformed(text, "variable names are [A-Za-z0-9_]+")),
                },
                None if part.is_empty() => return Err(malformed(text, "empty segment")),
                None if part.contains(['{', '}', '*']) => {
                    return Err(malformed(
                        text,
                        "braces and '*' only as whole-segment variables",
                    ));
                }
                None => Segment::Literal((*part).to_owned()),
            };
            segments.push(segment);
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Matches a request path (query ignored). `None`: the template does not
    /// cover the path. `Some(Err)`: it does, but a value is unusable.
    pub fn captures(
        &self,
        request_path: &str,
    ) -> Option<Result<BTreeMap<String, String>, TemplateError>> {
        self.captures_folding(request_path, false)
    }

    /// As [`Self::captures`]; with `fold_case`, literal segments match
    /// ASCII case-insensitively (values keep the case they were sent in).
    pub fn captures_folding(
        &self,
        request_path: &str,
        fold_case: bool,
    ) -> Option<Result<BTreeMap<String, String>, TemplateError>> {
        let path = request_path
            .split_once(['?', '#'])
            .map_or(request_path, |(p, _)| p);
        let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let mut values = BTreeMap::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(l) => {
                    let part = parts.get(i)?;
                    let same = if fold_case {
                        part.eq_ignore_ascii_case(l)
                    } else {
                        part == l
                    };
                    if !same {
                        return None;
                    }
                }
                Segment::One(name) => {
                    let value = parts.get(i)?;
                    values.insert(name.clone(), (*value).to_owned());
                }
                Segment::Rest(name) => {
                    let rest = parts.get(i..).filter(|r| !r.is_empty())?;
                    values.insert(name.clone(), rest.join("/"));
                }
            }
        }
        let last_is_rest = matches!(self.segments.last(), Some(Segment::Rest(_)));
        if !last_is_rest && parts.len() != self.segments.len() {
            return None;
        }
        for (name, value) in &values {
            if let Err(reason) = check_value(value) {
                return Some(Err(TemplateError::BadValue {
                    name: name.clone(),
                    reason,
                }));
            }
        }
        Some(Ok(values))
    }
}

/// A value may hold `/` (from `{x*}`) but no empty, `.` or `..` segment,
/// no wildcard and nothing over [`MAX_VALUE_LEN`].
pub fn check_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return Err("empty or too long");
    }
    if value.contains(['*', '?', '+', '[', ']', '{', '}']) {
        return Err("wildcards are not allowed");
    }
    for segment in value.split('/') {
        match segment {
            "" => return Err("empty path segment"),
            "." | ".." => return Err("'.' and '..' are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

/// Fills `{name}` and `{header.<name>}` placeholders of a resource template.
/// `header(name)` gives every value of a request header: a header the
/// template names must be sent exactly once (the app would see every copy),
/// and its value must not hold a `/` (it fills one segment).
pub fn fill(
    template: &str,
    values: &BTreeMap<String, String>,
    header: impl Fn(&str) -> Vec<String>,
) -> Result<Resource, TemplateError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| malformed(template, "unclosed '{'"))?;
        let name = &after[..end];
        let value = match name.strip_prefix("header.") {
            Some(h) => {
                let bad = |reason| TemplateError::BadValue {
                    name: name.to_owned(),
                    reason,
                };
                let mut sent = header(h);
                let v = match sent.len() {
                    0 => return Err(TemplateError::Missing(name.to_owned())),
                    1 => sent.remove(0),
                    _ => return Err(bad("the header is repeated")),
                };
                if v.contains('/') {
                    return Err(bad("'/' is not allowed in a header value"));
                }
                check_value(&v).map_err(bad)?;
                v
            }
            None => values
                .get(name)
                .cloned()
                .ok_or_else(|| TemplateError::Missing(name.to_owned()))?,
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Resource::parse(&out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> PathTemplate {
        PathTemplate::parse("/objects/{bucket}/{key*}").unwrap()
    }

    #[test]
    fn a_request_maps_to_exactly_one_resource() {
        let values = s3()
            .captures("/objects/b1/reports/2026/q3.csv?x=1")
            .unwrap()
            .unwrap();
        let r = fill("arn:aws:s3:::{bucket}/{key}", &values, |_| Vec::new()).unwrap();
        assert_eq!(r.as_str(), "arn:aws:s3:::b1/reports/2026/q3.csv");
    }

    #[test]
    fn paths_outside_the_template_do_not_match() {
        assert!(s3().captures("/objects/b1").is_none());
        assert!(s3().captures("/other/b1/k").is_none());
        let one = PathTemplate::parse("/items/{id}").unwrap();
        assert!(one.captures("/items/1/extra").is_none());
    }

    #[test]
    fn traversal_wildcards_and_empty_segments_are_refused() {
        for path in [
            "/objects/b1/a/../b",
            "/objects/b1/*",
            "/objects/b1/a//b",
            "/objects/../k",
        ] {
            assert!(
                matches!(
                    s3().captures(path),
                    Some(Err(TemplateError::BadValue { .. }))
                ),
                "{path}"
            );
        }
        let long = format!("/objects/b/{}", "k".repeat(MAX_VALUE_LEN + 1));
        assert!(matches!(s3().captures(&long), Some(Err(_))));
    }

    #[test]
    fn header_values_fill_placeholders_and_are_checked() {
        let values = BTreeMap::from([("id".to_owned(), "42".to_owned())]);
        let r = fill("secret/data/{header.x-tenant}/{id}", &values, |h| {
            if h == "x-tenant" {
                vec!["acme".into()]
            } else {
                Vec::new()
            }
        });
        assert_eq!(r.unwrap().as_str(), "secret/data/acme/42");
        let bad = fill("secret/data/{header.x-tenant}/{id}", &values, |_| {
            vec!["..".into()]
        });
        assert!(matches!(bad, Err(TemplateError::BadValue { .. })));
        assert!(matches!(
            fill("x/{nope}", &values, |_| Vec::new()),
            Err(TemplateError::Missing(_))
        ));
    }

    #[test]
    fn a_repeated_template_header_or_one_spanning_segments_is_refused() {
        let values = BTreeMap::new();
        let t = "secret/data/{header.x-tenant}/db";
        let repeated = fill(t, &values, |_| vec!["acme".into(), "evil".into()]);
        assert!(
            matches!(repeated, Err(TemplateError::BadValue { reason, .. }) if reason.contains("repeated"))
        );
        let spanning = fill(t, &values, |_| vec!["acme/other".into()]);
        assert!(
            matches!(spanning, Err(TemplateError::BadValue { reason, .. }) if reason.contains('/'))
        );
    }

    #[test]
    fn folded_literals_match_and_values_keep_their_case() {
        let values = s3()
            .captures_folding("/OBJECTS/B1/Key", true)
            .unwrap()
            .unwrap();
        assert_eq!(values["bucket"], "B1");
        assert_eq!(values["key"], "Key");
        assert!(s3().captures("/OBJECTS/B1/Key").is_none());
    }

    #[test]
    fn malformed_templates_are_configuration_errors() {
        for t in ["objects/{b}", "/a/{k*}/b", "/a/{}", "/a/b{c}", "/a//b"] {
            assert!(PathTemplate::parse(t).is_err(), "{t}");
        }
    }
}
