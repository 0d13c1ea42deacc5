//! The Dockerfile of each service, rendered from `services/Dockerfile.template` (replacing the
//! seed's `scripts/generate-dockerfiles.js`), and a lint of the seed's forbidden patterns.

use std::path::Path;

use serde::Serialize;

use crate::dockerfile::{BaseRef, Dockerfile};
use crate::workspace::Workspace;
use crate::{Error, Result};

/// One rendered Dockerfile and whether the file on disk matches it.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub service: usize,
    /// Relative to the root.
    pub path: String,
    pub text: String,
    /// The file on disk, if any.
    pub current: Option<String>,
}

impl Rendered {
    pub fn is_stale(&self) -> bool {
        self.current.as_deref() != Some(self.text.as_str())
    }
}

fn safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '/' | '-' | '_' | '.'))
}

/// Renders the template for every service of the workspace.
pub fn render_all(ws: &Workspace) -> Result<Vec<Rendered>> {
    let tpl_rel = &ws.config.images.template;
    let tpl_path = ws.root.join(tpl_rel);
    let template =
        std::fs::read_to_string(&tpl_path).map_err(|e| Error::io("read", &tpl_path, e))?;
    let mut out = Vec::new();
    for (s, svc) in ws.services.iter().enumerate() {
        let pkg = &ws.packages[svc.package];
        let manifest = ws.root.join(pkg.manifest());
        let package = pkg.name.clone().ok_or_else(|| Error::Package {
            path: manifest.clone(),
            message: "a service needs a `name` (it is `<SERVICE_PACKAGE>` in the template)".into(),
        })?;
        let port = ws
            .config
            .service(&svc.name)
            .port
            .or(pkg.port)
            .ok_or_else(|| Error::Package {
                path: manifest.clone(),
                message: format!(
                    "no port for service `{}`\n  hint: add `\"config\": {{ \"port\": 3000 }}` to it, or `port` under `[services.{}]` in `images.toml`",
                    svc.name, svc.name
                ),
            })?;
        for v in [&svc.name, &package] {
            if !safe(v) {
                return Err(Error::Package {
                    path: manifest.clone(),
                    message: format!("`{v}` cannot be written into a Dockerfile"),
                });
            }
        }
        let text = template
            .replace("<SERVICE_NAME>", &svc.name)
            .replace("<SERVICE_PACKAGE>", &package)
            .replace("<SERVICE_PORT>", &port.to_string());
        let path = svc.dockerfile.clone();
        let current = std::fs::read_to_string(ws.root.join(&path)).ok();
        out.push(Rendered {
            service: s,
            path,
            text,
            current,
        });
    }
    Ok(out)
}

/// A lint finding: the rule, the file and line, and what broke it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.rule, self.message
        )
    }
}

const BUILD_TOOLS: &[&str] = &["pnpm", "corepack", "nx", "yarn", "tsc"];

