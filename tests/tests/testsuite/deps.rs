//! No declared dependency goes unused: the check `cargo machete` makes (a crate is used when its
//! name appears as a path in the package's sources), run as a test so CI needs no extra install.

use std::path::Path;

/// The Rust files of a package: `src/`, `tests/`, `examples/`, `benches/`, `build.rs`.
fn sources(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n == "target" || n == "fixtures")
            {
                continue;
            }
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(std::fs::read_to_string(&p).expect("read source"));
        }
    }
}

/// Whether `text` names the crate `name` as Rust code does (`name::…`, `use name`,
/// `extern crate name`), `-` spelled `_`, at a word start (not `x::name::`, not `name_ext::`).
fn names_crate(text: &str, name: &str) -> bool {
    let ident = name.replace('-', "_");
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(&ident) {
        let at = from + i;
        from = at + ident.len();
        if at > 0 && (word(bytes[at - 1]) || bytes[at - 1] == b':') {
            continue;
        }
        let after = &text[at + ident.len()..];
        if after.starts_with("::") {
            return true;
        }
        if after.bytes().next().is_some_and(word) {
            continue;
        }
        let head = text[..at].trim_end();
        if head.ends_with("use") || head.ends_with("extern crate") {
            return true;
        }
    }
    false
}

#[test]
fn every_declared_dependency_is_used() {
    let root = tests::repo_root();
    let workspace: toml::Table = toml::from_str(
        &std::fs::read_to_string(root.join("Cargo.toml")).expect("read workspace Cargo.toml"),
    )
    .expect("parse workspace Cargo.toml");
    let members = workspace["workspace"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect::<Vec<_>>();
    let mut unused = Vec::new();
    let mut checked = 0;
    for member in members {
        let dir = root.join(member);
        let manifest: toml::Table = toml::from_str(
            &std::fs::read_to_string(dir.join("Cargo.toml")).expect("read Cargo.toml"),
        )
        .expect("parse Cargo.toml");
        // `cargo machete`'s own escape hatch, for a crate used only through a feature or a macro.
        let ignored = manifest
            .get("package")
            .and_then(|p| p.get("metadata"))
            .and_then(|m| m.get("cargo-machete"))
            .and_then(|m| m.get("ignored"))
            .and_then(|i| i.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>())
            .unwrap_or_default();
        let mut texts = Vec::new();
        sources(&dir, &mut texts);
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            // A renamed dependency (`package = "…"`) is used by its key, as here.
            for name in deps.keys() {
                checked += 1;
                if ignored.contains(&name.as_str()) {
                    continue;
                }
                if !texts.iter().any(|t| names_crate(t, name)) {
                    unused.push(format!("{member}/Cargo.toml [{section}] {name}"));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} dependencies found: is the workspace read?"
    );
    assert!(
        unused.is_empty(),
        "dependencies declared but never used (remove them, or list them under \
         [package.metadata.cargo-machete] ignored):\n{}",
        unused.join("\n")
    );
}

#[test]
fn the_usage_check_sees_uses_and_ignores_lookalikes() {
    assert!(names_crate("use serde_json::Value;", "serde_json"));
    assert!(names_crate(
        "let x = serde_json::from_str(s);",
        "serde_json"
    ));
    assert!(names_crate("use tempfile;\n", "tempfile"));
    assert!(names_crate(
        "fn f() { rustls_pki_types::X }",
        "rustls-pki-types"
    ));
    // Lookalikes: a longer name, a path segment, words in prose.
    assert!(!names_crate("use serde_json_ext::Value;", "serde_json"));
    assert!(!names_crate("let x = my::serde::Thing;", "serde"));
    assert!(!names_crate("// install anyhow later", "anyhow"));
    assert!(!names_crate("let insta = 1;", "insta"));
}
