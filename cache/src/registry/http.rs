//! HTTP for the registry client: proxies chosen per request from `HTTPS_PROXY`/`HTTP_PROXY`/
//! `NO_PROXY` with the rules of Go's `net/http` (so the same as the Docker daemon's own pulls),
//! the system certificate store plus any configured CA, and retries with backoff on 429 and
//! 5xx answers (honouring `Retry-After`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// The proxy variables, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// `HTTP_PROXY` (or `http_proxy`): for `http://` URLs.
    pub http: Option<String>,
    /// `HTTPS_PROXY` (or `https_proxy`): for `https://` URLs.
    pub https: Option<String>,
    /// `NO_PROXY` (or `no_proxy`): hosts reached directly.
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    pub fn from_env() -> ProxyEnv {
        let var = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        ProxyEnv {
            http: var(["HTTP_PROXY", "http_proxy"]),
            https: var(["HTTPS_PROXY", "https_proxy"]),
            no_proxy: var(["NO_PROXY", "no_proxy"]),
        }
    }

    /// The proxy for a URL's scheme, host (no brackets) and port, as Go's `httpproxy` decides:
    /// never for `localhost` or a loopback address; not for a `NO_PROXY` entry (`*`, an IP, a
    /// CIDR, `host`, `.suffix`, `*.suffix`, each with an optional `:port`).
    pub fn proxy_for(&self, scheme: &str, host: &str, port: u16) -> Option<String> {
        let proxy = match scheme {
            "https" => self.https.as_deref(),
            _ => self.http.as_deref(),
        }?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
            return None;
        }
        let no_proxy = self.no_proxy.as_deref().unwrap_or("");
        for entry in no_proxy.split(',').map(|e| e.trim().to_ascii_lowercase()) {
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                return None;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                if let (Some(ip), Ok(net), Ok(bits)) = (ip, net.parse::<IpAddr>(), bits.parse()) {
                    if in_cidr(ip, net, bits) {
                        return None;
                    }
                }
                continue;
            }
            if let Ok(e) = entry
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            {
                if ip == Some(e) {
                    return None;
                }
                continue;
            }
            let (ehost, eport) = match entry.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p.parse().ok()),
                _ => (entry.as_str(), None),
            };
            if eport.is_some_and(|p: u16| p != port) {
                continue;
            }
            let ehost = ehost.strip_prefix('*').unwrap_or(ehost);
            let matched = match ehost.strip_prefix('.') {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => host == ehost || host.ends_with(&format!(".{ehost}")),
            };
            if matched {
                return None;
            }
        }
        Some(if proxy.contains("://") {
            proxy.to_string()
        } else {
            format!("http://{proxy}")
        })
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// How the client retries and verifies.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub proxy: ProxyEnv,
    /// A PEM file of CA certificates trusted besides the system store.
    pub ca_file: Option<PathBuf>,
    /// Docker's per-registry CA directory (`<dir>/<host[:port]>/*.crt`), as the daemon reads it.
    pub certs_d: Option<PathBuf>,
    /// Retries after a 429, a 5xx or a failed connection.
    pub retries: u32,
    /// The first wait between attempts (doubled each time) when no `Retry-After` is given.
    pub backoff: Duration,
    /// The longest wait a `Retry-After` may ask for before the client gives up instead.
    pub max_wait: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            proxy: ProxyEnv::default(),
            ca_file: None,
            certs_d: None,
            retries: 3,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// A request: all bodies here are small (manifests, configs, tokens).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// A response with its body read (up to the caller's limit).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why no answer came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The TLS handshake failed (an unknown CA, a name mismatch...).
    Tls(String),
    /// The proxy refused or could not be reached.
    Proxy(String),
    /// No connection (refused, no such host, timed out...).
    Connect(String),
    /// Anything else (a malformed answer, a body over the limit...).
    Other(String),
}

/// The HTTP side of one registry: an agent per proxy in use, one TLS configuration.
#[derive(Debug)]
pub struct Transport {
    settings: HttpSettings,
    tls: TlsConfig,
    agents: Mutex<HashMap<Option<String>, ureq::Agent>>,
}

