//! `cosign-oracle`: cosign's key-pair signatures done by sigstore-rs, for the engine's tests to
//! compare against. Prints what it did or why not; exits 0 when the operation succeeded (for
//! `verify`: the signature verified), 1 when it was refused, 2 on a usage or I/O error.
//!
//! - `verify HOST/REPO@DIGEST PUBLIC.pem`: `cosign verify --key` over plain HTTP.
//! - `sign HOST/REPO@DIGEST PRIVATE.pem PASSWORD`: `cosign sign --key` (writes the `.sig` tag
//!   with this one signature, as sigstore-rs does).
//! - `keygen PREFIX PASSWORD`: `cosign generate-key-pair` (PREFIX.key, encrypted; PREFIX.pub).

use std::process::ExitCode;

use sigstore::cosign::constraint::PrivateKeySigner;
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraintVec};
use sigstore::cosign::{Constraint, CosignCapabilities, SignatureLayer};
use sigstore::crypto::SigningScheme;
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};
use zeroize::Zeroizing;

fn client() -> Result<sigstore::cosign::Client, String> {
    let config = ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    };
    sigstore::cosign::ClientBuilder::default()
        .with_oci_client_config(config)
        .build()
        .map_err(|e| format!("client: {e}"))
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

async fn verify(image: &str, key: &str) -> Result<bool, String> {
    let image: OciReference = image.parse().map_err(|e| format!("{image}: {e:?}"))?;
    let verifier = PublicKeyVerifier::new(&read(key)?, &SigningScheme::default())
        .map_err(|e| format!("public key {key}: {e}"))?;
    let constraints: VerificationConstraintVec = vec![Box::new(verifier)];
    let layers = match client()?
        .trusted_signature_layers(&Auth::Anonymous, &image)
        .await
    {
        Ok(l) => l,
        Err(e) => {
            println!("refused: no usable signature layer: {e}");
            return Ok(false);
        }
    };
    match sigstore::cosign::verify_constraints(&layers, constraints.iter()) {
        Ok(()) => {
            println!("verified: {} signature layer(s) read", layers.len());
            Ok(true)
        }
        Err(e) => {
            println!(
                "refused: {} constraint(s) unsatisfied by {} layer(s)",
                e.unsatisfied_constraints.len(),
                layers.len()
            );
            Ok(false)
        }
    }
}

async fn sign(image: &str, key: &str, password: &str) -> Result<bool, String> {
    let image: OciReference = image.parse().map_err(|e| format!("{image}: {e:?}"))?;
    let mut client = client()?;
    let (signature_image, digest) = client
        .triangulate(&image, &Auth::Anonymous)
        .await
        .map_err(|e| format!("triangulate: {e}"))?;
    let mut layer =
        SignatureLayer::new_unsigned(&image, &digest).map_err(|e| format!("layer: {e}"))?;
    let signer = PrivateKeySigner::new_with_raw(
        Zeroizing::new(read(key)?),
        Zeroizing::new(password.as_bytes().to_vec()),
        &SigningScheme::default(),
    )
    .map_err(|e| format!("private key {key}: {e}"))?;
    signer
        .add_constraint(&mut layer)
        .map_err(|e| format!("sign: {e}"))?;
    client
        .push_signature(None, &Auth::Anonymous, &signature_image, vec![layer])
        .await
        .map_err(|e| format!("push: {e}"))?;
    println!("signed: {signature_image}");
    Ok(true)
}

fn keygen(prefix: &str, password: &str) -> Result<bool, String> {
    let signer = SigningScheme::default()
        .create_signer()
        .map_err(|e| format!("keygen: {e}"))?;
    let pair = signer
        .to_sigstore_keypair()
        .map_err(|e| format!("keygen: {e}"))?;
    let private = pair
        .private_key_to_encrypted_pem(password.as_bytes())
        .map_err(|e| format!("keygen: {e}"))?;
    let public = pair.public_key_to_pem().map_err(|e| format!("keygen: {e}"))?;
    std::fs::write(format!("{prefix}.key"), private.as_bytes())
        .and_then(|_| std::fs::write(format!("{prefix}.pub"), public))
        .map_err(|e| format!("{prefix}: {e}"))?;
    println!("keygen: {prefix}.key {prefix}.pub");
    Ok(true)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["verify", image, key] => verify(image, key).await,
        ["sign", image, key, password] => sign(image, key, password).await,
        ["keygen", prefix, password] => keygen(prefix, password),
        _ => Err("usage: cosign-oracle verify IMAGE@DIGEST KEY.pub | sign IMAGE@DIGEST KEY PASSWORD | keygen PREFIX PASSWORD".into()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cosign-oracle: {e}");
            ExitCode::from(2)
        }
    }
}
