//! Failure isolation, end to end: one service whose inputs cannot be resolved fails alone with
//! its error and a hint; the others are built, and `affected` reports it as an error entry. And
//! after a real build, no build argument value is anywhere in the cache.

use tests::{git, remove_images, xtask, TinyImage};

#[test]
fn one_bad_service_fails_alone_and_the_others_are_built() {
    tests::require_docker();
    let _guard = tests::docker_lock();
    let pid = std::process::id();
    let base = TinyImage::import(&format!("kct-{pid}-iso:1"), "isolation");
    let prefix = format!("kct-{pid}-iso-");
    let p = tests::project()
        .shared()
        .service("good", &[])
        .service("bad", &[])
        .file(".gitignore", ".images-cache\n")
        .build();
    p.write(
        "services/good/Dockerfile",
        &format!(
            "FROM {}\nARG NPM_TOKEN\nCOPY services/good/src /src\n",
            base.reference
        ),
    );
    // `dist` is another context's build output: not in the checkout.
    p.write(
        "services/bad/Dockerfile",
        &format!(
            "FROM {}\nCOPY services/bad/dist /app/dist\n",
            base.reference
        ),
    );
    let canary = format!("npm_canary_{pid}_fedcba9876543210");
    p.write(
        "images.toml",
        &format!("[images]\nprefix = \"{prefix}\"\nbuild-args = {{ NPM_TOKEN = \"{canary}\" }}\n"),
    );
    let out = xtask(p.root(), &["images", "--json", "--no-verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let by = |s: &str| {
        json["images"]
            .as_array()
            .expect("images")
            .iter()
            .find(|i| i["service"] == s)
            .cloned()
            .unwrap_or_else(|| panic!("{s} missing from {json}"))
    };
    assert_eq!(by("good")["action"], "built");
    let bad = by("bad");
    assert_eq!(bad["action"], "failed");
    let e = bad["error"].as_str().expect("error");
    assert!(e.contains("services/bad/dist"), "{e}");
    assert!(
        e.contains("skip = true") && e.contains("[services.bad]"),
        "{e}"
    );
    // Said on stderr too, with its hint, while stdout holds the document.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("service `bad`") && stderr.contains("hint:"),
        "{stderr}"
    );

    // Nothing under the cache directory holds the build argument's value.
    let mut stack = vec![p.path(".images-cache")];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            if e.file_type().expect("type").is_dir() {
                stack.push(e.path());
            } else {
                seen += 1;
                let bytes = std::fs::read(e.path()).expect("read");
                assert!(
                    !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                    "{} holds the build argument's value",
                    e.path().display()
                );
            }
        }
    }
    assert!(seen > 2, "the cache holds records and blobs");
    assert!(!out
        .stdout
        .windows(canary.len())
        .any(|w| w == canary.as_bytes()));
    assert!(!stderr.contains(&canary));

    // `affected` reports it as an error entry and goes on with the others.
    git(p.root(), &["init", "-q", "-b", "main"]);
    git(p.root(), &["add", "-A"]);
    git(p.root(), &["commit", "-q", "-m", "initial"]);
    p.write("services/good/src/index.ts", "console.log('changed');\n");
    let out = xtask(
        p.root(),
        &["affected", "--base", "main", "--format", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(a["services"], serde_json::json!(["bad", "good"]));
    assert_eq!(a["errors"][0]["service"], "bad");
    assert!(a["errors"][0]["hint"]
        .as_str()
        .unwrap_or("")
        .contains("skip = true"));
    remove_images(&prefix);
}
