//! **Shared** — TLS files and configurations, rustls with the `ring`
//! provider, TLS 1.2 and 1.3 only: reading PEM certificates, keys and CAs
//! (the server, the worker host's endpoint and the client all read them
//! here), the server side's configuration for the job port (`--tls-cert`,
//! `--tls-key`, `--tls-client-ca`) and for `--metrics-tls`, and
//! `tc-server certs`. The files are read and checked at start-up, and every
//! problem is a sentence naming the flag and the file — nothing starts with
//! a certificate it cannot use. The client's own configuration (which
//! server to trust) is [`crate::client::tls`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The certificates of a PEM file (a certificate, then its chain; or CAs),
/// for the TLS flag `flag`.
///
/// # Errors
/// [`Error::Config`]: a file that cannot be read, is not PEM, or holds no
/// certificate — a sentence naming the flag and the file.
pub(crate) fn pem_certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
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

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1) for the flag `flag`.
///
/// # Errors
/// [`Error::Config`]: a file without a usable key, as a sentence naming the
/// flag and the file.
pub(crate) fn pem_private_key(path: &Path, flag: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        Error::Config(format!("{flag} {}: no usable PEM private key in it ({e})", path.display()))
    })
}

/// The CA certificates of a PEM file for the flag `flag`, as a trust store:
/// what a server checks client certificates against (`--tls-client-ca`) and
/// a client checks the server's against (`--tls-ca`).
///
/// # Errors
/// [`Error::Config`]: the file cannot be read as certificates, or one of
/// them is not a usable CA.
pub(crate) fn ca_roots(path: &Path, flag: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certificates(path, flag)? {
        roots.add(cert).map_err(|e| {
            Error::Config(format!("{flag} {}: not a usable CA certificate: {e}", path.display()))
        })?;
    }
    Ok(roots)
}

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

/// The rustls configuration for these files.
///
/// # Errors
/// [`Error::Config`] naming the file and its problem: missing, not PEM, no
/// certificate or key in it, a key that does not match the certificate, a
/// client CA that is not a usable CA.
pub(crate) fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>> {
    let chain = pem_certificates(&files.cert, "--tls-cert")?;
    let key = pem_private_key(&files.key, "--tls-key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = ca_roots(path, "--tls-client-ca")?;
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

/// The files [`make_certificates`] writes.
#[derive(Debug, Clone)]
pub(crate) struct MadeCertificates {
    /// The CA's certificate: what clients trust (`--tls-ca`) and what the
    /// server checks client certificates against (`--tls-client-ca`).
    pub(crate) ca: PathBuf,
    /// The server's certificate and key (`--tls-cert`, `--tls-key`).
    pub(crate) server: TlsFiles,
    /// A client certificate and key for mutual TLS.
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
}

/// Makes a local CA, a server certificate for `names` (DNS names or IP
/// addresses) and a client certificate, all signed by that CA, as PEM files
/// in `dir` (keys readable by the owner only). For tests, demos and small
/// private farms: a real deployment's certificates come from its own CA.
///
/// # Errors
/// A name that is not usable, or a file that cannot be written.
pub(crate) fn make_certificates(dir: &Path, names: &[String]) -> Result<MadeCertificates> {
    let failed = |e: rcgen::Error| Error::Config(format!("making certificates: {e}"));
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "ThreadCenter local CA");
    let ca_key = rcgen::KeyPair::generate().map_err(failed)?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(failed)?;
    let server_key = rcgen::KeyPair::generate().map_err(failed)?;
    let server = rcgen::CertificateParams::new(names.to_vec())
        .map_err(failed)?
        .signed_by(&server_key, &ca)
        .map_err(failed)?;
    let client_key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    client_params.distinguished_name.push(rcgen::DnType::CommonName, "ThreadCenter client");
    let client = client_params.signed_by(&client_key, &ca).map_err(failed)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    // Keys readable by the owner only; certificates by anyone.
    let write = |name: &str, text: String, secret: bool| -> Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        let failed = |e| Error::io(format!("writing {}", path.display()), e);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(&path)
            .map_err(failed)?;
        file.write_all(text.as_bytes()).map_err(failed)?;
        Ok(path)
    };
    write("ca.key", ca_key_pem, true)?;
    Ok(MadeCertificates {
        ca: write("ca.pem", ca.pem(), false)?,
        server: TlsFiles {
            cert: write("server.pem", server.pem(), false)?,
            key: write("server.key", server_key.serialize_pem(), true)?,
            client_ca: None,
        },
        client_cert: write("client.pem", client.pem(), false)?,
        client_key: write("client.key", client_key.serialize_pem(), true)?,
    })
}
