//! The keys of cosign's key-pair signatures: ECDSA P-256 private keys as `cosign generate-key-pair`
//! writes them (`ENCRYPTED SIGSTORE PRIVATE KEY` / `ENCRYPTED COSIGN PRIVATE KEY`: a JSON box of
//! scrypt and NaCl secretbox around a PKCS#8 key, the password from `COSIGN_PASSWORD`) or as plain
//! PKCS#8 / SEC1 PEM; public keys as SubjectPublicKeyInfo PEM (`PUBLIC KEY`).

use std::path::Path;

use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Error;

/// The variable holding the signing key itself (PEM), as CI systems pass secrets.
pub const KEY_VAR: &str = "IMAGES_SIGNING_KEY";
/// The variable naming a file holding the signing key.
pub const KEY_FILE_VAR: &str = "IMAGES_SIGNING_KEY_FILE";
/// The password of an encrypted key: cosign's own variable.
pub const PASSWORD_VAR: &str = "COSIGN_PASSWORD";

/// The PEM label of the private keys cosign writes today.
pub const SIGSTORE_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The PEM label of the private keys older cosign releases wrote.
pub const COSIGN_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// The scrypt parameters an encrypted key may name (go-securesystemslib's three sets: legacy,
/// standard, OWASP). Anything else is refused, so a tampered file cannot ask for a huge
/// derivation. New keys use the standard set, as cosign does.
const SCRYPT_PARAMS: [(u64, u32, u32); 3] = [(1 << 15, 8, 1), (1 << 16, 8, 1), (1 << 17, 8, 1)];
const NEW_KEY_LOG_N: u8 = 16;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A private key that signs, and where it came from (a file or a variable: never its bytes).
pub struct SigningKey {
    key: p256::ecdsa::SigningKey,
    /// Where the key came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("source", &self.source)
            .field("public", &self.public_key().fingerprint)
            .finish_non_exhaustive()
    }
}

