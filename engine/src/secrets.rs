//! Whether a file looks like a credential: the one detector behind verify's `no-secrets` rule
//! (files of image layers) and the guard on build contexts (files of the checkout).
//!
//! A file is judged by its path, and by the head of its content when its path alone cannot say:
//! [`need`] tells how many bytes [`classify`] wants to see.
//!
//! - By name: `.env` and `.env.*` (not templates: `.env.example`, `.env.sample`,
//!   `.env.template`, `.env.dist`, which hold names and placeholders), `.netrc`/`_netrc`,
//!   `.git-credentials`, `.aws/credentials`, `*.p12`/`*.pfx`, SSH keys named `id_rsa`,
//!   `id_dsa`, `id_ecdsa`, `id_ed25519` (not their `.pub`).
//! - By content, for the files that hold tokens: `.npmrc` (and a global `etc/npmrc`) setting
//!   `_authToken`, `_auth` or `_password`, `.yarnrc` likewise,
//!   `.yarnrc.yml` setting `npmAuthToken` or `npmAuthIdent`, `.docker/config.json` with `auths`
//!   credentials. A value that is only a reference to a variable (`${NPM_TOKEN}`), which npm and
//!   yarn expand at run time, is no secret.
//! - By header, whatever the name: a PEM private key block (`-----BEGIN … PRIVATE KEY-----`,
//!   OpenSSH's, PGP's `PRIVATE KEY BLOCK`, cosign's encrypted ones) followed by base64 lines
//!   (so a README quoting the header line is not one), or a PuTTY key (`PuTTY-User-Key-File-`
//!   with `Private-Lines:`). Sources and documents (`.js`, `.ts`, `.md`, …) are not sniffed:
//!   a key literal in code is not a key file, and they are most of a `node_modules`.

use std::io::Read;
use std::path::Path;

/// How many bytes of a file's head are sniffed for a key header.
pub const HEAD: usize = 8 << 10;
/// Files larger than this are not sniffed when their name says nothing (keys are small).
pub const SNIFF_MAX: u64 = 1 << 20;
/// How much of a `.pem`/`.key` file is read (a bundle may hold certificates before the key).
pub const KEY_FILE_MAX: u64 = 4 << 20;
/// How much of a token file (`.npmrc`, `.yarnrc.yml`, docker config) is read.
const TOKEN_FILE_MAX: u64 = 1 << 20;

/// What kind of credential a file is, in words (`a private key`).
pub type Kind = &'static str;

/// Every kind [`classify`] says, so a verdict fits in a byte ([`code`]) where the stat cache
/// keeps it beside a file's digest.
const KINDS: &[Kind] = &[
    "an environment file",
    "a .netrc file",
    "git credentials",
    "AWS credentials",
    "a PKCS#12 key store",
    "an SSH private key",
    "a .yarnrc.yml holding a registry token",
    "a .yarnrc holding a registry token",
    "a docker config holding registry credentials",
    "an .npmrc holding a registry token",
    "a PuTTY private key",
    "a PGP private key",
    "a private key",
    "a key file too large to read",
];

/// A verdict as one byte: 0 is "not judged", 1 "no credential", then each kind.
pub fn code(kind: Option<Kind>) -> u8 {
    match kind {
        None => 1,
        Some(k) => KINDS
            .iter()
            .position(|x| *x == k)
            .map_or(u8::MAX, |i| i as u8 + 2),
    }
}

/// The verdict a [`code`] stands for; `None` when the code says "not judged".
pub fn decode(code: u8) -> Option<Option<Kind>> {
    match code {
        0 => None,
        1 => Some(None),
        c => Some(Some(
            KINDS
                .get(usize::from(c) - 2)
                .copied()
                .unwrap_or("a credential"),
        )),
    }
}

/// Extensions of sources and documents, never sniffed for key headers.
const NOT_SNIFFED: &[&str] = &[
    "js", "mjs", "cjs", "jsx", "ts", "mts", "cts", "tsx", "map", "md", "markdown", "mdx", "html",
    "htm", "css", "scss", "less", "vue", "svelte",
];

/// Template suffixes of environment files.
const ENV_TEMPLATES: &[&str] = &[".example", ".sample", ".template", ".dist"];

/// The file name, lowercased, and the name of its directory.
fn names(path: &str) -> (String, &str) {
    let mut parts = path.rsplit(['/', '\\']);
    let name = parts.next().unwrap_or(path).to_ascii_lowercase();
    (name, parts.next().unwrap_or(""))
}

