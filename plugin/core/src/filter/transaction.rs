//! Inbound Identity-Per-Transaction: which requests open a transaction, for
//! which resource and action, and how the issued credential reaches the app.

use super::config::TransactionRoute;
use crate::SpiffeId;
use crate::ipt::template::fill;
use crate::ipt::{Action, OpenRequest, OpenResponse, Resource, TransactionId, WimseProof};

/// What a request is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionPlan {
    /// Index of the route that matched.
    pub route: usize,
    /// The one resource.
    pub resource: Resource,
    /// The one action.
    pub action: Action,
    /// The broker.
    pub broker: String,
}

/// How a request relates to the transaction routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionMapping {
    /// No transaction route covers the path.
    None,
    /// Open a transaction for this plan.
    Plan(TransactionPlan),
    /// A route covers the path but the request cannot be mapped: 400.
    Unmappable(String),
}

/// The transaction routes, in configuration order (first match wins).
#[derive(Debug, Clone, Default)]
pub struct TransactionRoutes {
    routes: Vec<TransactionRoute>,
}

impl TransactionRoutes {
    /// The routes.
    pub fn new(routes: Vec<TransactionRoute>) -> Self {
        Self { routes }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every header name credentials are delivered in (to strip from
    /// clients' requests and from responses).
    pub fn credential_headers(&self) -> impl Iterator<Item = &str> {
        self.routes
            .iter()
            .flat_map(|r| r.credential_headers.values().map(String::as_str))
    }

    /// Maps a request (already authenticated and authorized). With
    /// `fold_case` a route applies when the path matches it as sent or
    /// ASCII case-folded; its variables are always taken from the path as
    /// sent. `header(name)` gives every value of a request header.
    pub fn map(
        &self,
        path: &str,
        method: &str,
        fold_case: bool,
        header: impl Fn(&str) -> Vec<String>,
    ) -> TransactionMapping {
        for (index, route) in self.routes.iter().enumerate() {
            let Some(captures) = route.path.captures(path).or_else(|| {
                fold_case
                    .then(|| route.path.captures_folding(path, true))
                    .flatten()
            }) else {
                continue;
            };
            let values = match captures {
                Ok(values) => values,
                Err(e) => return TransactionMapping::Unmappable(e.to_string()),
            };
            let action = match route
                .methods
                .get(method)
                .cloned()
                .or_else(|| Action::for_method(method))
            {
                Some(action) => action,
                None => {
                    return TransactionMapping::Unmappable(format!(
                        "method {method} has no action on this route"
                    ));
                }
            };
            return match fill(&route.resource, &values, &header) {
                Ok(resource) => TransactionMapping::Plan(TransactionPlan {
                    route: index,
                    resource,
                    action,
                    broker: route.broker.clone(),
                }),
                Err(e) => TransactionMapping::Unmappable(e.to_string()),
            };
        }
        TransactionMapping::None
    }

    /// The shim request for a plan; `audience` is the one the filter
    /// verified the token for, so the shim re-verifies it the same way.
    pub fn open_request(
        plan: &TransactionPlan,
        transaction_id: TransactionId,
        token: String,
        audience: Option<&SpiffeId>,
        wimse: Option<WimseProof>,
    ) -> OpenRequest {
        OpenRequest {
            transaction_id,
            token: if wimse.is_some() {
                String::new()
            } else {
                token
            },
            resource: plan.resource.clone(),
            action: plan.action.clone(),
            broker: plan.broker.clone(),
            audience: audience.cloned(),
            wimse: wimse.map(Box::new),
        }
    }

    /// The headers that carry an issued credential to the app; `None` when
    /// the shim's answer lacks a field the route delivers.
    pub fn credential_for_app(
        &self,
        plan: &TransactionPlan,
        response: &OpenResponse,
    ) -> Option<Vec<(String, String)>> {
        let route = self.routes.get(plan.route)?;
        route
            .credential_headers
            .iter()
            .map(|(field, header)| Some((header.clone(), response.credential.get(field)?.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FilterConfig;

    fn routes() -> TransactionRoutes {
        let config = FilterConfig::parse(
            br#"{"direction":"inbound","inbound":{"transactions":[
              {"path":"/objects/{bucket}/{key*}","resource":"arn:aws:s3:::{bucket}/{key}","broker":"aws",
               "credential_headers":{"access_key_id":"x-amz-access-key-id"}},
              {"path":"/secrets/{name}","resource":"secret/data/{header.x-tenant}/{name}","broker":"vault",
               "methods":{"GET":"read","POST":"list"},"credential_headers":{"token":"x-vault-token"}}]}}"#,
        )
        .unwrap();
        TransactionRoutes::new(config.inbound.transactions)
    }

    #[test]
    fn a_covered_request_maps_to_one_resource_and_action() {
        let r = routes();
        let TransactionMapping::Plan(plan) =
            r.map("/objects/b/k/x.csv", "PUT", true, |_| Vec::new())
        else {
            panic!("no plan")
        };
        assert_eq!(plan.resource.as_str(), "arn:aws:s3:::b/k/x.csv");
        assert_eq!(plan.action, Action::Write);
        assert_eq!(plan.broker, "aws");
        let TransactionMapping::Plan(plan) = r.map("/secrets/db", "POST", true, |h| {
            if h == "x-tenant" {
                vec!["acme".into()]
            } else {
                Vec::new()
            }
        }) else {
            panic!("no plan")
        };
        assert_eq!(plan.resource.as_str(), "secret/data/acme/db");
        assert_eq!(plan.action.as_str(), "list");
    }

    #[test]
    fn requests_that_cannot_be_mapped_are_refused_with_a_reason() {
        let r = routes();
        for (path, method) in [
            ("/objects/b/../k", "GET"),
            ("/objects/b/k", "OPTIONS"),
            ("/secrets/db", "GET"),
        ] {
            assert!(
                matches!(
                    r.map(path, method, true, |_| Vec::new()),
                    TransactionMapping::Unmappable(_)
                ),
                "{path} {method}"
            );
        }
        assert_eq!(
            r.map("/other", "GET", true, |_| Vec::new()),
            TransactionMapping::None
        );
    }

    #[test]
    fn a_route_applies_to_the_path_as_sent_or_case_folded() {
        let r = routes();
        let TransactionMapping::Plan(plan) = r.map("/OBJECTS/B/K.csv", "GET", true, |_| Vec::new())
        else {
            panic!("a case-folding app would serve /OBJECTS as /objects")
        };
        assert_eq!(plan.resource.as_str(), "arn:aws:s3:::B/K.csv");
        assert_eq!(
            r.map("/OBJECTS/B/K.csv", "GET", false, |_| Vec::new()),
            TransactionMapping::None
        );
    }
}
