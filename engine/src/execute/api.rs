//! The Engine API over the daemon's unix socket: which socket the client would talk to, and one
//! request per connection (GET, POST with a JSON body, DELETE), with the status, the body
//! (`Content-Length` or chunked) and the API's own error message. No HTTP library: the daemon
//! speaks plain HTTP/1.1 on a local socket, and this is all the engine asks of it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a request that the daemon answers at once may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon's unix socket, when the client would talk to it (no `DOCKER_HOST` other than a
/// unix socket, no context other than the default one): the engine then asks the Engine API
/// directly instead of starting a `docker` process per question.
pub(crate) fn engine_socket() -> Option<PathBuf> {
    if std::env::var_os("DOCKER_CONTEXT").is_some_and(|c| c != "default") {
        return None;
    }
    let config_dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
    if let Some(dir) = config_dir {
        if let Ok(text) = std::fs::read_to_string(dir.join("config.json")) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if v["currentContext"].as_str().is_some_and(|c| c != "default") {
                return None;
            }
        }
    }
    let path = match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => PathBuf::from(h.strip_prefix("unix://")?),
        _ => PathBuf::from("/var/run/docker.sock"),
    };
    path.exists().then_some(path)
}

/// An answer of the Engine API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// What the API says went wrong: its `{"message": ...}`, else the body's text, else the status.
    pub fn message(&self) -> String {
        if let Some(m) = self.json()["message"].as_str() {
            return m.trim().to_string();
        }
        let text = String::from_utf8_lossy(&self.body).trim().to_string();
        if text.is_empty() {
            format!("status {}", self.status)
        } else {
            text
        }
    }
}

/// `METHOD path` on the Engine API at `socket`, with `body` as JSON when given; the status and
/// body of the answer. An error when the daemon cannot be reached or its answer is not HTTP;
/// any status is an answer (see [`Response::is_success`]). `path` includes the query string
/// (see [`query`]); it must hold no whitespace or control character.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> std::io::Result<Response> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!("not a request path: {path:?}")));
    }
    if !method.bytes().all(|b| b.is_ascii_uppercase()) || method.is_empty() {
        return Err(invalid(format!("not a method: {method:?}")));
    }
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let payload = match body {
        Some(b) => serde_json::to_vec(b)?,
        None => Vec::new(),
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
    if body.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if body.is_some() || method != "GET" {
        req.push_str(&format!("Content-Length: {}\r\n", payload.len()));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(&payload);
    s.write_all(&out)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the engine's answer to {method} {path} is not HTTP: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(80)])
            ),
        )
    })
}

/// `GET path`: the status and the body; `None` when the daemon cannot be reached.
pub(crate) fn get(socket: &Path, path: &str) -> Option<(u16, Vec<u8>)> {
    let r = request(socket, "GET", path, None, TIMEOUT).ok()?;
    Some((r.status, r.body))
}

/// A whole HTTP/1.x answer: its status and body (chunked, or `Content-Length` long, or up to the
/// end). `None` when it is cut short or not HTTP.
fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    if !status_line.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        } else if name == "content-length" {
            length = Some(value.parse::<usize>().ok()?);
        }
    }
    let rest = &raw[split + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Response { status, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&b[..line_end]);
        // A chunk size may carry extensions after `;`.
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// A query string (`?a=1&b=2`) with its values percent-encoded (unreserved characters kept).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        q.push(if i == 0 { '?' } else { '&' });
        q.push_str(&encode(k));
        q.push('=');
        q.push_str(&encode(v));
    }
    q
}

/// Percent-encodes all but RFC 3986's unreserved characters: for a path segment or a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_http_bodies() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").as_deref(),
            Some(&b"hello world"[..])
        );
        assert_eq!(
            dechunk(b"5;ext=1\r\nhello\r\n0\r\n\r\n").as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(dechunk(b"5\r\nhel"), None);
    }

    #[test]
    fn parses_answers_of_each_framing() {
        let r = parse_response(
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"Id\":\"a\"}\n",
        )
        .expect("answer");
        assert_eq!(r.status, 201);
        assert_eq!(r.json()["Id"], "a");
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n1b\r\n{\"message\":\"No such image\"}\r\n0\r\n\r\n",
        )
        .expect("answer");
        assert_eq!((r.status, r.message()), (404, "No such image".to_string()));
        assert!(!r.is_success());
        let r = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").expect("answer");
        assert!(r.is_success() && r.body.is_empty());
        assert_eq!(r.message(), "status 204");
        // Cut short, or not HTTP.
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
            None
        );
        assert_eq!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            query(&[("all", "1"), ("filters", "{\"label\":[\"a=b c\"]}")]),
            "?all=1&filters=%7B%22label%22%3A%5B%22a%3Db%20c%22%5D%7D"
        );
        assert_eq!(encode("sha256:ab/../x"), "sha256%3Aab%2F..%2Fx");
    }

    #[test]
    fn a_path_with_whitespace_is_refused_before_anything_is_sent() {
        let err = request(
            Path::new("/nonexistent.sock"),
            "GET",
            "/images/x HTTP/1.1\r\nX: y",
            None,
            TIMEOUT,
        )
        .expect_err("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
