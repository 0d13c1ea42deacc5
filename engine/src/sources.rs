//! What a Dockerfile reads from outside itself in one build, as BuildKit evaluates it: the context
//! paths of `COPY`/`ADD` (and `RUN --mount=type=bind`) with `ARG` and `ENV` substituted, the
//! external images it reads, and its remote `ADD` sources; only in the stages the target needs
//! (BuildKit builds no other).
//!
//! Substitution follows BuildKit's rules: in a stage, `ENV` wins over `ARG`; an `ARG` takes the
//! build argument of its name, else its default, else (declared without one) the global `ARG`'s
//! value; the automatic platform `ARG`s (`TARGETARCH`, ...) have values once declared; `ENV`
//! carries into stages built `FROM` this one. A variable declared nowhere is empty, unless the
//! stage (or one it is built from) starts from an external image, whose own `ENV` the engine
//! cannot see: a context path using such a variable is an error that says so.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use crate::dockerfile::{
    expand, flag, heredoc_of_word, is_remote, parse_mount, BaseRef, Dockerfile, Lookup,
    AUTOMATIC_ARGS,
};
use crate::key::RemoteSource;
use crate::{Error, Result};

/// What one build of a Dockerfile reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Context paths and patterns, substituted, in Dockerfile order.
    pub sources: Vec<SourceRef>,
    /// External images, in Dockerfile order, deduplicated.
    pub images: Vec<ImageRead>,
    /// `ADD <url>` sources pinned by `--checksum`, sorted.
    pub remote: Vec<RemoteSource>,
    /// Why the image cannot be cached (an `ADD <url>` without `--checksum`).
    pub uncacheable: Vec<String>,
    /// The ids of the `RUN --mount=type=secret` mounts of the stages the build runs.
    pub secrets: std::collections::BTreeSet<String>,
}

/// One context source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    /// After substitution, as BuildKit reads it (relative to the context, maybe with a leading
    /// `/` or `..`, maybe a glob).
    pub path: String,
    /// As written.
    pub written: String,
    pub line: usize,
}

/// One external image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRead {
    pub reference: String,
    /// A stage's `--platform` (substituted); `None` for the build's own.
    pub platform: Option<String>,
    pub line: usize,
}

/// The platforms a build knows: the target's and the builder's (`os/arch[/variant]`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Platforms<'a> {
    pub target: Option<&'a str>,
    pub build: Option<&'a str>,
}

impl Platforms<'_> {
    /// The value of an automatic platform `ARG`, if the platform it comes from is known.
    fn automatic(&self, name: &str) -> Option<String> {
        let (p, what) = if let Some(w) = name.strip_prefix("TARGET") {
            (self.target?, w)
        } else {
            (self.build?, name.strip_prefix("BUILD")?)
        };
        let mut parts = p.split('/');
        let (os, arch, variant) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        Some(match what {
            "PLATFORM" => p.to_string(),
            "OS" => os.to_string(),
            "ARCH" => arch.to_string(),
            "VARIANT" => variant.to_string(),
            _ => return None,
        })
    }
}

/// A variable's value in a stage: known, or unknown (from an external image's `ENV`, or a
/// platform that is not known).
type Value = Option<String>;

#[derive(Debug, Clone, Default)]
struct Env {
    /// `ENV`s, inherited from the stage built upon.
    vars: BTreeMap<String, Value>,
    /// `ARG`s of this stage.
    args: BTreeMap<String, Value>,
    /// Whether every `ENV` of the stage's ancestry is known (it starts `FROM scratch`).
    known: bool,
}

impl Env {
    fn get(&self, name: &str) -> Option<&Value> {
        self.vars.get(name).or_else(|| self.args.get(name))
    }

    /// Substitutes `word`; `Ok(Err(name))` when it uses a variable whose value is unknown.
    fn expand(
        &self,
        word: &str,
        escape: char,
    ) -> std::result::Result<std::result::Result<String, String>, String> {
        let unknown: RefCell<Option<String>> = RefCell::new(None);
        let lookup = |n: &str| match self.get(n) {
            Some(Some(v)) => Lookup::Value(v.clone()),
            Some(None) => {
                unknown.borrow_mut().get_or_insert_with(|| n.to_string());
                Lookup::Unset
            }
            None if self.known => Lookup::Unset,
            None => {
                unknown.borrow_mut().get_or_insert_with(|| n.to_string());
                Lookup::Unset
            }
        };
        let out = expand(word, escape, &lookup)?;
        Ok(match unknown.into_inner() {
            Some(n) => Err(n),
            None => Ok(out),
        })
    }
}

