//! The SPIFFE Workload API (JWT-SVID profile) for the app, over gRPC on a
//! Unix socket the app mounts: `FetchJWTSVID`, `FetchJWTBundles`,
//! `ValidateJWTSVID`. It hands out tokens and standard bundles only, never
//! keys, secrets or transaction credentials. The X.509 methods answer
//! `Unimplemented`.

mod authority;
mod claims;
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod proto;
mod socket;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use ephemera_core::secrets::secrets_audience;
use ephemera_core::token::random_jti;
use ephemera_core::{Bundle, RustCrypto, SpiffeId, TokenVerifier, VerifyOptions};
use futures_util::Stream;
use tonic::{Request, Response, Status};

use crate::clock::unix_now;
use crate::identity::IdentitySource;
use crate::identity::source::Served;
use proto::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use proto::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svidRequest, X509svidResponse,
};
pub use socket::{SocketError, WorkloadApiSocket};

/// The Workload API's options, on `ephemera serve` and `ephemera sidecar`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WorkloadApiArgs {
    /// Serve the SPIFFE Workload API (JWT-SVID profile) to the app on this
    /// Unix socket (unix:PATH, as in SPIFFE_ENDPOINT_SOCKET).
    #[arg(long)]
    pub workload_api: Option<WorkloadApiSocket>,
    /// An audience the app may ask JWT-SVIDs for (repeatable; default:
    /// every identity the bundle knows).
    #[arg(long = "workload-api-audience", requires = "workload_api")]
    pub audiences: Vec<SpiffeId>,
    /// Lifetime of the JWT-SVIDs it mints, in seconds.
    #[arg(long, default_value_t = DEFAULT_SVID_TTL_SECS)]
    pub workload_api_ttl: u64,
}

impl WorkloadApiArgs {
    /// The service these options describe, if one is asked for.
    pub fn service(
        &self,
        source: Arc<IdentitySource>,
    ) -> Option<(&WorkloadApiSocket, WorkloadApi)> {
        let socket = self.workload_api.as_ref()?;
        let audiences = if self.audiences.is_empty() {
            Audiences::InBundle
        } else {
            Audiences::Only(self.audiences.clone())
        };
        Some((
            socket,
            WorkloadApi::new(source, audiences, self.workload_api_ttl),
        ))
    }
}

/// The metadata header every request must carry (the Workload API
/// standard's defence against SSRF: a browser or a forwarded request
/// cannot set it).
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// Default lifetime of the JWT-SVIDs it mints, in seconds.
pub const DEFAULT_SVID_TTL_SECS: u64 = 300;

/// Which audiences the app may ask tokens for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audiences {
    /// Identities the bundles know: bound in a spiffile bundle, or in the
    /// trust domain of a standard one (federated domains included).
    InBundle,
    /// Exactly these.
    Only(Vec<SpiffeId>),
}

/// The Workload API service over the served identity.
#[derive(Debug, Clone)]
pub struct WorkloadApi {
    source: Arc<IdentitySource>,
    audiences: Audiences,
    ttl_secs: u64,
}

