//! `.dockerignore` with Docker's own matching rules (moby/patternmatcher).
//!
//! This follows, step by step, what Docker does with the file:
//!
//! - Reading (`ignorefile.ReadAll`): lines split on `\n` (a trailing `\r` dropped), a UTF-8 BOM
//!   dropped from the first line, lines *starting* with `#` skipped (before trimming: `  # x` is a
//!   pattern), then whitespace trimmed and empty lines skipped. A leading `!` marks an exception;
//!   the rest is trimmed again, cleaned like Go's `filepath.Clean`, and one leading `/` removed.
//! - Compiling (`patternmatcher.New` and `Pattern.compile`): the pattern is cleaned once more, must
//!   be valid for Go's `filepath.Match` (unclosed `[`, `[]`, `[a-]`, a trailing `\`, ... are errors)
//!   and is then classified as Docker does: an exact string, a prefix (`dir/**`), a suffix (`**/x`,
//!   `**x`) or a regular expression built from the pattern text (`*` is `[^/]*`, `?` is `[^/]`, `**`
//!   is `(.*/)?` or `.*` at the end, `[...]` and `\x` are passed to the regular expression as
//!   written). That regular expression is then evaluated by a small engine here with the semantics of
//!   Go's `regexp` (RE2, Perl flags); an expression Go would reject (`[z-a]`, `\e`, ...) is an error.
//! - Matching, as BuildKit's context walker (fsutil) and the classic builder do it: walking down
//!   from the root, each path is matched with `MatchesUsingParentResults`, given the per-pattern
//!   results of its parent directory. A pattern matches a path when it matches the path itself or
//!   matched one of its parent directories, and the last matching pattern decides, so `!`
//!   re-includes: this is `MatchesOrParentMatches`, except in one corner that Docker really has
//!   (checked against a Docker daemon): a pattern that could not change the answer for a directory
//!   is not evaluated there, and then does not count as matching for its children either. So
//!   `**/*.log` + `!logs` keeps `logs/app.log` out, and `node_modules` + `!node_modules/keep` +
//!   `node_modules` lets `node_modules/keep` in. An excluded directory is also skipped outright
//!   when every exception is a plain path (fsutil's `onlyPrefixExcludeExceptions`) and none lies
//!   inside it.

use std::path::Path;

use crate::{Error, Result};

/// A parsed `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
    /// fsutil's `onlyPrefixExcludeExceptions`: no exception has a wildcard (once a trailing `/**`
    /// or `/*` is dropped), so an excluded directory no exception starts inside is not walked.
    only_prefix_exceptions: bool,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// Cleaned, without the `!`.
    text: String,
    /// `!`: a match re-includes the path.
    exception: bool,
    kind: Kind,
    /// The literal characters the pattern ends with: every path a regular expression matches ends
    /// with them, so a path that does not is rejected without running it (`**/*.md`: `.md`).
    literal_end: String,
}

/// How a pattern is matched, as Docker decides it (`matchType`).
#[derive(Debug, Clone)]
enum Kind {
    /// The path equals the pattern.
    Exact,
    /// The path starts with this (the pattern without its trailing `**`).
    Prefix(String),
    /// The path ends with this (the pattern without its leading `**`), or is it without its `/`.
    Suffix(String),
    /// The compiled regular expression: our Pike VM (which validates Go's syntax and answers
    /// `may_continue_after`) and, for plain matching, the `regex` crate's DFA-based engine when
    /// it accepts the same expression (it does for everything Docker's translation produces).
    Regex(Program, Option<regex::Regex>),
}

/// Where a walk stands in a directory: which patterns matched it (inherited by its children, as
/// Docker's `MatchesUsingParentResults`), and whether Docker skips it whole.
#[derive(Debug, Clone)]
pub struct DirState {
    matched: Option<Vec<bool>>,
    skipped: bool,
}

impl DockerIgnore {
    /// No patterns: nothing is excluded.
    pub fn empty() -> Self {
        DockerIgnore::default()
    }

