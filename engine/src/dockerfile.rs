//! A Dockerfile parser: stages, `FROM`, `COPY`/`ADD` sources, `ARG`s, with line numbers.
//!
//! It reads a Dockerfile the way BuildKit's parser does (`frontend/dockerfile/parser`): parser
//! directives at the top (`# escape=` and `# syntax=`; the first other line ends them), comment
//! lines (`#` after optional whitespace) skipped, also inside a continued instruction, the escape
//! character at the end of a line continuing it (whitespace-only lines inside a continuation are
//! skipped), case-insensitive keywords, builder flags (`--from=...`) before the arguments, JSON
//! (exec) form where an instruction allows it, and heredocs (`<<EOF`, `<<-EOF`, `<<"EOF"`) for
//! `RUN`, `COPY` and `ADD`, whose bodies are skipped. `ARG`s before the first `FROM` are global
//! and are substituted in `FROM` (`$VAR`, `${VAR}`, `${VAR:-default}`, ...).
//!
//! Where Docker would only fail later (at build time), some mistakes are errors here: an unknown
//! instruction, an unterminated JSON array (Docker silently runs it as shell form), `COPY`/`ADD`
//! with fewer than two arguments.

use std::path::Path;

use crate::{Error, Result};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub stages: Vec<Stage>,
    /// `ARG`s before the first `FROM`, in order: name and default (quotes removed, earlier global
    /// args substituted).
    pub global_args: Vec<(String, Option<String>)>,
    /// The same `ARG`s as written: name, default word, line (for [`Dockerfile::with_build_args`]).
    pub global_arg_words: Vec<(String, Option<String>, usize)>,
    /// The escape character (`# escape=`).
    pub escape: char,
}

/// One build stage: a `FROM` and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// `AS name`, lower-cased (Docker's stage names are case-insensitive).
    pub name: Option<String>,
    /// The `FROM` reference after global `ARG` substitution.
    pub base: String,
    /// `--platform`, after global `ARG` substitution (`$BUILDPLATFORM` and the like are kept).
    pub platform: Option<String>,
    /// The `FROM` image word and `--platform` value as written.
    pub from_word: String,
    pub platform_word: Option<String>,
    /// The line of the `FROM`.
    pub line: usize,
    pub instructions: Vec<Instruction>,
}

/// One instruction (other than `FROM`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper-case.
    pub keyword: String,
    /// Builder flags, e.g. `("from", Some("builder"))`, `("link", None)`.
    pub flags: Vec<(String, Option<String>)>,
    /// JSON-form elements, or shell-form words split on whitespace (quote-aware for `ARG`, `ENV`
    /// and `LABEL`); for `RUN`, `CMD`, `ENTRYPOINT`, `SHELL` and `ONBUILD` in shell form one element
    /// holding the whole command; for `HEALTHCHECK`, `CMD` or `NONE` then the command likewise.
    pub args: Vec<String>,
    pub json_form: bool,
    /// The text after the keyword (flags included), continuation lines joined.
    pub raw: String,
    /// 1-based line where the instruction starts.
    pub line: usize,
}

/// What a stage is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseRef<'a> {
    /// The index of an earlier stage.
    Stage(usize),
    /// An external image reference.
    Image(&'a str),
    Scratch,
}

impl Dockerfile {
    /// Parses the text of a Dockerfile. `path` only for error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Dockerfile> {
        let err = |line: usize, message: String| Error::Dockerfile {
            path: path.to_path_buf(),
            line,
            message,
        };
        let (raws, last_line) = logical_instructions(text).map_err(|(l, m)| err(l, m))?;
        if raws.is_empty() {
            return Err(err(
                last_line.max(1),
                "the file has no instructions; a Dockerfile needs at least a `FROM`".into(),
            ));
        }

