//! Paths beneath the monorepo root, resolved as BuildKit resolves a `COPY`/`ADD` source in the
//! context it was sent, without the kernel ever following a symlink (DESIGN.md principle 1).
//!
//! Every directory is opened from the root's descriptor one component at a time with `O_NOFOLLOW`;
//! a symlink met on the way is read (`readlinkat`) and resolved here, scoped to the root as
//! BuildKit's `fs.RootPath` does (an absolute target starts again at the root, `..` stops at it),
//! and only after checking that its target does not leave the root on this machine (else an error
//! naming it). The links met are part of the selection, so the builder, given exactly these
//! entries, resolves the source the same way.
//!
//! What a source selects, as BuildKit's `copy` does: a file (a final symlink followed to it); a
//! directory's whole subtree (as the context holds it after `.dockerignore`, links in it kept as
//! links); for a pattern (`*`, `?`, `[...]`, Go's `filepath.Match` per component), the literal
//! directory before it resolved as above, then every entry below it whose path matches (walked
//! without following links), each selected as a source of its own. A pattern that matches nothing
//! selects nothing (BuildKit copies nothing, without an error).

use std::collections::BTreeSet;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::dockerignore::DockerIgnore;

/// How many symlinks one resolution may follow (Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// The monorepo root, opened once.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// What a path resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

fn kind_of(st: &rustix::fs::Stat) -> Kind {
    match FileType::from_raw_mode(st.st_mode as _) {
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::File,
    }
}

impl Root {
    /// Opens the root directory (through symlinks: the root may be given as any path to it).
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory at `rel` (no component of it a symlink), `.` for the root.
    pub fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        let mut fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        for c in components(rel) {
            fd = rustix::fs::openat(
                &fd,
                c,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )?;
        }
        Ok(fd)
    }

    /// The directory holding `rel`, opened, and `rel`'s last component.
    pub fn parent<'a>(&self, rel: &'a str) -> io::Result<(OwnedFd, &'a str)> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or((".", rel));
        Ok((self.open_dir(dir)?, name))
    }

    /// `lstat` of `rel`.
    pub fn lstat(&self, rel: &str) -> io::Result<rustix::fs::Stat> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// The target of the symlink at `rel`.
    pub fn read_link(&self, rel: &str) -> io::Result<PathBuf> {
        let (dir, name) = self.parent(rel)?;
        let target = rustix::fs::readlinkat(&dir, name, Vec::new())?;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(
            target.as_bytes(),
        )))
    }

    /// The bytes of the file at `rel` (its real path: no component a symlink).
    pub fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        let (dir, name) = self.parent(rel)?;
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY,
            Mode::empty(),
        )?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes)?;
        Ok(bytes)
    }

    /// The regular file at `rel` (its real path: no component a symlink), opened for reading
    /// without following a symlink and without blocking on a fifo: whatever was swapped in at
    /// that path since it was listed, the file read is beneath the root, or the open fails.
    pub fn open_file(&self, rel: &str) -> io::Result<std::fs::File> {
        let (dir, name) = self.parent(rel)?;
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode as _) != FileType::RegularFile {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(std::fs::File::from(fd))
    }

    /// The names in the directory at `rel` (its real path), sorted, with their kinds.
    pub fn list(&self, rel: &str) -> io::Result<Vec<(String, Kind)>> {
        let mut dir = rustix::fs::Dir::new(self.open_dir(rel)?)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(name) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "`{}` has a name that is not UTF-8",
                        self.path
                            .join(rel)
                            .join(std::ffi::OsStr::from_bytes(name))
                            .display()
                    ),
                ));
            };
            let kind = match entry.file_type() {
                FileType::Directory => Kind::Dir,
                FileType::Symlink => Kind::Symlink,
                FileType::Unknown => kind_of(&rustix::fs::statat(
                    dir.fd()?,
                    name,
                    AtFlags::SYMLINK_NOFOLLOW,
                )?),
                _ => Kind::File,
            };
            out.push((name.to_string(), kind));
        }
        out.sort();
        Ok(out)
    }
}