    /// Parses the text of a `.dockerignore`. `path` only for error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let mut patterns = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let mut s = raw.strip_suffix('\r').unwrap_or(raw);
            if index == 0 {
                s = s.strip_prefix('\u{feff}').unwrap_or(s);
            }
            // `ignorefile.ReadAll`.
            if s.starts_with('#') {
                continue;
            }
            let s = s.trim();
            if s.is_empty() {
                continue;
            }
            let (invert, rest) = match s.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, s),
            };
            let mut read = String::new();
            if !rest.is_empty() {
                let cleaned = go_clean(rest);
                read = match cleaned.strip_prefix('/') {
                    Some(stripped) if cleaned.len() > 1 => stripped.to_string(),
                    _ => cleaned,
                };
            }
            if invert {
                read.insert(0, '!');
            }
            // `patternmatcher.New`.
            let cleaned = go_clean(read.trim());
            let err = |message: String| Error::DockerIgnore {
                path: path.to_path_buf(),
                line,
                message,
            };
            let (exception, text) = match cleaned.strip_prefix('!') {
                Some("") => {
                    return Err(err(
                        "`!` alone is not a pattern (docker: illegal exclusion pattern)".into(),
                    ))
                }
                Some(rest) => (true, rest.to_string()),
                None => (false, cleaned),
            };
            if let Err(why) = check_glob_syntax(&text) {
                return Err(err(format!(
                    "`{}` is not a valid pattern: {why}",
                    s.trim_start_matches('!').trim()
                )));
            }
            let kind = compile(&text).map_err(|why| {
                err(format!(
                    "`{}` is not a valid pattern: docker turns it into the regular expression `{}`, which {why}",
                    s.trim_start_matches('!').trim(),
                    docker_regex(&text).1,
                ))
            })?;
            patterns.push(Pattern {
                literal_end: literal_end(&text),
                text,
                exception,
                kind,
            });
        }
        let only_prefix_exceptions = patterns.iter().all(|p| {
            !p.exception
                || !without_trailing_glob(&p.text).contains(['*', '[', ']', '?', '^', '\\'])
        });
        Ok(DockerIgnore {
            patterns,
            only_prefix_exceptions,
        })
    }

    /// The patterns as cleaned, with `!` for exceptions, in file order (for `explain` and hashing).
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exception {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    /// Whether `rel` (a path relative to the context root, `/`-separated, no leading `./`, file or
    /// directory) is excluded.
    pub fn is_excluded(&self, rel: &str) -> bool {
        let cleaned;
        let rel = if is_clean_relative(rel) {
            rel
        } else {
            cleaned = go_clean(rel.trim_start_matches('/'));
            cleaned.as_str()
        };
        if rel.is_empty() || rel == "." {
            return false; // Docker never excludes the context root
        }
        match self.walk_to(rel) {
            Walked::Reached { excluded, .. } => excluded,
            Walked::SkippedAbove => true,
        }
    }

    /// The matching state of a directory, for a walker that checks its children one by one with
    /// [`DockerIgnore::check_in`] (the answers are [`DockerIgnore::is_excluded`]'s, without
    /// re-walking every parent for every file).
    pub fn dir_state(&self, rel_dir: &str) -> DirState {
        let cleaned;
        let dir = if is_clean_relative(rel_dir) {
            rel_dir
        } else {
            cleaned = go_clean(rel_dir.trim_start_matches('/'));
            cleaned.as_str()
        };
        if dir.is_empty() || dir == "." {
            return DirState {
                matched: None,
                skipped: false,
            };
        }
        match self.walk_to(dir) {
            Walked::SkippedAbove => DirState {
                matched: None,
                skipped: true,
            },
            Walked::Reached { excluded, matched } => DirState {
                skipped: excluded && self.skips_dir(dir),
                matched: Some(matched),
            },
        }
    }

    /// Whether `rel`, a direct child of the directory whose state is `parent`, is excluded, and
    /// its own state (used when it is a directory).
    pub fn check_in(&self, parent: &DirState, rel: &str) -> (bool, DirState) {
        if parent.skipped {
            return (
                true,
                DirState {
                    matched: None,
                    skipped: true,
                },
            );
        }
        let (excluded, matched) = self.matches_using_parent_results(rel, parent.matched.as_deref());
        let skipped = excluded && self.skips_dir(rel);
        (
            excluded,
            DirState {
                matched: Some(matched),
                skipped,
            },
        )
    }

    /// Whether `rel`, a direct child of the directory whose state is `parent`, is excluded: as
    /// [`DockerIgnore::check_in`], for a file (no state to keep, nothing allocated).
    pub fn is_excluded_in(&self, parent: &DirState, rel: &str) -> bool {
        parent.skipped || self.scan(rel, parent.matched.as_deref(), |_, _| {})
    }

    /// For an excluded directory `rel_dir`: could any path below it be re-included by an exception?
    /// (If false, a walker may skip the whole directory.) Conservative: true when unsure, and true
    /// for a directory that is not excluded.
    pub fn may_reinclude_below(&self, rel_dir: &str) -> bool {
        let cleaned;
        let dir = if is_clean_relative(rel_dir) {
            rel_dir
        } else {
            cleaned = go_clean(rel_dir.trim_start_matches('/'));
            cleaned.as_str()
        };
        if dir.is_empty() || dir == "." {
            return true;
        }
        let matched = match self.walk_to(dir) {
            Walked::SkippedAbove => return false,
            Walked::Reached {
                excluded: false, ..
            } => return true,
            Walked::Reached { matched, .. } => matched,
        };
        if self.skips_dir(dir) {
            return false; // BuildKit does not even walk it
        }
        // Below `dir`, every pattern that matched `dir` still matches (its flag is inherited), so
        // the last one of them, an exclusion, still decides unless a later exception matches a
        // path below `dir` by itself.
        let last = matched.iter().rposition(|&m| m).map_or(0, |i| i + 1);
        let prefix = format!("{dir}/");
        self.patterns[last..]
            .iter()
            .any(|p| p.exception && p.may_match_below(&prefix))
    }

    /// What BuildKit's context walker (fsutil) decides for `rel`, walking down from the root:
    /// `MatchesUsingParentResults` at each level, with the parent directory's per-pattern results,
    /// and excluded directories skipped when no exception can reach inside them.
    fn walk_to(&self, rel: &str) -> Walked {
        let mut parent: Option<Vec<bool>> = None;
        for (i, _) in rel.match_indices('/') {
            let dir = &rel[..i];
            let (excluded, matched) = self.matches_using_parent_results(dir, parent.as_deref());
            if excluded && self.skips_dir(dir) {
                return Walked::SkippedAbove;
            }
            parent = Some(matched);
        }
        let (excluded, matched) = self.matches_using_parent_results(rel, parent.as_deref());
        Walked::Reached { excluded, matched }
    }

    /// patternmatcher's `MatchesUsingParentResults`: whether `path` is excluded, and which patterns
    /// matched it (inherited by its children). A pattern that could not change the answer so far
    /// is not evaluated, and then counts as not matching for the children too: this is how Docker
    /// behaves, and differs from `MatchesOrParentMatches` (e.g. `a/x` + `!a` keeps `a/x` out).
    fn matches_using_parent_results(
        &self,
        path: &str,
        parent: Option<&[bool]>,
    ) -> (bool, Vec<bool>) {
        let mut matched = vec![false; self.patterns.len()];
        let excluded = self.scan(path, parent, |i, m| matched[i] = m);
        (excluded, matched)
    }

    /// The patterns in order, as `MatchesUsingParentResults`: whether `path` ends excluded, and
    /// `record(i, matched)` for each pattern it evaluated (a skipped one stays unmatched).
    fn scan(
        &self,
        path: &str,
        parent: Option<&[bool]>,
        mut record: impl FnMut(usize, bool),
    ) -> bool {
        let mut excluded = false;
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = parent.is_some_and(|pm| pm[i]);
            if !m {
                if p.exception != excluded {
                    continue;
                }
                m = match parent {
                    Some(_) => p.matches(path),
                    // No parent results: check the parents directly, as `MatchesOrParentMatches`.
                    None => p.matches_or_parent(path),
                };
            }
            record(i, m);
            if m {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// fsutil's shortcut for an excluded directory: skipped (never walked) when every exception is
    /// a plain path and none lies inside it.
    fn skips_dir(&self, dir: &str) -> bool {
        if !self.only_prefix_exceptions {
            return false;
        }
        let dir_slash = format!("{dir}/");
        !self.patterns.iter().any(|p| {
            p.exception && format!("{}/", without_trailing_glob(&p.text)).starts_with(&dir_slash)
        })
    }
}

/// Where the walk to a path ends.
enum Walked {
    /// The path is reached: whether it is excluded, and its per-pattern results.
    Reached { excluded: bool, matched: Vec<bool> },
    /// An excluded parent directory is not walked at all.
    SkippedAbove,
}

/// fsutil's `patternWithoutTrailingGlob`.
fn without_trailing_glob(p: &str) -> &str {
    let p = p.strip_suffix("/**").unwrap_or(p);
    p.strip_suffix("/*").unwrap_or(p)
}

impl Pattern {
    /// Docker's `Pattern.match`: the path itself.
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|bare| path == bare)
            }
            Kind::Regex(..) if !path.ends_with(self.literal_end.as_str()) => false,
            Kind::Regex(_, Some(fast)) => fast.is_match(path),
            Kind::Regex(program, None) => program.is_match(path),
        }
    }

    /// `MatchesOrParentMatches` for one pattern: the path or any of its parent directories.
    fn matches_or_parent(&self, path: &str) -> bool {
        self.matches(path)
            || path
                .match_indices('/')
                .any(|(i, _)| self.matches(&path[..i]))
    }

    /// Could this pattern match some path `prefix` + (one or more characters)? `prefix` ends with `/`.
    /// Parents of such a path that are longer than `prefix` have the same form, so this covers
    /// parent matching too.
    fn may_match_below(&self, prefix: &str) -> bool {
        match &self.kind {
            Kind::Exact => self.text.len() > prefix.len() && self.text.starts_with(prefix),
            Kind::Prefix(p) => p.starts_with(prefix) || prefix.starts_with(p.as_str()),
            // Any suffix can be appended.
            Kind::Suffix(_) => true,
            Kind::Regex(program, _) => program.may_continue_after(prefix),
        }
    }
}

/// Whether `p` is already what `go_clean` would return for it (the common case: no allocation).
fn is_clean_relative(p: &str) -> bool {
    !p.is_empty()
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Go's `path.Clean` (`filepath.Clean` on Unix).
fn go_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|last| *last != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

// ---------------------------------------------------------------------------------------------
// Go's `filepath.Match` syntax check (`scanChunk` + `matchChunk` + `getEsc`), which Docker runs
// on every pattern before anything else.

fn check_glob_syntax(pattern: &str) -> std::result::Result<(), &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        // scanChunk: skip stars, then read up to the next `*` outside `[...]`.
        while i < chars.len() && chars[i] == '*' {
            i += 1;
        }
        let start = i;
        let mut in_range = false;
        while i < chars.len() {
            match chars[i] {
                '\\' if i + 1 < chars.len() => i += 1,
                '[' => in_range = true,
                ']' => in_range = false,
                '*' if !in_range => break,
                _ => {}
            }
            i += 1;
        }
        check_chunk(&chars[start..i])?;
    }
    Ok(())
}

fn check_chunk(chunk: &[char]) -> std::result::Result<(), &'static str> {
    let mut c = chunk;
    while let Some(&first) = c.first() {
        match first {
            '[' => {
                c = &c[1..];
                if c.first() == Some(&'^') {
                    c = &c[1..];
                }
                let mut nrange = 0;
                loop {
                    if c.first() == Some(&']') && nrange > 0 {
                        c = &c[1..];
                        break;
                    }
                    c = class_esc(c)?;
                    if c.first() == Some(&'-') {
                        c = class_esc(&c[1..])?;
                    }
                    nrange += 1;
                }
            }
            '\\' => {
                if c.len() < 2 {
                    return Err("it ends with a lone `\\`");
                }
                c = &c[2..];
            }
            _ => c = &c[1..],
        }
    }
    Ok(())
}

/// `getEsc`: one (possibly escaped) character of a class, which must be followed by more.
fn class_esc(c: &[char]) -> std::result::Result<&[char], &'static str> {
    match c.first() {
        None => return Err("a `[` is not closed"),
        Some('-') | Some(']') => {
            return Err("a character class is empty or has a misplaced `-` or `]`")
        }
        _ => {}
    }
    let mut c = c;
    if c[0] == '\\' {
        c = &c[1..];
        if c.is_empty() {
            return Err("a `[` is not closed");
        }
    }
    let rest = &c[1..];
    if rest.is_empty() {
        return Err("a `[` is not closed");
    }
    Ok(rest)
}

