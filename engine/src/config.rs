//! The optional `images.toml` at the monorepo root: how services are found and how their images
//! are named and built. Every field has a default, so a monorepo without the file works as is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// The name of the config file at the monorepo root.
pub const CONFIG_FILE: &str = "images.toml";

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub images: ImagesConfig,
    /// Per-service settings, keyed by service name (the package's directory name).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    /// Whose signatures make a registry entry trusted.
    #[serde(default)]
    pub trust: TrustConfig,
    /// The secret guard of build contexts.
    #[serde(default)]
    pub secrets: SecretsConfig,
}

/// `[trust]`: the public keys (cosign's `PUBLIC KEY` PEM files, relative to the root) whose
/// signatures make a registry cache entry trusted. Empty: entries are trusted by label only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrustConfig {
    #[serde(default)]
    pub keys: Vec<String>,
}

/// `[secrets]`: the BuildKit secrets builds may mount, and the secret guard's allow list.
///
/// ```toml
/// [secrets]
/// allow = ["services/*/fixtures/**"]     # files that look like credentials but may enter contexts
/// npmrc = { env = "NPMRC" }              # `RUN --mount=type=secret,id=npmrc` gets $NPMRC
/// gitconfig = { file = "~/.gitconfig" }  # ... or a file (`~/` is $HOME, else relative to the root)
/// ```
///
/// Every other key is a secret id (so `allow` cannot be one).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SecretsConfig {
    /// Files that look like credentials but may enter build contexts (test fixtures, example
    /// keys), as paths or globs relative to the root (`services/x/test/fake.key`,
    /// `services/*/fixtures/**`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Secret id -> where its value comes from.
    #[serde(flatten)]
    pub sources: BTreeMap<String, SecretSourceConfig>,
}

/// Where one secret's value comes from: a variable or a file (exactly one).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSourceConfig {
    pub env: Option<String>,
    pub file: Option<String>,
}

/// A secret a build may mount, checked: its id and where its value comes from. Only the id is
/// ever keyed, printed or stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub id: String,
    pub from: SecretFrom,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    /// An environment variable of the engine's process.
    Env(String),
    /// A file (absolute: `~/` expanded, else joined to the root).
    File(PathBuf),
}

/// Settings for every image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImagesConfig {
    /// Prepended to the service name to form the image name (e.g. `kodingcaravan-`).
    #[serde(default)]
    pub prefix: String,
    /// A workspace package is a service when this file exists in its directory.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// Directories (relative to the root) whose packages are services; empty means any package
    /// with a Dockerfile.
    #[serde(default)]
    pub service_dirs: Vec<String>,
    /// The Dockerfile template (relative to the root) rendered by `cargo xtask dockerfiles`.
    #[serde(default = "default_template")]
    pub template: String,
    /// The base image family a runtime stage must use (checked by `verify`).
    #[serde(default = "default_base")]
    pub base: String,
    /// Build arguments for every image (part of every key).
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// The build target stage, when not the last one.
    #[serde(default)]
    pub target: Option<String>,
    /// The platform to build for (e.g. `linux/amd64`); part of the key.
    #[serde(default)]
    pub platform: Option<String>,
    /// The size budget of every image in MB (10^6 bytes, as `docker images` counts), checked by
    /// `verify`; 300 when not set.
    #[serde(default)]
    pub size_budget_mb: Option<u64>,
    /// The OCI registry used as a shared cache, `HOST[:PORT]/NAMESPACE` (the flag
    /// `--cache-registry` and `IMAGES_CACHE_REGISTRY` take precedence).
    #[serde(default)]
    pub cache_registry: Option<String>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            prefix: String::new(),
            dockerfile: default_dockerfile(),
            service_dirs: Vec::new(),
            template: default_template(),
            base: default_base(),
            build_args: BTreeMap::new(),
            target: None,
            platform: None,
            size_budget_mb: None,
            cache_registry: None,
        }
    }
}

/// Settings for one service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceConfig {
    /// The image name, instead of `<prefix><service>`.
    pub image: Option<String>,
    /// The port, instead of `config.port` in the service's `package.json`.
    pub port: Option<u16>,
    /// Build arguments added to (and overriding) the global ones.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Option<String>,
    /// Not a service even though it has a Dockerfile.
    #[serde(default)]
    pub skip: bool,
    /// The size budget of this image in MB, instead of `[images] size-budget-mb`.
    pub size_budget_mb: Option<u64>,
}

fn default_dockerfile() -> String {
    "Dockerfile".to_string()
}
fn default_template() -> String {
    "services/Dockerfile.template".to_string()
}
fn default_base() -> String {
    "node:18-alpine".to_string()
}

