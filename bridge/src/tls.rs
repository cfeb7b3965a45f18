//! TLS for Diameter connections, with rustls (RFC 6733 §13; no OpenSSL anywhere).
//!
//! Mutual authentication, always: the node presents its certificate and requires one from
//! the peer, both verified against the configured CA bundle (a `[[peers]]` entry may name its
//! own CA bundle, which then must also verify the peer's chain). TLS 1.2 and 1.3 only
//! (RFC 6733 §13.1 requires TLS 1.0 at least; RFC 8996 and operator practice exclude 1.0/1.1).
//!
//! Whether the certificate belongs to the peer is decided in two places:
//! - connecting, we know which peer we dial: the server certificate must name the peer's
//!   Diameter identity (SAN dNSName, or CN when there is no SAN) unless `verify_host = false`
//!   for that peer — checked here, during the handshake;
//! - accepting, the peer is known only once its CER names itself: the handshake checks the
//!   chain only, and [`PeerCert`] (names, fingerprint, per-peer CAs it chains to) goes with
//!   the connection to the core, which compares it with the CER's Origin-Host
//!   ([`dmnode::trust::check_identity`]).
//!
//! [`Tls::reload`] re-reads the CA bundles, certificate and key (for `reload`/SIGHUP): new
//! handshakes use the new material; open connections keep theirs. A reload that fails keeps
//! the old material and says why.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as RustlsError, RootCertStore,
    ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use dmnode::trust::PeerCert;

/// Where the node's TLS material is (`[tls]`), and the per-peer CA bundles in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM CA bundle that peers' certificates must chain to.
    pub ca_file: PathBuf,
    /// PEM certificate chain of this node (end entity first).
    pub cert_file: PathBuf,
    /// PEM private key of this node (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// A handshake not finished in this time is abandoned (a stranger's cost is bounded).
    pub handshake_timeout: Duration,
    /// Per-peer CA bundles (`tls_ca` of `[[peers]]`), by path as configured.
    pub peer_cas: Vec<String>,
}

/// The TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A configured file could not be read, or its PEM could not be parsed.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file, as configured.
        path: PathBuf,
        /// The OS or PEM error's text.
        error: String,
    },
    /// A certificate or CA file holds no PEM certificate (wrong file, or DER instead of PEM).
    #[error("{path}: no PEM certificate in it")]
    NoCertificate {
        /// The file, as configured.
        path: PathBuf,
    },
    /// `key_file` holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[error("{path}: no PEM private key in it ({error})")]
    NoKey {
        /// The file, as configured.
        path: PathBuf,
        /// What the PEM reader found instead.
        error: String,
    },
    /// A CA bundle contains a certificate rustls will not use as a trust anchor.
    #[error("{path}: CA certificate refused: {error}")]
    BadCa {
        /// The bundle, as configured.
        path: PathBuf,
        /// rustls's reason.
        error: String,
    },
    /// rustls refused the assembled configuration (e.g. the key does not match the
    /// certificate).
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// Why a TLS handshake failed, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not finished within `handshake_timeout` (the limit given): a stalled or hostile
    /// stranger, whose cost this bounds (DESIGN §10).
    #[error("TLS handshake not finished within {0:?}")]
    Timeout(Duration),
    /// The bytes are not a TLS record, typically plain Diameter sent to a TLS port or a TLS
    /// port configured where the peer expects in-band TLS after CER/CEA (RFC 6733 §13).
    #[error("not TLS (plain Diameter on a TLS port?): {0}")]
    NotTls(String),
    /// The peer's chain does not lead to our CA bundle (or the peer's `tls_ca`).
    #[error("peer certificate is not signed by a trusted CA")]
    UnknownCa,
    /// The peer's certificate has expired: renew it, or check the clocks.
    #[error("peer certificate has expired")]
    Expired,
    /// The peer's certificate starts later than our clock: usually clock skew.
    #[error("peer certificate is not valid yet")]
    NotYetValid,
    /// Connecting: the server's certificate does not name the configured peer host (its
    /// Origin-Host, DESIGN §10); holds the host we expected.
    #[error("peer certificate does not name {0}")]
    NameMismatch(String),
    /// Accepting: the client presented no certificate, but Diameter peers authenticate
    /// mutually.
    #[error("peer sent no certificate (mutual authentication is required)")]
    NoCertificate,
    /// Any other certificate fault rustls reports (bad signature, wrong usage, ...).
    #[error("peer certificate refused: {0}")]
    BadCertificate(String),
    /// The peer aborted with a TLS alert (it refused our certificate, or no common cipher
    /// suite or version).
    #[error("the peer refused the handshake (alert {0})")]
    PeerAlert(String),
    /// The configured peer host is not a DNS name TLS can verify against.
    #[error("{0:?} is not a DNS name usable for TLS")]
    BadName(String),
    /// I/O errors and anything not classified above, with the underlying text.
    #[error("TLS handshake failed: {0}")]
    Other(String),
}