/// A public key whose signatures are trusted, with the name it was listed under.
#[derive(Clone)]
pub struct TrustedKey {
    key: p256::ecdsa::VerifyingKey,
    /// Where it was listed (e.g. `keys/ci.pub`).
    pub name: String,
    /// `sha256:<hex>` of the key's SubjectPublicKeyInfo DER: the same for the same key whatever
    /// the file is called.
    pub fingerprint: String,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey")
            .field("name", &self.name)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl PartialEq for TrustedKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl SigningKey {
    /// The signing key the environment gives: `IMAGES_SIGNING_KEY` (the PEM itself) or
    /// `IMAGES_SIGNING_KEY_FILE` (a path), decrypted with `COSIGN_PASSWORD` when encrypted.
    /// `None` when neither is set.
    pub fn from_env() -> Result<Option<SigningKey>, Error> {
        SigningKey::from_vars(|n| std::env::var(n).ok())
    }

    /// [`SigningKey::from_env`] with the variables `get` gives.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<SigningKey>, Error> {
        let var = |n: &str| get(n).filter(|v| !v.trim().is_empty());
        let password = get(PASSWORD_VAR).map(Zeroizing::new);
        let password = password.as_ref().map(|p| p.as_bytes());
        match (var(KEY_VAR), var(KEY_FILE_VAR)) {
            (Some(_), Some(_)) => Err(Error::Key {
                origin: format!("{KEY_VAR} and {KEY_FILE_VAR}"),
                message: "both are set".into(),
                hint: format!(
                    "set one: {KEY_VAR} holds the key itself, {KEY_FILE_VAR} a path to it"
                ),
            }),
            (Some(pem), None) => {
                let pem = Zeroizing::new(pem);
                if !pem.contains("-----BEGIN ") {
                    return Err(Error::Key {
                        origin: KEY_VAR.into(),
                        message: "it holds no PEM block".into(),
                        hint: format!(
                            "{KEY_VAR} holds the key itself (`-----BEGIN …`); to name a file, use {KEY_FILE_VAR}"
                        ),
                    });
                }
                SigningKey::from_pem(pem.as_bytes(), password, KEY_VAR).map(Some)
            }
            (None, Some(path)) => SigningKey::from_file(Path::new(&path), password).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Reads a key file; see [`SigningKey::from_pem`].
    pub fn from_file(path: &Path, password: Option<&[u8]>) -> Result<SigningKey, Error> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| Error::Key {
            origin: path.display().to_string(),
            message: format!("cannot be read: {e}"),
            hint: format!("{KEY_FILE_VAR} must name a readable private key file"),
        })?);
        SigningKey::from_pem(&bytes, password, &path.display().to_string())
    }

    /// Parses a private key: cosign's encrypted format (`password` decrypts it; an empty
    /// password is a password), or a plain PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`)
    /// PEM. Only ECDSA P-256 keys sign.
    pub fn from_pem(
        text: &[u8],
        password: Option<&[u8]>,
        source: &str,
    ) -> Result<SigningKey, Error> {
        let err = |message: String, hint: &str| Error::Key {
            origin: source.to_string(),
            message,
            hint: hint.to_string(),
        };
        let (label, der) = pem_decode(text).map_err(|m| {
            err(
                m,
                "give a private key as `cosign generate-key-pair` or `cargo xtask keygen` writes it, or a PKCS#8 PEM",
            )
        })?;
        let der = Zeroizing::new(der);
        let secret = match label.as_str() {
            SIGSTORE_LABEL | COSIGN_LABEL => {
                let Some(password) = password else {
                    return Err(err(
                        "the key is encrypted and no password is set".into(),
                        &format!("set {PASSWORD_VAR} to its password (it may be empty)"),
                    ));
                };
                let pkcs8 = decrypt(&der, password).map_err(|m| {
                    err(m, &format!("check {PASSWORD_VAR}, and that the file is whole"))
                })?;
                p256_from_pkcs8(&pkcs8).map_err(|m| err(m, ONLY_P256))?
            }
            "PRIVATE KEY" => p256_from_pkcs8(&der).map_err(|m| err(m, ONLY_P256))?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
                .map_err(|e| err(format!("not an ECDSA P-256 SEC1 key: {e}"), ONLY_P256))?,
            "ENCRYPTED PRIVATE KEY" => {
                return Err(err(
                    "PKCS#8 encryption (`ENCRYPTED PRIVATE KEY`) is not supported".into(),
                    "decrypt it (`openssl pkcs8 -in KEY -out PLAIN`), or use a cosign key with COSIGN_PASSWORD",
                ))
            }
            "PUBLIC KEY" => {
                return Err(err(
                    "this is a public key; signing needs the private key".into(),
                    "public keys go in images.toml (`[trust] keys`); the private key signs",
                ))
            }
            other => {
                return Err(err(
                    format!("a `{other}` PEM block is not a private key"),
                    ONLY_P256,
                ))
            }
        };
        Ok(SigningKey {
            key: p256::ecdsa::SigningKey::from(&secret),
            source: source.to_string(),
        })
    }

    /// A new random key.
    pub fn generate() -> Result<SigningKey, Error> {
        let rng = ring::rand::SystemRandom::new();
        // A random 32-byte string is a valid scalar but with probability ~2^-32; draw again then.
        for _ in 0..16 {
            let mut bytes = Zeroizing::new([0u8; 32]);
            ring::rand::SecureRandom::fill(&rng, bytes.as_mut())
                .map_err(|_| Error::Random("a private key".into()))?;
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(bytes.as_ref()) {
                return Ok(SigningKey {
                    key,
                    source: "a new key".into(),
                });
            }
        }
        Err(Error::Random("a private key".into()))
    }

    /// The public half.
    pub fn public_key(&self) -> TrustedKey {
        TrustedKey::from_verifying(*self.key.verifying_key(), self.source.clone())
    }

    /// An ASN.1 DER ECDSA-P256-SHA256 signature of `message` (RFC 6979: the same message and
    /// key give the same signature).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.key.sign(message);
        sig.to_der().as_bytes().to_vec()
    }

    /// The key in cosign's encrypted format (`ENCRYPTED SIGSTORE PRIVATE KEY`), as
    /// `cosign generate-key-pair` writes it: readable by cosign with `COSIGN_PASSWORD`.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<Zeroizing<String>, Error> {
        let pkcs8 = self.key.to_pkcs8_der().map_err(|e| Error::Key {
            origin: self.source.clone(),
            message: format!("cannot be encoded: {e}"),
            hint: ONLY_P256.into(),
        })?;
        let boxed = encrypt(pkcs8.as_bytes(), password)?;
        Ok(Zeroizing::new(pem_encode(SIGSTORE_LABEL, &boxed)))
    }
}

