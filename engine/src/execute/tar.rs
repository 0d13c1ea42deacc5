//! The build context as a deterministic tar stream: exactly the files that went into the key,
//! in path order, with normalised modes, zero times and root ownership (DESIGN.md principle 1).
//!
//! Files are streamed in bounded memory (never read whole), each opened through the root's
//! descriptor one component at a time without following a symlink ([`crate::resolve::Root`]):
//! a parent directory swapped for a symlink after the listing cannot redirect a read out of the
//! root. Each file's bytes are checked against its digest as they stream; a file edited after
//! hashing fails the build (the stream stops with an error, and the run records nothing) instead
//! of producing an image its key does not describe.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use crate::context::{Context, Source};
use crate::digest::FileDigest;
use crate::resolve::Root;
use crate::{Error, Result};

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Reads exactly `remaining` bytes of a file, hashing them as they pass; a file that ends
/// early is an error (it changed after it was hashed), never a short tar entry.
struct Hashing<R> {
    inner: R,
    remaining: u64,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than when it was hashed",
            ));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Writes the context of one image as a tar stream to `out`.
pub fn write_context<W: Write>(root: &Path, ctx: &Context, out: W) -> Result<W> {
    let tree = Root::open(root).map_err(|e| Error::io("open", root, e))?;
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    let tar_err = |path: &str, e: std::io::Error| Error::io("stream", Path::new(path), e);

    // Parent directories first, each once, with a fixed mode.
    let mut dirs = BTreeSet::new();
    for f in &ctx.files {
        if f.dir {
            dirs.insert(f.path.to_string());
        }
        let mut p = &*f.path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(parent.to_string());
            p = parent;
        }
    }
    for f in &ctx.files {
        while let Some(d) = dirs.first().cloned() {
            if d.as_str() > &*f.path {
                break;
            }
            dirs.pop_first();
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, format!("{d}/"), std::io::empty())
                .map_err(|e| tar_err(&d, e))?;
        }
        if f.dir {
            continue; // written with the parent directories
        }
        if f.symlink {
            let target = tree
                .read_link(&f.path)
                .map_err(|e| Error::io("read link", root.join(&*f.path), e))?;
            let bytes = target.as_os_str().as_encoded_bytes();
            check(&f.path, f.digest, FileDigest::of_bytes(bytes))?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, &*f.path, &target)
                .map_err(|e| tar_err(&f.path, e))?;
            continue;
        }
        let actual = match &f.source {
            Source::Virtual(v) => {
                let d = FileDigest::of_bytes(v);
                check(&f.path, f.digest, d)?;
                let mut h = header(tar::EntryType::Regular, f.mode, v.len() as u64);
                b.append_data(&mut h, &*f.path, v.as_slice())
                    .map_err(|e| tar_err(&f.path, e))?;
                d
            }
            Source::Disk => {
                let abs = root.join(&*f.path);
                let file = tree
                    .open_file(&f.path)
                    .map_err(|e| Error::io("read", &abs, e))?;
                let mut reader = Hashing {
                    inner: file,
                    remaining: f.size,
                    hasher: blake3::Hasher::new(),
                };
                let mut h = header(tar::EntryType::Regular, f.mode, f.size);
                match b.append_data(&mut h, &*f.path, &mut reader) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return Err(changed(&f.path))
                    }
                    Err(e) => return Err(Error::io("stream", abs, e)),
                }
                FileDigest::from_hash(reader.hasher.finalize())
            }
        };
        check(&f.path, f.digest, actual)?;
    }
    for d in dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())
            .map_err(|e| tar_err(&d, e))?;
    }
    b.into_inner().map_err(|e| tar_err("<context>", e))
}

fn changed(path: &str) -> Error {
    Error::Other(format!(
        "`{path}` changed after it was hashed\n  hint: run the command again; the build uses exactly the hashed content"
    ))
}

fn check(path: &str, expected: FileDigest, actual: FileDigest) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(changed(path))
    }
}
