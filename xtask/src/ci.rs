//! What the CLI says to CI systems: the base of `affected` (from `--base`, else the CI's own
//! variables, saying which), the GitHub job summary (`GITHUB_STEP_SUMMARY`: a Markdown table of
//! the plan and of what was built, cached, pulled or failed, and why) and the GitLab child
//! pipeline (`affected --format gitlab-pipeline`).

use std::io::Write as _;

use anyhow::Context as _;
use engine::run::{ImageReport, Outcome};

use crate::output;
use crate::report::fmt_duration;

/// The base a command compares with, and where it came from.
#[derive(Debug, Clone)]
pub struct Base {
    pub rev: String,
    /// `--base`, or the CI variable (and what it means).
    pub source: String,
}

/// `--base` when given, else what the CI names (said in a note), else an error saying what to
/// pass.
pub fn base(flag: Option<&str>) -> anyhow::Result<Base> {
    if let Some(rev) = flag {
        return Ok(Base {
            rev: rev.to_string(),
            source: "--base".into(),
        });
    }
    match engine::ci::base_from_env()? {
        Some(b) => {
            output::note(&format!("comparing with `{}` from {}", b.rev, b.source));
            Ok(Base {
                rev: b.rev,
                source: b.source,
            })
        }
        None => anyhow::bail!(
            "no --base given, and no CI variables name one\n  hint: pass --base REF (e.g. --base origin/main); on GitHub Actions and GitLab CI the base comes from the CI's own variables"
        ),
    }
}

/// One cell of a Markdown table: nothing in it can end the cell, start a new line, or become
/// markup (file names in a change are anybody's).
pub fn md_cell(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => out.push(' '),
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '!' | '~' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// A row's "why": what was decided, and what happened.
fn why(r: &ImageReport) -> String {
    let mut parts: Vec<String> = r.reasons.iter().map(|x| x.to_string()).collect();
    if let Some(from) = &r.pulled_from {
        parts.push(format!("pulled from {from}"));
    }
    if let Some(e) = &r.error {
        parts.push(e.lines().next().unwrap_or_default().to_string());
    }
    if let Some(s) = &r.skipped_because {
        parts.push(s.clone());
    }
    if let Some(log) = &r.log {
        parts.push(format!("log: {}", log.display()));
    }
    parts.join("; ")
}

/// The result of one image as the summary names it.
fn result(r: &ImageReport) -> &'static str {
    match r.outcome {
        Outcome::Cached if r.pulled_from.is_some() => "pulled",
        Outcome::Cached => "cached",
        Outcome::Built => "built",
        Outcome::Failed => "**failed**",
        Outcome::Skipped => "skipped",
    }
}

/// The Markdown of a run for a GitHub job summary (with the services of `analysis` that failed
/// before it: their inputs could not be resolved).
pub fn run_summary(
    summary: &engine::run::Summary,
    analysis: &engine::pipeline::Analysis,
) -> String {
    let mut c = summary.counts();
    c.failed += analysis.failed.len();
    let pulled = summary
        .images
        .iter()
        .filter(|i| i.pulled_from.is_some())
        .count();
    let mut md = format!(
        "### cargo xtask images: {} built, {} cached ({} pulled), {} failed, {} skipped in {}\n\n",
        c.built,
        c.cached,
        pulled,
        c.failed,
        c.skipped,
        fmt_duration(summary.elapsed)
    );
    md.push_str("| service | image | key | plan | result | time | why |\n");
    md.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for r in &summary.images {
        let plan = if r.reasons.is_empty() {
            "cached"
        } else {
            "build"
        };
        let time = r
            .duration
            .map(fmt_duration)
            .unwrap_or_else(|| "-".to_string());
        md.push_str(&format!(
            "| {} | {} | `{}` | {plan} | {} | {time} | {} |\n",
            md_cell(&r.service, 200),
            md_cell(&r.image, 200),
            r.key.short(12),
            result(r),
            md_cell(&why(r), 500),
        ));
    }
    for f in &analysis.failed {
        let image = analysis
            .ws
            .services
            .get(f.service)
            .map(|s| s.image.as_str())
            .unwrap_or("-");
        md.push_str(&format!(
            "| {} | {} | - | - | **failed** | - | {} |\n",
            md_cell(&f.name, 200),
            md_cell(image, 200),
            md_cell(&format!("{}; hint: {}", f.error, f.hint), 500),
        ));
    }
    if summary.interrupted {
        md.push_str("\nThe run was interrupted.\n");
    }
    md.push('\n');
    md
}