        let mut global_args: Vec<(String, Option<String>)> = Vec::new();
        let mut global_arg_words: Vec<(String, Option<String>, usize)> = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        let escape = raws.first().map_or('\\', |r| r.escape);
        for raw in raws {
            let instruction = build_instruction(&raw).map_err(|m| err(raw.line, m))?;
            if instruction.keyword == "FROM" {
                let stage = from_stage(&instruction, &global_args, raw.escape)
                    .map_err(|m| err(raw.line, m))?;
                if let Some(name) = &stage.name {
                    if let Some(other) = stages.iter().find(|s| s.name.as_ref() == Some(name)) {
                        return Err(err(
                            raw.line,
                            format!(
                                "the stage name `{name}` is already used by the stage at line {}",
                                other.line
                            ),
                        ));
                    }
                }
                stages.push(stage);
                continue;
            }
            match stages.last_mut() {
                Some(stage) => stage.instructions.push(instruction),
                None if instruction.keyword == "ARG" => {
                    for word in &instruction.args {
                        let (name, value) = match word.split_once('=') {
                            Some((name, value)) => {
                                let lookup = |n: &str| lookup_global(&global_args, n);
                                global_arg_words.push((
                                    name.to_string(),
                                    Some(value.to_string()),
                                    raw.line,
                                ));
                                let value = expand(value, raw.escape, &lookup)
                                    .map_err(|m| err(raw.line, format!("in `ARG {word}`: {m}")))?;
                                (name.to_string(), Some(value))
                            }
                            None => {
                                global_arg_words.push((word.clone(), None, raw.line));
                                (word.clone(), None)
                            }
                        };
                        global_args.push((name, value));
                    }
                }
                None => {
                    return Err(err(
                        raw.line,
                        format!(
                            "`{}` comes before the first `FROM`; only `ARG` may",
                            instruction.keyword
                        ),
                    ))
                }
            }
        }
        if stages.is_empty() {
            return Err(err(
                last_line.max(1),
                "there is no `FROM` instruction; a Dockerfile needs at least one stage".into(),
            ));
        }
        Ok(Dockerfile {
            stages,
            global_args,
            global_arg_words,
            escape,
        })
    }

    /// This Dockerfile as a build with `args` (`--build-arg`s) sees it: each global `ARG` a build
    /// argument names takes its value, and every `FROM` is substituted again. `path` only for
    /// error messages.
    pub fn with_build_args(
        &self,
        path: &Path,
        args: &std::collections::BTreeMap<String, String>,
    ) -> Result<Dockerfile> {
        let err = |line: usize, message: String| Error::Dockerfile {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut globals: Vec<(String, Option<String>)> = Vec::new();
        for (name, word, line) in &self.global_arg_words {
            let value = match (args.get(name), word) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(w)) => {
                    let lookup = |n: &str| lookup_global(&globals, n);
                    Some(
                        expand(w, self.escape, &lookup)
                            .map_err(|m| err(*line, format!("in `ARG {name}={w}`: {m}")))?,
                    )
                }
                (None, None) => None,
            };
            globals.push((name.clone(), value));
        }
        let mut df = self.clone();
        for stage in &mut df.stages {
            let lookup = |n: &str| lookup_global(&globals, n);
            let base = expand(&stage.from_word, self.escape, &lookup)
                .map_err(|m| err(stage.line, format!("in `FROM {}`: {m}", stage.from_word)))?;
            if base.is_empty() {
                return Err(err(
                    stage.line,
                    format!(
                        "the base image `{}` is empty after substituting the global `ARG`s",
                        stage.from_word
                    ),
                ));
            }
            stage.base = base;
            if let Some(p) = &stage.platform_word {
                stage.platform = Some(
                    expand(p, self.escape, &lookup)
                        .map_err(|m| err(stage.line, format!("in `--platform={p}`: {m}")))?,
                );
            }
        }
        df.global_args = globals;
        Ok(df)
    }

    /// Resolves a stage's base: an earlier stage by name (case-insensitive), `scratch`, or an
    /// external image. (Docker's `FROM` resolves only names of earlier stages, not indexes: `FROM 0`
    /// names an image.)
    pub fn base_of(&self, stage: usize) -> BaseRef<'_> {
        let Some(s) = self.stages.get(stage) else {
            return BaseRef::Scratch;
        };
        let wanted = s.base.to_ascii_lowercase();
        if let Some(i) = self.stages[..stage]
            .iter()
            .rposition(|earlier| earlier.name.as_deref() == Some(wanted.as_str()))
        {
            return BaseRef::Stage(i);
        }
        if s.base == "scratch" {
            return BaseRef::Scratch;
        }
        BaseRef::Image(&s.base)
    }

    /// External images the build starts FROM (or `COPY --from=<image>`, or `RUN
    /// --mount=from=<image>`, naming an image, not a stage), deduplicated, in order, with the line.
    pub fn external_images(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        let mut push = |image: &str, line: usize| {
            if !image.is_empty() && !out.iter().any(|(i, _)| i == image) {
                out.push((image.to_string(), line));
            }
        };
        for (i, stage) in self.stages.iter().enumerate() {
            if let BaseRef::Image(image) = self.base_of(i) {
                push(image, stage.line);
            }
            for ins in &stage.instructions {
                for from in self.references_from(ins) {
                    if self.stage_by_reference(&from).is_none() && from != "scratch" {
                        push(&from, ins.line);
                    }
                }
            }
        }
        out
    }

    /// Context paths read by `COPY`/`ADD` without `--from` (sources only; URLs, git references
    /// and heredoc sources excluded), as written (may contain globs like
    /// `services/*/package.json`, or `$VAR`s, which are not expanded), with the line. Also the
    /// `source` of each `RUN --mount=type=bind` without `from` (`.`, the whole context, when it has
    /// none), since that reads the context too.
    pub fn context_sources(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for stage in &self.stages {
            for ins in &stage.instructions {
                match ins.keyword.as_str() {
                    "COPY" | "ADD" => {
                        if flag(ins, "from").is_some() || ins.args.len() < 2 {
                            continue;
                        }
                        for src in &ins.args[..ins.args.len() - 1] {
                            if is_remote(src) || heredoc_of_word(src).is_some() {
                                continue;
                            }
                            out.push((src.clone(), ins.line));
                        }
                    }
                    "RUN" => {
                        for (name, value) in &ins.flags {
                            if name != "mount" {
                                continue;
                            }
                            let mount = parse_mount(value.as_deref().unwrap_or(""));
                            if mount.kind == "bind" && mount.from.is_none() {
                                let source = mount.source.unwrap_or_else(|| ".".to_string());
                                out.push((source, ins.line));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// The `--from` of a `COPY`/`ADD` and the `from=` of each `RUN --mount`, global args
    /// substituted.
    pub(crate) fn references_from(&self, ins: &Instruction) -> Vec<String> {
        let mut refs = Vec::new();
        let lookup = |n: &str| lookup_global(&self.global_args, n);
        let subst = |v: &str| expand(v, '\\', &lookup).unwrap_or_else(|_| v.to_string());
        match ins.keyword.as_str() {
            "COPY" | "ADD" => {
                if let Some(Some(from)) = flag(ins, "from") {
                    refs.push(subst(from));
                }
            }
            "RUN" => {
                for (name, value) in &ins.flags {
                    if name == "mount" {
                        if let Some(from) = parse_mount(value.as_deref().unwrap_or("")).from {
                            refs.push(subst(&from));
                        }
                    }
                }
            }
            _ => {}
        }
        refs
    }

    /// A stage named by `--from`: by name (case-insensitive) or by index.
    pub(crate) fn stage_by_reference(&self, reference: &str) -> Option<usize> {
        if let Ok(index) = reference.parse::<usize>() {
            return (index < self.stages.len()).then_some(index);
        }
        let wanted = reference.to_ascii_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(wanted.as_str()))
    }
}

pub(crate) fn flag<'a>(ins: &'a Instruction, name: &str) -> Option<Option<&'a str>> {
    ins.flags
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_deref())
}

/// A URL (`https://...`, `git://...`) or a git SSH reference (`git@host:repo`): not in the context.
pub(crate) fn is_remote(src: &str) -> bool {
    src.contains("://") || src.starts_with("git@")
}

// ---------------------------------------------------------------------------------------------
// Lines to logical instructions.

/// One instruction's text, continuation lines joined, heredoc bodies skipped.
#[derive(Debug)]
struct RawInstruction {
    text: String,
    line: usize,
    escape: char,
}

/// BuildKit's `parser.Parse`: the logical instructions, and the number of lines.
fn logical_instructions(
    text: &str,
) -> std::result::Result<(Vec<RawInstruction>, usize), (usize, String)> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    if let Some(first) = lines.first_mut() {
        *first = first.strip_prefix('\u{feff}').unwrap_or(first);
    }
    let total = lines.len();

    let mut directives = Directives {
        done: false,
        seen: Vec::new(),
        escape: '\\',
    };
    let mut out = Vec::new();
    let mut idx = 0;
    while idx < lines.len() {
        let line_no = idx + 1;
        let raw = lines[idx].trim_end_matches(['\r', '\n']);
        idx += 1;
        let stripped = raw.trim_start();
        directives.line(stripped).map_err(|m| (line_no, m))?;
        let content = if stripped.starts_with('#') {
            ""
        } else {
            stripped
        };
        let (first, mut end) = trim_continuation(content, directives.escape);
        if end && first.is_empty() {
            continue;
        }
        let start_line = line_no;
        let mut joined = first.to_string();
        while !end && idx < lines.len() {
            let next = lines[idx].trim_end_matches(['\r', '\n']);
            idx += 1;
            let next_trimmed = next.trim_start();
            if next_trimmed.starts_with('#') || next_trimmed.is_empty() {
                continue; // comment lines and empty lines inside a continuation
            }
            let (part, e) = trim_continuation(next, directives.escape);
            joined.push_str(part);
            end = e;
        }

        // Heredocs: only for RUN, COPY, ADD (or ONBUILD of one of them) in shell form.
        if joined.contains("<<") && can_contain_heredoc(&joined) {
            for heredoc in heredocs_in_line(&joined) {
                let mut terminated = false;
                while idx < lines.len() {
                    let body = lines[idx].trim_end_matches(['\r', '\n']);
                    idx += 1;
                    let candidate = if heredoc.chomp {
                        body.trim_start_matches('\t')
                    } else {
                        body
                    };
                    if candidate == heredoc.name {
                        terminated = true;
                        break;
                    }
                }
                if !terminated {
                    return Err((
                        start_line,
                        format!(
                            "the heredoc `<<{}` is not terminated (no line `{}` follows)",
                            heredoc.name, heredoc.name
                        ),
                    ));
                }
            }
        }
        if joined.trim().is_empty() {
            continue; // only continuation characters
        }
        out.push(RawInstruction {
            text: joined,
            line: start_line,
            escape: directives.escape,
        });
    }
    Ok((out, total))
}

/// Parser directives (`# escape=`, `# syntax=`, `# check=`): only before anything else.
struct Directives {
    done: bool,
    seen: Vec<String>,
    escape: char,
}

impl Directives {
    /// BuildKit's `DirectiveParser.ParseLine` on a line (leading whitespace removed).
    fn line(&mut self, line: &str) -> std::result::Result<(), String> {
        if self.done {
            return Ok(());
        }
        // ^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$
        let is_space = |c: char| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ');
        let parsed = line.strip_prefix('#').and_then(|rest| {
            let rest = rest.trim_start_matches(is_space);
            let name_len = rest
                .char_indices()
                .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
                .map_or(rest.len(), |(i, _)| i);
            if name_len == 0 {
                return None;
            }
            let (name, rest) = rest.split_at(name_len);
            let value = rest
                .trim_start_matches(is_space)
                .strip_prefix('=')?
                .trim_matches(is_space);
            (!value.is_empty()).then(|| (name.to_ascii_lowercase(), value.to_string()))
        });
        let Some((name, value)) = parsed else {
            self.done = true;
            return Ok(());
        };
        if !matches!(name.as_str(), "escape" | "syntax" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&name) {
            return Err(format!("only one `{name}` parser directive can be used"));
        }
        self.seen.push(name.clone());
        if name == "escape" {
            self.escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(format!(
                        "invalid escape directive `{value}`; it must be `\\` or a backtick"
                    ))
                }
            };
        }
        Ok(())
    }
}