const ONLY_P256: &str =
    "only ECDSA P-256 keys are supported, as `cosign generate-key-pair` makes them";

fn p256_from_pkcs8(der: &[u8]) -> Result<p256::SecretKey, String> {
    p256::SecretKey::from_pkcs8_der(der).map_err(|e| format!("not an ECDSA P-256 PKCS#8 key: {e}"))
}

impl TrustedKey {
    fn from_verifying(key: p256::ecdsa::VerifyingKey, name: String) -> TrustedKey {
        let der = key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        TrustedKey {
            key,
            name,
            fingerprint: crate::registry::sha256_digest(&der),
        }
    }

    /// Parses a `PUBLIC KEY` (SubjectPublicKeyInfo) PEM of an ECDSA P-256 key, as
    /// `cosign generate-key-pair` writes `cosign.pub`.
    pub fn from_pem(text: &[u8], name: &str) -> Result<TrustedKey, Error> {
        let err = |message: String| {
            Error::Key {
            origin: name.to_string(),
            message,
            hint: "a trusted key is a `PUBLIC KEY` PEM of an ECDSA P-256 key (cosign.pub, or the .pub of `cargo xtask keygen`)".into(),
        }
        };
        let (label, der) = pem_decode(text).map_err(err)?;
        if label != "PUBLIC KEY" {
            return Err(err(format!(
                "a `{label}` PEM block is not a public key{}",
                if label.contains("PRIVATE") {
                    " (a private key must never be listed: it is a secret)"
                } else {
                    ""
                }
            )));
        }
        let key = p256::PublicKey::from_public_key_der(&der)
            .map_err(|e| err(format!("not an ECDSA P-256 public key: {e}")))?;
        Ok(TrustedKey::from_verifying(key.into(), name.to_string()))
    }

    /// Reads a public key file; `name` is how messages call it.
    pub fn from_file(path: &Path, name: &str) -> Result<TrustedKey, Error> {
        let text = std::fs::read(path).map_err(|e| Error::Key {
            origin: name.to_string(),
            message: format!("cannot be read ({}): {e}", path.display()),
            hint: "list existing public key files in images.toml (`[trust] keys`), relative to the monorepo root".into(),
        })?;
        TrustedKey::from_pem(&text, name)
    }

    /// The key as a `PUBLIC KEY` PEM.
    pub fn to_pem(&self) -> String {
        let der = self
            .key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        pem_encode("PUBLIC KEY", &der)
    }