impl Config {
    /// Loads `images.toml` from `root`, or the defaults when there is none.
    pub fn load(root: &Path) -> Result<(Config, Option<PathBuf>)> {
        let path = root.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Config::default(), None))
            }
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let config = Self::parse(&path, &text)?;
        Ok((config, Some(path)))
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            Error::Config {
                path: path.to_path_buf(),
                message: match line {
                    Some(l) => format!("line {l}: {}", e.message()),
                    None => e.message().to_string(),
                },
            }
        })
    }

    /// The trusted public keys of `[trust] keys`, read from their files (relative to `root`).
    pub fn trusted_keys(&self, root: &Path) -> Result<Vec<cache::cosign::TrustedKey>> {
        self.trust
            .keys
            .iter()
            .map(|name| {
                cache::cosign::TrustedKey::from_file(&root.join(name), name).map_err(|e| {
                    Error::Config {
                        path: root.join(CONFIG_FILE),
                        message: format!("[trust] keys: {e}"),
                    }
                })
            })
            .collect()
    }

    /// The files `[secrets] allow` lets into build contexts.
    pub fn secret_allow(&self, root: &Path) -> Result<crate::secrets::Allow> {
        crate::secrets::Allow::new(&self.secrets.allow).map_err(|message| Error::Config {
            path: root.join(CONFIG_FILE),
            message,
        })
    }

    /// The BuildKit secrets of `[secrets]`, checked: ids BuildKit accepts, exactly one of `env`
    /// and `file` each.
    pub fn secrets(&self, root: &Path) -> Result<BTreeMap<String, Secret>> {
        let bad = |message: String| Error::Config {
            path: root.join(CONFIG_FILE),
            message: format!("[secrets] {message}"),
        };
        let mut out = BTreeMap::new();
        for (id, src) in &self.secrets.sources {
            let id_ok = !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !id_ok {
                return Err(bad(format!(
                    "`{id}` is not a valid secret id
  hint: ids use letters, digits, `_`, `-` and `.`, as `RUN --mount=type=secret,id=...` names them"
                )));
            }
            let from = match (&src.env, &src.file) {
                (Some(var), None) => {
                    let ok = !var.is_empty()
                        && !var.as_bytes()[0].is_ascii_digit()
                        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !ok {
                        return Err(bad(format!(
                            "{id}: `{var}` is not a variable name
  hint: write `{id} = {{ env = \"NAME\" }}`"
                        )));
                    }
                    SecretFrom::Env(var.clone())
                }
                (None, Some(file)) if !file.is_empty() && !file.contains(',') => {
                    let path = match file.strip_prefix("~/") {
                        Some(rest) => match std::env::var_os("HOME") {
                            Some(home) => PathBuf::from(home).join(rest),
                            None => {
                                return Err(bad(format!(
                                    "{id}: `{file}` starts with `~/` but HOME is not set
  hint: give the file's absolute path"
                                )))
                            }
                        },
                        None => root.join(file),
                    };
                    SecretFrom::File(path)
                }
                (None, Some(file)) => {
                    return Err(bad(format!(
                        "{id}: `{file}` cannot be a secret's file
  hint: name a file whose path has no comma"
                    )))
                }
                _ => {
                    return Err(bad(format!(
                        "{id}: give exactly one of `env` and `file`
  hint: write `{id} = {{ env = \"NAME\" }}` or `{id} = {{ file = \"path\" }}`"
                    )))
                }
            };
            out.insert(
                id.clone(),
                Secret {
                    id: id.clone(),
                    from,
                },
            );
        }
        Ok(out)
    }

    pub fn service(&self, name: &str) -> ServiceConfig {
        self.services.get(name).cloned().unwrap_or_default()
    }

    /// The build arguments of a service: the global ones overridden by the service's.
    pub fn build_args(&self, service: &str) -> BTreeMap<String, String> {
        let mut args = self.images.build_args.clone();
        if let Some(s) = self.services.get(service) {
            args.extend(s.build_args.clone());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, p) = Config::load(dir.path()).expect("load");
        assert!(p.is_none());
        assert_eq!(c.images.dockerfile, "Dockerfile");
        assert_eq!(c.images.prefix, "");
    }

    #[test]
    fn parses_services_and_merges_build_args() {
        let c = Config::parse(
            Path::new("images.toml"),
            "[images]\nprefix = \"kc-\"\nbuild-args = { A = \"1\", B = \"2\" }\n\n[services.api]\nport = 3000\nbuild-args = { B = \"3\" }\n",
        )
        .expect("parse");
        assert_eq!(c.images.prefix, "kc-");
        assert_eq!(c.service("api").port, Some(3000));
        let args = c.build_args("api");
        assert_eq!(args.get("A").map(String::as_str), Some("1"));
        assert_eq!(args.get("B").map(String::as_str), Some("3"));
    }

    #[test]
    fn trusted_keys_are_read_relative_to_the_root_and_named_as_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = cache::cosign::SigningKey::generate().expect("key");
        std::fs::create_dir(dir.path().join("keys")).expect("mkdir");
        std::fs::write(dir.path().join("keys/ci.pub"), key.public_key().to_pem()).expect("write");
        let c = Config::parse(
            Path::new("images.toml"),
            "[trust]\nkeys = [\"keys/ci.pub\"]\n\n[secrets]\nallow = [\"services/x/fake.key\"]\n",
        )
        .expect("parse");
        assert_eq!(c.secrets.allow, ["services/x/fake.key"]);
        let keys = c.trusted_keys(dir.path()).expect("keys");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].name, "keys/ci.pub");
        assert_eq!(keys[0], key.public_key());
        let c = Config::parse(
            Path::new("images.toml"),
            "[trust]\nkeys = [\"keys/gone.pub\"]\n",
        )
        .expect("parse");
        let e = c.trusted_keys(dir.path()).expect_err("missing").to_string();
        assert!(
            e.contains("images.toml") && e.contains("key `keys/gone.pub`: cannot be read"),
            "{e}"
        );
        assert!(Config::default()
            .trusted_keys(dir.path())
            .expect("none")
            .is_empty());
    }

    #[test]
    fn the_secret_allow_list_is_checked_when_read() {
        let c = Config::parse(
            Path::new("images.toml"),
            "[secrets]\nallow = [\"services/*/fixtures/**\"]\n",
        )
        .expect("parse");
        let allow = c.secret_allow(Path::new("/repo")).expect("allow");
        assert!(allow.allows("services/api/fixtures/fake.key"));
        assert!(!allow.allows("services/api/fake.key"));
        let c = Config::parse(Path::new("images.toml"), "[secrets]\nallow = [\"a/[b\"]\n")
            .expect("parse");
        let e = c
            .secret_allow(Path::new("/repo"))
            .expect_err("bad")
            .to_string();
        assert!(
            e.contains("/repo/images.toml") && e.contains("`a/[b`"),
            "{e}"
        );
    }

    /// `[secrets]` holds the guard's `allow` and secret ids side by side; each id is a variable
    /// or a file, checked when read.
    #[test]
    fn secrets_are_ids_with_a_variable_or_a_file() {
        let c = Config::parse(
            Path::new("images.toml"),
            "[secrets]\nallow = [\"x/**\"]\nnpmrc = { env = \"NPMRC\" }\nnetrc = { file = \"keys/netrc\" }\n",
        )
        .expect("parse");
        assert_eq!(c.secrets.allow, ["x/**"]);
        let s = c.secrets(Path::new("/repo")).expect("secrets");
        assert_eq!(s["npmrc"].from, SecretFrom::Env("NPMRC".into()));
        assert_eq!(
            s["netrc"].from,
            SecretFrom::File(PathBuf::from("/repo/keys/netrc"))
        );
        for (toml, says) in [
            (
                "a = { env = \"X\", file = \"y\" }",
                "exactly one of `env` and `file`",
            ),
            ("a = {}", "exactly one of `env` and `file`"),
            ("a = { env = \"1X\" }", "`1X` is not a variable name"),
            ("a = { env = \"X-Y\" }", "`X-Y` is not a variable name"),
            (
                "\"a,b\" = { env = \"X\" }",
                "`a,b` is not a valid secret id",
            ),
            (
                "a = { file = \"x,src=/etc/shadow\" }",
                "cannot be a secret's file",
            ),
        ] {
            let c = Config::parse(Path::new("images.toml"), &format!("[secrets]\n{toml}\n"))
                .expect("parse");
            let e = c.secrets(Path::new("/repo")).expect_err(toml).to_string();
            assert!(
                e.contains("/repo/images.toml") && e.contains(says),
                "{toml}: {e}"
            );
        }
        // A value that is neither a table nor the allow list is a parse error (serde's flatten
        // loses the line: it names the value).
        let e = Config::parse(Path::new("images.toml"), "[secrets]\n\nnpmrc = \"NPMRC\"\n")
            .expect_err("not a table")
            .to_string();
        assert!(e.contains("images.toml") && e.contains("\"NPMRC\""), "{e}");
    }

    #[test]
    fn unknown_field_names_line() {
        let err = Config::parse(Path::new("images.toml"), "[images]\n\nprefx = \"x\"\n")
            .expect_err("unknown field");
        let msg = err.to_string();
        assert!(msg.contains("images.toml"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }
}