/// BuildKit's line-continuation rule: the escape character, then only spaces and tabs, ends the
/// line, unless it is itself escaped. Returns the line without it, and whether the line is the
/// end of the instruction.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape) {
        if before.is_empty() || !before.ends_with(escape) {
            return (before, false);
        }
    }
    (line, true)
}

/// Whether the instruction may carry heredocs: `RUN`, `COPY`, `ADD`, or `ONBUILD` of one, not
/// in JSON form.
fn can_contain_heredoc(line: &str) -> bool {
    let split = split_command(line);
    let (keyword, args) = if split.keyword.eq_ignore_ascii_case("ONBUILD") {
        let inner = split_command(&split.args);
        (inner.keyword, inner.args)
    } else {
        (split.keyword, split.args)
    };
    if !matches!(
        keyword.to_ascii_uppercase().as_str(),
        "RUN" | "COPY" | "ADD"
    ) {
        return false;
    }
    !matches!(parse_json_array(&args), JsonArray::Strings(_))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heredoc {
    name: String,
    chomp: bool,
}

/// BuildKit's `heredocsFromLine`: the words of the line (quotes kept) that are heredocs.
fn heredocs_in_line(line: &str) -> Vec<Heredoc> {
    shell_words_raw(line)
        .iter()
        .filter_map(|w| heredoc_of_word(w))
        .collect()
}

/// BuildKit's `ParseHeredoc`: `^(\d*)<<(-?)([^<]*)$`, the rest one shell word (quotes removed).
pub(crate) fn heredoc_of_word(word: &str) -> Option<Heredoc> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let words = shell_words_unquoted(rest)?;
    match words.as_slice() {
        [name] => Some(Heredoc {
            name: name.clone(),
            chomp,
        }),
        _ => None,
    }
}

/// Splits on whitespace outside quotes, keeping quotes and backslash escapes as written.
fn shell_words_raw(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            '\'' | '"' => {
                in_word = true;
                word.push(c);
                while let Some(n) = chars.next() {
                    word.push(n);
                    if n == c {
                        break;
                    }
                    // In double quotes a backslash escapes the next character (kept as written).
                    if c == '"' && n == '\\' {
                        if let Some(e) = chars.next() {
                            word.push(e);
                        }
                    }
                }
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Shell words with quotes and backslash escapes removed (no variable expansion); `None` for an
/// unterminated quote.
fn shell_words_unquoted(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        n => word.push(n),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '$' | '\\')) => {
                            if let Some(n) = chars.next() {
                                word.push(n);
                            }
                        }
                        n => word.push(n),
                    }
                }
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

// ---------------------------------------------------------------------------------------------
// One instruction.

struct SplitCommand {
    keyword: String,
    flags: Vec<String>,
    args: String,
}

/// BuildKit's `splitCommand`: the keyword, the builder flags, the rest.
fn split_command(line: &str) -> SplitCommand {
    let is_ws = |c: char| matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ');
    let line = line.trim();
    let (keyword, rest) = match line.find(is_ws) {
        Some(i) => (&line[..i], line[i..].trim_start_matches(is_ws)),
        None => (line, ""),
    };
    let (args, flags) = extract_builder_flags(rest);
    SplitCommand {
        keyword: keyword.to_string(),
        flags,
        args: args.trim().to_string(),
    }
}

/// BuildKit's `extractBuilderFlags`: the leading `--name[=value]` words (quotes and backslashes
/// processed), and the rest of the line. `--` alone ends the flags.
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut k = 0;
    loop {
        let at_end = k >= chars.len();
        let (pos, ch) = if at_end { (line.len(), '\0') } else { chars[k] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                k += 1;
                continue;
            }
            let next_is_dash = chars.get(k + 1).is_some_and(|&(_, c)| c == '-');
            if ch != '-' || !next_is_dash {
                return (line[pos..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[pos..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                k += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                k += 1;
                continue;
            }
            if ch == '\\' {
                if k + 1 == chars.len() {
                    k += 1;
                    continue;
                }
                k += 1;
                word.push(chars[k].1);
                k += 1;
                continue;
            }
            word.push(ch);
            k += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            k += 1;
            continue;
        }
        if ch == '\\' {
            if k + 1 == chars.len() {
                phase = Phase::Word;
                k += 1;
                continue;
            }
            k += 1;
            word.push(chars[k].1);
            k += 1;
            continue;
        }
        word.push(ch);
        k += 1;
    }
    (String::new(), words)
}

enum JsonArray {
    /// Not JSON (shell form).
    NotJson,
    Strings(Vec<String>),
    /// A JSON array with an element that is not a string.
    NotStrings,
    /// Starts like a JSON array but the text ends before it is closed.
    Unterminated,
}

/// BuildKit's `parseJSON`: the first JSON value of the text (anything after it is ignored, as
/// Go's decoder does), which must be an array of strings.
fn parse_json_array(args: &str) -> JsonArray {
    let t = args.trim_start();
    if !t.starts_with('[') {
        return JsonArray::NotJson;
    }
    let mut de = serde_json::Deserializer::from_str(t);
    match <Vec<serde_json::Value> as serde::Deserialize>::deserialize(&mut de) {
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return JsonArray::NotStrings,
                }
            }
            JsonArray::Strings(out)
        }
        Err(e) if e.is_eof() => JsonArray::Unterminated,
        Err(_) => JsonArray::NotJson,
    }
}

