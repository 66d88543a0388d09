//! `--web.config.file`, in the format of Prometheus' exporter-toolkit, so an operator's
//! existing file works: TLS (`tls_server_config`), basic auth (`basic_auth_users`, bcrypt)
//! and extra response headers (`http_server_config.headers`). What rustls cannot do (TLS 1.0
//! and 1.1, client auth types other than none, verify-if-given and require-and-verify) is
//! refused with one line. The file is read again when it changes, for new connections, so a
//! new password or certificate needs no restart; a broken edit is logged and the last good
//! configuration stays.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use axum::http::{HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use serde::Deserialize;
use tracing::warn;

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
    pub fn plain() -> Self {
        WebConfig {
            tls: None,
            users: BTreeMap::new(),
            headers: Vec::new(),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--web.config.file {}", path.display()))?;
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
            for cert in CertificateDer::pem_file_iter(relative(ca))
                .with_context(|| format!("client_ca_file {}", ca.display()))?
            {
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
    let certs = CertificateDer::pem_file_iter(relative(&t.cert_file))
        .with_context(|| format!("cert_file {}", t.cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cert_file {}", t.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(relative(&t.key_file))
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

/// The file, read again when it changes (checked at each new connection).
pub struct Watched {
    path: PathBuf,
    state: Mutex<(Option<Stamp>, Arc<WebConfig>)>,
}

/// When the file last changed, and its length: a changed stamp means read it again.
type Stamp = (SystemTime, u64);

impl Watched {
    /// Reads it now: a bad file at start is an error (one line, exit 2).
    pub fn new(path: PathBuf) -> Result<Self> {
        let stamp = stamp(&path);
        let config = WebConfig::load(&path)?;
        Ok(Watched {
            path,
            state: Mutex::new((stamp, Arc::new(config))),
        })
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<WebConfig> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now != state.0 {
            state.0 = now;
            match WebConfig::load(&self.path) {
                Ok(config) => state.1 = Arc::new(config),
                Err(err) => warn!("keeping the last good web config: {err:#}"),
            }
        }
        state.1.clone()
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Basic auth against bcrypt hashes. A bcrypt check costs tens of ms of CPU, so successes
/// are remembered (by a keyed hash of user, password and stored hash: an edited password
/// no longer matches) and at most two checks run at once, off the async threads.
pub struct Authenticator {
    seen: Mutex<HashSet<u64>>,
    keys: RandomState,
    checks: tokio::sync::Semaphore,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator {
            seen: Mutex::new(HashSet::new()),
            keys: RandomState::new(),
            checks: tokio::sync::Semaphore::new(2),
        }
    }
}

impl Authenticator {
    /// Whether the `Authorization` header value lets the request through `config`.
    pub async fn allows(&self, config: &WebConfig, authorization: Option<&str>) -> bool {
        if config.users.is_empty() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let Some(hash) = config.users.get(&user).cloned() else {
            return false;
        };
        let key = self.keys.hash_one((&user, &password, &hash));
        if self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return true;
        }
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if ok {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() > 1024 {
                seen.clear(); // bounded, whatever the number of users and passwords tried
            }
            seen.insert(key);
        }
        ok
    }
}

/// `Basic base64(user:password)`.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials() {
        assert_eq!(
            basic_credentials("Basic dXNlcjpwYXNz"),
            Some(("user".into(), "pass".into()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }

    fn write(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("web.yml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    mod tempdir {
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
            ("tls_server_config:\n  cert_file: missing.pem\n  key_file: k\n", "cert_file missing.pem"),
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

    #[test]
    fn an_edited_file_is_read_again_and_a_broken_edit_keeps_the_last_good_one() {
        let hash = bcrypt::hash("secret", 4).expect("hash");
        let (_dir, path) = write(&format!("basic_auth_users:\n  alice: {hash}\n"));
        let watched = Watched::new(path.clone()).expect("loads");
        assert!(watched.current().users.contains_key("alice"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(
            &path,
            format!("basic_auth_users:\n  bob: {hash}\n  carol: {hash}\n"),
        )
        .expect("edit");
        assert!(watched.current().users.contains_key("bob"));
        std::fs::write(&path, "basic_auth_users: [").expect("break it");
        assert!(
            watched.current().users.contains_key("bob"),
            "kept the last good one"
        );
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