// ---------------------------------------------------------------------------------------------
// Docker's `Pattern.compile`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchType {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// The match type and the regular expression text, exactly as `Pattern.compile` builds them.
fn docker_regex(pattern: &str) -> (MatchType, String) {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut ty = MatchType::Exact;
    let mut i = 0;
    let mut step = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if ch == '*' {
            if chars.get(i) == Some(&'*') {
                i += 1;
                // `**/` is `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if ty == MatchType::Exact {
                        ty = MatchType::Prefix;
                    } else {
                        re.push_str(".*");
                        ty = MatchType::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    ty = MatchType::Regex;
                }
                if step == 0 {
                    ty = MatchType::Suffix;
                }
            } else {
                re.push_str("[^/]*");
                ty = MatchType::Regex;
            }
        } else if ch == '?' {
            re.push_str("[^/]");
            ty = MatchType::Regex;
        } else if ".+()|{}$".contains(ch) {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            if let Some(&next) = chars.get(i) {
                i += 1;
                re.push('\\');
                re.push(next);
                ty = MatchType::Regex;
            } else {
                re.push('\\');
            }
        } else if ch == '[' || ch == ']' {
            re.push(ch);
            ty = MatchType::Regex;
        } else {
            re.push(ch);
        }
        step += 1;
    }
    re.push('$');
    (ty, re)
}

/// The characters at the end of a pattern that Docker's translation keeps literal: the longest
/// tail free of `*`, `?`, `[`, `]` and `^` (an assertion in Go's syntax, left unescaped). Any
/// match of the expression ends with them (it is anchored by `$`). None for a pattern with a `\\`
/// (Go reads `\\d`, `\\x41` or `\\Q...\\E` as more than the characters written).
fn literal_end(pattern: &str) -> String {
    if pattern.contains('\\') {
        return String::new();
    }
    let tail: Vec<char> = pattern
        .chars()
        .rev()
        .take_while(|c| !matches!(c, '*' | '?' | '[' | ']' | '^'))
        .collect();
    tail.into_iter().rev().collect()
}

/// The `regex` crate's compilation of `re`, where it means what Go means. Perl classes (`\d`,
/// `\w`, `\s`, `\b`) are ASCII in Go and Unicode here: such expressions keep the Pike VM.
fn fast_regex(re: &str) -> Option<regex::Regex> {
    let perl_class = ['d', 'D', 'w', 'W', 's', 'S', 'b', 'B']
        .iter()
        .any(|c| re.contains(&format!("\\{c}")));
    if perl_class || !same_in_rust(re) {
        return None;
    }
    regex::Regex::new(re).ok()
}

