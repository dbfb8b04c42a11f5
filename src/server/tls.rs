//! TLS for the job port (`--tls-cert`, `--tls-key`, `--tls-client-ca`):
//! rustls with the `ring` provider, TLS 1.2 and 1.3 only. The files are
//! read and checked at start-up, and every problem is a sentence naming the
//! file — a server never starts with a certificate it cannot use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The certificate files of a TLS job port.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    /// PEM: the server's certificate, then its chain.
    pub(crate) cert: PathBuf,
    /// PEM: the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key: PathBuf,
    /// PEM: the CA that client certificates must be signed by (mutual TLS);
    /// `None`: clients need no certificate.
    pub(crate) client_ca: Option<PathBuf>,
}

fn certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
    let problem = |what: String| Error::Config(format!("{flag} {}: {what}", path.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| problem(format!("cannot read it: {e}")))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| problem(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(problem("holds no certificate (a PEM \"BEGIN CERTIFICATE\" block)".into()));
    }
    Ok(certs)
}

/// The rustls configuration for these files.
///
/// # Errors
/// [`Error::Config`] naming the file and its problem: missing, not PEM, no
/// certificate or key in it, a key that does not match the certificate, a
/// client CA that is not a usable CA.
pub(crate) fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>> {
    let chain = certificates(&files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        Error::Config(format!("--tls-key {}: no usable PEM private key in it ({e})", files.key.display()))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path, "--tls-client-ca")? {
                roots.add(cert).map_err(|e| {
                    Error::Config(format!(
                        "--tls-client-ca {}: not a usable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Config(format!("--tls-client-ca {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        Error::Config(format!(
            "--tls-cert {} and --tls-key {} do not make a usable pair: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    Ok(Arc::new(config))
}