/// The Markdown of a plan (`images --dry-run`) for a GitHub job summary.
pub fn plan_summary(plans: &[engine::plan::ImagePlan]) -> String {
    let n_build = plans
        .iter()
        .filter(|p| p.action == engine::plan::Action::Build)
        .count();
    let mut md = format!(
        "### cargo xtask images --dry-run: {} to build, {} cached\n\n",
        n_build,
        plans.len() - n_build
    );
    md.push_str("| service | image | key | plan | why |\n| --- | --- | --- | --- | --- |\n");
    for p in plans {
        let why: Vec<String> = p.reasons.iter().map(|r| r.to_string()).collect();
        md.push_str(&format!(
            "| {} | {} | `{}` | {} | {} |\n",
            md_cell(&p.service, 200),
            md_cell(&p.image, 200),
            p.key.short(12),
            match p.action {
                engine::plan::Action::Build => "build",
                engine::plan::Action::Cached => "cached",
            },
            md_cell(&why.join("; "), 500),
        ));
    }
    md.push('\n');
    md
}

/// Appends `markdown` to the job summary when GitHub gives one (`GITHUB_STEP_SUMMARY`).
pub fn append_step_summary(markdown: &str) -> anyhow::Result<()> {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .with_context(|| {
            format!(
                "failed to open the job summary `{}` (GITHUB_STEP_SUMMARY)",
                std::path::Path::new(&path).display()
            )
        })?;
    f.write_all(markdown.as_bytes()).with_context(|| {
        format!(
            "failed to write the job summary `{}`",
            std::path::Path::new(&path).display()
        )
    })?;
    Ok(())
}

/// How many jobs one `parallel:matrix` may make (GitLab's limit).
const GITLAB_MATRIX_MAX: usize = 200;

/// A GitLab child pipeline: one job per affected service, made by a `parallel:matrix` of the
/// hidden job `.images` of `include` (a file of the repository), with `SERVICE` and `IMAGE` set;
/// with no service affected, one job that says so (a pipeline needs a job).
pub fn gitlab_pipeline(
    base: &str,
    merge_base: Option<&str>,
    services: &[(&str, &str)],
    include: &str,
) -> String {
    // JSON strings are YAML double-quoted scalars: nothing in a value can change the structure.
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut y = String::from(
        "# A GitLab child pipeline written by `cargo xtask affected --format gitlab-pipeline`:\n\
         # one job per affected service (SERVICE, IMAGE), extending `.images` (see docs/ci.md).\n",
    );
    y.push_str(&format!("variables:\n  IMAGES_BASE: {}\n", q(base)));
    if let Some(m) = merge_base {
        y.push_str(&format!("  IMAGES_MERGE_BASE: {}\n", q(m)));
    }
    if services.is_empty() {
        y.push_str(
            "no-affected-images:\n  variables:\n    GIT_STRATEGY: none\n  script:\n    - echo \"no service is affected by this change\"\n",
        );
        return y;
    }
    y.push_str(&format!("include:\n  - local: {}\n", q(include)));
    for (n, chunk) in services.chunks(GITLAB_MATRIX_MAX).enumerate() {
        let name = if n == 0 {
            "images".to_string()
        } else {
            format!("images {}", n + 1)
        };
        y.push_str(&format!(
            "{}:\n  extends: .images\n  parallel:\n    matrix:\n",
            q(&name)
        ));
        for (service, image) in chunk {
            y.push_str(&format!(
                "      - SERVICE: {}\n        IMAGE: {}\n",
                q(service),
                q(image)
            ));
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gitlab_matrix_stays_within_gitlabs_limit() {
        let names: Vec<(String, String)> = (0..450)
            .map(|i| (format!("s{i}"), format!("img-s{i}")))
            .collect();
        let services: Vec<(&str, &str)> = names
            .iter()
            .map(|(s, i)| (s.as_str(), i.as_str()))
            .collect();
        let y = gitlab_pipeline("origin/main", None, &services, ".gitlab/images.yml");
        assert!(y.contains("\n\"images\":\n") && y.contains("\n\"images 2\":\n"));
        assert!(y.contains("\n\"images 3\":\n") && !y.contains("images 4"));
        assert_eq!(y.matches("      - SERVICE: ").count(), 450);
        // A value cannot break out of its string, whatever it holds.
        let y = gitlab_pipeline("x\"\n  evil: 1", None, &[], "i.yml");
        assert!(y.contains("IMAGES_BASE: \"x\\\"\\n  evil: 1\""), "{y}");
    }

    #[test]
    fn a_cell_holds_any_file_name_as_text() {
        assert_eq!(md_cell("a|b", 100), "a\\|b");
        assert_eq!(md_cell("x\n| evil | row |", 100), "x \\| evil \\| row \\|");
        assert_eq!(
            md_cell("<img src=x onerror=alert(1)>", 100),
            "&lt;img src=x onerror=alert\\(1\\)&gt;"
        );
        assert_eq!(md_cell("[link](http://x)", 100), "\\[link\\]\\(http://x\\)");
        assert_eq!(md_cell("", 10), "-");
        assert_eq!(md_cell("abcdef", 3), "abc…");
    }
}