impl Transport {
    /// The transport for a registry at `host` (`name[:port]`, for Docker's `certs.d`).
    pub fn new(settings: HttpSettings, host: &str) -> Result<Transport, String> {
        let tls = tls_config(&settings, host)?;
        Ok(Transport {
            settings,
            tls,
            agents: Mutex::new(HashMap::new()),
        })
    }

    fn agent(&self, url: &str) -> Result<ureq::Agent, Failure> {
        let uri: ureq::http::Uri = url
            .parse()
            .map_err(|e| Failure::Other(format!("`{url}` is not a URL: {e}")))?;
        let scheme = uri.scheme_str().unwrap_or("https");
        let host = uri.host().unwrap_or_default();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let proxy = self.settings.proxy.proxy_for(scheme, host, port);
        let mut agents = self
            .agents
            .lock()
            .map_err(|_| Failure::Other("a registry client lock was poisoned".into()))?;
        if let Some(a) = agents.get(&proxy) {
            return Ok(a.clone());
        }
        let proxy_cfg = match &proxy {
            Some(p) => Some(ureq::Proxy::new(p).map_err(|e| {
                Failure::Proxy(format!(
                    "the proxy `{p}` (from HTTPS_PROXY/HTTP_PROXY) is not a proxy URL: {e}"
                ))
            })?),
            None => None,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(300)))
            .max_redirects(5)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
            .user_agent(concat!("kc-images/", env!("CARGO_PKG_VERSION")))
            .proxy(proxy_cfg)
            .tls_config(self.tls.clone())
            .build()
            .into();
        agents.insert(proxy, agent.clone());
        Ok(agent)
    }

    /// Sends `req`, retrying after 429/5xx answers and failed connections (with backoff, or
    /// after `Retry-After`); the last answer when retries run out.
    pub fn send(&self, req: &Request, limit: u64) -> Result<Response, Failure> {
        let agent = self.agent(&req.url)?;
        let mut attempt = 0;
        loop {
            let backoff = self.settings.backoff * 2u32.saturating_pow(attempt);
            match send_once(&agent, req, limit) {
                Ok(res) if matches!(res.status, 429 | 500 | 502 | 503 | 504) => {
                    if attempt >= self.settings.retries {
                        return Ok(res);
                    }
                    let wait = match res.header("Retry-After").and_then(retry_after) {
                        Some(w) if w > self.settings.max_wait => return Ok(res),
                        Some(w) => w,
                        None => backoff,
                    };
                    std::thread::sleep(wait);
                }
                Ok(res) => return Ok(res),
                Err(f @ Failure::Connect(_)) => {
                    if attempt >= self.settings.retries {
                        return Err(f);
                    }
                    std::thread::sleep(backoff);
                }
                Err(f) => return Err(f),
            }
            attempt += 1;
        }
    }
}

fn send_once(agent: &ureq::Agent, req: &Request, limit: u64) -> Result<Response, Failure> {
    let mut b = ureq::http::Request::builder()
        .method(req.method)
        .uri(&req.url);
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let result = match &req.body {
        Some(body) => b
            .body(body.as_slice())
            .map_err(|e| Failure::Other(e.to_string()))
            .and_then(|r| agent.run(r).map_err(classify)),
        None => b
            .body(())
            .map_err(|e| Failure::Other(e.to_string()))
            .and_then(|r| agent.run(r).map_err(classify)),
    };
    let mut res = result?;
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = if req.method == "HEAD" {
        Vec::new()
    } else {
        res.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(n) => {
                    Failure::Other(format!("the answer is larger than {n} bytes"))
                }
                e => classify(e),
            })?
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn classify(e: ureq::Error) -> Failure {
    let text = e.to_string();
    match e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) => Failure::Tls(text),
        ureq::Error::ConnectProxyFailed(_) | ureq::Error::InvalidProxyUrl => Failure::Proxy(text),
        ureq::Error::Io(ref io)
            if io.get_ref().is_some_and(|inner| {
                let s = inner.to_string();
                s.contains("certificate") || s.contains("handshake")
            }) || text.contains("certificate") =>
        {
            Failure::Tls(text)
        }
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed => Failure::Connect(text),
        _ => Failure::Other(text),
    }
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = http_date(v)?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(v: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x == month)? as i64 + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    let [h, mi, s] = hms.as_slice() else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The system store, plus the configured CA file and Docker's `certs.d/<host>/*.crt` when
/// present (as the daemon adds them); the platform verifier when there is nothing to add.
fn tls_config(settings: &HttpSettings, host: &str) -> Result<TlsConfig, String> {
    let mut extra: Vec<Certificate<'static>> = Vec::new();
    if let Some(ca) = &settings.ca_file {
        let certs = read_certs(ca).map_err(|e| {
            format!("{e}\n  hint: IMAGES_REGISTRY_CA must name a PEM file of CA certificates")
        })?;
        extra.extend(certs);
    }
    if let Some(dir) = &settings.certs_d {
        let dir = dir.join(host);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            paths.sort();
            for p in paths {
                extra.extend(read_certs(&p)?);
            }
        }
    }
    let roots = if extra.is_empty() {
        RootCerts::PlatformVerifier
    } else {
        let native = rustls_native_certs::load_native_certs();
        let mut all: Vec<Certificate<'static>> = native
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        all.extend(extra);
        RootCerts::new_with_certs(&all)
    };
    Ok(TlsConfig::builder().root_certs(roots).build())
}

