//! AWS STS: `AssumeRole` with an inline session policy of one statement —
//! one API action on one resource ARN — signed with SigV4. STS credentials
//! cannot be revoked: the session's lifetime is the backstop, and the ledger
//! says so.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use ephemera_core::ipt::{Action, Resource};
use serde::Deserialize;

use super::{BrokerError, BrokerSetupError, Issued, Revocation};
use crate::clock::unix_now;
use crate::provider::http::{client, describe};
use crate::sensitive::Sensitive;

/// The shortest session STS grants.
pub const MIN_DURATION_SECS: u64 = 900;

/// Configuration of an STS broker. The shim's own credentials come from
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StsConfig {
    /// STS endpoint, e.g. `https://sts.amazonaws.com`.
    pub endpoint: String,
    /// Signing region.
    #[serde(default = "default_region")]
    pub region: String,
    /// The role assumed for each transaction.
    pub role_arn: String,
    /// Session lifetime, seconds (at least 900).
    #[serde(default = "default_duration")]
    pub duration_secs: u64,
    /// `ExternalId` the role's trust policy requires, if any.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Request timeout, milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// PEM CAs trusted for an `https://` endpoint instead of the platform's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_duration() -> u64 {
    MIN_DURATION_SECS
}
fn default_timeout() -> u64 {
    3000
}

/// An STS broker.
#[derive(Debug, Clone)]
pub struct StsBroker {
    name: String,
    config: StsConfig,
    access_key_id: String,
    secret_access_key: Sensitive,
    session_token: Option<Sensitive>,
    http: reqwest::Client,
}

/// The S3 API action for an action (anything else passes through).
pub fn api_action(action: &Action) -> &str {
    match action {
        Action::Read => "s3:GetObject",
        Action::Write => "s3:PutObject",
        Action::Delete => "s3:DeleteObject",
        Action::Tag => "s3:PutObjectTagging",
        Action::Other(other) => other,
    }
}

/// The one-statement session policy, exactly as sent.
pub fn session_policy(resource: &Resource, action: &Action) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":[{}],"Resource":[{}]}}]}}"#,
        quote(api_action(action)),
        quote(resource.as_str())
    )
}