const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

fn build_instruction(raw: &RawInstruction) -> std::result::Result<Instruction, String> {
    let split = split_command(&raw.text);
    let keyword = split.keyword.to_ascii_uppercase();
    if !KEYWORDS.contains(&keyword.as_str()) {
        return Err(format!("unknown instruction `{}`", split.keyword));
    }
    let flags = split
        .flags
        .iter()
        .map(|f| {
            let f = f.strip_prefix("--").unwrap_or(f);
            match f.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (f.to_string(), None),
            }
        })
        .collect();
    let raw_text = {
        let t = raw.text.trim();
        t[split.keyword.len()..].trim().to_string()
    };
    let rest = split.args.as_str();
    let (args, json_form) = instruction_args(&keyword, rest, raw.escape)?;
    if matches!(keyword.as_str(), "COPY" | "ADD") {
        if args.len() < 2 {
            return Err(format!(
                "`{keyword}` needs at least a source and a destination"
            ));
        }
        if let Some(dest) = args.last() {
            if heredoc_of_word(dest).is_some() {
                return Err(format!(
                    "`{keyword}` cannot have a heredoc as its destination"
                ));
            }
        }
    }
    Ok(Instruction {
        keyword,
        flags,
        args,
        json_form,
        raw: raw_text,
        line: raw.line,
    })
}

/// The arguments of an instruction, per BuildKit's line parser for it.
fn instruction_args(
    keyword: &str,
    rest: &str,
    escape: char,
) -> std::result::Result<(Vec<String>, bool), String> {
    let maybe_json = |whole_command: bool| -> std::result::Result<(Vec<String>, bool), String> {
        match parse_json_array(rest) {
            JsonArray::Strings(v) => Ok((v, true)),
            JsonArray::NotStrings => Err(format!(
                "the JSON array of `{keyword}` must hold only strings"
            )),
            JsonArray::Unterminated => Err(format!(
                "the JSON array of `{keyword}` is not terminated (a `]` is missing)"
            )),
            JsonArray::NotJson if rest.is_empty() => Ok((Vec::new(), false)),
            JsonArray::NotJson if whole_command => Ok((vec![rest.to_string()], false)),
            JsonArray::NotJson => Ok((whitespace_words(rest), false)),
        }
    };
    match keyword {
        "RUN" | "CMD" | "ENTRYPOINT" | "SHELL" => maybe_json(true),
        "COPY" | "ADD" | "VOLUME" => maybe_json(false),
        "ARG" | "ENV" | "LABEL" => {
            let words = parse_words(rest, escape);
            if keyword != "ARG" && words.first().is_some_and(|w| !w.contains('=')) {
                // The old `ENV key value with spaces` form.
                let key = &words[0];
                let value = rest
                    .trim_start()
                    .get(key.len()..)
                    .unwrap_or("")
                    .trim()
                    .to_string();
                return Ok((vec![key.clone(), value], false));
            }
            Ok((words, false))
        }
        "HEALTHCHECK" => {
            let t = rest.trim_start();
            let end = t.find(char::is_whitespace).unwrap_or(t.len());
            let (kind, command) = (&t[..end], t[end..].trim());
            if kind.is_empty() {
                return Ok((Vec::new(), false));
            }
            let mut args = vec![kind.to_ascii_uppercase()];
            match parse_json_array(command) {
                JsonArray::Strings(v) => {
                    args.extend(v);
                    return Ok((args, true));
                }
                JsonArray::NotStrings => {
                    return Err("the JSON array of `HEALTHCHECK` must hold only strings".into())
                }
                JsonArray::Unterminated => {
                    return Err(
                        "the JSON array of `HEALTHCHECK` is not terminated (a `]` is missing)"
                            .into(),
                    )
                }
                JsonArray::NotJson => {
                    if !command.is_empty() {
                        args.push(command.to_string());
                    }
                }
            }
            Ok((args, false))
        }
        "MAINTAINER" | "STOPSIGNAL" | "USER" | "WORKDIR" | "ONBUILD" => {
            if rest.is_empty() {
                Ok((Vec::new(), false))
            } else {
                Ok((vec![rest.to_string()], false))
            }
        }
        _ => Ok((whitespace_words(rest), false)),
    }
}