    /// Whether `signature` (ASN.1 DER, as cosign writes it) signs `message` with this key.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match p256::ecdsa::Signature::from_der(signature) {
            Ok(sig) => self.key.verify(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// The first PEM block of `text` (an `EC PARAMETERS` block, which `openssl ecparam -genkey`
/// writes before the key, is skipped): its label and bytes. Text around blocks is ignored, as
/// Go's `pem.Decode` (which cosign uses) does.
pub(crate) fn pem_decode(text: &[u8]) -> Result<(String, Vec<u8>), String> {
    let mut text =
        std::str::from_utf8(text).map_err(|_| "not a PEM file (not UTF-8 text)".to_string())?;
    loop {
        let start = text
            .find("-----BEGIN ")
            .ok_or_else(|| "not a PEM file (no `-----BEGIN …-----` line)".to_string())?;
        let rest = &text[start + "-----BEGIN ".len()..];
        let (label, rest) = rest
            .split_once("-----")
            .ok_or_else(|| "a PEM `BEGIN` line without its closing dashes".to_string())?;
        let end_line = format!("-----END {label}-----");
        let (body, after) = rest
            .split_once(&end_line)
            .ok_or_else(|| format!("the PEM block `{label}` has no `{end_line}` line"))?;
        if label == "EC PARAMETERS" {
            text = after;
            continue;
        }
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = B64
            .decode(b64.as_bytes())
            .map_err(|e| format!("the PEM block `{label}` is not base64: {e}"))?;
        return Ok((label.to_string(), bytes));
    }
}

/// A PEM block with 64-character lines, as Go's `pem.Encode` writes it.
pub(crate) fn pem_encode(label: &str, bytes: &[u8]) -> String {
    let b64 = B64.encode(bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// go-securesystemslib's `encrypted` format, which cosign uses for its private keys.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Boxed {
    kdf: Kdf,
    cipher: Cipher,
    #[serde(with = "b64")]
    ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kdf {
    name: String,
    params: KdfParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cipher {
    name: String,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

/// Go encodes `[]byte` as standard base64.
mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::B64.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::B64
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

fn scrypt_key(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = scrypt::Params::new(log_n, r, p).map_err(|e| format!("scrypt: {e}"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, key.as_mut()).map_err(|e| format!("scrypt: {e}"))?;
    Ok(key)
}

/// Opens cosign's box: the PKCS#8 DER inside.
fn decrypt(boxed: &[u8], password: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let b: Boxed = serde_json::from_slice(boxed)
        .map_err(|e| format!("not cosign's encrypted key format: {e}"))?;
    if b.kdf.name != "scrypt" {
        return Err(format!(
            "unsupported key derivation `{}` (expected scrypt)",
            b.kdf.name
        ));
    }
    if b.cipher.name != "nacl/secretbox" {
        return Err(format!(
            "unsupported cipher `{}` (expected nacl/secretbox)",
            b.cipher.name
        ));
    }
    let KdfParams { n, r, p } = b.kdf.params;
    if !SCRYPT_PARAMS.contains(&(n, r, p)) {
        return Err(format!(
            "unexpected scrypt parameters N={n} r={r} p={p} (cosign's are N=32768, 65536 or 131072 with r=8 p=1)"
        ));
    }
    if b.cipher.nonce.len() != 24 || b.kdf.salt.is_empty() {
        return Err("a nonce that is not 24 bytes, or an empty salt".into());
    }
    let key = scrypt_key(password, &b.kdf.salt, n.trailing_zeros() as u8, r, p)?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(key.as_ref().into());
    let nonce = crypto_secretbox::Nonce::from_slice(&b.cipher.nonce);
    cipher
        .decrypt(nonce, b.ciphertext.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| {
            "the key could not be decrypted: wrong password, or the file was altered".into()
        })
}

/// Seals `plaintext` in cosign's box with a fresh salt and nonce.
fn encrypt(plaintext: &[u8], password: &[u8]) -> Result<Vec<u8>, Error> {
    let rng = ring::rand::SystemRandom::new();
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    ring::rand::SecureRandom::fill(&rng, &mut salt)
        .and_then(|_| ring::rand::SecureRandom::fill(&rng, &mut nonce))
        .map_err(|_| Error::Random("a salt and a nonce".into()))?;
    let key = scrypt_key(password, &salt, NEW_KEY_LOG_N, 8, 1).map_err(Error::Crypto)?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(key.as_ref().into());
    let ciphertext = cipher
        .encrypt(crypto_secretbox::Nonce::from_slice(&nonce), plaintext)
        .map_err(|_| Error::Crypto("the key could not be encrypted".into()))?;
    let boxed = Boxed {
        kdf: Kdf {
            name: "scrypt".into(),
            params: KdfParams {
                n: 1 << NEW_KEY_LOG_N,
                r: 8,
                p: 1,
            },
            salt: salt.to_vec(),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: nonce.to_vec(),
        },
        ciphertext,
    };
    serde_json::to_vec(&boxed).map_err(|e| Error::Crypto(format!("the key box: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_key_round_trips_and_a_wrong_password_is_refused() {
        let key = SigningKey::generate().expect("generate");
        let pem = key.to_encrypted_pem(b"hunter2").expect("encrypt");
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        let back = SigningKey::from_pem(pem.as_bytes(), Some(b"hunter2"), "k").expect("decrypt");
        assert_eq!(back.public_key(), key.public_key());
        let msg = b"payload";
        assert!(key.public_key().verifies(msg, &back.sign(msg)));

        let e = SigningKey::from_pem(pem.as_bytes(), Some(b"hunter3"), "keys/ci.key")
            .expect_err("wrong password")
            .to_string();
        assert!(
            e.contains("keys/ci.key")
                && e.contains("wrong password")
                && e.contains("hint: check COSIGN_PASSWORD"),
            "{e}"
        );
        let e = SigningKey::from_pem(pem.as_bytes(), None, "k")
            .expect_err("no password")
            .to_string();
        assert!(
            e.contains("encrypted and no password") && e.contains("set COSIGN_PASSWORD"),
            "{e}"
        );
        // The older label reads the same.
        let old = pem.replace("SIGSTORE", "COSIGN");
        SigningKey::from_pem(old.as_bytes(), Some(b"hunter2"), "k").expect("cosign label");
        // An empty password is a password.
        let empty = key.to_encrypted_pem(b"").expect("encrypt");
        SigningKey::from_pem(empty.as_bytes(), Some(b""), "k").expect("empty password");
    }

    #[test]
    fn tampered_or_hostile_boxes_are_refused_before_any_costly_derivation() {
        let key = SigningKey::generate().expect("generate");
        let pem = key.to_encrypted_pem(b"pw").expect("encrypt");
        let (_, json) = pem_decode(pem.as_bytes()).expect("pem");
        let mut v: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(
            v["kdf"]["params"],
            serde_json::json!({"N": 65536, "r": 8, "p": 1})
        );
        let reseal = |v: &serde_json::Value| pem_encode(SIGSTORE_LABEL, v.to_string().as_bytes());
        // A huge N would take minutes and gigabytes: refused from the parameters alone.
        let mut huge = v.clone();
        huge["kdf"]["params"]["N"] = serde_json::json!(1u64 << 30);
        let e = SigningKey::from_pem(reseal(&huge).as_bytes(), Some(b"pw"), "k")
            .expect_err("N")
            .to_string();
        assert!(
            e.contains("unexpected scrypt parameters N=1073741824"),
            "{e}"
        );
        let mut cipher = v.clone();
        cipher["cipher"]["name"] = serde_json::json!("aes-gcm");
        let e = SigningKey::from_pem(reseal(&cipher).as_bytes(), Some(b"pw"), "k")
            .expect_err("cipher")
            .to_string();
        assert!(e.contains("unsupported cipher `aes-gcm`"), "{e}");
        // One flipped bit of the ciphertext fails the box's MAC.
        let mut ct = B64
            .decode(v["ciphertext"].as_str().expect("ct"))
            .expect("b64");
        ct[20] ^= 1;
        v["ciphertext"] = serde_json::json!(B64.encode(&ct));
        let e = SigningKey::from_pem(reseal(&v).as_bytes(), Some(b"pw"), "k")
            .expect_err("tampered")
            .to_string();
        assert!(e.contains("could not be decrypted"), "{e}");
    }

    #[test]
    fn plain_pkcs8_and_sec1_keys_sign_and_public_keys_parse() {
        let key = SigningKey::generate().expect("generate");
        let pkcs8 = key.key.to_pkcs8_der().expect("der");
        let pem = pem_encode("PRIVATE KEY", pkcs8.as_bytes());
        let plain = SigningKey::from_pem(pem.as_bytes(), None, "k").expect("pkcs8");
        assert_eq!(plain.public_key(), key.public_key());
        // With text around the block, as openssl writes with `-text`.
        let noisy = format!("Private-Key: (256 bit)\n{pem}\ntrailing\n");
        SigningKey::from_pem(noisy.as_bytes(), None, "k").expect("noisy");
        let sec1 = p256::SecretKey::from(&key.key).to_sec1_der().expect("sec1");
        let pem = pem_encode("EC PRIVATE KEY", &sec1);
        assert_eq!(
            SigningKey::from_pem(pem.as_bytes(), None, "k")
                .expect("sec1")
                .public_key(),
            key.public_key()
        );

        let public = key.public_key();
        let back = TrustedKey::from_pem(public.to_pem().as_bytes(), "keys/ci.pub").expect("pub");
        assert_eq!(back, public);
        assert_eq!(back.name, "keys/ci.pub");
        assert!(back.fingerprint.starts_with("sha256:") && back.fingerprint.len() == 71);
        // A private key listed as trusted is refused, and said to be a secret.
        let e = TrustedKey::from_pem(pem.as_bytes(), "keys/oops.pem")
            .expect_err("private")
            .to_string();
        assert!(
            e.contains("keys/oops.pem") && e.contains("must never be listed"),
            "{e}"
        );
        let e = SigningKey::from_pem(public.to_pem().as_bytes(), None, "k")
            .expect_err("public")
            .to_string();
        assert!(e.contains("this is a public key"), "{e}");
        let e = SigningKey::from_pem(b"hello", None, "IMAGES_SIGNING_KEY")
            .expect_err("garbage")
            .to_string();
        assert!(
            e.starts_with("key `IMAGES_SIGNING_KEY`: not a PEM file"),
            "{e}"
        );
    }

    #[test]
    fn other_curves_are_refused_with_the_reason() {
        // A P-384 and an Ed25519 public key, made by openssl.
        let p384 = "-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEj7a0j/xKHdJTpL5hixDqQalW9BECfTt8\nsnL1Kbt0V4ZDPQOd/hEO3BlhF1botBGcQr1CnlsdQi17ObrQ+5hwdt0nzcArO8/q\nbmUspxsXl729ZsGfIsBAWXSjvwYtNlMS\n-----END PUBLIC KEY-----\n";
        let ed25519 = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAMoGGo+nObKCSK+yn+dSZbbIBA7aAY+CgBYb6DYIdPQA=\n-----END PUBLIC KEY-----\n";
        for (name, pem) in [("p384.pub", p384), ("ed25519.pub", ed25519)] {
            let e = TrustedKey::from_pem(pem.as_bytes(), name)
                .expect_err(name)
                .to_string();
            assert!(
                e.contains(name) && e.contains("not an ECDSA P-256 public key"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_key_comes_from_one_variable_or_a_file_with_cosigns_password_variable() {
        let key = SigningKey::generate().expect("generate");
        let pem = key.to_encrypted_pem(b"pw").expect("encrypt").to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cosign.key");
        std::fs::write(&file, &pem).expect("write");
        let vars = |pairs: Vec<(&'static str, String)>| {
            move |n: &str| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())
        };
        assert!(SigningKey::from_vars(vars(vec![])).expect("none").is_none());
        let k = SigningKey::from_vars(vars(vec![
            (KEY_VAR, pem.clone()),
            (PASSWORD_VAR, "pw".into()),
        ]))
        .expect("var")
        .expect("some");
        assert_eq!(k.public_key(), key.public_key());
        assert_eq!(k.source, "IMAGES_SIGNING_KEY");
        let k = SigningKey::from_vars(vars(vec![
            (KEY_FILE_VAR, file.display().to_string()),
            (PASSWORD_VAR, "pw".into()),
        ]))
        .expect("file")
        .expect("some");
        assert_eq!(k.public_key(), key.public_key());
        // The key's bytes never reach a message, nor its Debug form.
        assert!(!format!("{k:?}").contains(&pem[40..80]));
        let e = SigningKey::from_vars(vars(vec![
            (KEY_VAR, pem.clone()),
            (KEY_FILE_VAR, "x".into()),
        ]))
        .expect_err("both")
        .to_string();
        assert!(e.contains("both are set"), "{e}");
        let e = SigningKey::from_vars(vars(vec![(KEY_VAR, file.display().to_string())]))
            .expect_err("a path in the PEM variable")
            .to_string();
        assert!(
            e.contains("to name a file, use IMAGES_SIGNING_KEY_FILE"),
            "{e}"
        );
        assert!(!e.contains(&file.display().to_string()), "{e}");
        let e = SigningKey::from_vars(vars(vec![(KEY_FILE_VAR, "/nonexistent/k".into())]))
            .expect_err("missing file")
            .to_string();
        assert!(e.contains("key `/nonexistent/k`: cannot be read"), "{e}");
        let e = SigningKey::from_vars(vars(vec![(KEY_VAR, pem.clone())]))
            .expect_err("no password")
            .to_string();
        assert!(e.contains("set COSIGN_PASSWORD"), "{e}");
        assert!(!e.contains(&pem[40..80]), "{e}");
    }

    #[test]
    fn a_signature_made_for_one_message_verifies_no_other() {
        let key = SigningKey::generate().expect("generate");
        let other = SigningKey::generate().expect("generate");
        let sig = key.sign(b"a");
        assert_eq!(sig, key.sign(b"a"), "RFC 6979 is deterministic");
        assert!(key.public_key().verifies(b"a", &sig));
        assert!(!key.public_key().verifies(b"b", &sig));
        assert!(!other.public_key().verifies(b"a", &sig));
        assert!(!key.public_key().verifies(b"a", b"not der"));
    }
}
