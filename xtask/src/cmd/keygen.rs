//! `cargo xtask keygen`: a signing key pair in cosign's format (as `cosign generate-key-pair`
//! writes it): `<prefix>.key`, encrypted with `COSIGN_PASSWORD`, and `<prefix>.pub`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cache::cosign::keys::{KEY_FILE_VAR, KEY_VAR, PASSWORD_VAR};
use cache::cosign::SigningKey;

use crate::{output, Global};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The private key is encrypted with the password in COSIGN_PASSWORD (it may \
be empty); cosign reads it as is (`cosign sign --key PREFIX.key`). List PREFIX.pub in images.toml \
(`[trust] keys = [\"PREFIX.pub\"]`) and give the private key to CI through IMAGES_SIGNING_KEY (its \
contents) or IMAGES_SIGNING_KEY_FILE (its path), with COSIGN_PASSWORD."
)]
pub struct Args {
    /// Where to write the pair: PREFIX.key and PREFIX.pub (never overwritten)
    #[arg(long, value_name = "PREFIX", default_value = "cosign")]
    pub output_key_prefix: PathBuf,
}

#[derive(serde::Serialize)]
struct Written {
    private_key: PathBuf,
    public_key: PathBuf,
    fingerprint: String,
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let Some(password) = std::env::var_os(PASSWORD_VAR) else {
            bail!(
                "{PASSWORD_VAR} is not set: the private key is written encrypted with it\n  hint: \
                 set {PASSWORD_VAR} to the password to use (an empty value is an empty password)"
            );
        };
        let password = password
            .into_string()
            .map_err(|_| anyhow::anyhow!("{PASSWORD_VAR} is not valid UTF-8"))?;
        let private = with_suffix(&self.output_key_prefix, "key");
        let public = with_suffix(&self.output_key_prefix, "pub");
        for p in [&private, &public] {
            if p.symlink_metadata().is_ok() {
                bail!(
                    "`{}` exists: refused to overwrite a key\n  hint: move it away, or choose \
                     another --output-key-prefix",
                    p.display()
                );
            }
        }
        let key = SigningKey::generate()?;
        let pem = key.to_encrypted_pem(password.as_bytes())?;
        let public_key = key.public_key();
        create(&private, pem.as_bytes(), 0o600)?;
        if let Err(e) = create(&public, public_key.to_pem().as_bytes(), 0o644) {
            let _ = std::fs::remove_file(&private);
            return Err(e);
        }
        let written = Written {
            private_key: private,
            public_key: public,
            fingerprint: public_key.fingerprint,
        };
        if global.json {
            output::json(&written)?;
        } else {
            println!(
                "private key {} (encrypted with {PASSWORD_VAR})",
                written.private_key.display()
            );
            println!(
                "public key  {} ({})",
                written.public_key.display(),
                written.fingerprint
            );
            output::note(&format!(
                "trust it in images.toml (`[trust] keys = [\"{}\"]`, relative to the root); sign \
                 with {KEY_VAR} or {KEY_FILE_VAR} and {PASSWORD_VAR}",
                written.public_key.display()
            ));
        }
        Ok(0)
    }
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Writes a new file (never an existing one) with `mode`, synced.
fn create(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("failed to create `{}`", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("failed to write `{}`", path.display()))
}