/// Whether the `regex` crate reads `re` as Go does: it does not, inside a class, for `[` (a nested
/// class there, a literal in Go) and for the set operators `&&`, `--`, `~~`.
fn same_in_rust(re: &str) -> bool {
    let b = re.as_bytes();
    let mut in_class = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'[' if in_class => return false,
            b'[' => {
                in_class = true;
                // A leading `^` and a leading `]` belong to the class.
                if b.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if in_class => in_class = false,
            c @ (b'&' | b'-' | b'~') if in_class && b.get(i + 1) == Some(&c) => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

fn compile(pattern: &str) -> std::result::Result<Kind, String> {
    let (ty, re) = docker_regex(pattern);
    Ok(match ty {
        MatchType::Exact => Kind::Exact,
        // Byte slicing like Go's; the pattern ends (prefix) or starts (suffix) with `**`.
        MatchType::Prefix => Kind::Prefix(pattern[..pattern.len() - 2].to_string()),
        MatchType::Suffix => Kind::Suffix(pattern[2..].to_string()),
        MatchType::Regex => {
            let program = Program::compile(&re)?;
            let fast = fast_regex(&re);
            Kind::Regex(program, fast)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// A small regular-expression engine for the part of Go's RE2 syntax that Docker's translation can
// produce: literals, `.`, `[...]` classes (ranges, negation, `[:alpha:]`, `\d`-style escapes),
// `^`, `$`, `\A`, `\z`, `\b`, `\B`, groups, and `*`, `+`, `?`. It is run as a Pike VM (a set of
// threads per position), so matching is linear in the path length whatever the pattern.

#[derive(Debug, Clone)]
struct Program {
    insts: Vec<Inst>,
}

#[derive(Debug, Clone)]
enum Inst {
    Char(char),
    Set(CharSet),
    /// `.`: any character but `\n`.
    AnyNotNl,
    /// `\C`: any character.
    Any,
    Assert(Assertion),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assertion {
    BeginText,
    EndText,
    WordBoundary,
    NotWordBoundary,
}

#[derive(Debug, Clone)]
struct CharSet {
    negated: bool,
    items: Vec<ClassItem>,
}

#[derive(Debug, Clone, Copy)]
enum ClassItem {
    Range(char, char),
    Named(Named, bool),
}

/// Go's ASCII-only Perl (`\d`, `\s`, `\w`) and POSIX (`[:alpha:]`) classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    Alnum,
    Alpha,
    Ascii,
    Blank,
    Cntrl,
    Digit,
    Graph,
    Lower,
    Print,
    Punct,
    PerlSpace,
    Space,
    Upper,
    Word,
    Xdigit,
}

impl Named {
    fn contains(self, c: char) -> bool {
        match self {
            Named::Alnum => c.is_ascii_alphanumeric(),
            Named::Alpha => c.is_ascii_alphabetic(),
            Named::Ascii => c.is_ascii(),
            Named::Blank => c == ' ' || c == '\t',
            Named::Cntrl => c.is_ascii_control(),
            Named::Digit => c.is_ascii_digit(),
            Named::Graph => c.is_ascii_graphic(),
            Named::Lower => c.is_ascii_lowercase(),
            Named::Print => c.is_ascii_graphic() || c == ' ',
            Named::Punct => c.is_ascii_punctuation(),
            Named::PerlSpace => matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' '),
            Named::Space => matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' '),
            Named::Upper => c.is_ascii_uppercase(),
            Named::Word => is_word_char(c),
            Named::Xdigit => c.is_ascii_hexdigit(),
        }
    }

    fn posix(name: &str) -> Option<Named> {
        Some(match name {
            "alnum" => Named::Alnum,
            "alpha" => Named::Alpha,
            "ascii" => Named::Ascii,
            "blank" => Named::Blank,
            "cntrl" => Named::Cntrl,
            "digit" => Named::Digit,
            "graph" => Named::Graph,
            "lower" => Named::Lower,
            "print" => Named::Print,
            "punct" => Named::Punct,
            "space" => Named::Space,
            "upper" => Named::Upper,
            "word" => Named::Word,
            "xdigit" => Named::Xdigit,
            _ => return None,
        })
    }

    /// `\d`, `\s`, `\w` (and their negations, upper case).
    fn perl(c: char) -> Option<(Named, bool)> {
        Some(match c {
            'd' => (Named::Digit, false),
            'D' => (Named::Digit, true),
            's' => (Named::PerlSpace, false),
            'S' => (Named::PerlSpace, true),
            'w' => (Named::Word, false),
            'W' => (Named::Word, true),
            _ => return None,
        })
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl CharSet {
    fn contains(&self, c: char) -> bool {
        let hit = self.items.iter().any(|item| match *item {
            ClassItem::Range(lo, hi) => lo <= c && c <= hi,
            ClassItem::Named(named, negated) => named.contains(c) != negated,
        });
        hit != self.negated
    }
}

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    Set(CharSet),
    AnyNotNl,
    Any,
    Assert(Assertion),
    Concat(Vec<Node>),
    Star(Box<Node>),
    Plus(Box<Node>),
    Quest(Box<Node>),
}

struct ReParser {
    s: Vec<char>,
    i: usize,
}

type ReResult<T> = std::result::Result<T, String>;

impl ReParser {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    /// A sequence up to the end, or up to `)` when inside a group.
    fn sequence(&mut self, in_group: bool) -> ReResult<Node> {
        let mut items: Vec<Node> = Vec::new();
        // Whether the last item is a repetition (`a**` is an error in Go).
        let mut last_repeat = false;
        loop {
            let Some(c) = self.peek() else {
                if in_group {
                    return Err("has an unclosed `(`".into());
                }
                break;
            };
            match c {
                ')' => {
                    if !in_group {
                        return Err("has an unopened `)`".into());
                    }
                    self.i += 1;
                    break;
                }
                '|' => return Err("uses `|`, which is not supported here".into()),
                '*' | '+' | '?' => {
                    self.i += 1;
                    if last_repeat {
                        return Err("has a nested repetition operator".into());
                    }
                    let Some(last) = items.pop() else {
                        return Err("has a repetition operator with nothing to repeat".into());
                    };
                    let node = Box::new(last);
                    items.push(match c {
                        '*' => Node::Star(node),
                        '+' => Node::Plus(node),
                        _ => Node::Quest(node),
                    });
                    // Non-greedy `*?` matches the same strings.
                    if self.peek() == Some('?') {
                        self.i += 1;
                    }
                    last_repeat = true;
                    continue;
                }
                '(' => {
                    self.i += 1;
                    if self.peek() == Some('?') {
                        return Err("uses a `(?` group, which is not supported here".into());
                    }
                    let group = self.sequence(true)?;
                    items.push(group);
                }
                '[' => {
                    let set = self.class()?;
                    items.push(Node::Set(set));
                }
                '.' => {
                    self.i += 1;
                    items.push(Node::AnyNotNl);
                }
                '^' => {
                    self.i += 1;
                    items.push(Node::Assert(Assertion::BeginText));
                }
                '$' => {
                    self.i += 1;
                    items.push(Node::Assert(Assertion::EndText));
                }
                '\\' => {
                    let nodes = self.escape_outside_class()?;
                    items.extend(nodes);
                }
                _ => {
                    self.i += 1;
                    items.push(Node::Char(c));
                }
            }
            last_repeat = false;
        }
        Ok(Node::Concat(items))
    }

    /// At `\` outside a class.
    fn escape_outside_class(&mut self) -> ReResult<Vec<Node>> {
        let Some(c) = self.peek_at(1) else {
            return Err("ends with a lone `\\`".into());
        };
        let node = match c {
            'A' => Node::Assert(Assertion::BeginText),
            'z' => Node::Assert(Assertion::EndText),
            'b' => Node::Assert(Assertion::WordBoundary),
            'B' => Node::Assert(Assertion::NotWordBoundary),
            'C' => Node::Any,
            'Q' => {
                // `\Q...\E`: literal text.
                self.i += 2;
                let mut out = Vec::new();
                while let Some(ch) = self.peek() {
                    if ch == '\\' && self.peek_at(1) == Some('E') {
                        self.i += 2;
                        break;
                    }
                    out.push(Node::Char(ch));
                    self.i += 1;
                }
                return Ok(out);
            }
            'p' | 'P' => {
                return Err("uses a `\\p` Unicode class, which is not supported here".into())
            }
            _ => {
                if let Some((named, negated)) = Named::perl(c) {
                    self.i += 2;
                    return Ok(vec![Node::Set(CharSet {
                        negated: false,
                        items: vec![ClassItem::Named(named, negated)],
                    })]);
                }
                return Ok(vec![Node::Char(self.escape_char()?)]);
            }
        };
        self.i += 2;
        Ok(vec![node])
    }

    /// Go's `parseEscape`: at `\`, one escaped character.
    fn escape_char(&mut self) -> ReResult<char> {
        self.i += 1;
        let Some(c) = self.peek() else {
            return Err("ends with a lone `\\`".into());
        };
        self.i += 1;
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            return Ok(c);
        }
        let invalid = || Err(format!("has the invalid escape `\\{c}`"));
        match c {
            '1'..='7' | '0' => {
                // A single non-zero digit would be a backreference: not supported.
                if c != '0' && !matches!(self.peek(), Some('0'..='7')) {
                    return invalid();
                }
                let mut value = c as u32 - '0' as u32;
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            value = value * 8 + (d as u32 - '0' as u32);
                            self.i += 1;
                        }
                        _ => break,
                    }
                }
                char::from_u32(value).ok_or_else(|| format!("has the invalid escape `\\{c}`"))
            }
            'x' => {
                if self.peek() == Some('{') {
                    self.i += 1;
                    let mut value: u32 = 0;
                    let mut digits = 0;
                    loop {
                        let Some(d) = self.peek() else {
                            return invalid();
                        };
                        self.i += 1;
                        if d == '}' {
                            break;
                        }
                        let Some(v) = d.to_digit(16) else {
                            return invalid();
                        };
                        value = value.saturating_mul(16).saturating_add(v);
                        if value > 0x10FFFF {
                            return invalid();
                        }
                        digits += 1;
                    }
                    if digits == 0 {
                        return invalid();
                    }
                    return char::from_u32(value)
                        .ok_or_else(|| format!("has the invalid escape `\\{c}`"));
                }
                let hi = self.peek().and_then(|d| d.to_digit(16));
                let lo = self.peek_at(1).and_then(|d| d.to_digit(16));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        self.i += 2;
                        char::from_u32(hi * 16 + lo)
                            .ok_or_else(|| format!("has the invalid escape `\\{c}`"))
                    }
                    _ => invalid(),
                }
            }
            'a' => Ok('\x07'),
            'f' => Ok('\x0c'),
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            't' => Ok('\t'),
            'v' => Ok('\x0b'),
            _ => invalid(),
        }
    }

    /// Go's `parseClass`, at `[`.
    fn class(&mut self) -> ReResult<CharSet> {
        self.i += 1;
        let mut set = CharSet {
            negated: false,
            items: Vec::new(),
        };
        if self.peek() == Some('^') {
            set.negated = true;
            self.i += 1;
        }
        let mut first = true;
        loop {
            match self.peek() {
                None => return Err("has an unclosed `[`".into()),
                Some(']') if !first => {
                    self.i += 1;
                    break;
                }
                _ => {}
            }
            first = false;
            // `[:alpha:]`, `[:^alpha:]`.
            if self.peek() == Some('[') && self.peek_at(1) == Some(':') {
                let rest: String = self.s[self.i + 2..].iter().collect();
                if let Some(end) = rest.find(":]") {
                    let name = &rest[..end];
                    let (negated, bare) = match name.strip_prefix('^') {
                        Some(bare) => (true, bare),
                        None => (false, name),
                    };
                    let Some(named) = Named::posix(bare) else {
                        return Err(format!("has the unknown class `[:{name}:]`"));
                    };
                    set.items.push(ClassItem::Named(named, negated));
                    self.i += 2 + name.chars().count() + 2;
                    continue;
                }
            }
            if self.peek() == Some('\\') {
                match self.peek_at(1) {
                    Some('p') | Some('P') => {
                        return Err("uses a `\\p` Unicode class, which is not supported here".into())
                    }
                    Some(c) => {
                        if let Some((named, negated)) = Named::perl(c) {
                            self.i += 2;
                            set.items.push(ClassItem::Named(named, negated));
                            continue;
                        }
                    }
                    None => {}
                }
            }
            let lo = self.class_char()?;
            let mut hi = lo;
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.i += 1;
                hi = self.class_char()?;
                if hi < lo {
                    return Err(format!("has the invalid range `{lo}-{hi}`"));
                }
            }
            set.items.push(ClassItem::Range(lo, hi));
        }
        Ok(set)
    }

    fn class_char(&mut self) -> ReResult<char> {
        match self.peek() {
            None => Err("has an unclosed `[`".into()),
            Some('\\') => self.escape_char(),
            Some(c) => {
                self.i += 1;
                Ok(c)
            }
        }
    }
}

impl Program {
    fn compile(re: &str) -> ReResult<Program> {
        let mut parser = ReParser {
            s: re.chars().collect(),
            i: 0,
        };
        let node = parser.sequence(false)?;
        let mut insts = Vec::new();
        emit(&node, &mut insts);
        insts.push(Inst::Match);
        Ok(Program { insts })
    }

