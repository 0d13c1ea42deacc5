//! CI systems: the base revision of a change, read from the CI's own variables (GitHub
//! Actions, GitLab CI) when the user names none, and where it came from.
//!
//! - GitHub: a pull request's target branch (`GITHUB_BASE_REF`, as `origin/<branch>`); a merge
//!   queue's `base_sha`; a push's previous commit (`GITHUB_EVENT_BEFORE`, else the event
//!   payload's `before`). A new branch (its `before` is all zeros) is compared with the default
//!   branch (the payload's `repository.default_branch`).
//! - GitLab: a merge request's diff base (`CI_MERGE_REQUEST_DIFF_BASE_SHA`), else its target
//!   branch (`CI_MERGE_REQUEST_TARGET_BRANCH_NAME`); a push's previous commit
//!   (`CI_COMMIT_BEFORE_SHA`); a new branch is compared with `CI_DEFAULT_BRANCH`.

use crate::{Error, Result};

/// A base revision and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// A commit or `origin/<branch>`.
    pub rev: String,
    /// Where it came from, e.g. `GITHUB_BASE_REF (a GitHub pull request into main)`.
    pub source: String,
}

/// The base the CI names, read through `var` (the environment; a map in tests). `Ok(None)`
/// outside a CI it knows; an error when the CI is known but names no base (a scheduled run,
/// the first push of the default branch).
pub fn base(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Base>> {
    let get = |name: &str| {
        var(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if get("GITHUB_ACTIONS").as_deref() == Some("true") {
        return github(&get).map(Some);
    }
    if get("GITLAB_CI").as_deref() == Some("true") {
        return gitlab(&get).map(Some);
    }
    Ok(None)
}

/// The base from the process environment (see [`base`]).
pub fn base_from_env() -> Result<Option<Base>> {
    base(&|name| std::env::var(name).ok())
}

/// A commit id: hex, as git abbreviates or spells it out.
fn is_sha(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A push of a new branch (or tag) says its previous commit is all zeros.
fn is_zero(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == b'0')
}

/// A branch name as git accepts one (`git check-ref-format`'s rules that matter here): what is
/// passed on to git can never read as an option or a revision expression.
fn branch(name: &str, from: &str) -> Result<String> {
    let bad = name.is_empty()
        || name.starts_with('-')
        || name.starts_with('/')
        || name.ends_with('/')
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("//")
        || name.contains("@{")
        || name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        return Err(Error::Other(format!(
            "{from} holds `{}`, which is not a branch name\n  hint: pass --base REF",
            name.escape_debug()
        )));
    }
    Ok(name.to_string())
}

fn commit(sha: &str, from: &str) -> Result<String> {
    if is_sha(sha) {
        Ok(sha.to_string())
    } else {
        Err(Error::Other(format!(
            "{from} holds `{}`, which is not a commit id\n  hint: pass --base REF",
            sha.escape_debug()
        )))
    }
}

/// The event payload GitHub writes for the job (`GITHUB_EVENT_PATH`), if readable.
fn github_payload(get: &dyn Fn(&str) -> Option<String>) -> Option<serde_json::Value> {
    let path = get("GITHUB_EVENT_PATH")?;
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn github(get: &dyn Fn(&str) -> Option<String>) -> Result<Base> {
    let event = get("GITHUB_EVENT_NAME").unwrap_or_else(|| "an unnamed event".into());
    if let Some(target) = get("GITHUB_BASE_REF") {
        let target = branch(&target, "GITHUB_BASE_REF")?;
        return Ok(Base {
            rev: format!("origin/{target}"),
            source: format!("GITHUB_BASE_REF (a GitHub pull request into {target})"),
        });
    }
    let payload = github_payload(get);
    let field = |pointer: &str| {
        payload
            .as_ref()
            .and_then(|p| p.pointer(pointer))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .filter(|v| !v.is_empty())
    };
    if event == "merge_group" {
        if let Some(sha) = field("/merge_group/base_sha") {
            return Ok(Base {
                rev: commit(&sha, "the merge group's base_sha")?,
                source: "the merge group's base_sha (GITHUB_EVENT_PATH)".into(),
            });
        }
    }
    let before = match get("GITHUB_EVENT_BEFORE") {
        Some(b) => Some((b, "GITHUB_EVENT_BEFORE")),
        None => field("/before").map(|b| (b, "the push's `before` (GITHUB_EVENT_PATH)")),
    };
    if let Some((sha, from)) = &before {
        if !is_zero(sha) {
            return Ok(Base {
                rev: commit(sha, from)?,
                source: format!("{from}: the commit before this GitHub push"),
            });
        }
    }
    let current = get("GITHUB_REF_NAME");
    if let Some(default) = field("/repository/default_branch") {
        if before.is_some() && current.as_deref() != Some(default.as_str()) {
            let default = branch(&default, "the repository's default_branch")?;
            return Ok(Base {
                rev: format!("origin/{default}"),
                source: format!(
                    "the default branch {default}: this GitHub push starts a new branch (its `before` is all zeros)"
                ),
            });
        }
    }
    Err(Error::Other(format!(
        "GitHub's `{event}` event names no base to compare with (no GITHUB_BASE_REF, no previous commit of a push)\n  hint: pass --base REF (e.g. --base origin/main)"
    )))
}

fn gitlab(get: &dyn Fn(&str) -> Option<String>) -> Result<Base> {
    if let Some(sha) = get("CI_MERGE_REQUEST_DIFF_BASE_SHA") {
        return Ok(Base {
            rev: commit(&sha, "CI_MERGE_REQUEST_DIFF_BASE_SHA")?,
            source: "CI_MERGE_REQUEST_DIFF_BASE_SHA (the GitLab merge request's diff base)".into(),
        });
    }
    if let Some(target) = get("CI_MERGE_REQUEST_TARGET_BRANCH_NAME") {
        let target = branch(&target, "CI_MERGE_REQUEST_TARGET_BRANCH_NAME")?;
        return Ok(Base {
            rev: format!("origin/{target}"),
            source: format!(
                "CI_MERGE_REQUEST_TARGET_BRANCH_NAME (a GitLab merge request into {target})"
            ),
        });
    }
    let before = get("CI_COMMIT_BEFORE_SHA");
    if let Some(sha) = &before {
        if !is_zero(sha) {
            return Ok(Base {
                rev: commit(sha, "CI_COMMIT_BEFORE_SHA")?,
                source: "CI_COMMIT_BEFORE_SHA: the commit before this GitLab push".into(),
            });
        }
    }
    if let (Some(default), Some(current)) = (get("CI_DEFAULT_BRANCH"), get("CI_COMMIT_BRANCH")) {
        if current != default {
            let default = branch(&default, "CI_DEFAULT_BRANCH")?;
            return Ok(Base {
                rev: format!("origin/{default}"),
                source: format!(
                    "CI_DEFAULT_BRANCH {default}: this GitLab pipeline has no previous commit (a new branch)"
                ),
            });
        }
    }
    let what = get("CI_PIPELINE_SOURCE").unwrap_or_else(|| "this".into());
    Err(Error::Other(format!(
        "the GitLab `{what}` pipeline names no base to compare with (no merge request, no previous commit)\n  hint: pass --base REF (e.g. --base origin/main)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<Option<Base>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        base(&|k| map.get(k).cloned())
    }

    fn rev(vars: &[(&str, &str)]) -> String {
        with(vars).expect("a base").expect("a CI base").rev
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn outside_a_ci_there_is_no_default() {
        assert_eq!(with(&[]).expect("ok"), None);
        assert_eq!(with(&[("CI", "true")]).expect("ok"), None);
    }

    #[test]
    fn github_pull_requests_and_pushes() {
        let gh = [("GITHUB_ACTIONS", "true")];
        let pr = [
            gh[0],
            ("GITHUB_EVENT_NAME", "pull_request"),
            ("GITHUB_BASE_REF", "main"),
        ];
        assert_eq!(rev(&pr), "origin/main");
        let push = [
            gh[0],
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_EVENT_BEFORE", SHA),
        ];
        assert_eq!(rev(&push), SHA);
        // A push event sets GITHUB_BASE_REF empty: it is ignored.
        let push_empty = [push[0], push[1], push[2], ("GITHUB_BASE_REF", "")];
        assert_eq!(rev(&push_empty), SHA);
        // A new branch, with no payload: nothing to compare with.
        let new = [
            gh[0],
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_EVENT_BEFORE", ZERO),
        ];
        let e = with(&new).expect_err("no base").to_string();
        assert!(
            e.contains("names no base") && e.contains("hint: pass --base"),
            "{e}"
        );
        // Hostile values never reach git as options or expressions.
        let bad = [gh[0], ("GITHUB_BASE_REF", "--upload-pack=x")];
        assert!(with(&bad).is_err());
        let bad = [gh[0], ("GITHUB_EVENT_BEFORE", "HEAD~3")];
        assert!(with(&bad).is_err());
    }

    #[test]
    fn github_payload_before_and_new_branches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("event.json");
        let payload = |before: &str| {
            std::fs::write(
                &path,
                format!(r#"{{"before":"{before}","repository":{{"default_branch":"trunk"}}}}"#),
            )
            .expect("write");
        };
        let p = path.to_string_lossy().to_string();
        let vars = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_EVENT_PATH", p.as_str()),
            ("GITHUB_REF_NAME", "feature"),
        ];
        payload(SHA);
        assert_eq!(rev(&vars), SHA);
        payload(ZERO);
        let b = with(&vars).expect("ok").expect("a base");
        assert_eq!(b.rev, "origin/trunk");
        assert!(b.source.contains("new branch"), "{}", b.source);
        // The first push of the default branch itself has no base.
        let on_trunk = [vars[0], vars[1], vars[2], ("GITHUB_REF_NAME", "trunk")];
        assert!(with(&on_trunk).is_err());
    }

    #[test]
    fn gitlab_merge_requests_and_pushes() {
        let gl = ("GITLAB_CI", "true");
        assert_eq!(
            rev(&[
                gl,
                ("CI_MERGE_REQUEST_DIFF_BASE_SHA", SHA),
                ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main"),
            ]),
            SHA
        );
        assert_eq!(
            rev(&[gl, ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main")]),
            "origin/main"
        );
        assert_eq!(rev(&[gl, ("CI_COMMIT_BEFORE_SHA", SHA)]), SHA);
        assert_eq!(
            rev(&[
                gl,
                ("CI_COMMIT_BEFORE_SHA", ZERO),
                ("CI_DEFAULT_BRANCH", "main"),
                ("CI_COMMIT_BRANCH", "feature"),
            ]),
            "origin/main"
        );
        let e = with(&[
            gl,
            ("CI_COMMIT_BEFORE_SHA", ZERO),
            ("CI_DEFAULT_BRANCH", "main"),
            ("CI_COMMIT_BRANCH", "main"),
            ("CI_PIPELINE_SOURCE", "push"),
        ])
        .expect_err("no base")
        .to_string();
        assert!(e.contains("`push` pipeline"), "{e}");
        assert!(with(&[gl, ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "a b")]).is_err());
    }
}
