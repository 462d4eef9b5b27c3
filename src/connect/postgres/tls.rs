//! TLS to PostgreSQL, with libpq's parameters and meanings: `sslmode` (`disable`, `allow`,
//! `prefer` (the default), `require`, `verify-ca`, `verify-full`), `sslrootcert` (a PEM file, or
//! `system` for the machine's trusted roots), `sslcert` and `sslkey` (a client certificate). Each
//! may be given in the address (`?sslmode=verify-full&sslrootcert=ca.pem`) or as libpq's
//! environment variables (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`); the address wins.
//!
//! As in libpq: `prefer` and `require` encrypt without checking who answers, unless a root
//! certificate is at hand (`sslrootcert`, or `~/.postgresql/root.crt`), in which case they check
//! the chain as `verify-ca` does; `verify-ca` checks the chain, `verify-full` the chain and
//! the host name; `sslrootcert=system` asks for `verify-full`. `allow` is taken as `prefer` (the
//! connection tries TLS first).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// What `sslmode` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "disable" => Mode::Disable,
            "allow" => Mode::Allow,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            _ => return None,
        })
    }

    /// What the connection itself does: tokio-postgres knows disable, prefer and require; the
    /// checks of the verify modes are the certificate verifier's.
    pub(crate) fn ssl_mode(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Allow | Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

// The parameters are taken off the address where addresses are read (address.rs), which also
// needs them gone to show an address redacted.
pub(crate) use crate::address::{TlsParams as Params, split_tls as split};

/// How one address connects: its mode and the connector that carries it out.
#[derive(Clone)]
pub(crate) struct Tls {
    pub mode: Mode,
    pub connector: MakeRustlsConnect,
    /// The files the settings named, for the replication connection (its own TLS client):
    /// the root certificate (None: the machine's roots, or none needed), and a client
    /// certificate with its key.
    pub root_file: Option<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
}

impl Tls {
    /// Settle the parameters (the address's, else the environment's, else libpq's defaults) and
    /// load the files they name. `redacted` names the address in errors.
    pub(crate) fn new(params: Params, redacted: &str) -> Result<Tls> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let default_file = |name: &str| {
            home.as_ref()
                .map(|h| h.join(".postgresql").join(name))
                .filter(|p| p.is_file())
        };
        let root_given = params.root_cert.or_else(|| env("PGSSLROOTCERT"));
        let system = root_given.as_deref() == Some("system");
        let mode = match params.mode.or_else(|| env("PGSSLMODE")) {
            Some(m) => Mode::parse(&m).ok_or_else(|| {
                Error::usage(format!(
                    "{redacted}: sslmode={m} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            })?,
            None if system => Mode::VerifyFull,
            None => Mode::Prefer,
        };
        if system && mode != Mode::VerifyFull {
            return Err(Error::usage(format!(
                "{redacted}: sslrootcert=system checks the server against the machine's trusted roots, which only means something with sslmode=verify-full (not {mode:?}); use sslmode=verify-full"
            )));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let root_file = root_given
            .as_ref()
            .filter(|_| !system)
            .map(PathBuf::from)
            .or_else(|| default_file("root.crt"));
        let root_file_kept = root_file.clone();
        let verify = matches!(mode, Mode::VerifyCa | Mode::VerifyFull);
        let verifier = if mode == Mode::Disable {
            Verifier::unchecked(&provider)
        } else if system {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(Error::usage(format!(
                    "{redacted}: sslrootcert=system, but this machine has no trusted root certificates (install ca-certificates, or name a file with sslrootcert=PATH)"
                )));
            }
            Verifier::checked(roots, &provider, true, redacted)?
        } else if let Some(file) = root_file {
            let roots = load_roots(&file, redacted)?;
            Verifier::checked(roots, &provider, mode == Mode::VerifyFull, redacted)?
        } else if verify {
            let wanted = home
                .map(|h| h.join(".postgresql/root.crt").display().to_string())
                .unwrap_or_else(|| "~/.postgresql/root.crt".into());
            return Err(Error::usage(format!(
                "{redacted}: sslmode={} checks the server's certificate, but there is no root certificate to check it against ({wanted} does not exist): name the CA's file with sslrootcert=PATH (or PGSSLROOTCERT), use sslrootcert=system for a publicly trusted server, or sslmode=require to encrypt without checking",
                if mode == Mode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            )));
        } else {
            Verifier::unchecked(&provider)
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::usage(format!("{redacted}: TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let cert = params.cert.or_else(|| env("PGSSLCERT")).map(PathBuf::from);
        let key = params.key.or_else(|| env("PGSSLKEY")).map(PathBuf::from);
        let cert = cert.or_else(|| default_file("postgresql.crt"));
        let mut client = None;
        let config = match cert {
            Some(cert) if mode != Mode::Disable => {
                let key = key
                    .or_else(|| default_file("postgresql.key"))
                    .ok_or_else(|| {
                        Error::usage(format!(
                            "{redacted}: a client certificate ({}) needs its private key: name it with sslkey=PATH (or PGSSLKEY)",
                            cert.display()
                        ))
                    })?;
                let chain = load_certs(&cert, "sslcert", redacted)?;
                client = Some((cert.clone(), key.clone()));
                let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| {
                    Error::usage(format!(
                        "{redacted}: sslkey {}: not a readable PEM private key ({e})",
                        key.display()
                    ))
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    Error::usage(format!(
                        "{redacted}: sslcert {} and its key do not go together ({e})",
                        cert.display()
                    ))
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Tls {
            mode,
            connector: MakeRustlsConnect::new(config),
            root_file: root_file_kept,
            client,
        })
    }
}

/// The certificates of a PEM file named by `param` (`sslrootcert`, `sslcert`).
fn load_certs(file: &Path, param: &str, redacted: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bad = |why: String| Error::usage(format!("{redacted}: {param} {}: {why}", file.display()));
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| bad(format!("cannot read it as PEM certificates ({e})")))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate (expected -----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

fn load_roots(file: &Path, redacted: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(file, "sslrootcert", redacted)? {
        roots.add(cert).map_err(|e| {
            Error::usage(format!(
                "{redacted}: sslrootcert {}: a certificate in it cannot be a root ({e})",
                file.display()
            ))
        })?;
    }
    Ok(roots)
}

/// What is checked of the server's certificate. The handshake's signatures are verified against
/// the certificate offered in every case.
#[derive(Debug)]
enum Check {
    /// Nothing (`prefer`, `require` without a root certificate, as libpq does).
    Nothing,
    /// Its chain, against these roots (`verify-ca`).
    Chain(RootCertStore),
    /// Its chain and the host name (`verify-full`).
    Full(Arc<WebPkiServerVerifier>),
}

#[derive(Debug)]
struct Verifier {
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    fn unchecked(provider: &CryptoProvider) -> Verifier {
        Verifier {
            check: Check::Nothing,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The chain checked against `roots`; the host name too when `check_name` (`verify-full`).
    fn checked(
        roots: RootCertStore,
        provider: &Arc<CryptoProvider>,
        check_name: bool,
        redacted: &str,
    ) -> Result<Verifier> {
        let check = if check_name {
            let full = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| Error::usage(format!("{redacted}: TLS roots: {e}")))?;
            Check::Full(full)
        } else {
            Check::Chain(roots)
        };
        Ok(Verifier {
            check,
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match &self.check {
            Check::Nothing => {}
            Check::Chain(roots) => {
                let cert = ParsedCertificate::try_from(end_entity)?;
                verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, self.algorithms.all)?;
            }
            Check::Full(full) => {
                full.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why TLS refused a connection for good, with what to do: a certificate the check refused, a
/// handshake the server or this side broke off, or a server without TLS where `sslmode` requires
/// it. No retry changes any of these; a connection lost during the handshake is not one of them.
pub(crate) fn refusal(e: &tokio_postgres::Error) -> Option<String> {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if s.to_string() == "server does not support TLS" {
            return Some(
                "the server does not offer TLS, and sslmode asks for it: turn ssl on in the server, or connect with sslmode=prefer (or disable)"
                    .into(),
            );
        }
        let tls = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| s.downcast_ref::<rustls::Error>());
        if let Some(t) = tls {
            let hint = match t {
                rustls::Error::InvalidCertificate(c) => certificate_hint(c),
                _ => "the TLS handshake failed",
            };
            return Some(format!("TLS: {t}: {hint}"));
        }
        src = s.source();
    }
    None
}

/// What to do about a certificate the check refused.
fn certificate_hint(e: &CertificateError) -> &'static str {
    match e {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the server's certificate is not for the host in the address: connect by a name the certificate carries, or check the chain only with sslmode=verify-ca"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the server's certificate has expired: the server needs a new one"
        }
        CertificateError::UnknownIssuer => {
            "the server's certificate is not signed by a root it was checked against: name the CA that signed it with sslrootcert=PATH"
        }
        _ => "the server's certificate did not pass the check sslmode asks for",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_address_and_the_rest_stay() {
        let (url, p) = split(
            "postgres://app@db:5432/app?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20one.pem&connect_timeout=5",
        );
        assert_eq!(url, "postgres://app@db:5432/app?application_name=x&connect_timeout=5");
        assert_eq!(p.mode.as_deref(), Some("verify-full"));
        assert_eq!(p.root_cert.as_deref(), Some("/tmp/ca one.pem"));
        let (url, p) = split("postgres://app@db/app?sslmode=require");
        assert_eq!(url, "postgres://app@db/app");
        assert_eq!(p.mode.as_deref(), Some("require"));
        let (url, p) = split("postgres://app@db/app");
        assert_eq!(url, "postgres://app@db/app");
        assert_eq!(p, Params::default());
    }

    #[test]
    fn modes_map_to_what_the_connection_does() {
        assert_eq!(Mode::parse("verify-ca").unwrap().ssl_mode(), SslMode::Require);
        assert_eq!(Mode::parse("allow").unwrap().ssl_mode(), SslMode::Prefer);
        assert_eq!(Mode::parse("disable").unwrap().ssl_mode(), SslMode::Disable);
        assert!(Mode::parse("verify_full").is_none());
    }
}