fn extension(name: &str) -> Option<&str> {
    name.rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|_| !name.starts_with('.') || name[1..].contains('.'))
}

/// How many bytes of the file's head [`classify`] needs (`None`: its path decides alone).
pub fn need(path: &str, size: u64) -> Option<u64> {
    let (name, dir) = names(path);
    if by_name(&name, dir).is_some() {
        return None;
    }
    if is_token_file(&name, dir) {
        return Some(TOKEN_FILE_MAX);
    }
    if matches!(extension(&name), Some("pem" | "key")) {
        return Some(KEY_FILE_MAX);
    }
    let sniffed = !extension(&name).is_some_and(|e| NOT_SNIFFED.contains(&e));
    (sniffed && size > 0 && size <= SNIFF_MAX).then_some(HEAD as u64)
}

/// Whether the file at `path` (`/`-separated, relative or absolute), of `size` bytes, looks like
/// a credential, given the head [`need`] asked for (`None` when it was not read).
pub fn classify(path: &str, size: u64, head: Option<&[u8]>) -> Option<Kind> {
    let (name, dir) = names(path);
    if let Some(kind) = by_name(&name, dir) {
        return Some(kind);
    }
    if is_token_file(&name, dir) {
        let text = String::from_utf8_lossy(head?);
        return token_file(&name, &text);
    }
    let key_file = matches!(extension(&name), Some("pem" | "key"));
    // A `.pem`/`.key` file with a private key header is a key whatever follows; one too large
    // to read whole is reported rather than passed.
    let found = head.and_then(|h| pem_private_key(h, !key_file));
    if found.is_none() && key_file && size > KEY_FILE_MAX {
        return Some("a key file too large to read");
    }
    found
}

/// Reads what [`classify`] needs of a file on disk (at most [`need`] bytes) and classifies
/// it; `rel` is its path as reported (relative to the root).
pub fn check_file(path: &Path, rel: &str) -> std::io::Result<Option<Kind>> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Ok(None);
    }
    let Some(limit) = need(rel, meta.len()) else {
        return Ok(classify(rel, meta.len(), None));
    };
    let mut head = Vec::with_capacity(limit.min(meta.len()) as usize);
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut head)?;
    Ok(classify(rel, meta.len(), Some(&head)))
}

fn by_name(name: &str, dir: &str) -> Option<Kind> {
    if name == ".env" || name.starts_with(".env.") {
        let template = ENV_TEMPLATES.iter().any(|s| name.ends_with(s));
        return (!template).then_some("an environment file");
    }
    if name == ".netrc" || name == "_netrc" {
        return Some("a .netrc file");
    }
    if name == ".git-credentials" {
        return Some("git credentials");
    }
    if name == "credentials" && dir == ".aws" {
        return Some("AWS credentials");
    }
    if matches!(extension(name), Some("p12" | "pfx")) {
        return Some("a PKCS#12 key store");
    }
    if ["id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"]
        .iter()
        .any(|k| name.starts_with(k))
        && !name.ends_with(".pub")
    {
        return Some("an SSH private key");
    }
    None
}

fn is_token_file(name: &str, dir: &str) -> bool {
    name == ".npmrc"
        || (name == "npmrc" && dir == "etc")
        || name == ".yarnrc"
        || name == ".yarnrc.yml"
        || (name == "config.json" && dir == ".docker")
}

fn token_file(name: &str, text: &str) -> Option<Kind> {
    match name {
        ".yarnrc.yml" => {
            yarnrc_yml_has_token(text).then_some("a .yarnrc.yml holding a registry token")
        }
        ".yarnrc" => npmrc_has_token(text).then_some("a .yarnrc holding a registry token"),
        "config.json" => docker_config_has_credentials(text)
            .then_some("a docker config holding registry credentials"),
        _ => npmrc_has_token(text).then_some("an .npmrc holding a registry token"),
    }
}

/// A value that is only a reference to a variable (`${NPM_TOKEN}`, `"${NPM_TOKEN-}"`), which npm
/// and yarn expand when they run: the file holds no secret.
fn is_reference(value: &str) -> bool {
    let v = value.trim().trim_matches(|c| c == '"' || c == '\'');
    v.starts_with("${") && v.ends_with('}') && !v[2..v.len() - 1].contains(['{', '}'])
}

