//! `cargo xtask dockerfiles [--check]`: render `services/Dockerfile.template` for every service and
//! lint the results against the seed's forbidden patterns.

use crate::{output, setup, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Change nothing: print a diff and fail when a Dockerfile is stale
    #[arg(long)]
    pub check: bool,
}

impl Args {
    pub fn run(self, global: &Global) -> anyhow::Result<i32> {
        let root = setup::root(global)?;
        let ws = engine::workspace::Workspace::discover(&root)?;
        let rendered = engine::dockerfiles::render_all(&ws)?;
        let mut stale = Vec::new();
        let mut findings = Vec::new();
        for r in &rendered {
            let abs = ws.root.join(&r.path);
            findings.extend(engine::dockerfiles::lint(&r.path, &abs, &r.text)?);
            if !r.is_stale() {
                continue;
            }
            stale.push(r.path.clone());
            if self.check {
                if !global.json {
                    print!(
                        "{}",
                        diff(&r.path, r.current.as_deref().unwrap_or(""), &r.text)
                    );
                }
            } else {
                cache::atomic::write(&abs, r.text.as_bytes())?;
                if !global.json {
                    output::info(&format!("   wrote {}", r.path));
                }
            }
        }
        if global.json {
            output::json(&serde_json::json!({
                "dockerfiles": rendered.iter().map(|r| &r.path).collect::<Vec<_>>(),
                "stale": stale,
                "written": !self.check,
                "findings": findings,
            }))?;
        } else {
            for f in &findings {
                output::error_line(&f.to_string());
            }
            if stale.is_empty() {
                output::info(&format!("{} Dockerfiles up to date", rendered.len()));
            } else if self.check {
                output::error_line(&format!(
                    "{} Dockerfile(s) differ from the template: {}\n  hint: run `cargo xtask dockerfiles` to regenerate them",
                    stale.len(),
                    stale.join(", ")
                ));
            }
        }
        Ok(
            if !findings.is_empty() || (self.check && !stale.is_empty()) {
                1
            } else {
                0
            },
        )
    }
}

/// A minimal unified-style diff: changed lines with their numbers.
fn diff(path: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut out = format!("--- {path} (on disk)\n+++ {path} (from the template)\n");
    // Longest common subsequence table: Dockerfiles are small.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+{:>4} {}\n", j + 1, b[j]));
            j += 1;
        } else {
            out.push_str(&format!("-{:>4} {}\n", i + 1, a[i]));
            i += 1;
        }
    }
    out
}
