//! Certificates made by the test (rcgen): a CA, node certificates signed by it, and the bad
//! cases TLS must refuse (another CA, expired, another name).
//!
//! Every file is PEM in the test's directory. Keys are ECDSA P-256, which rustls, GnuTLS
//! (freeDiameter) and Erlang's `ssl` all accept; node certificates carry both serverAuth and
//! clientAuth, since a Diameter node is either side of a connection.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that can sign node certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate (PEM), to give to nodes as their CA bundle.
    pub cert_file: PathBuf,
}

/// A node's certificate and key files.
#[derive(Clone, Debug)]
pub struct NodeCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The certificate, PEM.
    pub pem: String,
}

/// How a node certificate should (not) be valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// 2024-01-01 .. 2036-01-01.
    Current,
    /// 2020-01-01 .. 2021-01-01.
    Expired,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Ca {
    /// A new self-signed CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = p.self_signed(&key).expect("self-signed CA");
        let cert_file = dir.join(format!("{name}-ca.pem"));
        write(&cert_file, &cert.pem());
        Ca {
            cert,
            key,
            cert_file,
        }
    }

    /// A node certificate for `dns_name` (SAN dNSName and CN), written to
    /// `dir/<file>.pem` and `dir/<file>.key`.
    pub fn issue(&self, dir: &Path, file: &str, dns_name: &str, validity: Validity) -> NodeCert {
        let key = KeyPair::generate().expect("node key");
        let mut p = CertificateParams::new(vec![dns_name.to_string()]).expect("node params");
        p.distinguished_name.push(DnType::CommonName, dns_name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (from, to) = match validity {
            Validity::Current => ((2024, 1, 1), (2036, 1, 1)),
            Validity::Expired => ((2020, 1, 1), (2021, 1, 1)),
        };
        p.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        p.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let cert = p
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign node certificate");
        let cert_file = dir.join(format!("{file}.pem"));
        let key_file = dir.join(format!("{file}.key"));
        let pem = cert.pem();
        write(&cert_file, &pem);
        write(&key_file, &key.serialize_pem());
        NodeCert {
            cert_file,
            key_file,
            pem,
        }
    }
}
