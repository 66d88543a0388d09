//! `--web.config.file`, in the format of Prometheus' exporter-toolkit, so an operator's
//! existing file works: TLS (`tls_server_config`), basic auth (`basic_auth_users`, bcrypt)
//! and extra response headers (`http_server_config.headers`). What rustls cannot do (TLS 1.0
//! and 1.1, client auth types other than none, verify-if-given and require-and-verify) is
//! refused with one line. The file is read again when it changes (reload.rs), so a new
//! password or certificate needs no restart; a broken edit, or one that would take TLS or
//! authentication away, is logged and counted, and the last good configuration stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use axum::http::{HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use serde::Deserialize;

use super::config_file::read_regular;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    tls_server_config: Option<TlsFormat>,
    http_server_config: Option<HttpFormat>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFormat {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    /// Accepted for compatibility: rustls always uses the server's order.
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFormat {
    headers: Option<BTreeMap<String, String>>,
    /// Accepted for compatibility: ksight speaks HTTP/1.1.
    http2: Option<bool>,
}

/// One reading of the file.
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    /// User → bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl WebConfig {
    /// What `self`, a new reading, would take away from `running`, if anything: TLS,
    /// authentication, or everything (an empty file). Such a change needs a restart, so an
    /// editor's truncate-then-write never serves /metrics in the clear or without a password.
    pub fn downgrade_from(&self, running: &WebConfig) -> Option<&'static str> {
        if running.tls.is_some() && self.tls.is_none() {
            Some("it removes TLS")
        } else if !running.users.is_empty() && self.users.is_empty() {
            Some("it removes authentication")
        } else if self.is_empty() && !running.is_empty() {
            Some("it is empty")
        } else {
            None
        }
    }

    fn is_empty(&self) -> bool {
        self.tls.is_none() && self.users.is_empty() && self.headers.is_empty()
    }

    pub fn plain() -> Self {
        WebConfig {
            tls: None,
            users: BTreeMap::new(),
            headers: Vec::new(),
        }
    }

    /// Reads and checks the file and every file it names (bounded: config_file.rs).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_regular(path).context("--web.config.file")?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow!("--web.config.file {}: not UTF-8 text", path.display()))?;
        let file: FileFormat = serde_norway::from_str(&text)
            .map_err(|e| anyhow!("--web.config.file {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = file
            .tls_server_config
            .map(|t| tls_config(&t, dir).map(Arc::new))
            .transpose()
            .with_context(|| format!("--web.config.file {}", path.display()))?;
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                bail!(
                    "--web.config.file {}: the password of {user:?} is not a bcrypt hash",
                    path.display()
                );
            }
        }
        let headers = file
            .http_server_config
            .and_then(|h| {
                let _ = h.http2;
                h.headers
            })
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| header(&name, &value))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("--web.config.file {}", path.display()))?;
        Ok(WebConfig {
            tls,
            users,
            headers,
        })
    }
}

/// A header the operator adds to every response; the ones ksight itself sets are refused.
fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue)> {
    const OWN: [&str; 7] = [
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "vary",
        "www-authenticate",
    ];
    let name = HeaderName::try_from(name).map_err(|_| anyhow!("invalid header name {name:?}"))?;
    if OWN.contains(&name.as_str()) {
        bail!("header {name} is set by ksight itself");
    }
    let value =
        HeaderValue::try_from(value).map_err(|_| anyhow!("invalid value for header {name}"))?;
    Ok((name, value))
}

fn version(name: &str) -> Result<&'static SupportedProtocolVersion> {
    match name {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => bail!("{name} is not supported (rustls: TLS12 or TLS13)"),
        other => bail!("unknown TLS version {other:?} (TLS12 or TLS13)"),
    }
}

fn tls_config(t: &TlsFormat, dir: &Path) -> Result<ServerConfig> {
    let _ = t.prefer_server_cipher_suites;
    let relative = |p: &Path| dir.join(p);
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &t.cipher_suites {
        // Named suites apply to TLS 1.2 (as in Go); TLS 1.3's are not configurable there.
        let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        for name in &wanted {
            let known = provider
                .cipher_suites
                .iter()
                .any(|s| format!("{:?}", s.suite()) == *name);
            if !known {
                bail!("cipher suite {name} is not one rustls offers");
            }
        }
        provider.cipher_suites.retain(|s| {
            s.version() == &rustls::version::TLS13
                || wanted.contains(&format!("{:?}", s.suite()).as_str())
        });
    }
    let provider = Arc::new(provider);
    let min = version(t.min_version.as_deref().unwrap_or("TLS12"))?;
    let max = version(t.max_version.as_deref().unwrap_or("TLS13"))?;
    let versions: Vec<&'static SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| rank(v) >= rank(min) && rank(v) <= rank(max))
            .collect();
    if versions.is_empty() {
        bail!("min_version is above max_version");
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .context("TLS versions")?;
    let client_auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match (client_auth, &t.client_ca_file) {
        ("NoClientCert", _) => builder.with_no_client_auth(),
        ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert", Some(ca)) => {
            let mut roots = RootCertStore::empty();
            let pem = read_regular(&relative(ca)).context("client_ca_file")?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.context("client_ca_file")?).context("client_ca_file")?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if client_auth == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().context("client_ca_file")?)
        }
        ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert", None) => {
            bail!("client_auth_type {client_auth} needs client_ca_file")
        }
        (other, _) => bail!(
            "client_auth_type {other:?} is not supported (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
        ),
    };
    let pem = read_regular(&relative(&t.cert_file)).context("cert_file")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cert_file {}", t.cert_file.display()))?;
    let pem = read_regular(&relative(&t.key_file)).context("key_file")?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .with_context(|| format!("key_file {}", t.key_file.display()))?;
    let mut config = builder
        .with_single_cert(certs, key)
        .context("cert_file and key_file do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn rank(v: &SupportedProtocolVersion) -> u8 {
    if v == &rustls::version::TLS13 {
        13
    } else {
        12
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn write(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("web.yml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    pub mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let n = N.fetch_add(1, Ordering::SeqCst);
                let dir =
                    std::env::temp_dir().join(format!("ksight-webcfg-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("dir");
                Dir(dir)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn bad_files_are_one_clear_error() {
        let cases = [
            ("basic_auth_users:\n  alice: notahash\n", "not a bcrypt hash"),
            ("unknown_thing: 1\n", "unknown field"),
            ("tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS10\n", "TLS10 is not supported"),
            ("tls_server_config:\n  cert_file: missing.pem\n  key_file: k\n", "missing.pem"),
            ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n", "not supported"),
            ("http_server_config:\n  headers:\n    Content-Type: x\n", "set by ksight itself"),
        ];
        for (text, expect) in cases {
            let (_dir, path) = write(text);
            let err = WebConfig::load(&path)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(err.contains(expect), "{text:?}: {err}");
        }
        assert!(WebConfig::load(Path::new("/nonexistent/web.yml")).is_err());
    }

    proptest::proptest! {
        /// The web config is outside input too: any text is a config or one error.
        #[test]
        fn any_yaml_text(text in ".{0,200}") {
            let (_dir, path) = write(&text);
            let _ = WebConfig::load(&path);
        }
    }
}