/// BuildKit's `reWhitespace` split: `[\t\v\f\r ]+`.
fn whitespace_words(s: &str) -> Vec<String> {
    s.split(['\t', '\x0b', '\x0c', '\r', ' '])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// BuildKit's `parseWords`: whitespace-separated words, quotes kept, the escape character keeping
/// the next character in the word.
fn parse_words(s: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut k = 0;
    while k < chars.len() {
        let ch = chars[k];
        k += 1;
        match quote {
            None => {
                if ch.is_whitespace() {
                    if in_word && (blank_ok || !word.is_empty()) {
                        words.push(std::mem::take(&mut word));
                    }
                    in_word = false;
                    blank_ok = false;
                    continue;
                }
                in_word = true;
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if k == chars.len() {
                        continue;
                    }
                    word.push(ch);
                    word.push(chars[k]);
                    k += 1;
                    continue;
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                if ch == escape && q != '\'' {
                    if k == chars.len() {
                        quote = None;
                        continue;
                    }
                    word.push(ch);
                    word.push(chars[k]);
                    k += 1;
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// A `FROM` instruction as a stage.
fn from_stage(
    ins: &Instruction,
    global_args: &[(String, Option<String>)],
    escape: char,
) -> std::result::Result<Stage, String> {
    let lookup = |n: &str| lookup_global(global_args, n);
    let (image, name) = match ins.args.as_slice() {
        [] => return Err("`FROM` needs an image (or `scratch`, or a stage name)".into()),
        [image] => (image, None),
        [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => (image, Some(name)),
        _ => {
            return Err(format!(
                "`FROM {}` is not `FROM image` or `FROM image AS name`",
                ins.args.join(" ")
            ))
        }
    };
    let base = expand(image, escape, &lookup).map_err(|m| format!("in `FROM {image}`: {m}"))?;
    if base.is_empty() {
        return Err(format!(
            "the base image `{image}` is empty after substituting the global `ARG`s"
        ));
    }
    let name = match name {
        Some(name) => {
            let lower = name.to_ascii_lowercase();
            let mut chars = lower.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if !valid {
                return Err(format!(
                    "invalid stage name `{name}`: it must start with a letter and hold only letters, digits, `-`, `_` and `.`"
                ));
            }
            Some(lower)
        }
        None => None,
    };
    let platform = match flag(ins, "platform") {
        Some(Some(p)) => {
            Some(expand(p, escape, &lookup).map_err(|m| format!("in `--platform={p}`: {m}"))?)
        }
        Some(None) => return Err("`--platform` needs a value".into()),
        None => None,
    };
    Ok(Stage {
        name,
        base,
        platform,
        from_word: image.clone(),
        platform_word: match flag(ins, "platform") {
            Some(Some(p)) => Some(p.to_string()),
            _ => None,
        },
        line: ins.line,
        instructions: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// Variable substitution (BuildKit's shell lexer, for one word).

/// The value of a variable in `FROM`.
pub(crate) enum Lookup {
    Value(String),
    /// Declared without a value, or not declared: empty.
    Unset,
    /// Known only at build time (the automatic platform `ARG`s): kept as written.
    Keep,
}

/// Args BuildKit defines by itself in the global scope; their values depend on the build.
pub(crate) const AUTOMATIC_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

pub(crate) fn lookup_global(global_args: &[(String, Option<String>)], name: &str) -> Lookup {
    match global_args.iter().rev().find(|(n, _)| n == name) {
        Some((_, Some(v))) => Lookup::Value(v.clone()),
        Some((_, None)) => Lookup::Unset,
        None if AUTOMATIC_ARGS.contains(&name) => Lookup::Keep,
        None => Lookup::Unset,
    }
}

/// Substitutes variables and removes quotes in one word, like BuildKit's `ProcessWord`.
pub(crate) fn expand(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Lookup,
) -> std::result::Result<String, String> {
    let chars: Vec<char> = word.chars().collect();
    let mut lexer = Lexer {
        chars: &chars,
        i: 0,
        escape,
        lookup,
    };
    lexer.until(None)
}

struct Lexer<'a> {
    chars: &'a [char],
    i: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Lookup,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    /// Processes up to `stop` (consumed) or the end.
    fn until(&mut self, stop: Option<char>) -> std::result::Result<String, String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.i += 1;
                return Ok(out);
            }
            match c {
                '\'' => {
                    self.i += 1;
                    loop {
                        match self.peek() {
                            None => return Err("a single quote is not closed".into()),
                            Some('\'') => {
                                self.i += 1;
                                break;
                            }
                            Some(ch) => {
                                out.push(ch);
                                self.i += 1;
                            }
                        }
                    }
                }
                '"' => {
                    self.i += 1;
                    loop {
                        match self.peek() {
                            None => return Err("a double quote is not closed".into()),
                            Some('"') => {
                                self.i += 1;
                                break;
                            }
                            Some('$') => out.push_str(&self.dollar()?),
                            Some(ch) if ch == self.escape => {
                                self.i += 1;
                                match self.peek() {
                                    None => {}
                                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                                        out.push(n);
                                        self.i += 1;
                                    }
                                    Some(_) => out.push(ch),
                                }
                            }
                            Some(ch) => {
                                out.push(ch);
                                self.i += 1;
                            }
                        }
                    }
                }
                '$' => out.push_str(&self.dollar()?),
                c if c == self.escape => {
                    self.i += 1;
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                c => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        match stop {
            Some(s) => Err(format!("a `{s}` is missing")),
            None => Ok(out),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        if let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.i += 1;
                }
                return name;
            }
        }
        while let Some(c) = self.peek() {
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.i += 1;
        }
        name
    }

    /// At `$`.
    fn dollar(&mut self) -> std::result::Result<String, String> {
        let start = self.i;
        self.i += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match (self.lookup)(&name) {
                Lookup::Value(v) => v,
                Lookup::Unset => String::new(),
                Lookup::Keep => self.chars[start..self.i].iter().collect(),
            });
        }
        self.i += 1;
        match self.peek() {
            None => return Err("a `}` is missing".into()),
            Some('{') | Some('}') | Some(':') => return Err("bad substitution".into()),
            _ => {}
        }
        let name = self.name();
        let Some(op) = self.peek() else {
            return Err("a `}` is missing".into());
        };
        self.i += 1;
        let value = (self.lookup)(&name);
        let keep = |lexer: &Self| -> String { lexer.chars[start..lexer.i].iter().collect() };
        match op {
            '}' => Ok(match value {
                Lookup::Value(v) => v,
                Lookup::Unset => String::new(),
                Lookup::Keep => keep(self),
            }),
            ':' | '-' | '+' | '?' => {
                let colon = op == ':';
                let modifier = if colon {
                    let m = self.peek().ok_or("a `}` is missing")?;
                    self.i += 1;
                    m
                } else {
                    op
                };
                let word = self.until(Some('}'))?;
                let (set, current) = match &value {
                    Lookup::Value(v) => (true, v.clone()),
                    Lookup::Unset => (false, String::new()),
                    Lookup::Keep => return Ok(keep(self)),
                };
                // With `:`, an empty value counts as unset.
                let present = if colon { !current.is_empty() } else { set };
                match modifier {
                    '-' => Ok(if present { current } else { word }),
                    '+' => Ok(if present { word } else { String::new() }),
                    '?' => {
                        if present {
                            Ok(current)
                        } else if word.is_empty() {
                            Err(format!("`{name}` is not allowed to be unset"))
                        } else {
                            Err(format!("`{name}`: {word}"))
                        }
                    }
                    m => Err(format!("unsupported modifier `{m}` in substitution")),
                }
            }
            '#' | '%' | '/' => {
                // Pattern operations: not evaluated; kept as written.
                self.until(Some('}'))?;
                Ok(keep(self))
            }
            m => Err(format!("unsupported modifier `{m}` in substitution")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `RUN --mount=...`

pub(crate) struct Mount {
    pub(crate) kind: String,
    pub(crate) from: Option<String>,
    pub(crate) source: Option<String>,
    /// A secret mount's `id` (else BuildKit takes the base name of its `target`).
    pub(crate) id: Option<String>,
    pub(crate) target: Option<String>,
}

impl Mount {
    /// The id of a `type=secret` mount, as BuildKit reads it.
    pub(crate) fn secret_id(&self) -> Option<String> {
        self.id.clone().filter(|i| !i.is_empty()).or_else(|| {
            let t = self.target.as_deref()?.trim_end_matches('/');
            let base = t.rsplit('/').next()?;
            (!base.is_empty()).then(|| base.to_string())
        })
    }
}

/// The CSV fields of a `--mount` value (`type=bind,source=x,target=/y`).
pub(crate) fn parse_mount(value: &str) -> Mount {
    let mut mount = Mount {
        kind: "bind".to_string(),
        from: None,
        source: None,
        id: None,
        target: None,
    };
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    for c in value.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    for f in fields {
        let (key, v) = match f.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim().to_string()),
            None => (f.trim().to_ascii_lowercase(), String::new()),
        };
        match key.as_str() {
            "type" => mount.kind = v.to_ascii_lowercase(),
            "from" => mount.from = Some(v),
            "source" | "src" => mount.source = Some(v),
            "id" => mount.id = Some(v),
            "target" | "dst" | "destination" => mount.target = Some(v),
            _ => {}
        }
    }
    mount
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Dockerfile {
        Dockerfile::parse(Path::new("Dockerfile"), text).expect("should succeed")
    }

    fn parse_err(text: &str) -> String {
        Dockerfile::parse(Path::new("services/api/Dockerfile"), text)
            .expect_err("should fail")
            .to_string()
    }

    fn sources(df: &Dockerfile) -> Vec<(String, usize)> {
        df.context_sources()
    }

    fn owned(items: &[(&str, usize)]) -> Vec<(String, usize)> {
        items.iter().map(|(s, l)| (s.to_string(), *l)).collect()
    }

    const TEMPLATE: &str = r#"FROM node:18-alpine AS base
RUN corepack enable && corepack prepare pnpm@8.15.0 --activate
WORKDIR /app
FROM base AS deps
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml .npmrc tsconfig.base.json ./
COPY shared/package.json shared/
COPY services/api-gateway/package.json services/api-gateway/
RUN pnpm install --frozen-lockfile
FROM deps AS builder
COPY shared/ shared/
COPY services/api-gateway/ services/api-gateway/
RUN pnpm --filter @kodingcaravan/shared build && \
    pnpm --filter @kodingcaravan/api-gateway build
FROM node:18-alpine AS runtime
WORKDIR /app
RUN addgroup -g 1001 -S nodejs && adduser -S nodejs -u 1001 -G nodejs
COPY --from=builder --chown=nodejs:nodejs /app/shared/dist ./shared/dist
COPY --from=builder /app/services/api-gateway/dist ./service/dist
USER nodejs
HEALTHCHECK CMD node -e "require('http').get('http://127.0.0.1:3000/health', r => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"
CMD ["node", "dist/index.js"]
"#;

    #[test]
    fn template_four_stage_node_dockerfile() {
        let df = parse(TEMPLATE);
        assert!(df.global_args.is_empty());
        let names: Vec<_> = df.stages.iter().map(|s| s.name.as_deref()).collect();
        assert_eq!(
            names,
            [Some("base"), Some("deps"), Some("builder"), Some("runtime")]
        );
        let lines: Vec<_> = df.stages.iter().map(|s| s.line).collect();
        assert_eq!(lines, [1, 4, 9, 14]);
        assert_eq!(df.stages[0].base, "node:18-alpine");
        assert_eq!(df.stages[0].platform, None);

        assert_eq!(df.base_of(0), BaseRef::Image("node:18-alpine"));
        assert_eq!(df.base_of(1), BaseRef::Stage(0));
        assert_eq!(df.base_of(2), BaseRef::Stage(1));
        assert_eq!(df.base_of(3), BaseRef::Image("node:18-alpine"));

        assert_eq!(
            sources(&df),
            owned(&[
                ("package.json", 5),
                ("pnpm-lock.yaml", 5),
                ("pnpm-workspace.yaml", 5),
                (".npmrc", 5),
                ("tsconfig.base.json", 5),
                ("shared/package.json", 6),
                ("services/api-gateway/package.json", 7),
                ("shared/", 10),
                ("services/api-gateway/", 11),
            ])
        );
        // Of the seven COPYs, the five without `--from` read the context: nine sources in all.
        let copies: Vec<usize> = df
            .stages
            .iter()
            .flat_map(|s| &s.instructions)
            .filter(|i| i.keyword == "COPY" && flag(i, "from").is_none())
            .map(|i| i.line)
            .collect();
        assert_eq!(copies, [5, 6, 7, 10, 11]);
        assert_eq!(df.external_images(), [("node:18-alpine".to_string(), 1)]);

        let builder = &df.stages[2];
        let run = &builder.instructions[2];
        assert_eq!(run.keyword, "RUN");
        assert_eq!(run.line, 12);
        assert!(!run.json_form);
        assert_eq!(
            run.args,
            ["pnpm --filter @kodingcaravan/shared build &&     pnpm --filter @kodingcaravan/api-gateway build"]
        );
        assert_eq!(run.raw, run.args[0]);

        let runtime = &df.stages[3];
        let copy = &runtime.instructions[2];
        assert_eq!(copy.line, 17);
        assert_eq!(
            copy.flags,
            [
                ("from".to_string(), Some("builder".to_string())),
                ("chown".to_string(), Some("nodejs:nodejs".to_string())),
            ]
        );
        assert_eq!(copy.args, ["/app/shared/dist", "./shared/dist"]);
        assert_eq!(
            copy.raw,
            "--from=builder --chown=nodejs:nodejs /app/shared/dist ./shared/dist"
        );
        let health = &runtime.instructions[5];
        assert_eq!(health.keyword, "HEALTHCHECK");
        assert_eq!(health.line, 20);
        assert_eq!(health.args[0], "CMD");
        assert!(health.args[1].starts_with("node -e \"require('http')"));
        let cmd = &runtime.instructions[6];
        assert_eq!(
            (cmd.keyword.as_str(), cmd.line, cmd.json_form),
            ("CMD", 21, true)
        );
        assert_eq!(cmd.args, ["node", "dist/index.js"]);
    }

    #[test]
    fn keywords_are_case_insensitive() {
        let df = parse("from alpine as Build\ncopy a b\nRun echo hi\nfrom build\n");
        assert_eq!(df.stages[0].name.as_deref(), Some("build"));
        let kws: Vec<_> = df.stages[0]
            .instructions
            .iter()
            .map(|i| i.keyword.as_str())
            .collect();
        assert_eq!(kws, ["COPY", "RUN"]);
        assert_eq!(df.base_of(1), BaseRef::Stage(0));
        let df = parse("FROM alpine AS builder\nFROM BUILDER\n");
        assert_eq!(df.base_of(1), BaseRef::Stage(0));
    }

    #[test]
    fn scratch_and_later_stage_names() {
        let df = parse("FROM scratch AS a\nFROM b\nFROM alpine AS b\n");
        assert_eq!(df.base_of(0), BaseRef::Scratch);
        // `FROM` only sees earlier stages.
        assert_eq!(df.base_of(1), BaseRef::Image("b"));
        assert_eq!(df.base_of(2), BaseRef::Image("alpine"));
    }

    #[test]
    fn comments_blank_lines_and_continuations() {
        let text = "# leading comment\n\nFROM alpine\n  # indented comment\nRUN apk add \\\n    # a comment inside\n\n    curl \\\n  \t\n    git\nWORKDIR /app\n";
        let df = parse(text);
        let ins = &df.stages[0].instructions;
        assert_eq!(ins.len(), 2);
        assert_eq!(ins[0].line, 5);
        assert_eq!(ins[0].args, ["apk add     curl     git"]);
        assert_eq!(ins[1].line, 11);
        assert_eq!(ins[1].args, ["/app"]);
        // Backslash then spaces still continues; an escaped backslash does not.
        let df = parse("FROM a\nRUN echo a \\  \n  b\nRUN echo c \\\\\nRUN echo d\n");
        let ins = &df.stages[0].instructions;
        assert_eq!(ins.len(), 3);
        assert_eq!(ins[0].args, ["echo a   b"]);
        assert_eq!(ins[1].args, ["echo c \\\\"]);
        // The file may end in the middle of a continuation.
        let df = parse("FROM a\nRUN echo \\");
        assert_eq!(df.stages[0].instructions[0].args, ["echo"]);
        // CRLF line endings.
        let df = parse("FROM a\r\nCOPY x \\\r\n  y /z/\r\n");
        assert_eq!(df.stages[0].instructions[0].args, ["x", "y", "/z/"]);
    }

    #[test]
    fn escape_directive_backtick() {
        let text = "# escape=`\n# syntax=docker/dockerfile:1\nFROM mcr.microsoft.com/windows/servercore\nCOPY a `\n     b C:\\dest\\\nRUN dir c:\\\n";
        let df = parse(text);
        let ins = &df.stages[0].instructions;
        assert_eq!(ins[0].args, ["a", "b", "C:\\dest\\"]);
        assert_eq!(ins[0].line, 4);
        // With the backtick as escape, a trailing backslash is plain text.
        assert_eq!(ins[1].args, ["dir c:\\"]);
        assert_eq!(ins[1].line, 6);
    }

    #[test]
    fn directives_only_at_the_top() {
        // After a comment, `# escape=` is a comment: `\` still continues lines.
        let df = parse("# hello\n# escape=`\nFROM a\nRUN x \\\n y\n");
        assert_eq!(df.stages[0].instructions[0].args, ["x  y"]);
        // After a blank line, too.
        let df = parse("\n# escape=`\nFROM a\nRUN x \\\n y\n");
        assert_eq!(df.stages[0].instructions[0].args, ["x  y"]);
        // Directive names are case-insensitive, and spacing is free.
        let df = parse("#  ESCAPE =  `\nFROM a\nRUN x `\n y\n");
        assert_eq!(df.stages[0].instructions[0].args, ["x  y"]);
        // An unknown directive ends the directives.
        let df = parse("# foo=bar\n# escape=`\nFROM a\nRUN x \\\n y\n");
        assert_eq!(df.stages[0].instructions[0].args, ["x  y"]);
        assert!(parse_err("# escape=`\n# escape=\\\nFROM a\n").contains("at line 2"));
        assert!(parse_err("# escape=x\nFROM a\n").contains("at line 1"));
    }

    #[test]
    fn global_args_substituted_in_from() {
        let text = r#"ARG NODE_VERSION=18
ARG VARIANT="alpine"
ARG BASE=node:${NODE_VERSION}-$VARIANT
ARG REGISTRY
ARG PLATFORM=linux/arm64
FROM ${BASE} AS a
FROM node:${MISSING:-20}-slim AS b
FROM ${REGISTRY:-docker.io}/library/nginx:${TAG:-1.25}
FROM --platform=$PLATFORM busybox:${NODE_VERSION:+latest}
FROM --platform=$BUILDPLATFORM golang:1.22 AS build
FROM golang:1.22-${TARGETARCH}
"#;
        let df = parse(text);
        assert_eq!(
            df.global_args,
            [
                ("NODE_VERSION".to_string(), Some("18".to_string())),
                ("VARIANT".to_string(), Some("alpine".to_string())),
                ("BASE".to_string(), Some("node:18-alpine".to_string())),
                ("REGISTRY".to_string(), None),
                ("PLATFORM".to_string(), Some("linux/arm64".to_string())),
            ]
        );
        let bases: Vec<_> = df.stages.iter().map(|s| s.base.as_str()).collect();
        assert_eq!(
            bases,
            [
                "node:18-alpine",
                "node:20-slim",
                "docker.io/library/nginx:1.25",
                "busybox:latest",
                "golang:1.22",
                "golang:1.22-${TARGETARCH}",
            ]
        );
        assert_eq!(df.stages[3].platform.as_deref(), Some("linux/arm64"));
        // The automatic platform args are known only at build time: kept.
        assert_eq!(df.stages[4].platform.as_deref(), Some("$BUILDPLATFORM"));
        // Several args on one line, and an ARG inside a stage (not global).
        let df = parse("ARG A=1 B=2\nFROM x:$A.$B\nARG C=3\n");
        assert_eq!(df.global_args.len(), 2);
        assert_eq!(df.stages[0].base, "x:1.2");
        assert_eq!(df.stages[0].instructions[0].args, ["C=3"]);
    }

    #[test]
    fn copy_flags_and_forms() {
        let text = r#"FROM alpine AS b
COPY --chown=1000:1000 --chmod=0755 --link --parents ./a/*/package.json /app/
COPY --exclude=*.md --exclude=tests docs/ /docs/
COPY ["a b.txt", "c.txt", "dest dir/"]
ADD --checksum=sha256:abc https://example.com/x.tgz /tmp/
ADD git@github.com:moby/buildkit.git /src
ADD https://github.com/moby/buildkit.git#v0.10.1 /src2
ADD local.tar.gz /opt/
COPY --from=b /out /out
COPY --from=0 /out /out2
COPY --from=nginx:1.25 /etc/nginx/nginx.conf /etc/nginx/
COPY -- --weird /x
"#;
        let df = parse(text);
        let ins = &df.stages[0].instructions;
        assert_eq!(
            ins[0].flags,
            [
                ("chown".to_string(), Some("1000:1000".to_string())),
                ("chmod".to_string(), Some("0755".to_string())),
                ("link".to_string(), None),
                ("parents".to_string(), None),
            ]
        );
        assert_eq!(ins[1].flags.len(), 2);
        assert!(ins[2].json_form);
        assert_eq!(ins[2].args, ["a b.txt", "c.txt", "dest dir/"]);
        assert!(ins[10].flags.is_empty());
        assert_eq!(
            sources(&df),
            owned(&[
                ("./a/*/package.json", 2),
                ("docs/", 3),
                ("a b.txt", 4),
                ("c.txt", 4),
                ("local.tar.gz", 8),
                ("--weird", 12),
            ])
        );
        assert_eq!(
            df.external_images(),
            [("alpine".to_string(), 1), ("nginx:1.25".to_string(), 11)]
        );
    }

    #[test]
    fn json_form_falls_back_to_shell_form_when_not_json() {
        let df =
            parse("FROM a\nRUN [ -f /x ] && echo yes\nCOPY [abc]*.txt /d/\nCMD [\"a\"] trailing\n");
        let ins = &df.stages[0].instructions;
        assert!(!ins[0].json_form);
        assert_eq!(ins[0].args, ["[ -f /x ] && echo yes"]);
        assert!(!ins[1].json_form);
        assert_eq!(ins[1].args, ["[abc]*.txt", "/d/"]);
        // Go's decoder reads the first value and ignores the rest.
        assert!(ins[2].json_form);
        assert_eq!(ins[2].args, ["a"]);
    }

    #[test]
    fn heredocs_are_skipped() {
        let text = "FROM alpine\nRUN <<EOF\nFROM evil\nCOPY nothing here\nEOF\nCOPY <<-END /app/config.txt\n\tsome config\n\tEND\nRUN <<\"A\" cat > /x && <<'B' cat > /y\nline $HOME\nA\nother\nB\nCOPY real.txt /r\nRUN cat <<EOF > /tmp/a\n  EOF\nEOF\nWORKDIR /w\n";
        let df = parse(text);
        assert_eq!(df.stages.len(), 1);
        let ins = &df.stages[0].instructions;
        let summary: Vec<_> = ins.iter().map(|i| (i.keyword.as_str(), i.line)).collect();
        assert_eq!(
            summary,
            [
                ("RUN", 2),
                ("COPY", 6),
                ("RUN", 9),
                ("COPY", 14),
                ("RUN", 15),
                ("WORKDIR", 18),
            ]
        );
        assert_eq!(ins[1].args, ["<<-END", "/app/config.txt"]);
        assert_eq!(sources(&df), owned(&[("real.txt", 14)]));
        // A heredoc marker in JSON form, or quoted, is not a heredoc.
        let df = parse(
            "FROM a\nRUN [\"cat\", \"<<EOF\"]\nRUN echo \"<<EOF\"\nRUN echo \"x\\\" <<EOF\"\nUSER x\n",
        );
        assert_eq!(df.stages[0].instructions.len(), 4);
        // Not for other instructions.
        let df = parse("FROM a\nENV A=<<EOF\nUSER x\n");
        assert_eq!(df.stages[0].instructions.len(), 2);
        // ONBUILD of a RUN heredoc.
        let df = parse("FROM a\nONBUILD RUN <<EOF\nFROM b\nEOF\nUSER x\n");
        assert_eq!(df.stages.len(), 1);
        assert_eq!(df.stages[0].instructions[1].line, 5);
        // Unterminated: an error at the instruction's line.
        let msg = parse_err("FROM a\nUSER u\nRUN <<EOF\necho\nEOFX\n");
        assert!(
            msg.contains("at line 3") && msg.contains("heredoc"),
            "{msg}"
        );
    }

    #[test]
    fn run_mounts_and_copy_from_images() {
        let text = "FROM golang:1.22 AS build\nRUN --mount=type=cache,target=/root/.cache \\\n    --mount=type=bind,source=go.mod,target=go.mod \\\n    --mount=target=/src \\\n    --mount=type=bind,from=tools:1,source=/bin,target=/t \\\n    --mount=type=bind,from=build,target=/b \\\n    go build ./...\n";
        let df = parse(text);
        let run = &df.stages[0].instructions[0];
        assert_eq!(run.flags.len(), 5);
        assert_eq!(run.args, ["go build ./..."]);
        assert_eq!(sources(&df), owned(&[("go.mod", 2), (".", 2)]));
        assert_eq!(
            df.external_images(),
            [("golang:1.22".to_string(), 1), ("tools:1".to_string(), 2)]
        );
    }

    #[test]
    fn external_images_deduplicated_in_order() {
        let df = parse("ARG V=3.19\nFROM alpine:${V} AS a\nFROM alpine:3.19\nFROM a\nFROM debian\nCOPY --from=alpine:3.19 /x /y\nCOPY --from=A /x /y\n");
        assert_eq!(
            df.external_images(),
            [("alpine:3.19".to_string(), 2), ("debian".to_string(), 5)]
        );
    }

    #[test]
    fn other_instructions() {
        let df = parse("FROM a\nENV A=1 B=\"x y\"\nENV OLD value with spaces\nLABEL k=v\nEXPOSE 80 443/udp\nVOLUME [\"/data\"]\nVOLUME /a /b\nSTOPSIGNAL SIGTERM\nMAINTAINER me <me@example.com>\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT exec node\nHEALTHCHECK NONE\nHEALTHCHECK --interval=5s CMD [\"curl\", \"-f\", \"http://x\"]\n");
        let ins = &df.stages[0].instructions;
        assert_eq!(ins[0].args, ["A=1", "B=\"x y\""]);
        assert_eq!(ins[1].args, ["OLD", "value with spaces"]);
        assert_eq!(ins[3].args, ["80", "443/udp"]);
        assert_eq!(
            (ins[4].args.clone(), ins[4].json_form),
            (vec!["/data".to_string()], true)
        );
        assert_eq!(ins[5].args, ["/a", "/b"]);
        assert_eq!(ins[7].args, ["me <me@example.com>"]);
        assert!(ins[8].json_form);
        assert_eq!(ins[9].args, ["exec node"]);
        assert_eq!(ins[10].args, ["NONE"]);
        assert_eq!(
            ins[11].flags,
            [("interval".to_string(), Some("5s".to_string()))]
        );
        assert_eq!(ins[11].args, ["CMD", "curl", "-f", "http://x"]);
        assert!(ins[11].json_form);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "no instructions"),
            ("# only a comment\n\n", 2, "no instructions"),
            ("ARG A=1\nARG B\n", 2, "no `FROM`"),
            ("ARG A=1\nRUN echo\nFROM a\n", 2, "before the first `FROM`"),
            ("FROM a\nFROM\n", 2, "needs an image"),
            ("FROM --platform=linux/amd64\n", 1, "needs an image"),
            ("FROM a b\n", 1, "`FROM a b`"),
            ("FROM a AS b c\n", 1, "FROM"),
            ("FROM a\nCOPY [\"a\", \"b\"\n", 2, "not terminated"),
            ("FROM a\nCMD [\"node\",\n", 2, "not terminated"),
            ("FROM a\nCOPY [\"a\", 1]\n", 2, "only strings"),
            ("FROM a\n\nCOPY onlyone\n", 3, "source and a destination"),
            ("FROM a\nADD\n", 2, "source and a destination"),
            ("FROM a\nCOPY a <<EOF\nx\nEOF\n", 2, "destination"),
            ("FROM a\nRUNN echo\n", 2, "unknown instruction `RUNN`"),
            ("FROM a AS x\nFROM b AS X\n", 2, "already used"),
            ("FROM a AS 1st\n", 1, "invalid stage name"),
            ("ARG E\nFROM ${E}\n", 2, "empty"),
            ("FROM a\nRUN a \\\n b \\\n c\nUSER\nCOPY x\n", 6, "source"),
        ];
        for &(text, line, needle) in cases {
            let msg = parse_err(text);
            assert!(
                msg.contains(&format!("`services/api/Dockerfile` at line {line}:"))
                    && msg.contains(needle),
                "{text:?}: {msg}"
            );
        }
    }

    #[test]
    fn word_helpers() {
        assert_eq!(
            extract_builder_flags("--from=\"a b\" --link x y"),
            (
                "x y".to_string(),
                vec!["--from=a b".to_string(), "--link".to_string()]
            )
        );
        assert_eq!(
            extract_builder_flags("-- --x y"),
            (" --x y".to_string(), vec![])
        );
        assert_eq!(
            parse_words("a='x y' b=\"c\\\" d\" e\\ f", '\\'),
            ["a='x y'", "b=\"c\\\" d\"", "e\\ f"]
        );
        assert_eq!(
            heredoc_of_word("<<-\"EOT\""),
            Some(Heredoc {
                name: "EOT".into(),
                chomp: true
            })
        );
        assert_eq!(heredoc_of_word("<<<EOF"), None);
        assert_eq!(heredoc_of_word("<<"), None);
        assert_eq!(
            heredoc_of_word("2<<EOF").map(|h| h.name),
            Some("EOF".into())
        );
        let none = |_: &str| Lookup::Unset;
        assert_eq!(
            expand("'$A'\"$A\"\\$A", '\\', &none).expect("should succeed"),
            "$A$A"
        );
        assert!(expand("\"unclosed", '\\', &none).is_err());
        assert!(expand("${A:?must be set}", '\\', &none).is_err());
    }
}
