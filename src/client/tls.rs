//! TLS for every client connection (`--tls`): whom to trust (a CA file, the
//! system's roots, or — loudly — nobody checked), which name to expect, and
//! an optional client certificate for mutual TLS.

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{Error, Result};
use crate::tls::{ca_roots, pem_certificates, pem_private_key};
use crate::transport::Transport;

/// What `--tls` and its flags ask for.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsChoice {
    /// PEM CA to trust; `None`: the system's roots.
    pub(crate) ca: Option<PathBuf>,
    /// The name the server's certificate must carry; `None`: the host.
    pub(crate) server_name: Option<String>,
    /// Client certificate and key (PEM), for mutual TLS.
    pub(crate) identity: Option<(PathBuf, PathBuf)>,
    /// Accept any server certificate (self-signed test setups only).
    pub(crate) insecure: bool,
}

/// A client's TLS configuration, ready for connections.
#[derive(Debug, Clone)]
pub(crate) struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

/// Two configurations are the same when they are the same built one (the
/// options of a run are compared in tests).
impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl ClientTls {
    /// The TLS configuration the flags ask for, or `None` without `--tls`.
    ///
    /// # Errors
    /// A file that cannot be used, named.
    pub(crate) fn from_args(args: &crate::cli::client::TlsArgs) -> Result<Option<ClientTls>> {
        if !args.tls {
            return Ok(None);
        }
        let choice = TlsChoice {
            ca: args.tls_ca.clone(),
            server_name: args.tls_server_name.clone(),
            identity: args.tls_client_cert.clone().zip(args.tls_client_key.clone()),
            insecure: args.tls_insecure,
        };
        ClientTls::new(&choice).map(Some)
    }

    /// Builds the configuration, reading every file now.
    ///
    /// # Errors
    /// [`Error::Config`] naming a file that cannot be used.
    pub(crate) fn new(choice: &TlsChoice) -> Result<ClientTls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        let builder = if choice.insecure {
            crate::client::say!("tc-client: WARNING: --tls-insecure: the server's certificate is NOT checked (test setups only)");
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        } else {
            let roots = match &choice.ca {
                Some(path) => ca_roots(path, "--tls-ca")?,
                None => {
                    let mut roots = RootCertStore::empty();
                    let found = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(found.certs);
                    if roots.is_empty() {
                        return Err(Error::Config(
                            "--tls: no system CA certificates found; give the server's CA with --tls-ca FILE"
                                .into(),
                        ));
                    }
                    roots
                }
            };
            builder.with_root_certificates(roots)
        };
        let config = match &choice.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = pem_certificates(cert, "--tls-cert")?;
                let key = pem_private_key(key, "--tls-key")?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    Error::Config(format!("--tls-cert and --tls-key do not make a usable pair: {e}"))
                })?
            }
        };
        Ok(ClientTls { config: Arc::new(config), server_name: choice.server_name.clone() })
    }

    /// Wraps a connected socket and completes the handshake with `host`.
    ///
    /// # Errors
    /// A bad server name, or a handshake that fails (the certificate is not
    /// trusted, the server wants a client certificate, it does not speak TLS).
    pub(crate) fn connect(&self, socket: TcpStream, host: &str) -> Result<Transport> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| Error::Config(format!("--tls-server-name {name}: {e}")))?;
        let session = ClientConnection::new(Arc::clone(&self.config), server_name)
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        let transport = Transport::tls(socket, session);
        transport.handshake().map_err(|e| Error::io(format!("TLS handshake with {host} (as {name})"), e))?;
        Ok(transport)
    }
}

/// `--tls-insecure`: accepts any certificate, still checking that the
/// handshake's signatures are made with the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
