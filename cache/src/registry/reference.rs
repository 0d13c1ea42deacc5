//! Names as the distribution spec defines them (registry hosts, repository paths, tags, digests)
//! and image references with Docker Hub's conventions: `docker.io` (the API at
//! `registry-1.docker.io`), `library/` for one-component names, credentials stored under
//! `https://index.docker.io/v1/`.

/// Docker Hub as users name it.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's Registry API host.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key the docker CLI stores Docker Hub credentials under.
pub const DOCKER_HUB_CREDENTIALS: &str = "https://index.docker.io/v1/";

/// The longest repository name the distribution spec allows.
const MAX_REPOSITORY: usize = 255;

/// `host` is Docker Hub under one of its names.
pub fn is_docker_hub(host: &str) -> bool {
    matches!(
        host.to_ascii_lowercase().as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// Why `host` is not a registry host (`name[:port]`, with a DNS name, an IPv4 address or a
/// bracketed IPv6 address), or `None` when it is one.
pub fn host_error(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("the registry host is empty".into());
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Some(format!("`{}` has no closing `]`", escape(host)));
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Some(format!("`{}` is not an IPv6 address", escape(v6)));
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Some(format!("`{}` after the address", escape(p))),
            },
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Some(format!(
                "`{}` is not a host name (letters, digits, `-` and `.`)",
                escape(name)
            ));
        }
    }
    if let Some(port) = port {
        let valid = (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Some(format!("`{}` is not a port", escape(port)));
        }
    }
    None
}

