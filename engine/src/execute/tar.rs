//! The build context as a deterministic tar stream: exactly the files that went into the key,
//! in path order, with normalised modes, zero times and root ownership (DESIGN.md principle 1).
//! Each file's bytes are checked against its digest as they are streamed, so a file edited after
//! hashing fails the build instead of producing an image its key does not describe.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use crate::context::{Context, Source};
use crate::digest::FileDigest;
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

/// Writes the context of one image as a tar stream to `out`.
pub fn write_context<W: Write>(root: &Path, ctx: &Context, out: W) -> Result<W> {
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
            let target = std::fs::read_link(root.join(&*f.path))
                .map_err(|e| Error::io("read link", root.join(&*f.path), e))?;
            let bytes = target.as_os_str().as_encoded_bytes();
            check(&f.path, f.digest, FileDigest::of_bytes(bytes))?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, &*f.path, &target)
                .map_err(|e| tar_err(&f.path, e))?;
            continue;
        }
        let bytes: std::borrow::Cow<'_, [u8]> = match &f.source {
            Source::Virtual(v) => std::borrow::Cow::Borrowed(v.as_slice()),
            Source::Disk => {
                let p = root.join(&*f.path);
                std::borrow::Cow::Owned(std::fs::read(&p).map_err(|e| Error::io("read", p, e))?)
            }
        };
        check(&f.path, f.digest, FileDigest::of_bytes(&bytes))?;
        let mut h = header(tar::EntryType::Regular, f.mode, bytes.len() as u64);
        b.append_data(&mut h, &*f.path, bytes.as_ref())
            .map_err(|e| tar_err(&f.path, e))?;
    }
    for d in dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())
            .map_err(|e| tar_err(&d, e))?;
    }
    b.into_inner().map_err(|e| tar_err("<context>", e))
}

fn check(path: &str, expected: FileDigest, actual: FileDigest) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "`{path}` changed after it was hashed\n  hint: run the command again; the build uses exactly the hashed content"
        )))
    }
}
