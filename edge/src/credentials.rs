//! TLS credentials from PEM files, as `scripts/credentials.sh` writes them,
//! turned into the link's configuration (see `protocol::tls`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::tls::{self, Identity, TlsError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::RootCertStore;

/// Where a side's credentials are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The certificate authority that signs both sides.
    pub ca: PathBuf,
    /// This side's certificate and its private key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One of the files of a side's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialFile {
    Ca,
    Cert,
    Key,
    Crl,
}

impl CredentialFile {
    fn what(self) -> &'static str {
        match self {
            CredentialFile::Ca => "the certificate authority",
            CredentialFile::Cert => "the certificate",
            CredentialFile::Key => "the private key",
            CredentialFile::Crl => "the revocation list",
        }
    }
}

/// Why a side's credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {} at {path}: {source}", .file.what())]
    Pem { file: CredentialFile, path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("cannot read {} at {path}: no certificate in it", .file.what())]
    Empty { file: CredentialFile, path: PathBuf },
    #[error("cannot use {} at {path}: {source}", CredentialFile::Ca.what())]
    Authority { path: PathBuf, source: rustls::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl CredentialError {
    /// The file at fault, if one is.
    pub fn file(&self) -> Option<CredentialFile> {
        match self {
            CredentialError::Pem { file, .. } | CredentialError::Empty { file, .. } => Some(*file),
            CredentialError::Authority { .. } => Some(CredentialFile::Ca),
            CredentialError::Tls(TlsError::ServerIdentity(_) | TlsError::AgencyIdentity(_)) => {
                Some(CredentialFile::Cert)
            }
            CredentialError::Tls(_) => None,
        }
    }
}

/// The server's configuration: its credentials, and the revoked agency
/// certificates at `crl` (none when `None`).
pub fn server_config(
    credentials: &Credentials,
    crl: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, CredentialError> {
    let crls: Vec<CertificateRevocationListDer<'static>> = match crl {
        None => Vec::new(),
        Some(path) => CertificateRevocationListDer::pem_file_iter(path)
            .and_then(Iterator::collect)
            .map_err(pem_error(CredentialFile::Crl, path))?,
    };
    Ok(tls::server_config(identity(credentials)?, roots(&credentials.ca)?, crls)?)
}

/// An agency's configuration, from its credentials.
pub fn client_config(credentials: &Credentials) -> Result<Arc<rustls::ClientConfig>, CredentialError> {
    Ok(tls::client_config(identity(credentials)?, roots(&credentials.ca)?)?)
}

fn pem_error(
    file: CredentialFile,
    path: &Path,
) -> impl Fn(rustls::pki_types::pem::Error) -> CredentialError + '_ {
    move |source| CredentialError::Pem { file, path: path.into(), source }
}

fn certificates(file: CredentialFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let certs: Vec<_> =
        CertificateDer::pem_file_iter(path).and_then(Iterator::collect).map_err(pem_error(file, path))?;
    if certs.is_empty() {
        return Err(CredentialError::Empty { file, path: path.into() });
    }
    Ok(certs)
}

fn roots(ca: &Path) -> Result<RootCertStore, CredentialError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(CredentialFile::Ca, ca)? {
        roots.add(cert).map_err(|source| CredentialError::Authority { path: ca.into(), source })?;
    }
    assert!(!roots.is_empty(), "a CA file with certificates makes roots");
    Ok(roots)
}

fn identity(credentials: &Credentials) -> Result<Identity, CredentialError> {
    let chain = certificates(CredentialFile::Cert, &credentials.cert)?;
    let key = PrivateKeyDer::from_pem_file(&credentials.key)
        .map_err(pem_error(CredentialFile::Key, &credentials.key))?;
    Ok(Identity { chain, key })
}