fn read_certs(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("failed to read the CA file `{}`: {e}", path.display()))?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&bytes)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!(
            "the CA file `{}` holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(no_proxy: &str) -> ProxyEnv {
        ProxyEnv {
            http: Some("127.0.0.1:3128".into()),
            https: Some("http://proxy.corp:8080".into()),
            no_proxy: Some(no_proxy.into()),
        }
    }

    /// The cases of Go's `httpproxy` tests that apply to a registry client.
    #[test]
    fn proxies_are_chosen_as_go_chooses_them() {
        let e = env("");
        assert_eq!(
            e.proxy_for("https", "ghcr.io", 443).as_deref(),
            Some("http://proxy.corp:8080")
        );
        assert_eq!(
            e.proxy_for("http", "reg.corp", 80).as_deref(),
            Some("http://127.0.0.1:3128")
        );
        // Loopback is never proxied.
        for h in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert_eq!(e.proxy_for("https", h, 5000), None, "{h}");
        }
        let e = env("corp.example, .internal, *.svc, 10.0.0.0/8, 192.168.1.5, reg.io:5000");
        assert_eq!(e.proxy_for("https", "corp.example", 443), None);
        assert_eq!(e.proxy_for("https", "a.corp.example", 443), None);
        assert!(e.proxy_for("https", "xcorp.example", 443).is_some());
        assert_eq!(e.proxy_for("https", "a.internal", 443), None);
        assert!(e.proxy_for("https", "internal", 443).is_some());
        assert_eq!(e.proxy_for("https", "x.svc", 443), None);
        assert_eq!(e.proxy_for("https", "10.2.3.4", 443), None);
        assert!(e.proxy_for("https", "11.2.3.4", 443).is_some());
        assert_eq!(e.proxy_for("https", "192.168.1.5", 443), None);
        assert_eq!(e.proxy_for("https", "reg.io", 5000), None);
        assert!(e.proxy_for("https", "reg.io", 443).is_some());
        assert_eq!(env("*").proxy_for("https", "ghcr.io", 443), None);
        assert_eq!(ProxyEnv::default().proxy_for("https", "ghcr.io", 443), None);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784111777))
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn a_ca_file_without_certificates_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").expect("write");
        let settings = HttpSettings {
            ca_file: Some(f.clone()),
            ..HttpSettings::default()
        };
        let e = Transport::new(settings, "r.example").expect_err("no certificate");
        assert!(
            e.contains("holds no PEM certificate") && e.contains("IMAGES_REGISTRY_CA"),
            "{e}"
        );
        let settings = HttpSettings {
            ca_file: Some(dir.path().join("missing.pem")),
            ..HttpSettings::default()
        };
        let e = Transport::new(settings, "r.example").expect_err("missing");
        assert!(e.contains("failed to read the CA file"), "{e}");
    }
}