impl HandshakeError {
    /// A stable name of the failure, so refusals are logged once per kind, cause and source
    /// ([`dmnode::trust::Refusals::record_kind`]): an unknown CA does not hide an expiry.
    pub fn kind(&self) -> &'static str {
        match self {
            HandshakeError::Timeout(_) => "timeout",
            HandshakeError::NotTls(_) => "not_tls",
            HandshakeError::UnknownCa => "unknown_ca",
            HandshakeError::Expired => "expired",
            HandshakeError::NotYetValid => "not_yet_valid",
            HandshakeError::NameMismatch(_) => "name_mismatch",
            HandshakeError::NoCertificate => "no_certificate",
            HandshakeError::BadCertificate(_) => "bad_certificate",
            HandshakeError::PeerAlert(_) => "peer_alert",
            HandshakeError::BadName(_) => "bad_name",
            HandshakeError::Other(_) => "other",
        }
    }

    fn from_io(e: io::Error) -> HandshakeError {
        let Some(re) = e.get_ref().and_then(|i| i.downcast_ref::<RustlsError>()) else {
            return HandshakeError::Other(e.to_string());
        };
        match re {
            RustlsError::InvalidMessage(m) => HandshakeError::NotTls(format!("{m:?}")),
            RustlsError::NoCertificatesPresented => HandshakeError::NoCertificate,
            RustlsError::AlertReceived(a) => HandshakeError::PeerAlert(format!("{a:?}")),
            RustlsError::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => HandshakeError::UnknownCa,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    HandshakeError::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    HandshakeError::NotYetValid
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    HandshakeError::NameMismatch(format!("{c:?}"))
                }
                other => HandshakeError::BadCertificate(format!("{other:?}")),
            },
            other => HandshakeError::Other(other.to_string()),
        }
    }
}