/// A path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__` or one or more `-`, between alphanumerics.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Why `repo` is not a repository name (components joined by `/`), or `None`.
pub fn repository_error(repo: &str) -> Option<String> {
    if repo.len() > MAX_REPOSITORY {
        return Some(format!(
            "the repository name is longer than {MAX_REPOSITORY} characters"
        ));
    }
    for c in repo.split('/') {
        if !valid_component(c) {
            return Some(if c.is_empty() {
                "a path component is empty (`//`, or a leading or trailing `/`)".to_string()
            } else {
                format!(
                    "`{}` is not a valid path component (lowercase letters and digits, \
                     separated by `.`, `_`, `__` or `-`)",
                    escape(c)
                )
            });
        }
    }
    None
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A digest: `algorithm:encoded`; `sha256` and `sha512` need their length of lowercase hex.
pub fn valid_digest(d: &str) -> bool {
    let Some((alg, enc)) = d.split_once(':') else {
        return false;
    };
    let hex =
        |n: usize| enc.len() == n && enc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match alg {
        "sha256" => hex(64),
        "sha512" => hex(128),
        _ => {
            !alg.is_empty()
                && alg
                    .split(['+', '.', '_', '-'])
                    .all(|p| !p.is_empty() && p.bytes().all(alnum))
                && enc.len() >= 32
                && enc
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
        }
    }
}

/// A tag or a digest, as the `<reference>` of `/v2/<name>/manifests/<reference>`.
pub fn valid_reference(r: &str) -> bool {
    valid_tag(r) || valid_digest(r)
}

/// `s` with control characters (newlines...) escaped, for error messages.
pub fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// An image reference, `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`, normalised as docker does
/// (`node:18` is `docker.io/library/node:18`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry as named: `docker.io` for Docker Hub.
    pub domain: String,
    /// The repository within it, `library/` included for Hub's official images.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses an image reference; the reason when it is not one.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        if s.is_empty() {
            return Err("the image reference is empty".into());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !valid_digest(d) {
                    return Err(format!("`{}` is not a digest", escape(d)));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag follows the last `:` after the last `/` (a `:` before it is a port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(format!("`{}` is not a tag", escape(t)));
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        let (domain, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if let Some(e) = host_error(&domain) {
            return Err(e);
        }
        let domain = if is_docker_hub(&domain) {
            DOCKER_HUB.to_string()
        } else {
            domain
        };
        let repository = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if let Some(e) = repository_error(&repository) {
            return Err(e);
        }
        Ok(ImageRef {
            domain,
            repository,
            tag,
            digest,
        })
    }

    /// The manifest reference to fetch: the digest when pinned, else the tag (`latest` when none).
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_follow_the_spec_grammar() {
        for ok in [
            "a",
            "abc",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "a1.b2-c3__d4",
            "0",
        ] {
            assert!(valid_component(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", "a..b", "a___b", "_a", "a_", "-a", "a-", "A", "aB", "a b", "a\nb",
            "a/b", "a.-b", "a%2e", "é",
        ] {
            assert!(!valid_component(bad), "{bad:?}");
        }
    }

    #[test]
    fn repositories_hosts_tags_and_digests() {
        assert_eq!(repository_error("acme/cache/svc"), None);
        assert!(repository_error("acme//svc").is_some());
        assert!(repository_error("../x").is_some());
        assert!(repository_error("acme/").is_some());
        assert!(repository_error(&"a".repeat(256)).is_some());
        assert_eq!(host_error("127.0.0.1:5000"), None);
        assert_eq!(host_error("registry-1.docker.io"), None);
        assert_eq!(host_error("[::1]:5000"), None);
        assert_eq!(host_error("localhost"), None);
        for bad in [
            "",
            "ho st",
            "host:",
            "host:99999",
            "host:5000x",
            "-host",
            "host-",
            "a..b",
            "host\n",
            "[::1",
            "[zz]:5",
            "user@host",
            "host/x",
            "host:0",
        ] {
            assert!(host_error(bad).is_some(), "{bad:?}");
        }
        assert!(valid_tag("key-0123abc") && valid_tag("v1.0.0") && valid_tag("_x"));
        assert!(!valid_tag("") && !valid_tag(".x") && !valid_tag("a/b") && !valid_tag("a\n"));
        assert!(!valid_tag(&"a".repeat(129)));
        let d = format!("sha256:{}", "ab".repeat(32));
        assert!(valid_digest(&d) && valid_reference(&d));
        assert!(!valid_digest(&format!("sha256:{}", "AB".repeat(32))));
        assert!(!valid_digest("sha256:abc"));
        assert!(!valid_digest("sha256:../../x"));
    }

    /// Docker Hub's conventions, with no traffic: the names docker itself prints.
    #[test]
    fn image_references_are_normalised_as_docker_does() {
        let r = ImageRef::parse("node:18-alpine").expect("parse");
        assert_eq!(r.domain, "docker.io");
        assert_eq!(r.repository, "library/node");
        assert_eq!(r.reference(), "18-alpine");
        assert_eq!(r.to_string(), "docker.io/library/node:18-alpine");
        let r = ImageRef::parse("acme/api").expect("parse");
        assert_eq!(
            (r.domain.as_str(), r.repository.as_str()),
            ("docker.io", "acme/api")
        );
        assert_eq!(r.reference(), "latest");
        let r = ImageRef::parse(
            "index.docker.io/library/alpine@sha256:"
                .to_string()
                .as_str(),
        );
        assert!(r.is_err());
        let d = format!("sha256:{}", "0".repeat(64));
        let r = ImageRef::parse(&format!("index.docker.io/alpine@{d}")).expect("parse");
        assert_eq!(r.domain, "docker.io");
        assert_eq!(r.repository, "library/alpine");
        assert_eq!(r.reference(), d);
        let r = ImageRef::parse("localhost:5000/team/app:v2").expect("parse");
        assert_eq!(
            (r.domain.as_str(), r.repository.as_str(), r.reference()),
            ("localhost:5000", "team/app", "v2")
        );
        let r = ImageRef::parse("localhost/app").expect("parse");
        assert_eq!(r.domain, "localhost");
        let r = ImageRef::parse("ghcr.io/acme/app").expect("parse");
        assert_eq!(
            (r.domain.as_str(), r.repository.as_str()),
            ("ghcr.io", "acme/app")
        );
        for bad in [
            "",
            "Node:18",
            "node:",
            "node:a/b",
            "a//b",
            "x/../y",
            "node\n:18",
            "node@sha256:1",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
