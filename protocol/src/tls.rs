//! The link's security: TLS 1.3 (rustls, with the *ring* provider) between
//! each agency and the server, both sides authenticated by certificates of
//! the project's own certificate authority (see `scripts/credentials.sh`).
//!
//! - The agency verifies the server: a certificate of the CA for the name it
//!   connects to (`server`, `localhost`, `127.0.0.1`…).
//! - The server verifies the agency: a certificate of the CA, for client
//!   authentication, not revoked (a CRL), whose common name `agency-K` is
//!   the one agency K it may act as, or `operator` for the operator's
//!   commands ([`holder_of`]).
//!
//! The server lets a connection finish the handshake without a client
//! certificate so that it can answer it with a clear `Unauthenticated`
//! error in the protocol; a certificate it cannot verify (another CA,
//! revoked, expired) fails the handshake itself, with TLS's own alert.
//!
//! This module holds the rules of the link; where the certificates come
//! from (PEM files) is the programs' business (`edge::credentials`).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use rustls::pki_types::ServerName;
pub use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// The first byte of every TLS connection (a handshake record), and never
/// the first byte of a plaintext frame of ours, whose length is below 8 KiB.
pub const TLS_HANDSHAKE: u8 = 0x16;

const _: () = assert!(crate::MAX_FRAME_LEN < 1 << 24, "a plaintext frame starts with a zero byte");

/// Why a TLS configuration cannot be made from the credentials given.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the agencies' verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    #[error("the server's certificate and key: {0}")]
    ServerIdentity(#[source] rustls::Error),
    #[error("the agency's certificate and key: {0}")]
    AgencyIdentity(#[source] rustls::Error),
    #[error("TLS 1.3 with the ring provider: {0}")]
    Provider(#[source] rustls::Error),
    #[error("{host:?} is not a server name: {source}")]
    ServerName { host: String, source: rustls::pki_types::InvalidDnsNameError },
}

/// One side's own certificate chain and private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's side: its identity, the CA its agencies' certificates must
/// come from (`roots`), and the revoked ones (`crls`, maybe none).
pub fn server_config(
    identity: Identity,
    roots: RootCertStore,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    assert!(!identity.chain.is_empty(), "an identity has a certificate");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls(crls)
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Provider)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)
        .map_err(TlsError::ServerIdentity)?;
    // An agency keeps one connection for a round: no session resumption,
    // so no tickets to make and no sessions to remember per connection.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// An agency's side: the CA that signs the server (`roots`), and the
/// agency's own identity.
pub fn client_config(identity: Identity, roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    assert!(!identity.chain.is_empty(), "an identity has a certificate");
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Provider)?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.chain, identity.key)
        .map_err(TlsError::AgencyIdentity)?;
    Ok(Arc::new(config))
}

/// Who a verified client certificate speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holder {
    /// Agency K: common name `agency-K`. It bets, and nothing else.
    Agency(u32),
    /// The operator: common name `operator`. It runs the operator's
    /// commands, and never bets.
    Operator,
}

/// The common name of the operator's certificate.
pub const OPERATOR: &str = "operator";

/// Who a verified client certificate speaks for, from its one common name.
pub fn holder_of(cert: &CertificateDer<'_>) -> Option<Holder> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut names = cert.subject().iter_common_name();
    let name = names.next()?.as_str().ok()?;
    if names.next().is_some() {
        return None;
    }
    if name == OPERATOR {
        return Some(Holder::Operator);
    }
    agency_named(name).map(Holder::Agency)
}

/// K from `agency-K`, where K is written as the agency's number is: decimal
/// digits, no sign, no leading zero, from 1 on. One agency has one name.
fn agency_named(name: &str) -> Option<u32> {
    let number = name.strip_prefix("agency-")?;
    let canonical = number.bytes().all(|b| b.is_ascii_digit()) && !number.starts_with('0');
    canonical.then(|| number.parse().ok()).flatten()
}

/// The server name to verify, from a `host:port` address.
pub fn server_name(address: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match address.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => address,
    };
    ServerName::try_from(host.to_owned()).map_err(|source| TlsError::ServerName { host: host.into(), source })
}

/// Why a TLS connection failed, when TLS itself says so: an alert from the
/// peer, or a certificate this side refused. `None` for plain I/O errors.
pub fn tls_failure(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agency_has_one_name() {
        assert_eq!(agency_named("agency-1"), Some(1));
        assert_eq!(agency_named("agency-4294967295"), Some(u32::MAX));
        for name in [
            "agency-0",
            "agency-01",
            "agency-+1",
            "agency--1",
            "agency- 1",
            "agency-1 ",
            "agency-",
            "agency-4294967296",
            "Agency-1",
            "agency-١",
            "server",
            "",
        ] {
            assert_eq!(agency_named(name), None, "{name:?}");
        }
    }

    #[test]
    fn server_names_come_from_the_address() {
        assert_eq!(server_name("server:12345").unwrap(), ServerName::try_from("server").unwrap());
        assert!(matches!(server_name("127.0.0.1:1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("[::1]:1").unwrap(), ServerName::IpAddress(_)));
        assert!(server_name("bad name:1").is_err());
    }
}
