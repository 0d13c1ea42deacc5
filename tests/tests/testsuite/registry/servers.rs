//! Servers the registry tests run on loopback: real `docker-registry` instances (Debian's
//! distribution 2.8) configured per test (htpasswd, token auth, TLS), a test PKI, a JWT issuer
//! whose tokens the real registry verifies, a small HTTP(S) server for realms and faults, and a
//! CONNECT proxy that records what it tunnels.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A port free right now on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn wait_for_port(port: u16, log: &Path) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "docker-registry did not listen on {port}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A certificate authority made for one test, and leaf certificates it signs.
pub struct Pki {
    pub dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, as DER and as PEM files.
pub struct Leaf {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kc-images test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).expect("ca cert");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write ca");
        Pki {
            issuer: rcgen::Issuer::new(params, key),
            dir,
        }
    }

    /// The CA's PEM file (what `IMAGES_REGISTRY_CA` names).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `names` (IP addresses or DNS names).
    pub fn leaf(&self, stem: &str, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, stem);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let cert_path = self.dir.path().join(format!("{stem}.crt"));
        let key_path = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Leaf {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            cert_path,
            key_path,
        }
    }

    /// A rustls server configuration presenting `leaf`.
    pub fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(
                    leaf.cert_der.clone(),
                )],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf.key_der.clone().into()),
            )
            .expect("server config");
        Arc::new(config)
    }
}

/// Signs registry tokens (ES256 JWTs with the signing certificate in `x5c`), as a token
/// server does; the registry trusts the certificate through its `rootcertbundle`.
pub struct TokenIssuer {
    key: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
    pub bundle: PathBuf,
    pub service: String,
    pub issuer: String,
    _dir: tempfile::TempDir,
}

impl TokenIssuer {
    pub fn new() -> TokenIssuer {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kc-images test token signer");
        let cert = params.self_signed(&key).expect("cert");
        let bundle = dir.path().join("token-signer.crt");
        std::fs::write(&bundle, cert.pem()).expect("write bundle");
        let rng = ring::rand::SystemRandom::new();
        let signing = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .expect("ring key");
        TokenIssuer {
            key: signing,
            cert_der: cert.der().to_vec(),
            bundle,
            service: "kc-test-registry".into(),
            issuer: "kc-test-issuer".into(),
            _dir: dir,
        }
    }

    /// A token granting `access`: `(repository, actions)`.
    pub fn token(&self, subject: &str, access: &[(String, Vec<String>)]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let header =
            serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [B64.encode(&self.cert_der)]});
        let claims = serde_json::json!({
            "iss": self.issuer, "sub": subject, "aud": self.service,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{subject}-{now}-{}", access.len()),
            "access": access.iter().map(|(name, actions)| serde_json::json!({
                "type": "repository", "name": name, "actions": actions
            })).collect::<Vec<_>>(),
        });
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = self.key.sign(&rng, signing_input.as_bytes()).expect("sign");
        format!("{signing_input}.{}", B64URL.encode(sig.as_ref()))
    }
}

/// How a `docker-registry` authenticates.
pub enum Auth<'a> {
    None,
    /// `user:password` pairs, written to an htpasswd file (bcrypt, as distribution requires).
    Htpasswd(&'a [(&'a str, &'a str)]),
    /// Tokens from `realm`, signed by the issuer.
    Token {
        realm: String,
        issuer: &'a TokenIssuer,
    },
}

