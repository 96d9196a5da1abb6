//! Connecting to PostgreSQL with TLS as libpq does: the URL's `sslmode`
//! (`disable`, `prefer` (the default), `require`, `verify-ca`, `verify-full`),
//! `sslrootcert` (a CA file, or `system` for the system's roots), `sslcert`
//! and `sslkey`. tokio-postgres itself knows only `disable|prefer|require`
//! and none of the files, so those parameters are taken out of the URL here
//! and become a rustls configuration.

use std::str::FromStr;
use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What a connection attempt can fail on, kept apart so that start-up can
/// tell a misconfiguration (fatal) from a database that is down (waited for).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("database.url: {0}")]
    Url(String),
    #[error("database.url: {0}")]
    Certificates(String),
    #[error("{}", with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("setting up the connection: {0}")]
    Setup(#[from] diesel::ConnectionError),
}

/// tokio-postgres says "error performing TLS handshake" and keeps the why
/// (an unknown issuer, a name mismatch) in its sources.
fn with_causes(err: &tokio_postgres::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A URL's connection settings and its TLS, ready to connect.
pub struct Target {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, ConnectError> {
        let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !is_url {
            // libpq's key/value form: tokio-postgres reads it as it is
            // (sslmode disable|prefer|require, no certificate files).
            let config = tokio_postgres::Config::from_str(url)?;
            let tls = match config.get_ssl_mode() {
                WireMode::Disable => None,
                _ => Some(tls_config(SslMode::Prefer, &TlsFiles::default())?),
            };
            return Ok(Self { config, tls });
        }
        let (rest, files, mode) = split_tls_parameters(url)?;
        let mut config = tokio_postgres::Config::from_str(&rest)?;
        config.ssl_mode(match mode {
            SslMode::Disable => WireMode::Disable,
            SslMode::Prefer => WireMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireMode::Require,
        });
        let tls = match mode {
            SslMode::Disable => None,
            mode => Some(tls_config(mode, &files)?),
        };
        Ok(Self { config, tls })
    }

    pub async fn connect(&self) -> Result<AsyncPgConnection, ConnectError> {
        Ok(match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await?
            }
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await?
            }
        })
    }
}

#[derive(Default)]
struct TlsFiles {
    root_cert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// The URL without its TLS parameters, the files they name, and the mode.
fn split_tls_parameters(url: &str) -> Result<(String, TlsFiles, SslMode), ConnectError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut files = TlsFiles::default();
    let mut mode = None;
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "sslmode" => {
                mode = Some(match value.as_ref() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(ConnectError::Url(format!(
                            "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                        )))
                    }
                })
            }
            "sslrootcert" => files.root_cert = Some(value.into_owned()),
            "sslcert" => files.cert = Some(value.into_owned()),
            "sslkey" => files.key = Some(value.into_owned()),
            _ => {
                kept.append_pair(&key, &value);
            }
        }
    }
    // As libpq: with a root certificate, `require` verifies the chain too.
    let mode = match mode.unwrap_or(SslMode::Prefer) {
        SslMode::Require if files.root_cert.is_some() => SslMode::VerifyCa,
        mode => mode,
    };
    // The serializer writes a space as `+`, which tokio-postgres would take
    // literally (`options=-c+statement_timeout…`); a `+` of the input is `%2B`.
    let kept = kept.finish().replace('+', "%20");
    let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{kept}") };
    Ok((rest, files, mode))
}

fn tls_config(mode: SslMode, files: &TlsFiles) -> Result<MakeRustlsConnect, ConnectError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::VerifyFull => webpki(mode, files, &provider)?,
        SslMode::VerifyCa => {
            Arc::new(Lenient { chain: Some(webpki(mode, files, &provider)?), provider: provider.clone() })
        }
        // prefer and require encrypt without checking who answers, as libpq does.
        _ => Arc::new(Lenient { chain: None, provider: provider.clone() }),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| ConnectError::Certificates(err.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|err| ConnectError::Certificates(format!("sslcert {cert}: {err}")))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|err| ConnectError::Certificates(format!("sslkey {key}: {err}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| ConnectError::Certificates(format!("sslcert/sslkey: {err}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(ConnectError::Url("sslcert and sslkey go together".into())),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn root_store(mode: SslMode, root_cert: Option<&str>) -> Result<RootCertStore, ConnectError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        None => {
            let mode = if mode == SslMode::VerifyFull { "verify-full" } else { "verify-ca" };
            return Err(ConnectError::Url(format!(
                "sslmode={mode} needs sslrootcert: the CA file that signed the server's certificate, or `system`"
            )));
        }
        Some("system") => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
        Some(file) => {
            for cert in CertificateDer::pem_file_iter(file)
                .map_err(|err| ConnectError::Certificates(format!("sslrootcert {file}: {err}")))?
            {
                let cert = cert.map_err(|err| ConnectError::Certificates(format!("sslrootcert {file}: {err}")))?;
                roots.add(cert).map_err(|err| ConnectError::Certificates(format!("sslrootcert {file}: {err}")))?;
            }
        }
    }
    if roots.is_empty() {
        return Err(ConnectError::Certificates("sslrootcert holds no certificate".into()));
    }
    Ok(roots)
}

fn webpki(
    mode: SslMode,
    files: &TlsFiles,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, ConnectError> {
    let roots = Arc::new(root_store(mode, files.root_cert.as_deref())?);
    WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|err| ConnectError::Certificates(format!("sslrootcert: {err}")))
}

/// Less than `verify-full`: with `chain` (`verify-ca`) the certificate must
/// lead to a trusted root and its name is not checked; without (`prefer`,
/// `require`) any certificate goes. The handshake's signature is checked
/// either way.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_url_and_set_the_mode() {
        let (rest, files, mode) = split_tls_parameters(
            "postgres://u:p@h:5433/db?sslmode=verify-full&sslrootcert=%2Fca.crt&connect_timeout=3&sslcert=c&sslkey=k\
             &options=-c%20statement_timeout%3D10",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5433/db?connect_timeout=3&options=-c%20statement_timeout%3D10");
        assert_eq!(
            (files.root_cert.as_deref(), files.cert.as_deref(), files.key.as_deref()),
            (Some("/ca.crt"), Some("c"), Some("k"))
        );
        assert_eq!(mode, SslMode::VerifyFull);
    }

    #[test]
    fn require_with_a_root_certificate_verifies_the_chain_as_libpq_does() {
        let (_, _, mode) = split_tls_parameters("postgres://h/db?sslmode=require&sslrootcert=ca.crt").unwrap();
        assert_eq!(mode, SslMode::VerifyCa);
        let (rest, _, mode) = split_tls_parameters("postgres://h/db").unwrap();
        assert_eq!((rest.as_str(), mode), ("postgres://h/db", SslMode::Prefer));
    }

    #[test]
    fn a_bad_mode_or_a_verification_without_a_root_is_refused_with_the_reason() {
        let err = Target::parse("postgres://h/db?sslmode=allow").err().unwrap().to_string();
        assert_eq!(err, "database.url: sslmode=allow is not one of disable, prefer, require, verify-ca, verify-full");
        let err = Target::parse("postgres://h/db?sslmode=verify-full").err().unwrap().to_string();
        assert!(err.contains("sslmode=verify-full needs sslrootcert"), "{err}");
        let err = Target::parse("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.crt").err().unwrap();
        assert!(err.to_string().starts_with("database.url: sslrootcert /nonexistent/ca.crt"), "{err}");
    }
}