/// The components of a clean relative path (none for `.`).
fn components(rel: &str) -> impl Iterator<Item = &str> {
    rel.split('/').filter(|c| !c.is_empty() && *c != ".")
}

fn join(dir: &str, name: &str) -> String {
    if dir == "." || dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// What the sources of one context select.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Files and symlinks selected one by one (real paths).
    pub entries: BTreeSet<String>,
    /// Directories selected with their whole subtree (real paths; `.` for the root).
    pub trees: BTreeSet<String>,
    /// Directories where a new file could join the selection (for watchers).
    pub covers: BTreeSet<String>,
}

/// What the context may never hold, and what it holds.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub ignore: &'a DockerIgnore,
    /// Paths the engine never sends: its cache directory when it is inside the root, and its
    /// config file.
    pub hidden: &'a [String],
}

impl Rules<'_> {
    /// Whether `rel` is a hidden path or inside one.
    pub fn is_hidden(&self, rel: &str) -> bool {
        self.hidden.iter().any(|h| {
            rel == h
                || rel
                    .strip_prefix(h.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    }
}

/// Why a source cannot be resolved.
#[derive(Debug)]
pub enum SelectError {
    /// Nothing at this path in the context.
    Missing {
        path: String,
    },
    /// `.dockerignore` leaves it out of the context.
    Excluded {
        path: String,
    },
    /// A symlink on the way leaves the root.
    Outside {
        link: String,
        target: PathBuf,
    },
    /// Too many symlinks (a loop).
    Loop {
        link: String,
    },
    /// The engine's own cache directory or config file.
    Hidden {
        path: String,
    },
    Io {
        path: String,
        error: io::Error,
    },
}

/// BuildKit's `containsWildcards`: `*`, `?` or `[` not escaped by `\`.
pub fn has_wildcards(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// A source path cleaned as BuildKit does (`path.Clean("/" + p)`, then relative): `..` stops at
/// the root; `.` is the root.
pub fn clean(source: &str) -> String {
    crate::workspace::join_rel(".", source)
}

/// Selects what `source` names into `out`.
pub fn select(
    root: &Root,
    source: &str,
    rules: Rules<'_>,
    out: &mut Selection,
) -> Result<(), SelectError> {
    let path = clean(source);
    if path == "." {
        out.trees.insert(".".to_string());
        out.covers.insert(".".to_string());
        return Ok(());
    }
    if !has_wildcards(&path) {
        return select_one(root, &path, rules, out, true);
    }
    // The literal directories before the first pattern, resolved (links followed, in the
    // root); then the pattern matched against the paths below it.
    let comps: Vec<&str> = path.split('/').collect();
    let first = comps.iter().position(|c| has_wildcards(c)).unwrap_or(0);
    let literal = comps[..first].join("/");
    let mut links = Vec::new();
    let base = if literal.is_empty() {
        ".".to_string()
    } else {
        match resolve(root, &literal, rules, &mut links) {
            Ok((real, Kind::Dir)) => real,
            // Nothing to match in: BuildKit copies nothing.
            Ok(_) | Err(SelectError::Missing { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
    };
    out.covers.insert(base.clone());
    let pattern = comps[first..].join("/");
    let mut matches = Vec::new();
    walk_matches(root, &base, "", &pattern, rules, &mut matches)?;
    if !matches.is_empty() {
        out.entries.extend(links);
    }
    for m in matches {
        select_one(root, &m, rules, out, false)?;
    }
    Ok(())
}

/// Selects one path (no pattern): links on the way, then the file or the directory's subtree.
/// `explicit`: named as such in the Dockerfile (a hidden path is then an error, not skipped).
fn select_one(
    root: &Root,
    path: &str,
    rules: Rules<'_>,
    out: &mut Selection,
    explicit: bool,
) -> Result<(), SelectError> {
    let mut links = Vec::new();
    let (real, kind) = match resolve(root, path, rules, &mut links) {
        Err(SelectError::Hidden { .. }) if !explicit => return Ok(()),
        r => r?,
    };
    if rules.is_hidden(&real) {
        if explicit {
            return Err(SelectError::Hidden { path: real });
        }
        return Ok(());
    }
    let excluded = rules.ignore.is_excluded(&real);
    match kind {
        Kind::Dir => {
            // An excluded directory is in the context only as the parent of an entry an
            // exception brings back.
            if excluded && !any_included(root, &real, rules)? {
                return Err(SelectError::Excluded { path: real });
            }
            out.covers.insert(real.clone());
            out.trees.insert(real);
        }
        _ => {
            if excluded {
                return Err(SelectError::Excluded { path: real });
            }
            if let Some((parent, _)) = real.rsplit_once('/') {
                out.covers.insert(parent.to_string());
            }
            out.entries.insert(real);
        }
    }
    out.entries.extend(links);
    Ok(())
}

/// Whether anything below the excluded directory `dir` is in the context (brought back by an
/// exception of the ignore file), as the context walker decides it.
fn any_included(root: &Root, dir: &str, rules: Rules<'_>) -> Result<bool, SelectError> {
    let ignore = rules.ignore;
    if !ignore.may_reinclude_below(dir) {
        return Ok(false);
    }
    let mut stack = vec![(dir.to_string(), ignore.dir_state(dir))];
    while let Some((d, state)) = stack.pop() {
        let names = root.list(&d).map_err(|error| SelectError::Io {
            path: d.clone(),
            error,
        })?;
        for (name, kind) in names {
            let child = join(&d, &name);
            if rules.is_hidden(&child) {
                continue;
            }
            if kind == Kind::Dir {
                let (excluded, st) = ignore.check_in(&state, &child);
                if !excluded {
                    return Ok(true);
                }
                if ignore.may_reinclude_below(&child) {
                    stack.push((child, st));
                }
            } else if !ignore.is_excluded_in(&state, &child) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Resolves `path` beneath the root, following symlinks (all of them, the last included) as
/// BuildKit does in the context; each link met is pushed to `links`. The real path and its kind
/// (never `Symlink`).
pub fn resolve(
    root: &Root,
    path: &str,
    rules: Rules<'_>,
    links: &mut Vec<String>,
) -> Result<(String, Kind), SelectError> {
    let mut todo: std::collections::VecDeque<String> =
        path.split('/').map(str::to_string).collect();
    let mut real: Vec<String> = Vec::new();
    let mut followed = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                real.pop();
                continue;
            }
            _ => {}
        }
        let rel = join(&real.join("/"), &c);
        if rules.is_hidden(&rel) {
            return Err(SelectError::Hidden { path: rel });
        }
        let st = match root.lstat(&rel) {
            Ok(st) => st,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Err(SelectError::Missing {
                    path: path.to_string(),
                })
            }
            Err(error) => return Err(SelectError::Io { path: rel, error }),
        };
        match kind_of(&st) {
            Kind::Symlink => {
                // A link the context does not hold cannot be followed by the builder.
                if rules.ignore.is_excluded(&rel) {
                    return Err(SelectError::Excluded { path: rel });
                }
                followed += 1;
                if followed > MAX_LINKS {
                    return Err(SelectError::Loop { link: rel });
                }
                let target = root.read_link(&rel).map_err(|error| SelectError::Io {
                    path: rel.clone(),
                    error,
                })?;
                if !link_stays_inside(root.path(), &rel, &target) {
                    return Err(SelectError::Outside { link: rel, target });
                }
                let Some(t) = target.to_str() else {
                    return Err(SelectError::Outside { link: rel, target });
                };
                if t.starts_with('/') {
                    // BuildKit reads an absolute target from the context's root.
                    real.clear();
                }
                links.push(rel);
                for part in t.split('/').rev() {
                    todo.push_front(part.to_string());
                }
            }
            Kind::Dir => real.push(c),
            Kind::File => {
                if todo.iter().any(|c| !c.is_empty() && c != ".") {
                    return Err(SelectError::Missing {
                        path: path.to_string(),
                    });
                }
                real.push(c);
                return Ok((real.join("/"), Kind::File));
            }
        }
    }
    if real.is_empty() {
        Ok((".".to_string(), Kind::Dir))
    } else {
        Ok((real.join("/"), Kind::Dir))
    }
}

/// BuildKit's `resolveWildcards`: every path below `base` (walked without following links, as the
/// context holds it) whose path relative to `base` matches `pattern`; a matching directory is not
/// walked further.
fn walk_matches(
    root: &Root,
    base: &str,
    rel: &str,
    pattern: &str,
    rules: Rules<'_>,
    out: &mut Vec<String>,
) -> Result<(), SelectError> {
    let depth = pattern.split('/').count();
    let dir = if rel.is_empty() {
        base.to_string()
    } else {
        join(base, rel)
    };
    let names = root.list(&dir).map_err(|error| SelectError::Io {
        path: dir.clone(),
        error,
    })?;
    for (name, kind) in names {
        let child_rel = join(rel, &name);
        let child = join(&dir, &name);
        if rules.is_hidden(&child) {
            continue;
        }
        if rules.ignore.is_excluded(&child)
            && !(kind == Kind::Dir && rules.ignore.may_reinclude_below(&child))
        {
            continue; // not in the context
        }
        let level = child_rel.split('/').count();
        if level == depth && go_match(pattern, &child_rel).unwrap_or(false) {
            out.push(child);
            continue;
        }
        if kind == Kind::Dir && level < depth {
            walk_matches(root, base, &child_rel, pattern, rules, out)?;
        }
    }
    Ok(())
}

/// Whether a symlink at `rel` (relative to `root`) pointing at `target` stays inside the root on
/// this machine: lexically, for a relative target; under the root, for an absolute one.
pub fn link_stays_inside(root: &Path, rel: &str, target: &Path) -> bool {
    if target.is_absolute() {
        return target.starts_with(root);
    }
    let Some(t) = target.to_str() else {
        return false;
    };
    let parent = rel.rsplit_once('/').map(|(a, _)| a).unwrap_or(".");
    let mut depth: i64 = components(parent).count() as i64;
    for seg in t.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Go's `path/filepath.Match` (on Unix), which BuildKit applies to wildcard sources.

/// Whether `name` matches the shell pattern `pattern`; `Err` for a malformed pattern.
pub fn go_match(pattern: &str, name: &str) -> Result<bool, String> {
    let mut pattern = pattern.as_bytes();
    let mut name = name.as_bytes();
    'outer: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains(&b'/'));
        }
        match match_chunk(chunk, name)? {
            Some(t) if t.is_empty() || !pattern.is_empty() => {
                name = t;
                continue;
            }
            _ => {}
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                if let Some(t) = match_chunk(chunk, &name[i + 1..])? {
                    if !pattern.is_empty() || t.is_empty() {
                        name = t;
                        continue 'outer;
                    }
                }
                i += 1;
            }
        }
        // The rest of the pattern must still be well formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while pattern.first() == Some(&b'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// The next character of `s` (UTF-8; an invalid byte is one character) and its length.
fn decode(s: &[u8]) -> (u32, usize) {
    let len = match s.first() {
        None => return (0xFFFD, 0),
        Some(b) if *b < 0x80 => 1,
        Some(b) if *b >= 0xF0 => 4,
        Some(b) if *b >= 0xE0 => 3,
        Some(b) if *b >= 0xC0 => 2,
        Some(_) => 1,
    };
    match s.get(..len).and_then(|b| std::str::from_utf8(b).ok()) {
        Some(c) => (c.chars().next().map_or(0xFFFD, |c| c as u32), len),
        None => (0xFFFD, 1),
    }
}

fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<Option<&'a [u8]>, String> {
    let bad = || "a malformed pattern".to_string();
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk[0] {
            b'[' => {
                let mut r = 0;
                if !failed {
                    let (c, n) = decode(s);
                    r = c;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk).ok_or_else(bad)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = get_esc(&chunk[1..]).ok_or_else(bad)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            c => {
                let c = if c == b'\\' {
                    chunk = &chunk[1..];
                    *chunk.first().ok_or_else(bad)?
                } else {
                    c
                };
                if !failed {
                    if c != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok((!failed).then_some(s))
}

fn get_esc(chunk: &[u8]) -> Option<(u32, &[u8])> {
    let mut chunk = chunk;
    if chunk.is_empty() || chunk[0] == b'-' || chunk[0] == b']' {
        return None;
    }
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return None;
        }
    }
    let (r, n) = decode(chunk);
    if r == 0xFFFD && n == 1 && chunk[0] >= 0x80 {
        return None;
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return None;
    }
    Some((r, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match() {
        // From Go's own `matchTests` (path/filepath/match_test.go), Unix cases.
        let cases: &[(&str, &str, Result<bool, ()>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "-", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(())),
            ("[-]", "-", Err(())),
            ("[x-]", "x", Err(())),
            ("[x-]", "-", Err(())),
            ("[x-]", "z", Err(())),
            ("[-x]", "x", Err(())),
            ("[-x]", "-", Err(())),
            ("[-x]", "a", Err(())),
            ("\\", "a", Err(())),
            ("[a-b-c]", "a", Err(())),
            ("[", "a", Err(())),
            ("[^", "a", Err(())),
            ("[^bc", "a", Err(())),
            ("a[", "a", Err(())),
            ("a[", "ab", Err(())),
            ("a[", "x", Err(())),
            ("a/b[", "x", Err(())),
            ("*x", "xxx", Ok(true)),
        ];
        for (p, n, want) in cases {
            let got = go_match(p, n).map_err(|_| ());
            assert_eq!(got, *want, "Match({p:?}, {n:?})");
        }
        // Hidden files and names with newlines match `*` too.
        assert_eq!(go_match("*", ".env"), Ok(true));
        assert_eq!(go_match("a*", "a\nb"), Ok(true));
    }

    #[test]
    fn wildcards_and_cleaning() {
        assert!(has_wildcards("a/*.js"));
        assert!(has_wildcards("a/[ab]"));
        assert!(!has_wildcards("a/\\*.js"));
        assert!(!has_wildcards("plain/path"));
        assert_eq!(clean("../x"), "x");
        assert_eq!(clean("/a/./b/../c/"), "a/c");
        assert_eq!(clean("./"), ".");
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        for f in [
            "real/x",
            "real/sub/y",
            "dir/d",
            "dir/.hidden",
            "pk/a/src/f",
            "pk/b/src/f",
        ] {
            let p = r.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, f).expect("write");
        }
        std::fs::create_dir_all(r.join("dir/empty")).expect("mkdir");
        std::os::unix::fs::symlink("real", r.join("linkdir")).expect("symlink");
        std::os::unix::fs::symlink("real/x", r.join("linkfile")).expect("symlink");
        std::os::unix::fs::symlink("../real/x", r.join("dir/inlink")).expect("symlink");
        std::os::unix::fs::symlink("/etc", r.join("linketc")).expect("symlink");
        std::os::unix::fs::symlink("loop2", r.join("loop1")).expect("symlink");
        std::os::unix::fs::symlink("loop1", r.join("loop2")).expect("symlink");
        std::os::unix::fs::symlink("real", r.join("pk/link")).expect("symlink");
        d
    }

    fn sel(root: &Root, sources: &[&str]) -> Result<Selection, SelectError> {
        let ignore = DockerIgnore::empty();
        let hidden = vec![".images-cache".to_string()];
        let rules = Rules {
            ignore: &ignore,
            hidden: &hidden,
        };
        let mut out = Selection::default();
        for s in sources {
            select(root, s, rules, &mut out)?;
        }
        Ok(out)
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sources_select_what_buildkit_copies() {
        let d = tree();
        let root = Root::open(d.path()).expect("open");
        // A link in the middle of a path: the link, and what it leads to.
        let s = sel(&root, &["linkdir/x"]).expect("select");
        assert_eq!(s.entries, set(&["linkdir", "real/x"]));
        assert!(s.trees.is_empty());
        // A final link is followed too; a directory is its subtree.
        let s = sel(&root, &["linkfile", "dir/", "../real/sub"]).expect("select");
        assert_eq!(s.entries, set(&["linkfile", "real/x"]));
        assert_eq!(s.trees, set(&["dir", "real/sub"]));
        // A pattern: each match a source of its own (a matched link followed).
        let s = sel(&root, &["dir/*"]).expect("select");
        assert_eq!(
            s.entries,
            set(&["dir/.hidden", "dir/d", "dir/inlink", "real/x"])
        );
        assert_eq!(s.trees, set(&["dir/empty"]));
        // Links below the pattern's literal part are not walked, as BuildKit's walk does not.
        let s = sel(&root, &["pk/*/src"]).expect("select");
        assert_eq!(s.trees, set(&["pk/a/src", "pk/b/src"]));
        let s = sel(&root, &["nomatch*", "nodir/*"]).expect("select");
        assert!(s.entries.is_empty() && s.trees.is_empty(), "{s:?}");
        // ...yet a file added later could match: the root is watched.
        assert_eq!(s.covers, set(&["."]));
        let s = sel(&root, &["."]).expect("select");
        assert_eq!(s.trees, set(&["."]));
    }

    #[test]
    fn hostile_sources_are_refused() {
        let d = tree();
        let root = Root::open(d.path()).expect("open");
        match sel(&root, &["linketc/hostname"]) {
            Err(SelectError::Outside { link, .. }) => assert_eq!(link, "linketc"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            sel(&root, &["loop1/x"]),
            Err(SelectError::Loop { .. })
        ));
        assert!(matches!(
            sel(&root, &["real/x/y"]),
            Err(SelectError::Missing { .. })
        ));
        assert!(matches!(
            sel(&root, &[".images-cache/x"]),
            Err(SelectError::Hidden { .. })
        ));
        // `..` stops at the root, as in BuildKit: this is `real/x`, not a path outside.
        let s = sel(&root, &["../../../real/x"]).expect("select");
        assert_eq!(s.entries, set(&["real/x"]));
    }

    #[test]
    fn ignored_sources_are_not_in_the_context() {
        let d = tree();
        let root = Root::open(d.path()).expect("open");
        let ignore = DockerIgnore::parse(Path::new(".dockerignore"), "real\n!real/sub\ndir/d\n")
            .expect("parse");
        let rules = Rules {
            ignore: &ignore,
            hidden: &[],
        };
        let mut out = Selection::default();
        assert!(matches!(
            select(&root, "linkdir/x", rules, &mut out),
            Err(SelectError::Excluded { .. })
        ));
        assert!(matches!(
            select(&root, "dir/d", rules, &mut out),
            Err(SelectError::Excluded { .. })
        ));
        // An excluded directory with an exception below it is there, as the exception's parent.
        let mut out = Selection::default();
        select(&root, "real", rules, &mut out).expect("select");
        assert_eq!(out.trees, set(&["real"]));
        // A matched link whose target the context does not hold cannot be followed.
        let mut out = Selection::default();
        assert!(matches!(
            select(&root, "dir/*", rules, &mut out),
            Err(SelectError::Excluded { .. })
        ));
        let mut out = Selection::default();
        select(&root, "dir/[d.]*", rules, &mut out).expect("select");
        assert_eq!(out.entries, set(&["dir/.hidden"]));
    }
}