/// An `.npmrc` (or yarn 1 `.yarnrc`) line sets `_authToken`, `_auth` or `_password` (globally or
/// for a registry) to a value that is not a variable reference.
pub fn npmrc_has_token(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        if l.starts_with('#') || l.starts_with(';') {
            return false;
        }
        // npm writes `key=value`; yarn 1 writes `key value` (keys may be quoted).
        let (k, v) = match l.split_once('=') {
            Some(kv) => kv,
            None => match l.split_once(char::is_whitespace) {
                Some(kv) => kv,
                None => return false,
            },
        };
        let key = k.trim().trim_matches('"');
        let key = key.rsplit(':').next().unwrap_or("");
        let v = v.trim().trim_matches('"');
        matches!(key, "_authToken" | "_auth" | "_password") && !v.is_empty() && !is_reference(v)
    })
}

/// A `.yarnrc.yml` sets `npmAuthToken` or `npmAuthIdent` (at the top or under `npmScopes` /
/// `npmRegistries`) to a literal value.
pub fn yarnrc_yml_has_token(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        let Some((k, v)) = l.split_once(':') else {
            return false;
        };
        let k = k.trim().trim_matches(|c| c == '"' || c == '\'');
        let v = v.split(" #").next().unwrap_or("").trim();
        let v = v.trim_matches(|c| c == '"' || c == '\'');
        matches!(k, "npmAuthToken" | "npmAuthIdent") && !v.is_empty() && !is_reference(v)
    })
}

/// A docker `config.json` with credentials in `auths` (`auth`, `identitytoken`, `password`).
fn docker_config_has_credentials(text: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return false;
    };
    v["auths"].as_object().is_some_and(|auths| {
        auths.values().any(|a| {
            ["auth", "identitytoken", "password", "registrytoken"]
                .iter()
                .any(|k| a[k].as_str().is_some_and(|s| !s.is_empty()))
        })
    })
}

/// A private key in `head`: a PEM private key block (its `BEGIN` line, then base64 lines), or a
/// PuTTY key file.
pub fn private_key(head: &[u8]) -> Option<Kind> {
    pem_private_key(head, true)
}

/// [`private_key`]; `with_body`: a `BEGIN` line counts only when base64 lines follow it.
fn pem_private_key(head: &[u8], with_body: bool) -> Option<Kind> {
    let pem = memchr::memmem::find(head, b"-----BEGIN ").is_some();
    let putty = memchr::memmem::find(head, b"PuTTY-User-Key-File-").is_some();
    if !pem && !putty {
        return None;
    }
    let text = String::from_utf8_lossy(head);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    if putty
        && lines.iter().any(|l| l.starts_with("PuTTY-User-Key-File-"))
        && lines.iter().any(|l| l.starts_with("Private-Lines:"))
    {
        return Some("a PuTTY private key");
    }
    for (i, line) in lines.iter().enumerate() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let private = label.ends_with("PRIVATE KEY") || label == "PGP PRIVATE KEY BLOCK";
        if !private
            || !label
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ')
        {
            continue;
        }
        let body = !with_body
            || lines.iter().skip(i + 1).take(6).any(|l| {
                l.len() >= 16
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            });
        if body {
            return Some(if label == "OPENSSH PRIVATE KEY" {
                "an SSH private key"
            } else if label.starts_with("PGP") {
                "a PGP private key"
            } else {
                "a private key"
            });
        }
    }
    None
}

/// The refusal of a file of a build context that looks like a credential (`rel`: relative to
/// the root), unless `allow` lets it in: the guard of contexts, one call per file.
pub fn guard(allow: &Allow, service: &str, rel: &str, kind: Option<Kind>) -> crate::Result<()> {
    match kind {
        Some(kind) if !allow.allows(rel) => Err(crate::Error::SecretInContext {
            path: rel.to_string(),
            kind,
            service: service.to_string(),
        }),
        _ => Ok(()),
    }
}

/// The files `[secrets] allow` in `images.toml` lets into build contexts: paths or globs
/// relative to the root (`*` stays within a directory, `**` crosses them).
#[derive(Debug, Clone)]
pub struct Allow {
    set: globset::GlobSet,
}

impl Allow {
    pub fn new(patterns: &[String]) -> Result<Allow, String> {
        let mut b = globset::GlobSetBuilder::new();
        for p in patterns {
            let p = p.trim_start_matches("./");
            let glob = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("[secrets] allow: `{p}` is not a valid pattern: {e}"))?;
            b.add(glob);
        }
        let set = b.build().map_err(|e| format!("[secrets] allow: {e}"))?;
        Ok(Allow { set })
    }

    /// Whether the file `rel` (relative to the root, `/`-separated) is allowed.
    pub fn allows(&self, rel: &str) -> bool {
        self.set.is_match(rel)
    }
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