/// A real registry (Debian's `docker-registry`, distribution 2.8) on a loopback port, with its
/// own storage and config in a temp dir; stopped when dropped.
pub struct DistRegistry {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl DistRegistry {
    pub fn start(auth: Auth<'_>, tls: Option<&Leaf>) -> DistRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kc-test\n",
            d.join("data").display()
        );
        if let Some(leaf) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                leaf.cert_path.display(),
                leaf.key_path.display()
            ));
        }
        match auth {
            Auth::None => {}
            Auth::Htpasswd(users) => {
                let mut file = String::new();
                for (u, p) in users {
                    let h = bcrypt::hash_with_result(p, 4)
                        .expect("bcrypt")
                        .format_for_version(bcrypt::Version::TwoY);
                    file.push_str(&format!("{u}:{h}\n"));
                }
                std::fs::write(d.join("htpasswd"), file).expect("write htpasswd");
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: kc-test\n    path: {}\n",
                    d.join("htpasswd").display()
                ));
            }
            Auth::Token { realm, issuer } => config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                issuer.service,
                issuer.issuer,
                issuer.bundle.display()
            )),
        }
        std::fs::write(d.join("config.yml"), config).expect("write config");
        let log = d.join("registry.log");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(d.join("registry.err")).expect("log"))
            .spawn()
            .expect("start /usr/bin/docker-registry (Debian's docker-registry package)");
        wait_for_port(port, &d.join("registry.err"));
        DistRegistry {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for DistRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request as a test server received it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
    /// The query's (or a form body's) pairs, decoded.
    pub fn params(&self) -> Vec<(String, String)> {
        let q = match self.target.split_once('?') {
            Some((_, q)) => q.to_string(),
            None => String::from_utf8_lossy(&self.body).into_owned(),
        };
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect()
    }
    pub fn param(&self, key: &str) -> Vec<String> {
        self.params()
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect()
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An answer of a test server.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn new(status: u16) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Resp {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn json(mut self, v: serde_json::Value) -> Resp {
        self.body = v.to_string().into_bytes();
        self.header("Content-Type", "application/json")
    }
}

type Handler = dyn Fn(&Req) -> Resp + Send + Sync;

/// A small HTTP/1.1 server (over TLS when given a configuration) that records every request
/// and answers with `handler`; one request per connection.
pub struct TestServer {
    pub port: u16,
    requests: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    pub fn start(
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&Req) -> Resp + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, stopping) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let (reqs, handler, tls) = (reqs.clone(), handler.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    match tls {
                        Some(cfg) => {
                            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                                return;
                            };
                            serve(rustls::StreamOwned::new(conn, stream), &reqs, &*handler);
                        }
                        None => serve(stream, &reqs, &*handler),
                    }
                });
            }
        });
        TestServer {
            port,
            requests,
            stop,
        }
    }

    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve<S: Read + Write>(stream: S, reqs: &Mutex<Vec<Req>>, handler: &Handler) {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let req = Req {
        method,
        target,
        headers,
        body,
    };
    let resp = handler(&req);
    reqs.lock().expect("requests").push(req.clone());
    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status);
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if req.method != "HEAD" || !resp.headers.iter().any(|(k, _)| k == "Content-Length") {
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    out.push_str("\r\n");
    let mut stream = r.into_inner();
    let _ = stream.write_all(out.as_bytes());
    if req.method != "HEAD" {
        let _ = stream.write_all(&resp.body);
    }
    let _ = stream.flush();
}

/// An HTTP CONNECT proxy on loopback that records each target; a `*.test` host (which no
/// resolver knows) is tunnelled to 127.0.0.1, so a request that arrives went through it.
pub struct ConnectProxy {
    pub port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let log = log.clone();
                std::thread::spawn(move || tunnel(client, &log));
            }
        });
        ConnectProxy { port, seen }
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("seen").clone()
    }
}

fn tunnel(client: TcpStream, log: &Mutex<Vec<String>>) {
    let mut r = BufReader::new(client);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
    }
    let mut client = r.into_inner();
    let target = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["CONNECT", t, _] => t.to_string(),
        _ => {
            let _ = client.write_all(b"HTTP/1.1 405 X\r\nContent-Length: 0\r\n\r\n");
            return;
        }
    };
    log.lock().expect("log").push(target.clone());
    let Some((host, port)) = target.rsplit_once(':') else {
        return;
    };
    // Only loopback is a target here.
    if !(host.ends_with(".test") || host == "127.0.0.1" || host == "localhost") {
        let _ = client.write_all(b"HTTP/1.1 403 X\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let addr: SocketAddr = match format!("127.0.0.1:{port}").parse() {
        Ok(a) => a,
        Err(_) => return,
    };
    let Ok(upstream) = TcpStream::connect(addr) else {
        let _ = client.write_all(b"HTTP/1.1 502 X\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (mut c1, mut u1) = (client, upstream);
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut u1, &mut c1);
    let _ = c1.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
}

/// Sends one plain-HTTP request to `127.0.0.1:port` and returns the status: a client with no
/// logic of its own, to ask the registry what it accepts.
pub fn raw_status(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("read");
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