/// Text of the first `<tag>` element of an XML document, with character
/// and predefined entity references decoded.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut inside = false;
    let mut text = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if !inside && e.local_name().as_ref() == tag.as_bytes() => {
                inside = true;
            }
            Event::Text(t) if inside => text.push_str(&t.decode().ok()?),
            Event::CData(c) if inside => text.push_str(&c.decode().ok()?),
            Event::GeneralRef(r) if inside => match r.resolve_char_ref().ok()? {
                Some(c) => text.push(c),
                None => text.push_str(quick_xml::escape::resolve_predefined_entity(
                    &r.decode().ok()?,
                )?),
            },
            Event::End(e) if inside && e.local_name().as_ref() == tag.as_bytes() => {
                return Some(text);
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

impl StsBroker {
    /// Builds the broker; a duration under 900 s is a configuration error.
    pub fn new(name: &str, config: StsConfig) -> Result<Self, BrokerSetupError> {
        let broker = || name.to_owned();
        if config.duration_secs < MIN_DURATION_SECS {
            return Err(BrokerSetupError::ShortSession {
                broker: broker(),
                duration_secs: config.duration_secs,
                minimum: MIN_DURATION_SECS,
            });
        }
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        let required = |variable: &'static str| {
            var(variable).ok_or_else(|| BrokerSetupError::MissingCredential {
                broker: broker(),
                variable,
            })
        };
        let access_key_id = required("AWS_ACCESS_KEY_ID")?;
        let secret = required("AWS_SECRET_ACCESS_KEY")?;
        let http = client(
            &config.endpoint,
            config.ca_file.as_deref(),
            Some(Duration::from_millis(config.timeout_ms)),
        )
        .map_err(|source| BrokerSetupError::Client {
            broker: broker(),
            source,
        })?;
        Ok(Self {
            name: name.to_owned(),
            config,
            access_key_id,
            secret_access_key: Sensitive::new(secret),
            session_token: var("AWS_SESSION_TOKEN").map(Sensitive::new),
            http,
        })
    }

    /// The broker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn form(&self, transaction_id: &str, resource: &Resource, action: &Action) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", "AssumeRole")
            .append_pair("Version", "2011-06-15")
            .append_pair("RoleArn", &self.config.role_arn)
            .append_pair("RoleSessionName", &format!("ephemera-{transaction_id}"))
            .append_pair("DurationSeconds", &self.config.duration_secs.to_string())
            .append_pair("Policy", &session_policy(resource, action));
        if let Some(id) = &self.config.external_id {
            form.append_pair("ExternalId", id);
        }
        form.finish()
    }

    fn fail(&self, reason: impl Into<String>) -> BrokerError {
        BrokerError::Unavailable {
            broker: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Assumes the role with the one-statement session policy.
    pub async fn issue(
        &self,
        transaction_id: &str,
        resource: &Resource,
        action: &Action,
    ) -> Result<Issued, BrokerError> {
        let body = self.form(transaction_id, resource, action);
        let url = format!("{}/", self.config.endpoint.trim_end_matches('/'));
        let host = url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let headers = [
            ("host", host.as_str()),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
        ];
        let identity = Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose().to_owned(),
            self.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "ephemera",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.config.region)
            .name("sts")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| self.fail(format!("signing: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url.clone(),
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| self.fail(format!("signing: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| self.fail(format!("signing: {e}")))?
            .into_parts();
        let mut request = self.http.post(&url).body(body);
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            if name != "host" {
                request = request.header(name, value);
            }
        }
        let issued_at = unix_now();
        let response = request.send().await.map_err(|e| self.fail(describe(&e)))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let code = xml_text(&text, "Code").unwrap_or_else(|| "unknown".into());
            let message = xml_text(&text, "Message").unwrap_or_default();
            return Err(BrokerError::Refused {
                broker: self.name.clone(),
                status: status.as_u16(),
                reason: format!("{code}: {message}"),
            });
        }
        let field = |tag: &str| {
            xml_text(&text, tag).ok_or_else(|| BrokerError::Mismatch {
                broker: self.name.clone(),
                reason: format!("no {tag} in the AssumeRole response"),
            })
        };
        let credential = BTreeMap::from([
            (
                "access_key_id".to_owned(),
                Sensitive::new(field("AccessKeyId")?),
            ),
            (
                "secret_access_key".to_owned(),
                Sensitive::new(field("SecretAccessKey")?),
            ),
            (
                "session_token".to_owned(),
                Sensitive::new(field("SessionToken")?),
            ),
        ]);
        Ok(Issued {
            credential,
            expires_at: issued_at + self.config.duration_secs,
            blast_radius: format!(
                "single S3 object {resource}, {}, at most {} s (no revocation: the session lifetime is the backstop)",
                api_action(action),
                self.config.duration_secs
            ),
            revocation: Revocation::TtlBackstop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_policy_is_exactly_one_statement() {
        let r = Resource::parse("arn:aws:s3:::reports/2026/q3.csv").unwrap();
        assert_eq!(
            session_policy(&r, &Action::Read),
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::reports/2026/q3.csv"]}]}"#
        );
        let expected = [
            (Action::Write, "s3:PutObject"),
            (Action::Delete, "s3:DeleteObject"),
            (Action::Tag, "s3:PutObjectTagging"),
            (Action::parse("s3:GetObjectAcl").unwrap(), "s3:GetObjectAcl"),
        ];
        for (action, api) in expected {
            let policy: serde_json::Value =
                serde_json::from_str(&session_policy(&r, &action)).unwrap();
            assert_eq!(policy["Statement"].as_array().unwrap().len(), 1);
            assert_eq!(policy["Statement"][0]["Action"], serde_json::json!([api]));
            assert_eq!(
                policy["Statement"][0]["Resource"],
                serde_json::json!([r.as_str()])
            );
        }
    }

    #[test]
    fn sessions_shorter_than_sts_allows_are_a_configuration_error() {
        let config = StsConfig {
            endpoint: "http://127.0.0.1:1".into(),
            region: default_region(),
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            duration_secs: 60,
            external_id: None,
            timeout_ms: 100,
            ca_file: None,
        };
        let err = StsBroker::new("aws", config).unwrap_err().to_string();
        assert!(err.contains("below STS's minimum of 900"), "{err}");
    }

    #[test]
    fn xml_fields_are_read_by_tag_with_entities_decoded() {
        let xml = "<a><Credentials><AccessKeyId>AK</AccessKeyId>\
                   <SessionToken>a&amp;b&#43;c&lt;</SessionToken></Credentials></a>";
        assert_eq!(xml_text(xml, "AccessKeyId").as_deref(), Some("AK"));
        assert_eq!(xml_text(xml, "SessionToken").as_deref(), Some("a&b+c<"));
        assert_eq!(xml_text(xml, "Missing"), None);
        assert_eq!(xml_text("<a><b>unclosed", "b"), None);
    }
}