/// A server stream of messages.
type Updates<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl WorkloadApi {
    /// A service minting `ttl_secs` tokens for `audiences`.
    pub fn new(source: Arc<IdentitySource>, audiences: Audiences, ttl_secs: u64) -> Self {
        Self {
            source,
            audiences,
            ttl_secs,
        }
    }

    /// Serves the API on a socket from [`WorkloadApiSocket::bind`] until
    /// `shutdown`.
    pub async fn serve(
        self,
        listener: tokio::net::UnixListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), SocketError> {
        let service = SpiffeWorkloadApiServer::with_interceptor(self, require_security_header);
        let (connections, incoming) = tokio::sync::mpsc::channel(16);
        let acceptor = tokio::spawn(async move {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    Err(e) => {
                        tracing::warn!("workload API: accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (server, ours) = tokio::io::duplex(64 * 1024);
                tokio::spawn(authority::carry(client, ours));
                if connections
                    .send(Ok::<_, std::io::Error>(server))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(incoming),
                shutdown,
            )
            .await
            .map_err(|e| SocketError::Serve(e.to_string()));
        acceptor.abort();
        served
    }

    fn served(&self) -> Result<Served, Status> {
        self.source
            .served()
            .ok_or_else(|| Status::unavailable("no identity is served yet"))
    }

    fn audience_allowed(&self, audience: &SpiffeId, bundle: &Bundle) -> bool {
        match &self.audiences {
            Audiences::InBundle => bundle.keys_for(audience).is_some(),
            Audiences::Only(list) => list.contains(audience),
        }
    }
}

/// Refuses a request without `workload.spiffe.io: true`, with the status
/// and text the standard names.
#[allow(clippy::result_large_err)] // tonic's interceptor signature.
fn require_security_header(request: Request<()>) -> Result<Request<()>, Status> {
    match request.metadata().get(SECURITY_HEADER) {
        Some(value) if value == "true" => Ok(request),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

/// The standard-mode JWT bundles the served identity carries, local and
/// federated: each such trust domain's JWKS. Spiffile domains are left out:
/// their keys are bound to one identity each and must not be read as a
/// domain-wide key set.
fn jwt_bundles(served: &Served) -> HashMap<String, Vec<u8>> {
    let local = &served.identity.bundle;
    std::iter::once(local)
        .chain(local.federated())
        .filter(|bundle| !bundle.binds_keys_to_identities())
        .filter_map(|bundle| {
            let domain = SpiffeId::parse(&format!("spiffe://{}", bundle.trust_domain())).ok()?;
            let keys: Vec<_> = bundle
                .keys_for(&domain)
                .unwrap_or_default()
                .iter()
                .map(|k| {
                    let mut jwk = k.jwk().clone();
                    jwk.kid = Some(k.kid().to_owned());
                    jwk.key_use = Some("jwt-svid".into());
                    jwk
                })
                .collect();
            let mut jwks = serde_json::json!({ "keys": keys });
            if let Some(sequence) = bundle.sequence() {
                jwks["spiffe_sequence"] = sequence.into();
            }
            Some((domain.as_str().to_owned(), jwks.to_string().into_bytes()))
        })
        .collect()
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Updates<X509svidResponse>;
    type FetchX509BundlesStream = Updates<X509BundlesResponse>;
    type FetchJWTBundlesStream = Updates<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        Err(Status::unimplemented(
            "ephemera serves JWT-SVIDs only: no X.509-SVIDs",
        ))
    }

    async fn fetch_x509_bundles(
        &self,
        _: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        Err(Status::unimplemented(
            "ephemera serves JWT bundles only: no X.509 bundles",
        ))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let request = request.into_inner();
        let served = self.served()?;
        let identity = &served.identity;
        let own = identity.id();
        let audience = match request.audience.as_slice() {
            [] => return Err(Status::invalid_argument("audience must be specified")),
            [one] => SpiffeId::parse(one).map_err(|e| {
                Status::invalid_argument(format!("audience {one:?} is not a SPIFFE ID: {e}"))
            })?,
            _ => {
                return Err(Status::invalid_argument(
                    "ephemera mints a JWT-SVID for exactly one audience",
                ));
            }
        };
        if !request.spiffe_id.is_empty() && request.spiffe_id != own.as_str() {
            return Err(Status::permission_denied(format!(
                "this workload is {own}, not {}",
                request.spiffe_id
            )));
        }
        if secrets_audience(own).is_ok_and(|s| s == audience) {
            return Err(Status::permission_denied(
                "the workload's secrets audience is never minted for the app",
            ));
        }
        if !self.audience_allowed(&audience, &identity.bundle) {
            return Err(Status::permission_denied(format!(
                "audience {audience} is not allowed for this workload"
            )));
        }
        let jti = random_jti().map_err(|e| Status::internal(e.to_string()))?;
        let svid = identity
            .minter
            .mint(
                &audience,
                unix_now(),
                self.ttl_secs,
                Some(&jti),
                &RustCrypto,
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(JwtsvidResponse {
            svids: vec![Jwtsvid {
                spiffe_id: own.as_str().to_owned(),
                svid,
                hint: String::new(),
            }],
        }))
    }

    async fn fetch_jwt_bundles(
        &self,
        _: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        // Subscribed before the first read: a change in between is not lost.
        let changes = self.source.subscribe();
        let first = self.served()?;
        let source = self.source.clone();
        // One message now, then one per identity change (a rotation or a
        // revocation is a change even when no standard bundle moved).
        let stream = futures_util::stream::unfold(
            (Some(first), changes, source),
            |(next, mut changes, source)| async move {
                let served = match next {
                    Some(served) => served,
                    None => {
                        changes.changed().await.ok()?;
                        match source.served() {
                            Some(served) => served,
                            None => {
                                let gone = Status::unavailable("the identity is no longer served");
                                return Some((Err(gone), (None, changes, source)));
                            }
                        }
                    }
                };
                let message = JwtBundlesResponse {
                    bundles: jwt_bundles(&served),
                };
                Some((Ok(message), (None, changes, source)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let request = request.into_inner();
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if request.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let audience = SpiffeId::parse(&request.audience)
            .map_err(|e| Status::invalid_argument(format!("audience is not a SPIFFE ID: {e}")))?;
        let served = self.served()?;
        // The bundle's own binding applies: in spiffile mode a key
        // validates only the identity it is bound to.
        let verified = TokenVerifier::new(audience, VerifyOptions::default())
            .verify(
                &request.svid,
                &served.identity.bundle,
                unix_now(),
                &RustCrypto,
            )
            .map_err(|e| Status::invalid_argument(format!("unable to validate JWT-SVID: {e}")))?;
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: verified.caller.as_str().to_owned(),
            claims: Some(claims::to_struct(verified.claims)),
        }))
    }
}