    /// Go's `Regexp.MatchString` (an unanchored search; Docker's expressions start with `^`).
    fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        self.run(&chars, false).0
    }

    /// Could the expression match some text that starts with `prefix` and is longer? (True when
    /// unsure.)
    fn may_continue_after(&self, prefix: &str) -> bool {
        if !matches!(self.insts.first(), Some(Inst::Assert(Assertion::BeginText))) {
            return true;
        }
        let chars: Vec<char> = prefix.chars().collect();
        let (matched, alive) = self.run(&chars, true);
        matched || alive
    }

    /// Runs the threads over `chars`. With `open_end`, more text follows `chars` (unknown): `$` does
    /// not hold at the end and `\b` is assumed to. Returns whether a match was found and whether a
    /// thread is still waiting for a character at the end.
    fn run(&self, chars: &[char], open_end: bool) -> (bool, bool) {
        let n = self.insts.len();
        let mut current = Threads::new(n);
        let mut next = Threads::new(n);
        let mut matched = false;
        for pos in 0..=chars.len() {
            // Unanchored: a new thread starts at every position.
            if self.add(&mut current, 0, pos, chars, open_end) {
                matched = true;
            }
            if matched && !open_end {
                return (true, false);
            }
            let Some(&c) = chars.get(pos) else {
                let alive = current.list.iter().any(|&pc| {
                    matches!(
                        self.insts[pc],
                        Inst::Char(_) | Inst::Set(_) | Inst::AnyNotNl | Inst::Any
                    )
                });
                return (matched, alive);
            };
            next.clear();
            for k in 0..current.list.len() {
                let pc = current.list[k];
                let step = match &self.insts[pc] {
                    Inst::Char(want) => *want == c,
                    Inst::Set(set) => set.contains(c),
                    Inst::AnyNotNl => c != '\n',
                    Inst::Any => true,
                    _ => false,
                };
                if step && self.add(&mut next, pc + 1, pos + 1, chars, open_end) {
                    matched = true;
                }
            }
            // `seen` of the new current list holds what was visited at `pos + 1`: kept, so the
            // start thread added there is deduplicated against it.
            std::mem::swap(&mut current, &mut next);
        }
        (matched, false)
    }

    /// Adds the thread at `pc` and everything reachable without consuming a character. Returns
    /// whether `Match` was reached.
    fn add(
        &self,
        threads: &mut Threads,
        pc: usize,
        pos: usize,
        chars: &[char],
        open_end: bool,
    ) -> bool {
        let mut matched = false;
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if threads.seen[pc] {
                continue;
            }
            threads.seen[pc] = true;
            match &self.insts[pc] {
                Inst::Jmp(to) => stack.push(*to),
                Inst::Split(a, b) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Inst::Assert(assertion) => {
                    if assertion_holds(*assertion, pos, chars, open_end) {
                        stack.push(pc + 1);
                    }
                }
                Inst::Match => matched = true,
                Inst::Char(_) | Inst::Set(_) | Inst::AnyNotNl | Inst::Any => {
                    threads.list.push(pc);
                }
            }
        }
        matched
    }
}

fn assertion_holds(assertion: Assertion, pos: usize, chars: &[char], open_end: bool) -> bool {
    let at_end = pos == chars.len();
    match assertion {
        Assertion::BeginText => pos == 0,
        Assertion::EndText => at_end && !open_end,
        Assertion::WordBoundary | Assertion::NotWordBoundary => {
            if at_end && open_end {
                return true; // the next character is unknown
            }
            let before = pos > 0 && is_word_char(chars[pos - 1]);
            let after = chars.get(pos).is_some_and(|&c| is_word_char(c));
            (before != after) == (assertion == Assertion::WordBoundary)
        }
    }
}

/// The threads at one position: the consuming instructions, and which were already added.
struct Threads {
    list: Vec<usize>,
    seen: Vec<bool>,
}

impl Threads {
    fn new(n: usize) -> Self {
        Threads {
            list: Vec::new(),
            seen: vec![false; n],
        }
    }

    fn clear(&mut self) {
        self.list.clear();
        self.seen.iter_mut().for_each(|s| *s = false);
    }
}