/// Lints a service Dockerfile against the seed's forbidden patterns.
pub fn lint(file: &str, path: &Path, text: &str) -> Result<Vec<Finding>> {
    let df = Dockerfile::parse(path, text)?;
    let mut out = Vec::new();
    let mut push = |rule, line, message: String| {
        out.push(Finding {
            rule,
            file: file.to_string(),
            line,
            message,
        })
    };
    let last = df.stages.len() - 1;
    for (i, st) in df.stages.iter().enumerate() {
        if i != last
            && st
                .name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case("runtime"))
        {
            push(
                "runtime-not-last",
                st.line,
                "the runtime stage must be the last stage (it is the image that is shipped)".into(),
            );
        }
    }
    let rt = &df.stages[last];
    // The runtime stage must start from a clean base image, not from a stage with build tools.
    if let BaseRef::Stage(s) = df.base_of(last) {
        push(
            "runtime-from-build-stage",
            rt.line,
            format!(
                "the runtime stage starts FROM the build stage `{}`, so it carries pnpm and the sources; start it FROM the base image",
                df.stages[s].name.clone().unwrap_or_else(|| s.to_string())
            ),
        );
    }
    let mut user = None;
    let mut healthcheck = None;
    let mut cmd = None;
    for ins in &rt.instructions {
        match ins.keyword.as_str() {
            "RUN" => {
                let words: Vec<&str> = ins
                    .raw
                    .split(|c: char| c.is_whitespace() || matches!(c, '&' | ';' | '|' | '(' | ')'))
                    .collect();
                if let Some(tool) = BUILD_TOOLS.iter().find(|t| words.contains(t)) {
                    push(
                        "build-tool-in-runtime",
                        ins.line,
                        format!("`{tool}` runs in the runtime stage; install production dependencies with `npm install --omit=dev`"),
                    );
                }
            }
            "USER" => user = Some((ins.raw.trim().to_string(), ins.line)),
            "HEALTHCHECK" => healthcheck = Some((ins.raw.trim().to_string(), ins.line)),
            "CMD" => cmd = Some(ins.clone()),
            "ENTRYPOINT" => push(
                "service-selected-at-runtime",
                ins.line,
                "an ENTRYPOINT wraps the command; use `CMD [\"node\", \"dist/index.js\"]` alone"
                    .into(),
            ),
            _ => {}
        }
    }
    match &user {
        None => push(
            "root-user",
            rt.line,
            "the runtime stage has no USER, so it runs as root; add `USER nodejs` (uid 1001)"
                .into(),
        ),
        Some((u, line)) => {
            let name = u.split(':').next().unwrap_or("");
            if name == "root" || name == "0" {
                push(
                    "root-user",
                    *line,
                    format!("`USER {u}` runs as root; use `USER nodejs` (uid 1001)"),
                );
            }
        }
    }
    match &healthcheck {
        None => push(
            "no-healthcheck",
            rt.line,
            "the runtime stage has no HEALTHCHECK; add one that requests `/health`".into(),
        ),
        Some((h, line)) if h.eq_ignore_ascii_case("none") => push(
            "no-healthcheck",
            *line,
            "`HEALTHCHECK NONE` disables the health check".into(),
        ),
        _ => {}
    }
    match &cmd {
        None => push(
            "service-selected-at-runtime",
            rt.line,
            "the runtime stage has no CMD; end it with `CMD [\"node\", \"dist/index.js\"]`".into(),
        ),
        Some(c) => {
            let exact = c.json_form && c.args == ["node", "dist/index.js"];
            if !exact {
                push(
                    "service-selected-at-runtime",
                    c.line,
                    format!(
                        "`CMD {}` is not `CMD [\"node\", \"dist/index.js\"]`: no arguments, scripts or shell may choose what runs",
                        c.raw.trim()
                    ),
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "FROM node:18-alpine AS base\nRUN corepack enable\nFROM base AS builder\nRUN pnpm build\nFROM node:18-alpine AS runtime\nRUN npm install --omit=dev\nUSER nodejs\nHEALTHCHECK CMD node -e \"1\"\nCMD [\"node\", \"dist/index.js\"]\n";

    fn rules(text: &str) -> Vec<(&'static str, usize)> {
        lint("Dockerfile", Path::new("Dockerfile"), text)
            .expect("parse")
            .into_iter()
            .map(|f| (f.rule, f.line))
            .collect()
    }

    #[test]
    fn the_seed_shape_passes() {
        assert_eq!(rules(GOOD), vec![]);
    }

    #[test]
    fn each_forbidden_pattern_is_named_with_its_line() {
        let cmd_args = GOOD.replace(
            "[\"node\", \"dist/index.js\"]",
            "[\"node\", \"dist/index.js\", \"student\"]",
        );
        assert_eq!(rules(&cmd_args), vec![("service-selected-at-runtime", 9)]);
        let script = GOOD.replace(
            "CMD [\"node\", \"dist/index.js\"]",
            "CMD ./start-service.sh student",
        );
        assert_eq!(rules(&script), vec![("service-selected-at-runtime", 9)]);
        let pnpm = GOOD.replace("RUN npm install --omit=dev", "RUN pnpm install --prod");
        assert_eq!(rules(&pnpm), vec![("build-tool-in-runtime", 6)]);
        let root = GOOD.replace("USER nodejs", "USER root");
        assert_eq!(rules(&root), vec![("root-user", 7)]);
        let no_user = GOOD.replace("USER nodejs\n", "");
        assert_eq!(rules(&no_user), vec![("root-user", 5)]);
        let no_hc = GOOD.replace("HEALTHCHECK CMD node -e \"1\"\n", "");
        assert_eq!(rules(&no_hc), vec![("no-healthcheck", 5)]);
        let not_last = format!("{GOOD}FROM base AS debug\nUSER nodejs\nHEALTHCHECK CMD true\nCMD [\"node\", \"dist/index.js\"]\n");
        let r = rules(&not_last);
        assert!(r.contains(&("runtime-not-last", 5)), "{r:?}");
        assert!(r.contains(&("runtime-from-build-stage", 10)), "{r:?}");
    }
}
