//! TLS for provider tests: a test CA made with the `openssl` CLI, and a real
//! Envoy terminating TLS (a server certificate for `127.0.0.1`) in front of a
//! plain-HTTP provider such as moto or an OpenBao dev server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::{free_port, wait_until};
use crate::procs::Proc;
use crate::run;
use crate::workload::envoy;

/// True when a broker's error says it could not reach the provider because
/// the provider's certificate is not one it trusts.
pub fn untrusted_certificate(message: &str, broker: &str) -> bool {
    message.contains(&format!("{broker}: provider unreachable"))
        && message.contains("invalid peer certificate: UnknownIssuer")
}

/// A certificate authority that exists only for one test.
pub struct TestCa {
    /// Its certificate (PEM), what a client's `ca_file` names.
    pub cert: PathBuf,
    dir: PathBuf,
}

/// Runs `openssl` in `dir` with whitespace-separated `args`.
fn openssl(dir: &Path, args: &str) {
    run(Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace()))
    .ok();
}

impl TestCa {
    /// A new P-256 CA in `dir/<name>/`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        openssl(
            &dir,
            &format!(
                "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                 -keyout ca.key -out ca.pem -days 2 -subj /CN=ephemera-test-ca-{name}"
            ),
        );
        Self {
            cert: dir.join("ca.pem"),
            dir,
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost` signed by this
    /// CA: (certificate, key).
    pub fn server_cert(&self) -> (PathBuf, PathBuf) {
        let ext = self.dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        openssl(
            &self.dir,
            "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
             -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        );
        openssl(
            &self.dir,
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
             -out server.pem -days 2 -extfile server.ext",
        );
        (self.dir.join("server.pem"), self.dir.join("server.key"))
    }
}

/// A real Envoy that terminates TLS on a loopback port and forwards the
/// bytes to a plain-TCP upstream.
pub struct TlsFront {
    /// The TLS port on 127.0.0.1.
    pub port: u16,
    _proc: Proc,
}

impl TlsFront {
    /// Terminates TLS with a certificate of `ca` in front of `127.0.0.1:upstream`.
    pub fn start(dir: &Path, ca: &TestCa, upstream: u16) -> Self {
        let (cert, key) = ca.server_cert();
        let port = free_port();
        let config = serde_json::json!({
            "static_resources": {
                "listeners": [{
                    "name": "tls",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [{
                        "filters": [{
                            "name": "tcp",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                "stat_prefix": "tls_front",
                                "cluster": "upstream"
                            }
                        }],
                        "transport_socket": {
                            "name": "envoy.transport_sockets.tls",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                                "common_tls_context": {
                                    "tls_certificates": [{
                                        "certificate_chain": {"filename": cert},
                                        "private_key": {"filename": key}
                                    }]
                                }
                            }
                        }
                    }]
                }],
                "clusters": [{
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                            "socket_address": {"address": "127.0.0.1", "port_value": upstream}
                        }}}]}]
                    }
                }]
            }
        });
        let path = dir.join(format!("tls-front-{port}.json"));
        std::fs::write(&path, config.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let proc = Proc::spawn(
            &format!("tls-front-{port}"),
            dir,
            Command::new(envoy()).arg("-c").arg(&path).args([
                "--disable-hot-restart",
                "--log-level",
                "warn",
            ]),
        );
        wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .expect("TLS front listening");
        Self { port, _proc: proc }
    }
}