fn emit(node: &Node, insts: &mut Vec<Inst>) {
    match node {
        Node::Char(c) => insts.push(Inst::Char(*c)),
        Node::Set(set) => insts.push(Inst::Set(set.clone())),
        Node::AnyNotNl => insts.push(Inst::AnyNotNl),
        Node::Any => insts.push(Inst::Any),
        Node::Assert(a) => insts.push(Inst::Assert(*a)),
        Node::Concat(items) => items.iter().for_each(|item| emit(item, insts)),
        Node::Star(inner) => {
            let split = insts.len();
            insts.push(Inst::Split(split + 1, 0));
            emit(inner, insts);
            insts.push(Inst::Jmp(split));
            let after = insts.len();
            insts[split] = Inst::Split(split + 1, after);
        }
        Node::Plus(inner) => {
            let start = insts.len();
            emit(inner, insts);
            let after = insts.len() + 1;
            insts.push(Inst::Split(start, after));
        }
        Node::Quest(inner) => {
            let split = insts.len();
            insts.push(Inst::Split(split + 1, 0));
            emit(inner, insts);
            let after = insts.len();
            insts[split] = Inst::Split(split + 1, after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore::parse(Path::new(".dockerignore"), text).expect("should succeed")
    }

    fn parse_err(text: &str) -> String {
        DockerIgnore::parse(Path::new("ctx/.dockerignore"), text)
            .expect_err("should fail")
            .to_string()
    }

    /// One pattern as `patternmatcher.New` would hold it.
    fn pattern(p: &str) -> Pattern {
        let text = go_clean(p);
        check_glob_syntax(&text).expect("should succeed");
        let kind = compile(&text).expect("should succeed");
        Pattern {
            literal_end: literal_end(&text),
            text,
            exception: false,
            kind,
        }
    }

    fn excluded(di: &DockerIgnore, paths: &[&str]) {
        for p in paths {
            assert!(
                di.is_excluded(p),
                "{p} should be excluded by {:?}",
                di.patterns()
            );
        }
    }

    fn included(di: &DockerIgnore, paths: &[&str]) {
        for p in paths {
            assert!(
                !di.is_excluded(p),
                "{p} should be included by {:?}",
                di.patterns()
            );
        }
    }

    // --- Docker's documentation (build context, .dockerignore files) ---

    #[test]
    fn docs_example_with_comment_and_temp_patterns() {
        let di = ignore("# comment\n*/temp*\n*/*/temp*\ntemp?\n");
        assert_eq!(di.patterns(), ["*/temp*", "*/*/temp*", "temp?"]);
        // `*/temp*`: one level down.
        excluded(
            &di,
            &[
                "somedir/temporary.txt",
                "somedir/temp",
                "somedir/temp/x.txt",
            ],
        );
        // `*/*/temp*`: two levels down.
        excluded(&di, &["somedir/subdir/temporary.txt"]);
        // `temp?`: the root only, exactly one more character.
        excluded(&di, &["tempa", "tempb", "tempa/inner.txt"]);
        included(
            &di,
            &["temp", "tempab", "temp.txt", "a/b/c/temp", "dir/tempa/../x"],
        );
    }

    #[test]
    fn docs_double_star_go_files() {
        let di = ignore("**/*.go\n");
        excluded(&di, &["main.go", "cmd/x/main.go", "a/b/c/d.go"]);
        included(&di, &["main.go.txt", "go", "cmd/x/main.rs"]);
    }

    #[test]
    fn docs_markdown_with_readme_exception() {
        let di = ignore("*.md\n!README.md\n");
        excluded(&di, &["CHANGELOG.md", "notes.md"]);
        included(&di, &["README.md", "main.go"]);
        // `*` does not cross `/`: markdown below the root is not matched by `*.md`.
        included(&di, &["docs/guide.md", "docs/README.md"]);
    }

    #[test]
    fn docs_readme_secret_after_exception_is_excluded() {
        let di = ignore("*.md\n!README*.md\nREADME-secret.md\n");
        excluded(&di, &["README-secret.md", "other.md"]);
        included(&di, &["README.md", "README-public.md"]);
    }

    #[test]
    fn docs_exception_last_reincludes_every_readme() {
        let di = ignore("*.md\nREADME-secret.md\n!README*.md\n");
        excluded(&di, &["other.md"]);
        included(&di, &["README-secret.md", "README.md", "README-public.md"]);
    }

    #[test]
    fn comments_and_blank_lines() {
        let di = ignore("# a comment\n\n   \n#another\nfoo\n  # not a comment\n");
        // Only a `#` in the first column starts a comment (the line is not trimmed first).
        assert_eq!(di.patterns(), ["foo", "# not a comment"]);
        excluded(&di, &["# not a comment"]);
        included(&di, &["#another", "bar"]);
    }

    #[test]
    fn patterns_are_cleaned_and_rooted_at_the_context() {
        let di = ignore("/foo/\n./bar/../baz\n//x//y/\n! /keep/./me\n!  spaced \n/\n.\n");
        assert_eq!(
            di.patterns(),
            ["foo", "baz", "x/y", "!keep/me", "!spaced", "/", "."]
        );
        excluded(&di, &["foo", "foo/a", "baz", "x/y/z"]);
        included(&di, &["bar", "x", "other"]);
        // `/` and `.` exclude nothing in Docker.
        let di = ignore("/\n.\n./\n");
        included(&di, &["a", "a/b", "."]);
    }

    #[test]
    fn crlf_bom_and_surrounding_whitespace() {
        let di = ignore("\u{feff}foo\r\n  bar  \r\n\t!bar/keep\t\r\n");
        assert_eq!(di.patterns(), ["foo", "bar", "!bar/keep"]);
        excluded(&di, &["foo", "bar/x"]);
        included(&di, &["bar/keep", "bar/keep/inner"]);
    }

    #[test]
    fn empty_excludes_nothing() {
        let di = DockerIgnore::empty();
        assert!(di.patterns().is_empty());
        included(&di, &["a", "a/b", ".git", "node_modules/x"]);
        assert!(di.may_reinclude_below("a"));
        let di = ignore("\n# only comments\n\n");
        assert!(di.patterns().is_empty());
    }

    // --- moby/patternmatcher's own cases ---

    /// `TestMatches`: (pattern, path, result) where 2 is a match of the path itself, 1 a match of a
    /// parent only, 0 none.
    #[test]
    fn patternmatcher_match_table() {
        let cases: &[(&str, &str, u8)] = &[
            ("**", "file", 2),
            ("**", "file/", 2),
            ("**/", "file", 2),
            ("**/", "file/", 2),
            ("**", "/", 2),
            ("**/", "/", 2),
            ("**", "dir/file", 2),
            ("**/", "dir/file", 2),
            ("**", "dir/file/", 2),
            ("**/", "dir/file/", 2),
            ("**/**", "dir/file", 2),
            ("**/**", "dir/file/", 2),
            ("dir/**", "dir/file", 2),
            ("dir/**", "dir/file/", 2),
            ("dir/**", "dir/dir2/file", 2),
            ("dir/**", "dir/dir2/file/", 2),
            ("**/dir", "dir", 2),
            ("**/dir", "dir/file", 1),
            ("**/dir2/*", "dir/dir2/file", 2),
            ("**/dir2/*", "dir/dir2/file/", 1),
            ("**/dir2/**", "dir/dir2/dir3/file", 2),
            ("**/dir2/**", "dir/dir2/dir3/file/", 2),
            ("**file", "file", 2),
            ("**file", "dir/file", 2),
            ("**/file", "dir/file", 2),
            ("**file", "dir/dir/file", 2),
            ("**/file", "dir/dir/file", 2),
            ("**/file*", "dir/dir/file", 2),
            ("**/file*", "dir/dir/file.txt", 2),
            ("**/file*txt", "dir/dir/file.txt", 2),
            ("**/file*.txt", "dir/dir/file.txt", 2),
            ("**/file*.txt*", "dir/dir/file.txt", 2),
            ("**/**/*.txt", "dir/dir/file.txt", 2),
            ("**/**/*.txt2", "dir/dir/file.txt", 0),
            ("**/*.txt", "file.txt", 2),
            ("**/**/*.txt", "file.txt", 2),
            ("a**/*.txt", "a/file.txt", 2),
            ("a**/*.txt", "a/dir/file.txt", 2),
            ("a**/*.txt", "a/dir/dir/file.txt", 2),
            ("a/*.txt", "a/dir/file.txt", 0),
            ("a/*.txt", "a/file.txt", 2),
            ("a/*.txt**", "a/file.txt", 2),
            ("a[b-d]e", "ae", 0),
            ("a[b-d]e", "ace", 2),
            ("a[b-d]e", "aae", 0),
            ("a[^b-d]e", "aze", 2),
            (".*", ".foo", 2),
            (".*", "foo", 0),
            ("abc.def", "abcdef", 0),
            ("abc.def", "abc.def", 2),
            ("abc.def", "abcZdef", 0),
            ("abc?def", "abcZdef", 2),
            ("abc?def", "abcdef", 0),
            ("**/foo/bar", "foo/bar", 2),
            ("**/foo/bar", "dir/foo/bar", 2),
            ("**/foo/bar", "dir/dir2/foo/bar", 2),
            ("abc/**", "abc", 0),
            ("abc/**", "abc/def", 2),
            ("abc/**", "abc/def/ghi", 2),
            ("**/.foo", ".foo", 2),
            ("**/.foo", "bar.foo", 0),
            ("a(b)c/def", "a(b)c/def", 2),
            ("a(b)c/def", "a(b)c/xyz", 0),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", 2),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                2,
            ),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                2,
            ),
            ("a\\\\", "a\\", 2),
            ("a\\*b", "a*b", 2),
        ];
        for &(pat, path, want) in cases {
            let p = pattern(pat);
            let got = if p.matches(path) {
                2
            } else if p.matches_or_parent(path) {
                1
            } else {
                0
            };
            assert_eq!(got, want, "pattern {pat:?} path {path:?}");
        }
    }

    #[test]
    fn patternmatcher_multi_pattern_table() {
        let di = ignore("**\n!util/docker/web\n");
        included(&di, &["util/docker/web/foo"]);
        let di = ignore("**\n!util/docker/web\nutil/docker/web/foo\n");
        excluded(&di, &["util/docker/web/foo"]);
        let di = ignore("**\n!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl\n");
        included(
            &di,
            &["dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
        );
        let di = ignore("**\n!dist/*.whl\n");
        included(
            &di,
            &["dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
        );
    }

    #[test]
    fn patternmatcher_simple_cases() {
        excluded(&ignore("*"), &["fileutils.go"]);
        excluded(&ignore("*.go"), &["fileutils.go"]);
        // An exception before the pattern does nothing.
        excluded(&ignore("!fileutils.go\n*.go"), &["fileutils.go"]);
        included(&ignore("*.go\n!fileutils.go"), &["fileutils.go"]);
        for folder in ["docs", "docs/", "docs/*"] {
            let di = ignore(&format!("{folder}\n!docs/README.md\n"));
            included(&di, &["docs/README.md"]);
            excluded(&di, &["docs/other.md"]);
        }
        included(&ignore("*.go"), &["."]);
    }

    /// `TestMatch` (from Go's `filepath.Match` tests), through the whole matcher.
    #[test]
    fn go_filepath_match_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", true),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("[\\-x]", "-", true),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
        ];
        for &(pat, path, want) in cases {
            let di = ignore(pat);
            assert_eq!(di.is_excluded(path), want, "pattern {pat:?} path {path:?}");
        }
    }

    #[test]
    fn invalid_patterns_are_errors_naming_file_and_line() {
        for bad in [
            "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "a[\\",
        ] {
            let msg = parse_err(&format!("ok\n# c\n{bad}\n"));
            assert!(
                msg.contains("`ctx/.dockerignore` at line 3")
                    && msg.contains("not a valid pattern"),
                "{bad}: {msg}"
            );
        }
        // Valid for `filepath.Match` but not for Go's regexp, which Docker builds from it
        // (moby/moby#52203): `l-O` is a reversed range.
        let msg = parse_err("[Local-Only]/\n");
        assert!(msg.contains("at line 1") && msg.contains("range"), "{msg}");
        assert!(parse_err("a\n!\n").contains("at line 2"));
        assert!(parse_err("!/\n").contains("at line 1"));
        // `\e` is a literal `e` for `filepath.Match` but an invalid escape for Go's regexp.
        assert!(parse_err("x\\e*\n").contains("escape"));
    }

    // --- Docker's translation to a regular expression ---

    #[test]
    fn compile_types_and_expressions_match_docker() {
        let cases: &[(&str, MatchType, &str)] = &[
            ("*", MatchType::Regex, "^[^/]*$"),
            ("file*", MatchType::Regex, "^file[^/]*$"),
            ("*file", MatchType::Regex, "^[^/]*file$"),
            ("a*/b", MatchType::Regex, "^a[^/]*/b$"),
            ("**", MatchType::Suffix, ""),
            ("**/**", MatchType::Regex, "^(.*/)?.*$"),
            ("dir/**", MatchType::Prefix, ""),
            ("**/dir", MatchType::Suffix, ""),
            ("**/dir2/*", MatchType::Regex, "^(.*/)?dir2/[^/]*$"),
            ("**/dir2/**", MatchType::Regex, "^(.*/)?dir2/.*$"),
            ("**file", MatchType::Suffix, ""),
            ("**/file*txt", MatchType::Regex, "^(.*/)?file[^/]*txt$"),
            ("**/**/*.txt", MatchType::Regex, "^(.*/)?(.*/)?[^/]*\\.txt$"),
            ("a[b-d]e", MatchType::Regex, "^a[b-d]e$"),
            (".*", MatchType::Regex, "^\\.[^/]*$"),
            ("abc.def", MatchType::Exact, ""),
            ("abc?def", MatchType::Regex, "^abc[^/]def$"),
            ("**/foo/bar", MatchType::Suffix, ""),
            ("a(b)c/def", MatchType::Exact, ""),
            ("a.|)$(}+{bc", MatchType::Exact, ""),
        ];
        for &(pat, ty, re) in cases {
            let (got_ty, got_re) = docker_regex(&go_clean(pat));
            assert_eq!(got_ty, ty, "{pat}");
            if ty == MatchType::Regex {
                assert_eq!(got_re, re, "{pat}");
            }
        }
    }

    #[test]
    fn double_star_rules() {
        // `**` alone: everything.
        excluded(&ignore("**"), &["a", "a/b/c", ".hidden"]);
        // `**/` is cleaned to `**`.
        assert_eq!(ignore("**/").patterns(), ["**"]);
        // `dir/**`: everything below `dir`, not `dir` itself.
        let di = ignore("dir/**");
        excluded(&di, &["dir/a", "dir/a/b"]);
        included(&di, &["dir", "dirt", "other/dir/a"]);
        // `**/foo/**/bar`: any number of directories (including none) around and between.
        let di = ignore("**/foo/**/bar");
        excluded(
            &di,
            &["foo/bar", "x/foo/bar", "foo/y/z/bar", "x/foo/y/bar/inner"],
        );
        included(&di, &["foo/barx", "xfoo/bar", "foo/y/xbar"]);
        // Docker's suffix rule: `**x` matches any path ending in `x`, even mid-name.
        let di = ignore("**foo");
        excluded(&di, &["foo", "a/foo", "barfoo", "a/barfoo"]);
        included(&di, &["foox"]);
        // A prefix with no `/`: `foo**` is any path starting with `foo`.
        let di = ignore("foo**");
        excluded(&di, &["foo", "foobar", "foo/x"]);
        included(&di, &["xfoo"]);
    }

    #[test]
    fn single_star_does_not_cross_slash() {
        let di = ignore("a/b*");
        excluded(&di, &["a/b", "a/bc", "a/b/c", "a/bc/d"]);
        included(&di, &["a/x/b", "a", "ab"]);
        let di = ignore("*/*.js");
        excluded(&di, &["src/index.js"]);
        included(&di, &["index.js", "src/lib/index.js"]);
    }

    #[test]
    fn parent_directory_matching() {
        let di = ignore("node_modules\n");
        excluded(&di, &["node_modules", "node_modules/x/y.js"]);
        included(&di, &["services/a/node_modules/x", "node_modules2"]);
        let di = ignore("**/node_modules\n");
        excluded(
            &di,
            &[
                "node_modules/x",
                "services/a/node_modules",
                "services/a/node_modules/x",
            ],
        );
        included(&di, &["services/a/node_modules_x/y"]);
    }

    #[test]
    fn exception_inside_excluded_directory() {
        let di = ignore("dir\n!dir/keep.txt\n");
        excluded(&di, &["dir", "dir/other.txt", "dir/sub/x"]);
        included(&di, &["dir/keep.txt", "dir/keep.txt/inner"]);
        assert!(di.may_reinclude_below("dir"));
        let di = ignore("dir\n!other\n");
        assert!(!di.may_reinclude_below("dir"));
    }

    #[test]
    fn last_matching_pattern_wins() {
        let di = ignore("*.log\n!important.log\nimportant.log\n");
        excluded(&di, &["important.log", "a.log"]);
        let di = ignore("logs\n!logs\n");
        included(&di, &["logs", "logs/a"]);
        let di = ignore("**\n!src\nsrc/**/*.test.ts\n!src/keep.test.ts\n");
        included(&di, &["src", "src/a.ts", "src/keep.test.ts"]);
        excluded(&di, &["docs/a.md", "src/x/a.test.ts", "package.json"]);
    }

    /// Cases where Docker's walk (`MatchesUsingParentResults`) and `MatchesOrParentMatches`
    /// disagree; each checked with `docker build` (classic builder, which matches like BuildKit).
    #[test]
    fn docker_walk_quirks() {
        // `!logs` is not evaluated for `logs` (nothing excluded it there), so `logs/app.log`,
        // excluded by `**/*.log`, is not re-included.
        let di = ignore("**/*.log\n!logs\n");
        excluded(&di, &["logs/app.log", "a.log"]);
        included(&di, &["logs/x.txt", "logs"]);
        let p = |s: &str| pattern(s);
        assert!(p("logs").matches_or_parent("logs/app.log"));
        // The second `node_modules` is not evaluated for `node_modules` (already excluded), so it
        // does not count for `node_modules/keep`, which the exception re-includes.
        let di = ignore("node_modules\n!node_modules/keep\nnode_modules\n");
        included(&di, &["node_modules/keep"]);
        excluded(&di, &["node_modules", "node_modules/other"]);
        assert!(di.may_reinclude_below("node_modules"));
        // An excluded directory with only plain-path exceptions elsewhere is not walked at all.
        let di = ignore("a\n!b\n");
        assert!(di.skips_dir("a"));
        assert!(!di.may_reinclude_below("a"));
        excluded(&di, &["a/b", "a/x/y"]);
        // A trailing `/**` or `/*` on an exception still counts as a plain path.
        let di = ignore("a\n!a/keep/**\n");
        assert!(di.only_prefix_exceptions);
        assert!(!di.skips_dir("a"));
        assert!(di.skips_dir("a/drop"));
        included(&di, &["a/keep/x"]);
        excluded(&di, &["a/drop/x"]);
        let di = ignore("a\n!a/k*\n");
        assert!(!di.only_prefix_exceptions);
    }

    #[test]
    fn escapes() {
        // `\#` makes a pattern of a name starting with `#`.
        let di = ignore("\\#notes\n");
        excluded(&di, &["#notes"]);
        let di = ignore("a\\?b\nstar\\*\n");
        excluded(&di, &["a?b", "star*"]);
        included(&di, &["axb", "stars"]);
        // Escaped spaces and brackets.
        let di = ignore("my\\ file\n\\[x\\]\n");
        excluded(&di, &["my file", "[x]"]);
        included(&di, &["x"]);
        // Docker passes `\d` to Go's regexp, where it is a digit class (not a literal `d`).
        let di = ignore("file\\d\n");
        excluded(&di, &["file1"]);
        included(&di, &["filed"]);
    }

    #[test]
    fn character_classes() {
        let di = ignore("file[0-9].txt\n");
        excluded(&di, &["file1.txt"]);
        included(&di, &["filea.txt", "file10.txt"]);
        // Negation is `^` (Go); `!` inside a class is a literal `!`.
        let di = ignore("x[^ab]\n");
        excluded(&di, &["xc"]);
        included(&di, &["xa", "xb"]);
        let di = ignore("x[!a]\n");
        excluded(&di, &["x!", "xa"]);
        included(&di, &["xb"]);
        // A class may match `/` (Go's regexp class); `[^a]` too.
        let di = ignore("a[/]b\n");
        excluded(&di, &["a/b"]);
        // POSIX classes, which Go's regexp understands.
        let di = ignore("v[[:digit:]]\n");
        excluded(&di, &["v1"]);
        included(&di, &["vx"]);
        // Multi-byte characters are single characters.
        let di = ignore("caf[é]\n");
        excluded(&di, &["café"]);
    }

    #[test]
    fn caret_outside_a_class_is_an_anchor_in_docker_regexps() {
        // No other special character: an exact match, `^` literal.
        excluded(&ignore("^x\n"), &["^x"]);
        // With `*`, Docker's regexp is `^^x[^/]*$`: the `^` is an anchor.
        let di = ignore("^x*\n");
        excluded(&di, &["x", "xy"]);
        included(&di, &["^x"]);
    }

    #[test]
    fn unclean_query_paths_are_cleaned() {
        let di = ignore("foo/bar\n");
        excluded(&di, &["./foo/bar", "foo//bar", "foo/bar/", "/foo/bar"]);
        included(&di, &["", "."]);
    }

    #[test]
    fn may_reinclude_below_cases() {
        let di = ignore("**\n!src\n!package.json\n");
        assert!(!di.may_reinclude_below("docs"));
        assert!(!di.may_reinclude_below("docs/deep"));
        // Not excluded at all: a walker must go in.
        assert!(di.may_reinclude_below("src"));
        let di = ignore("**\n!**/*.go\n");
        assert!(di.may_reinclude_below("docs"));
        // An exception before the last exclusion of the directory cannot re-include.
        let di = ignore("!node_modules/keep\nnode_modules\n");
        assert!(!di.may_reinclude_below("node_modules"));
        excluded(&di, &["node_modules/keep"]);
        // Conservative: here nothing below is re-included, but the answer is "maybe".
        let di = ignore("node_modules\n!node_modules/keep\nnode_modules/keep\n");
        assert!(di.may_reinclude_below("node_modules"));
        excluded(&di, &["node_modules/keep", "node_modules/keep/x"]);
        let di = ignore("!vendor/*.rs\nvendor\n");
        excluded(&di, &["vendor/a.rs"]);
        assert!(!di.may_reinclude_below("vendor"));
        let di = ignore("node_modules\n!node_modules/keep\n");
        assert!(di.may_reinclude_below("node_modules"));
        assert!(!di.may_reinclude_below("node_modules/other"));
        // Prefix and suffix exceptions.
        let di = ignore("build\n!build/keep/**\n");
        assert!(di.may_reinclude_below("build"));
        assert!(di.may_reinclude_below("build/keep"));
        assert!(!di.may_reinclude_below("build/drop"));
        let di = ignore("build\n!**/keep\n");
        assert!(di.may_reinclude_below("build/drop"));
        // Regex exceptions that cannot match below the directory.
        let di = ignore("vendor\n!src/*.rs\n");
        assert!(!di.may_reinclude_below("vendor"));
        let di = ignore("vendor\n!vendor/*.rs\n");
        assert!(di.may_reinclude_below("vendor"));
        assert!(!di.may_reinclude_below("vendor/sub"));
    }

    /// A reference for patterns made of literals, `*` and `?` only: Go's glob semantics, where
    /// neither crosses `/`.
    fn glob_ref(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len())
                .take_while(|&k| k == 0 || s[k - 1] != '/')
                .any(|k| glob_ref(&p[1..], &s[k..])),
            Some('?') => s.first().is_some_and(|&c| c != '/') && glob_ref(&p[1..], &s[1..]),
            Some(&c) => s.first() == Some(&c) && glob_ref(&p[1..], &s[1..]),
        }
    }

    proptest! {
        /// A walker carrying each directory's state gets `is_excluded`'s answer for every path.
        #[test]
        fn walking_with_dir_states_agrees_with_is_excluded(
            pats in proptest::collection::vec("!?(\\*\\*/)?[ab*]{1,3}(/[ab*]{1,2})?(/\\*\\*)?", 1..5),
            path in proptest::collection::vec("[ab]{1,2}", 1..5),
        ) {
            let di = ignore(&pats.join("\n"));
            let mut state = di.dir_state(".");
            let mut rel = String::new();
            for seg in &path {
                if !rel.is_empty() {
                    rel.push('/');
                }
                rel.push_str(seg);
                let (excluded, next) = di.check_in(&state, &rel);
                prop_assert_eq!(excluded, di.is_excluded(&rel), "patterns {:?} path {}", pats, rel);
                // Starting the walk from this directory gives the same state.
                let (again, _) = di.check_in(&di.dir_state(&rel), &format!("{rel}/a"));
                prop_assert_eq!(again, di.is_excluded(&format!("{rel}/a")));
                state = next;
            }
        }

        /// The `regex` crate (used for speed) and our Pike VM (Go's semantics) agree on every
        /// expression Docker's translation produces.
        #[test]
        fn fast_engine_agrees_with_the_pike_vm(
            pat in "(\\*\\*/)?[a-c*?./\\[\\]^!-]{1,8}(/\\*\\*)?",
            path in "[a-c./é-]{0,10}",
        ) {
            let (ty, re) = docker_regex(&pat);
            if !matches!(ty, MatchType::Regex) {
                return Ok(());
            }
            let Ok(program) = Program::compile(&re) else { return Ok(()); };
            if let Some(fast) = fast_regex(&re) {
                prop_assert_eq!(fast.is_match(&path), program.is_match(&path), "pattern {:?} regex {:?} path {:?}", pat, re, path);
            }
        }

        /// The literal-ending prefilter never changes an answer: a pattern matches exactly what
        /// its expression (run by the Pike VM, Go's semantics) matches.
        #[test]
        fn prefiltered_matching_agrees_with_the_pike_vm(
            pat in "(\\*\\*/)?[a-d*?./\\[\\]\\\\^$\n\u{7}-]{0,6}(\\.md|/x|c)?",
            path in "[a-d./^$\n\u{7}-]{0,8}(\\.md|/x|c)?",
        ) {
            let text = go_clean(&pat);
            let (ty, re) = docker_regex(&text);
            if !matches!(ty, MatchType::Regex) {
                return Ok(());
            }
            let Ok(program) = Program::compile(&re) else { return Ok(()); };
            let Ok(kind) = compile(&text) else { return Ok(()); };
            let p = Pattern { literal_end: literal_end(&text), text: text.clone(), exception: false, kind };
            prop_assert_eq!(p.matches(&path), program.is_match(&path), "pattern {:?} regex {:?} path {:?} end {:?}", text, re, path, p.literal_end);
        }

        /// A pattern of literal segments excludes exactly that path and everything below it.
        #[test]
        fn literal_pattern_excludes_exactly_its_subtree(
            pat in proptest::collection::vec("[a-c]{1,2}", 1..4),
            path in proptest::collection::vec("[a-c]{1,2}", 1..5),
        ) {
            let pat = pat.join("/");
            let path = path.join("/");
            let di = ignore(&pat);
            let want = path == pat || path.starts_with(&format!("{pat}/"));
            prop_assert_eq!(di.is_excluded(&path), want);
            // Spelled with a leading `/`, `./` or a trailing `/`: the same.
            for spelled in [format!("/{pat}"), format!("./{pat}"), format!("{pat}/")] {
                prop_assert_eq!(ignore(&spelled).patterns(), vec![pat.clone()]);
            }
        }

        /// With `*` and `?` only, the regexp engine agrees with a direct glob matcher.
        #[test]
        fn star_and_question_agree_with_glob_reference(
            pat in "[ab*?/]{1,6}",
            path in "[ab/]{1,6}",
        ) {
            prop_assume!(!pat.contains("**"));
            let p = pattern(&pat);
            let cleaned: Vec<char> = go_clean(&pat).chars().collect();
            let s: Vec<char> = path.chars().collect();
            prop_assert_eq!(p.matches(&path), glob_ref(&cleaned, &s), "pattern {}", pat);
        }

        /// `may_reinclude_below` is sound: when it says no, nothing below is re-included.
        #[test]
        fn may_reinclude_below_is_sound(
            pats in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(
                    prop_oneof![
                        Just("a"), Just("b"), Just("*"), Just("**"), Just("a*"), Just("?"),
                        Just("[ab]"), Just("*b"),
                    ],
                    1..4,
                )),
                1..5,
            ),
            dir in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("ab")], 1..3),
            below in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("ab")], 1..3),
        ) {
            let text: Vec<String> = pats
                .iter()
                .map(|(neg, segs)| format!("{}{}", if *neg { "!" } else { "" }, segs.join("/")))
                .collect();
            let di = ignore(&text.join("\n"));
            let dir = dir.join("/");
            let path = format!("{dir}/{}", below.join("/"));
            if di.is_excluded(&dir) && !di.may_reinclude_below(&dir) {
                prop_assert!(di.is_excluded(&path), "{:?}: {} re-included", text, path);
            }
        }
    }
}
