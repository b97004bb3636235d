//! TLS for the listeners (SIP over TLS, HTTPS/WSS): certificate and key from PEM files in
//! conf/, loaded at start and again at each reload (SIGHUP): new connections get the new
//! certificate, connections already up keep theirs, calls are not touched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A listener's certificate chain and key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Builds the server configuration of `files`; the error says which file and why, for ops.
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (PEM, -----BEGIN CERTIFICATE-----)",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: no private key read: {e}", files.key.display()))?;
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Files relative to conf/.
pub fn files(conf: &Path, cert: &str, key: &str) -> TlsFiles {
    TlsFiles {
        cert: conf.join(cert),
        key: conf.join(key),
    }
}

/// A listener's current TLS configuration, replaced by a reload.
#[derive(Debug)]
pub struct Tls {
    files: RwLock<TlsFiles>,
    cfg: RwLock<Arc<ServerConfig>>,
    alpn: &'static [&'static [u8]],
}

impl Tls {
    /// Loads `files` (an error is the operator's to fix before start).
    pub fn load(files: TlsFiles, alpn: &'static [&'static [u8]]) -> Result<Arc<Tls>, String> {
        let cfg = server_config(&files, alpn)?;
        Ok(Arc::new(Tls {
            files: RwLock::new(files),
            cfg: RwLock::new(cfg),
            alpn,
        }))
    }

    /// Loads the files again (they may be the same paths with new contents, or new paths):
    /// on an error the running certificate stays and the error is returned.
    pub fn reload(&self, files: TlsFiles) -> Result<(), String> {
        let cfg = server_config(&files, self.alpn)?;
        *self.cfg.write().unwrap_or_else(PoisonError::into_inner) = cfg;
        *self.files.write().unwrap_or_else(PoisonError::into_inner) = files;
        Ok(())
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.cfg
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The handshake of an accepted connection, within `within` (a peer that stalls it
    /// holds nothing for long).
    pub async fn accept(
        &self,
        stream: TcpStream,
        within: Duration,
    ) -> Option<TlsStream<TcpStream>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config());
        match tokio::time::timeout(within, acceptor.accept(stream)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}

/// How the switch connects to one gateway over TLS.
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// Roots, and the client certificate if the gateway asks for one.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the gateway's certificate must carry.
    pub name: rustls::pki_types::ServerName<'static>,
}

/// The client side of a `transport = "tls"` gateway: its CA file (or the public web
/// roots), the name to verify (`tls_name`, else the host of its address), its client
/// certificate. Paths relative to conf/.
pub fn client(conf: &Path, g: &switchboard_trunk::GatewayConfig) -> Result<TlsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &g.tls_ca {
        Some(ca) => {
            let path = conf.join(ca);
            for c in CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("tls_ca {}: {e}", path.display()))?
            {
                let c = c.map_err(|e| format!("tls_ca {}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("tls_ca {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("tls_ca {}: no certificate in it", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match (&g.tls_cert, &g.tls_key) {
        (Some(c), Some(k)) => {
            let f = files(conf, c, k);
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&f.cert)
                .map_err(|e| format!("tls_cert {}: {e}", f.cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("tls_cert {}: {e}", f.cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(&f.key)
                .map_err(|e| format!("tls_key {}: {e}", f.key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("tls_cert and tls_key: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("tls_cert and tls_key go together".into()),
    };
    let host = g.tls_name.clone().unwrap_or_else(|| host_of(&g.address));
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("tls_name {host:?}: {e}"))?;
    Ok(TlsClient {
        config: Arc::new(config),
        name,
    })
}

/// The host of `host:port` (`[v6]:port` too).
fn host_of(address: &str) -> String {
    let a = address.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    a.rsplit_once(':').map_or(a, |(h, _)| h).to_owned()
}

/// Connects to `addr` over TLS as `client` says, within `within`.
pub async fn connect(
    addr: std::net::SocketAddr,
    client: &TlsClient,
    within: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let go = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(client.config.clone())
            .connect(client.name.clone(), tcp)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(within, go)
        .await
        .map_err(|_| "timed out".to_owned())?
}