/// Which stages a build of `target` (a stage name; the last stage when `None`) runs.
pub fn needed_stages(
    df: &Dockerfile,
    target: Option<&str>,
) -> std::result::Result<Vec<bool>, String> {
    let last = df.stages.len().saturating_sub(1);
    let t = match target {
        None => last,
        Some(name) => {
            let lower = name.to_ascii_lowercase();
            df.stages
                .iter()
                .position(|s| s.name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| format!("the target stage `{name}` is not in the Dockerfile"))?
        }
    };
    let mut needed = vec![false; df.stages.len()];
    let mut stack = vec![t];
    while let Some(s) = stack.pop() {
        if s >= needed.len() || std::mem::replace(&mut needed[s], true) {
            continue;
        }
        if let BaseRef::Stage(i) = df.base_of(s) {
            stack.push(i);
        }
        for ins in &df.stages[s].instructions {
            for r in df.references_from(ins) {
                if let Some(i) = df.stage_by_reference(&r) {
                    stack.push(i);
                }
            }
        }
    }
    Ok(needed)
}

/// What a build of `df` (already given its build arguments with
/// [`Dockerfile::with_build_args`]) reads. `path` only for error messages.
pub fn reads(
    df: &Dockerfile,
    path: &Path,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
    platforms: Platforms<'_>,
) -> Result<Reads> {
    let err = |line: usize, message: String| Error::Dockerfile {
        path: path.to_path_buf(),
        line,
        message,
    };
    let needed = needed_stages(df, target).map_err(|m| {
        err(
            df.stages.last().map_or(1, |s| s.line),
            format!("{m}\n  hint: set `target` in images.toml to one of its stage names"),
        )
    })?;
    let esc = df.escape;
    let mut out = Reads::default();
    let mut stage_env: Vec<Env> = Vec::with_capacity(df.stages.len());
    let push_image = |out: &mut Reads, reference: String, platform: Option<String>, line| {
        if !out
            .images
            .iter()
            .any(|i| i.reference == reference && i.platform == platform)
        {
            out.images.push(ImageRead {
                reference,
                platform,
                line,
            });
        }
    };
    let automatic = |word: &str| -> String {
        // `$TARGETPLATFORM`, `${BUILDARCH}` ... kept by the parser; known ones substituted here.
        let lookup = |n: &str| match platforms.automatic(n) {
            Some(v) if AUTOMATIC_ARGS.contains(&n) => Lookup::Value(v),
            _ => Lookup::Keep,
        };
        expand(word, esc, &lookup).unwrap_or_else(|_| word.to_string())
    };
    for (i, stage) in df.stages.iter().enumerate() {
        let mut env = match df.base_of(i) {
            BaseRef::Stage(b) => Env {
                vars: stage_env[b].vars.clone(),
                args: BTreeMap::new(),
                known: stage_env[b].known,
            },
            BaseRef::Scratch => Env {
                known: true,
                ..Env::default()
            },
            BaseRef::Image(_) => Env::default(),
        };
        if needed[i] {
            if let BaseRef::Image(image) = df.base_of(i) {
                let platform = stage.platform.as_deref().map(automatic);
                push_image(&mut out, automatic(image), platform, stage.line);
            }
        }
        for ins in &stage.instructions {
            match ins.keyword.as_str() {
                "ARG" => {
                    for word in &ins.args {
                        let (name, default) = match word.split_once('=') {
                            Some((n, d)) => (n.to_string(), Some(d)),
                            None => (word.clone(), None),
                        };
                        let value = if let Some(v) = build_args.get(&name) {
                            Some(v.clone())
                        } else if let Some(d) = default {
                            env.expand(d, esc)
                                .map_err(|m| err(ins.line, format!("in `ARG {word}`: {m}")))?
                                .ok()
                        } else if let Some((_, v)) =
                            df.global_args.iter().rev().find(|(n, _)| *n == name)
                        {
                            Some(v.clone().unwrap_or_default())
                        } else if AUTOMATIC_ARGS.contains(&name.as_str()) {
                            platforms.automatic(&name)
                        } else {
                            Some(String::new())
                        };
                        env.args.insert(name, value);
                    }
                }
                "ENV" => {
                    let pairs: Vec<(String, &str)> =
                        if ins.args.len() == 2 && !ins.args[0].contains('=') {
                            vec![(ins.args[0].clone(), ins.args[1].as_str())]
                        } else {
                            ins.args
                                .iter()
                                .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v)))
                                .collect()
                        };
                    // All the values of one `ENV` are substituted before any is set.
                    let mut set = Vec::new();
                    for (k, v) in pairs {
                        let value = env
                            .expand(v, esc)
                            .map_err(|m| err(ins.line, format!("in `ENV {k}`: {m}")))?
                            .ok();
                        set.push((k, value));
                    }
                    env.vars.extend(set);
                }
                "COPY" | "ADD" if needed[i] => {
                    if flag(ins, "from").is_some() {
                        for r in df.references_from(ins) {
                            if df.stage_by_reference(&r).is_none() && r != "scratch" {
                                push_image(&mut out, r, None, ins.line);
                            }
                        }
                        continue;
                    }
                    let n = ins.args.len().saturating_sub(1);
                    for word in &ins.args[..n] {
                        if heredoc_of_word(word).is_some() {
                            continue;
                        }
                        let path = match env.expand(word, esc) {
                            Err(m) => {
                                return Err(err(
                                    ins.line,
                                    format!("in `{} {word}`: {m}", ins.keyword),
                                ))
                            }
                            Ok(Err(var)) => {
                                return Err(err(ins.line, unknown_var(&ins.keyword, word, &var)))
                            }
                            Ok(Ok(p)) => p,
                        };
                        if is_remote(&path) {
                            if ins.keyword == "COPY" {
                                return Err(err(
                                    ins.line,
                                    format!("`COPY {word}`: a source of `COPY` cannot be a URL\n  hint: use `ADD --checksum=sha256:<digest> {word} ...`"),
                                ));
                            }
                            match flag(ins, "checksum") {
                                Some(Some(c)) => {
                                    let checksum = match env.expand(c, esc) {
                                        Ok(Ok(c)) => c,
                                        _ => c.to_string(),
                                    };
                                    out.remote.push(RemoteSource {
                                        url: path,
                                        checksum,
                                    });
                                }
                                _ => out.uncacheable.push(format!(
                                    "`ADD {word}` (line {}) is not pinned by `--checksum`: what it downloads is not known before the build",
                                    ins.line
                                )),
                            }
                            continue;
                        }
                        out.sources.push(SourceRef {
                            path,
                            written: word.clone(),
                            line: ins.line,
                        });
                    }
                }
                "RUN" if needed[i] => {
                    for (name, value) in &ins.flags {
                        if name != "mount" {
                            continue;
                        }
                        let raw = value.as_deref().unwrap_or("");
                        let value = match env.expand(raw, esc) {
                            Ok(Ok(v)) => v,
                            Ok(Err(var)) => {
                                return Err(err(ins.line, unknown_var("RUN --mount", raw, &var)))
                            }
                            Err(m) => {
                                return Err(err(ins.line, format!("in `--mount={raw}`: {m}")))
                            }
                        };
                        let mount = parse_mount(&value);
                        match (&mount.from, mount.kind.as_str()) {
                            (None, "bind") => out.sources.push(SourceRef {
                                path: mount.source.clone().unwrap_or_else(|| ".".to_string()),
                                written: raw.to_string(),
                                line: ins.line,
                            }),
                            (_, "secret") => {
                                if let Some(id) = mount.secret_id() {
                                    out.secrets.insert(id);
                                }
                            }
                            (Some(from), _)
                                if df.stage_by_reference(from).is_none() && from != "scratch" =>
                            {
                                push_image(&mut out, from.clone(), None, ins.line);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        stage_env.push(env);
    }
    out.remote.sort();
    out.remote.dedup();
    Ok(out)
}

fn unknown_var(keyword: &str, word: &str, var: &str) -> String {
    format!(
        "`{keyword} {word}` uses `${var}`, which no `ARG` or `ENV` of this stage declares: its value would come from the base image's environment, which the engine does not read\n  hint: declare it in the stage, e.g. `ARG {var}=<value>`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn df(text: &str) -> Dockerfile {
        Dockerfile::parse(Path::new("Dockerfile"), text).expect("parse")
    }

    fn reads_of(text: &str, args: &[(&str, &str)], target: Option<&str>) -> Result<Reads> {
        let args: BTreeMap<String, String> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = df(text).with_build_args(Path::new("Dockerfile"), &args)?;
        reads(
            &d,
            Path::new("Dockerfile"),
            &args,
            target,
            Platforms {
                target: Some("linux/arm64"),
                build: Some("linux/amd64"),
            },
        )
    }

    fn paths(r: &Reads) -> Vec<&str> {
        r.sources.iter().map(|s| s.path.as_str()).collect()
    }

    #[test]
    fn args_and_envs_are_substituted_in_sources_as_buildkit_does() {
        let text = "ARG APP=api\nARG G=global\nFROM scratch\nARG APP\nARG DIR=services/${APP}\nENV SUB=src\nARG SUB=ignored\nARG G\nARG TARGETARCH\nCOPY $DIR/${SUB} ${G}/x-$TARGETARCH /out/\nCOPY [\"${DIR}/my file\", \"/o/\"]\nCOPY ${UNSET:-fallback}/a $NOTHING/b /o/\n";
        let r = reads_of(text, &[], None).expect("reads");
        assert_eq!(
            paths(&r),
            vec![
                "services/api/src",
                "global/x-arm64",
                "services/api/my file",
                "fallback/a",
                "/b"
            ]
        );
        // A build argument wins over defaults, for the global `ARG` and in the stage.
        let r = reads_of(text, &[("APP", "web"), ("G", "g2")], None).expect("reads");
        assert_eq!(paths(&r)[0], "services/web/src");
        assert_eq!(paths(&r)[1], "g2/x-arm64");
    }

    #[test]
    fn a_variable_from_an_external_base_image_is_an_error() {
        let e = reads_of("FROM node:18-alpine\nCOPY $NODE_VERSION/x /\n", &[], None)
            .expect_err("unknown");
        let m = e.to_string();
        assert!(m.contains("line 2") && m.contains("$NODE_VERSION"), "{m}");
        assert!(m.contains("hint: declare it"), "{m}");
        // From scratch, an undeclared variable is empty, as in BuildKit.
        let r = reads_of("FROM scratch\nCOPY $NOPE/x /\n", &[], None).expect("reads");
        assert_eq!(paths(&r), vec!["/x"]);
        // `ENV PATH=$PATH:/x` is fine until a source uses it.
        let r = reads_of(
            "FROM node:18-alpine\nENV PATH=$PATH:/x D=dir\nCOPY $D/a /\n",
            &[],
            None,
        )
        .expect("reads");
        assert_eq!(paths(&r), vec!["dir/a"]);
        assert!(reads_of("FROM node:18-alpine\nENV P=$PATH\nCOPY $P/a /\n", &[], None).is_err());
    }

    /// The ids of secret mounts (by `id`, else the base name of `target`, as BuildKit names
    /// them), in the stages the build runs only, `ARG`s substituted.
    #[test]
    fn secret_mounts_are_read_in_the_stages_the_build_runs() {
        let text = "FROM node:18-alpine AS deps\nARG ID=npmrc\nRUN --mount=type=secret,id=$ID,target=/root/.npmrc --mount=type=secret,target=/run/secrets/netrc --mount=type=cache,target=/c true\nFROM deps AS unused\nRUN --mount=type=secret,id=other true\nFROM deps AS runtime\nRUN --mount=type=secret,id=gh,required=true true\n";
        let r = reads_of(text, &[], Some("runtime")).expect("reads");
        let ids: Vec<&str> = r.secrets.iter().map(String::as_str).collect();
        assert_eq!(ids, ["gh", "netrc", "npmrc"]);
        assert!(paths(&r).is_empty(), "a secret mount reads no context path");
    }

    #[test]
    fn only_the_stages_the_target_needs() {
        let text = "FROM node:18-alpine AS base\nCOPY a /a\nFROM base AS test\nCOPY tests /t\nFROM python:3 AS other\nCOPY other /o\nFROM base AS runtime\nCOPY --from=other /o /o\nCOPY --from=redis:7 /x /x\nRUN --mount=type=bind,source=mnt,target=/m --mount=type=cache,target=/c true\n";
        let r = reads_of(text, &[], None).expect("reads");
        assert_eq!(paths(&r), vec!["a", "other", "mnt"]);
        let images: Vec<&str> = r.images.iter().map(|i| i.reference.as_str()).collect();
        assert_eq!(images, vec!["node:18-alpine", "python:3", "redis:7"]);
        let r = reads_of(text, &[], Some("test")).expect("reads");
        assert_eq!(paths(&r), vec!["a", "tests"]);
        assert!(reads_of(text, &[], Some("nope")).is_err());
    }

    #[test]
    fn remote_sources_are_pinned_or_make_the_image_uncacheable() {
        let r = reads_of(
            "FROM scratch\nADD --checksum=sha256:abc https://example.test/a.tgz /a\nADD https://example.test/b /b\nADD local.tgz /l\n",
            &[],
            None,
        )
        .expect("reads");
        assert_eq!(
            r.remote,
            vec![RemoteSource {
                url: "https://example.test/a.tgz".into(),
                checksum: "sha256:abc".into()
            }]
        );
        assert_eq!(r.uncacheable.len(), 1);
        assert!(r.uncacheable[0].contains("line 3"), "{:?}", r.uncacheable);
        assert_eq!(paths(&r), vec!["local.tgz"]);
        assert!(reads_of("FROM scratch\nCOPY https://x.test/a /a\n", &[], None).is_err());
    }

    #[test]
    fn stage_platforms_take_the_automatic_args() {
        let r = reads_of(
            "FROM --platform=$BUILDPLATFORM golang:1 AS build\nFROM alpine:3\nCOPY --from=build /x /x\n",
            &[],
            None,
        )
        .expect("reads");
        assert_eq!(r.images[0].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(r.images[1].platform, None);
    }
}
