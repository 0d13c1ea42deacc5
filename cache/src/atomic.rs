//! The one atomic write of the project: a temporary file beside the target, written, optionally
//! synced, then renamed over it. A reader sees the whole old file or the whole new one; a write
//! that fails (or a process killed mid-write) leaves only a temporary file named
//! `.<name>.<pid>.<n>.tmp`, which [`is_temp`] recognises and `cache gc` removes once stale.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{io, Result};

/// Writes `bytes` to `path` atomically, with an fsync before the rename.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, bytes, true)
}

/// [`write()`], the fsync optional: files that only save work and verify themselves on load (the
/// stat cache, the pruned lockfiles) skip it.
pub fn write_with(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    write_stream(path, sync, |f| f.write_all(bytes))
}

/// [`write_with`], the content written by `fill` into the temporary file.
pub fn write_stream(
    path: &Path,
    sync: bool,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("create directory", dir, e))?;
    let (tmp, mut file) = temp_beside(dir, path)?;
    let result = (|| {
        fill(&mut file)?;
        if sync {
            file.sync_all()?;
        }
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", path, e));
    }
    Ok(())
}

/// Whether a file name is one of [`write_stream`]'s temporary files.
pub fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

fn temp_beside(dir: &Path, target: &Path) -> Result<(PathBuf, std::fs::File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stem = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = dir.join(format!(".{stem}.{}.{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("create", p, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/file.bin");
        write(&p, b"one").expect("write");
        write_with(&p, b"two", false).expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        // A fill that fails leaves the old file and no temporary file.
        let err = write_stream(&p, true, |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let names: Vec<String> = std::fs::read_dir(p.parent().expect("parent"))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["file.bin"]);
        assert!(is_temp(".file.bin.12.0.tmp") && !is_temp("file.bin"));
    }
}