/// Loaded material; replaced whole on reload.
struct Material {
    provider: Arc<CryptoProvider>,
    server: Arc<ServerConfig>,
    roots: Arc<RootCertStore>,
    /// Per-peer CA bundles: their roots (to dial that peer) and a verifier (to tell, on an
    /// accepted connection, whether the chain also verifies against it).
    peer_cas: HashMap<String, (Arc<RootCertStore>, Arc<dyn ClientCertVerifier>)>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The node's TLS context; cheap to share (`Arc`).
pub struct Tls {
    settings: TlsSettings,
    material: RwLock<Arc<Material>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| TlsError::Read {
        path: path.into(),
        error: e.to_string(),
    })?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Read {
            path: path.into(),
            error: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots.add(c).map_err(|e| TlsError::BadCa {
            path: path.into(),
            error: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

impl Material {
    fn load(s: &TlsSettings) -> Result<Material, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        let roots = read_roots(&s.ca_file)?;
        let certs = read_certs(&s.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&s.key_file).map_err(|e| TlsError::NoKey {
            path: s.key_file.clone(),
            error: e.to_string(),
        })?;
        let mut peer_cas = HashMap::new();
        // Accepting, the chain may end at the node's CA or at any peer's own CA; which one
        // it was is recorded in `PeerCert::cas` and checked against the peer's `tls_ca`.
        let mut accept_roots = (*roots).clone();
        for ca in &s.peer_cas {
            let r = read_roots(Path::new(ca))?;
            for anchor in r.roots.iter() {
                accept_roots.roots.push(anchor.clone());
            }
            let v = WebPkiClientVerifier::builder_with_provider(r.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            peer_cas.insert(ca.clone(), (r, v));
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(accept_roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(format!("{}: {e}", s.cert_file.display())))?;
        Ok(Material {
            provider,
            server: Arc::new(server),
            roots,
            peer_cas,
            certs,
            key,
        })
    }

    fn client(&self, ca: Option<&str>, verify_host: bool) -> Result<ClientConfig, HandshakeError> {
        let roots = match ca {
            Some(ca) => self
                .peer_cas
                .get(ca)
                .map(|(r, _)| r.clone())
                .ok_or_else(|| HandshakeError::Other(format!("CA bundle {ca} not loaded")))?,
            None => self.roots.clone(),
        };
        let inner = WebPkiServerVerifier::builder_with_provider(roots, self.provider.clone())
            .build()
            .map_err(|e| HandshakeError::Other(e.to_string()))?;
        ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| HandshakeError::Other(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerServerVerifier { inner, verify_host }))
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| HandshakeError::Other(e.to_string()))
    }

    /// What the core needs to know of the peer's (already verified) certificate.
    fn peer_cert(&self, chain: &[CertificateDer<'_>], accepted: bool) -> PeerCert {
        let Some((ee, intermediates)) = chain.split_first() else {
            return PeerCert::default();
        };
        let mut cert = describe(ee);
        if accepted {
            let now = UnixTime::now();
            cert.cas = self
                .peer_cas
                .iter()
                .filter(|(_, (_, v))| v.verify_client_cert(ee, intermediates, now).is_ok())
                .map(|(ca, _)| ca.clone())
                .collect();
        }
        cert
    }
}

/// Names and fingerprint of a DER certificate.
pub fn describe(der: &CertificateDer<'_>) -> PeerCert {
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(digest.as_ref());
    let mut cert = PeerCert {
        sha256,
        ..PeerCert::default()
    };
    if let Ok((_, x)) = x509_parser::parse_x509_certificate(der.as_ref()) {
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    cert.dns_names.push(d.to_ascii_lowercase());
                }
            }
        }
        cert.common_name = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(|s| s.to_ascii_lowercase());
    }
    cert
}

/// The server-certificate check when dialling a peer: the chain by webpki, the name by
/// webpki (SAN), falling back to the CN when the certificate has no dNSName, or not at all
/// with `verify_host = false`.
#[derive(Debug)]
struct PeerServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    verify_host: bool,
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(RustlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_host || describe(end_entity).names(&server_name.to_str()) => {
                Ok(ServerCertVerified::assertion())
            }
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl Tls {
    /// Loads the material named by `settings`.
    pub fn load(settings: TlsSettings) -> Result<Tls, TlsError> {
        let material = Material::load(&settings)?;
        Ok(Tls {
            settings,
            material: RwLock::new(Arc::new(material)),
        })
    }

    /// The paths it was loaded from, for status and for re-reading on reload.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Re-reads every file (for `reload`/SIGHUP). On error the old material stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(Material::load(&self.settings)?);
        if let Ok(mut m) = self.material.write() {
            *m = fresh;
        }
        tracing::info!(
            cert = %self.settings.cert_file.display(),
            ca = %self.settings.ca_file.display(),
            "TLS material reloaded"
        );
        Ok(())
    }

    fn current(&self) -> Arc<Material> {
        match self.material.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Server side of a handshake on an accepted connection (TLS at connect, or in-band
    /// after CER/CEA). The chain is verified; the name is the core's business (see the
    /// module docs).
    pub async fn accept<S>(&self, io: S) -> Result<(TlsStream<S>, PeerCert), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let m = self.current();
        let acceptor = TlsAcceptor::from(m.server.clone());
        let limit = self.settings.handshake_timeout;
        let stream = tokio::time::timeout(limit, acceptor.accept(io))
            .await
            .map_err(|_| HandshakeError::Timeout(limit))?
            .map_err(HandshakeError::from_io)?;
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| m.peer_cert(c, true))
            .ok_or(HandshakeError::NoCertificate)?;
        Ok((TlsStream::Server(stream), cert))
    }

    /// Client side of a handshake to the configured peer `host`: its certificate must chain
    /// to `ca` (or the node's CA bundle) and name `host` unless `verify_host` is false.
    pub async fn connect<S>(
        &self,
        io: S,
        host: &str,
        ca: Option<&str>,
        verify_host: bool,
    ) -> Result<(TlsStream<S>, PeerCert), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let m = self.current();
        let config = m.client(ca, verify_host)?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| HandshakeError::BadName(host.to_string()))?;
        let connector = TlsConnector::from(Arc::new(config));
        let limit = self.settings.handshake_timeout;
        let stream = tokio::time::timeout(limit, connector.connect(name, io))
            .await
            .map_err(|_| HandshakeError::Timeout(limit))?
            .map_err(|e| match HandshakeError::from_io(e) {
                HandshakeError::NameMismatch(_) => HandshakeError::NameMismatch(host.into()),
                other => other,
            })?;
        let mut cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| m.peer_cert(c, false))
            .ok_or(HandshakeError::NoCertificate)?;
        if let Some(ca) = ca {
            // Dialled with only that CA's roots: the chain verified against it.
            cert.cas.push(ca.to_string());
        }
        Ok((TlsStream::Client(stream), cert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::certs::{Ca, Validity};
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    struct Setup {
        _dir: harness::TestDir,
        server: Tls,
        client: Tls,
    }

    fn settings(ca: &Path, cert: &harness::certs::NodeCert) -> TlsSettings {
        TlsSettings {
            ca_file: ca.into(),
            cert_file: cert.cert_file.clone(),
            key_file: cert.key_file.clone(),
            handshake_timeout: Duration::from_secs(5),
            peer_cas: Vec::new(),
        }
    }

    /// A server `server.test.local` and a client whose certificate comes from `client_ca`
    /// (the server's own CA unless `other_ca`), named `client_name`, valid or not.
    fn setup(other_ca: bool, client_name: &str, validity: Validity) -> Setup {
        let dir = harness::TestDir::new("tls-unit");
        let ca = Ca::new(dir.path(), "good");
        let rogue = Ca::new(dir.path(), "rogue");
        let server_cert = ca.issue(dir.path(), "server", "server.test.local", Validity::Current);
        let issuer = if other_ca { &rogue } else { &ca };
        let client_cert = issuer.issue(dir.path(), "client", client_name, validity);
        let server = Tls::load(settings(&ca.cert_file, &server_cert)).unwrap();
        let client = Tls::load(settings(&ca.cert_file, &client_cert)).unwrap();
        Setup {
            _dir: dir,
            server,
            client,
        }
    }

    /// Runs both sides; returns what the server and the client made of it.
    async fn handshake(
        s: &Setup,
        dial: &str,
    ) -> (
        Result<PeerCert, HandshakeError>,
        Result<PeerCert, HandshakeError>,
    ) {
        let (a, b) = duplex(1 << 16);
        let (srv, cli) = tokio::join!(s.server.accept(a), s.client.connect(b, dial, None, true));
        (srv.map(|(_, c)| c), cli.map(|(_, c)| c))
    }

    #[tokio::test]
    async fn good_chain_both_ways_with_names() {
        let s = setup(false, "client.test.local", Validity::Current);
        let (srv, cli) = handshake(&s, "server.test.local").await;
        let seen_by_server = srv.unwrap();
        assert!(seen_by_server.names("client.test.local"));
        assert!(!seen_by_server.names("server.test.local"));
        assert!(cli.unwrap().names("server.test.local"));
    }

    #[tokio::test]
    async fn wrong_ca_expired_and_wrong_name_are_refused_clearly() {
        let s = setup(true, "client.test.local", Validity::Current);
        let (srv, _) = handshake(&s, "server.test.local").await;
        assert_eq!(srv.unwrap_err(), HandshakeError::UnknownCa);

        let s = setup(false, "client.test.local", Validity::Expired);
        let (srv, _) = handshake(&s, "server.test.local").await;
        assert_eq!(srv.unwrap_err(), HandshakeError::Expired);

        // Dialling a peer whose certificate names someone else.
        let s = setup(false, "client.test.local", Validity::Current);
        let (_, cli) = handshake(&s, "hss.test.local").await;
        let e = cli.unwrap_err();
        assert_eq!(e, HandshakeError::NameMismatch("hss.test.local".into()));
        assert!(
            e.to_string().contains("does not name hss.test.local"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn plain_diameter_on_the_tls_port_is_named_as_such() {
        let s = setup(false, "client.test.local", Validity::Current);
        let (a, mut b) = duplex(1 << 16);
        let cer = dmproto::samples::cer();
        let writer = async move {
            let _ = b.write_all(&cer).await;
            let mut sink = [0u8; 256];
            let _ = b.read(&mut sink).await;
        };
        let (srv, ()) = tokio::join!(s.server.accept(a), writer);
        let e = srv.map(|_| ()).unwrap_err();
        assert!(matches!(e, HandshakeError::NotTls(_)), "{e:?}");
        assert!(e.to_string().starts_with("not TLS"), "{e}");
    }

    #[tokio::test]
    async fn reload_swaps_the_material_and_keeps_it_on_error() {
        let s = setup(false, "client.test.local", Validity::Current);
        let path = s.server.settings().cert_file.clone();
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, b"not a certificate").unwrap();
        assert!(s.server.reload().is_err());
        // The old material is still in use.
        let (srv, _) = handshake(&s, "server.test.local").await;
        assert!(srv.is_ok());
        std::fs::write(&path, good).unwrap();
        s.server.reload().unwrap();
        let (srv, _) = handshake(&s, "server.test.local").await;
        assert!(srv.is_ok());
    }

    #[test]
    fn per_peer_ca_is_recorded() {
        let dir = harness::TestDir::new("tls-peer-ca");
        let ca = Ca::new(dir.path(), "good");
        let own = Ca::new(dir.path(), "own");
        let server_cert = ca.issue(dir.path(), "server", "server.test.local", Validity::Current);
        let client_cert = own.issue(dir.path(), "client", "client.test.local", Validity::Current);
        let own_path = own.cert_file.display().to_string();
        let mut st = settings(&ca.cert_file, &server_cert);
        st.peer_cas = vec![own_path.clone()];
        let server = Tls::load(st).unwrap();
        let m = server.current();
        let der = CertificateDer::from_pem_slice(client_cert.pem.as_bytes()).unwrap();
        let seen = m.peer_cert(&[der], true);
        assert_eq!(seen.cas, vec![own_path]);
        assert!(seen.names("client.test.local"));
    }
}
