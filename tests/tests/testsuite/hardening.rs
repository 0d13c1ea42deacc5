//! Hardening: contexts stream in bounded memory through the root's no-follow resolution (a
//! parent directory swapped for a symlink cannot redirect a read), a large sparse file in a
//! context builds, and a full disk is said with its path while the run still reports and
//! records what finished.

use std::path::Path;
use std::process::Command;

use tests::xtask;

fn context_of<'a>(
    a: &'a engine::pipeline::Analysis,
    service: &str,
) -> &'a engine::pipeline::ImageInputs {
    a.images
        .iter()
        .find(|i| a.ws.services[i.service].name == service)
        .unwrap_or_else(|| panic!("{service} not analysed"))
}

fn stream(root: &Path, img: &engine::pipeline::ImageInputs) -> Result<Vec<u8>, String> {
    engine::execute::tar::write_context(root, &img.context, Vec::new()).map_err(|e| e.to_string())
}

/// After the listing, `services/app/src` is swapped for a symlink to a directory outside the
/// root holding the same file with the same bytes: the digest alone cannot tell, the no-follow
/// open does. A file cut short after hashing is said to have changed.
#[test]
fn a_parent_swapped_for_a_symlink_cannot_redirect_a_read() {
    let fx = tests::project().shared().service("app", &[]).build();
    let a = tests::analyze_ok(fx.root());
    let img = context_of(&a, "app");
    let tar = stream(fx.root(), img).expect("the context streams");
    // The tar holds what the listing said (Docker reads this stream).
    let mut ar = tar::Archive::new(tar.as_slice());
    let names: Vec<String> = ar
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    assert!(
        names.contains(&"services/app/src/index.ts".to_string()),
        "{names:?}"
    );

    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        outside.path().join("index.ts"),
        fx.read("services/app/src/index.ts"),
    )
    .expect("write");
    std::fs::rename(
        fx.path("services/app/src"),
        fx.path("services/app/src.real"),
    )
    .expect("mv");
    std::os::unix::fs::symlink(outside.path(), fx.path("services/app/src")).expect("symlink");
    let e = stream(fx.root(), img).expect_err("a read through the swapped parent");
    assert!(
        e.contains("services/app/src/index.ts") && e.contains("failed to read"),
        "{e}"
    );
    std::fs::remove_file(fx.path("services/app/src")).expect("rm");
    std::fs::rename(
        fx.path("services/app/src.real"),
        fx.path("services/app/src"),
    )
    .expect("mv");
    stream(fx.root(), img).expect("back as it was");

    // Shorter, then same length other bytes: both are changes, never a short tar entry.
    fx.write("services/app/src/index.ts", "x");
    let e = stream(fx.root(), img).expect_err("shorter");
    assert!(
        e.contains("`services/app/src/index.ts` changed after it was hashed"),
        "{e}"
    );
    let len = img
        .context
        .files
        .iter()
        .find(|f| &*f.path == "services/app/src/index.ts")
        .expect("file")
        .size as usize;
    fx.write("services/app/src/index.ts", &"y".repeat(len));
    let e = stream(fx.root(), img).expect_err("other bytes");
    assert!(e.contains("changed after it was hashed"), "{e}");
    // A fifo swapped in is refused at once (an open that would block).
    fx.remove("services/app/src/index.ts");
    assert!(Command::new("mkfifo")
        .arg(fx.path("services/app/src/index.ts"))
        .status()
        .expect("mkfifo")
        .success());
    let e = stream(fx.root(), img).expect_err("a fifo");
    assert!(e.contains("not a regular file"), "{e}");
}

/// `sha256sum` of a file, as the tool says it.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// A 512 MB sparse file in a context (the case) builds: the build reads it through a
/// bind mount of the context and keeps its size and `sha256sum`, which match the tool's on the
/// checkout. The engine streams it in bounded memory (peak memory: see the report / benchmark;
/// not asserted here).
#[test]
fn a_large_sparse_file_in_a_context_builds() {
    tests::require_docker();
    let _guard = tests::docker_lock();
    let pid = std::process::id();
    let prefix = format!("kct-{pid}-big-");
    let fx = tests::project()
        .shared()
        .service("big", &[])
        .file(".gitignore", ".images-cache\n")
        .build();
    let blob = fx.path("services/big/data/blob.bin");
    std::fs::create_dir_all(blob.parent().expect("parent")).expect("mkdir");
    let f = std::fs::File::create(&blob).expect("create");
    f.set_len(512 << 20).expect("sparse");
    // A few bytes in the middle, so the digest is not that of zeros alone.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = f;
        f.seek(SeekFrom::Start(300 << 20)).expect("seek");
        f.write_all(b"middle").expect("write");
    }
    fx.write(
        "services/big/Dockerfile",
        "FROM node:18-alpine\nRUN --mount=type=bind,source=services/big/data,target=/data sh -c 'wc -c < /data/blob.bin > /size && sha256sum /data/blob.bin | cut -c1-64 > /sha'\n",
    );
    fx.write("images.toml", &format!("[images]\nprefix = \"{prefix}\"\n"));
    let out = xtask(fx.root(), &["images", "--json", "--no-verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = format!("{prefix}big:latest");
    let got = tests::docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "cat /size /sha",
    ]);
    let lines: Vec<&str> = got.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [(512u64 << 20).to_string().as_str(), &sha256sum(&blob)]
    );
    let v = xtask(fx.root(), &["cache", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    tests::remove_images(&prefix);
}

/// A small tmpfs mounted for one test (the machine's own full-disk behaviour, no fault
/// injection), unmounted when dropped.
struct Tmpfs {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).expect("mkdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "the full-disk test mounts a small tmpfs (it needs root, as CI runs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path, _dir: dir }
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let p = self.path.join("filler");
        let mut f = std::fs::File::create(&p).expect("create");
        let chunk = vec![0xa5u8; 4096];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC: {e}");
                break;
            }
        }
        // Inodes too: small files until none can be made.
        for i in 0.. {
            if std::fs::write(self.path.join(format!("filler.{i}")), b"x").is_err() {
                break;
            }
        }
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Every file below `dir` (not following symlinks), with its size.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let m = std::fs::symlink_metadata(e.path()).expect("lstat");
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len()));
            }
        }
    }
    out
}

/// The cache directory on a small tmpfs, filled after a first run: the second run says which
/// path could not be written and what to do, still prints its summary (the cached service
/// cached, the new one failed), leaves no empty file (log, image id) behind, and `cache verify`
/// is clean; with space again, the next run builds and records the new service.
#[test]
fn a_full_disk_is_said_with_its_path_and_the_run_goes_on() {
    tests::require_docker();
    let _guard = tests::docker_lock();
    let pid = std::process::id();
    let prefix = format!("kct-{pid}-full-");
    let fx = tests::project()
        .shared()
        .service("done", &[])
        .service("new", &[])
        .build();
    for s in ["done", "new"] {
        fx.write(
            &format!("services/{s}/Dockerfile"),
            &format!("FROM node:18-alpine\nCOPY services/{s}/src /src\n"),
        );
    }
    fx.write("images.toml", &format!("[images]\nprefix = \"{prefix}\"\n"));
    let fs = Tmpfs::mount("2m");
    let cache = fs.path.join("cache");
    let cache_arg = cache.display().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--cache-dir", cache_arg.as_str()];
        all.extend_from_slice(args);
        xtask(fx.root(), &all)
    };
    let o = run(&["images", "done", "--no-verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let filler = fs.fill();
    let o = run(&["images", "--json", "--no-verify"]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("the summary is printed ({e}): {stderr}"));
    let by = |s: &str| {
        json["images"]
            .as_array()
            .expect("images")
            .iter()
            .find(|i| i["service"] == s)
            .cloned()
            .unwrap_or_else(|| panic!("{s} missing: {json:#}"))
    };
    assert_eq!(by("done")["action"], "cached", "{json:#}");
    let new = by("new");
    assert_eq!(new["action"], "failed", "{json:#}");
    let error = new["error"].as_str().unwrap_or("").to_string();
    let said = format!("{error}\n{stderr}");
    assert!(
        said.to_ascii_lowercase()
            .contains("no space left on device"),
        "{said}"
    );
    assert!(said.contains(&cache_arg), "the path is named: {said}");
    assert!(said.contains("hint:"), "{said}");
    // Nothing empty (an image-id file, a log) stays behind; no temp file either.
    for (p, len) in files(&cache) {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        assert!(len > 0, "an empty file stayed behind: {}", p.display());
        assert!(
            !name.ends_with(".iid"),
            "an image-id file stayed: {}",
            p.display()
        );
        assert!(
            !name.ends_with(".tmp"),
            "a temp file stayed: {}",
            p.display()
        );
    }

    std::fs::remove_file(&filler).expect("free space");
    for e in std::fs::read_dir(&fs.path).expect("ls") {
        let p = e.expect("entry").path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("filler."))
        {
            std::fs::remove_file(p).expect("rm");
        }
    }
    let v = run(&["cache", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let o = run(&["images", "--json", "--no-verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let actions: Vec<String> = json["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            format!(
                "{}={}",
                i["service"].as_str().unwrap_or(""),
                i["action"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(actions, ["done=cached", "new=built"]);
    let v = run(&["cache", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    tests::remove_images(&prefix);
}

/// The case: a record path that is a directory (here with a file inside, and a blob
/// path that is a symlink, and a pointer that is a fifo). `cache verify` reports each and exits
/// 1, then is clean; `cache gc --all` removes what was moved aside; the store takes new records.
#[test]
fn cache_verify_and_gc_clean_up_entries_that_are_not_files() {
    let fx = tests::project().shared().service("app", &[]).build();
    let cache = fx.path(".images-cache");
    let a = tests::analyze_ok(fx.root());
    let store = cache::Store::open(&cache).expect("open");
    let record = engine::record::record_analysed(&store, &a, a.images[0].service, "sha256:00", 1)
        .expect("record");
    let key = record.key.clone();
    let rec = cache
        .join("v1/records")
        .join(&key[..2])
        .join(format!("{key}.json"));
    std::fs::remove_file(&rec).expect("rm");
    std::fs::create_dir_all(rec.join("x")).expect("a directory at the record's path");
    let blob = cache
        .join("v1/blobs")
        .join(&record.manifest[..2])
        .join(&record.manifest);
    std::fs::rename(&blob, fx.path("elsewhere")).expect("mv");
    std::os::unix::fs::symlink(fx.path("elsewhere"), &blob).expect("symlink");
    let pointer = cache.join("v1/services/app.json");
    std::fs::remove_file(&pointer).expect("rm");
    assert!(Command::new("mkfifo")
        .arg(&pointer)
        .status()
        .expect("mkfifo")
        .success());

    let v = xtask(fx.root(), &["cache", "verify"]);
    let stderr = String::from_utf8_lossy(&v.stderr);
    assert_eq!(v.status.code(), Some(1), "{stderr}");
    for (path, what) in [
        (&rec, "a directory"),
        (&blob, "a symlink"),
        (&pointer, "a fifo"),
    ] {
        assert!(
            stderr.contains(&format!(
                "`{}` is corrupt (it is {what}, not a regular file)",
                path.display()
            )),
            "{stderr}"
        );
    }
    let v = xtask(fx.root(), &["cache", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let gc = xtask(fx.root(), &["--json", "cache", "gc", "--all"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&gc.stdout).expect("json");
    assert_eq!(report["corrupt_removed"], 3, "{report:#}");
    assert_eq!(
        std::fs::read_dir(cache.join("v1/corrupt"))
            .expect("ls")
            .count(),
        0
    );
    assert!(fx.path("elsewhere").is_file(), "gc follows no symlink");
    let store = cache::Store::open(&cache).expect("open");
    engine::record::record_analysed(&store, &a, a.images[0].service, "sha256:00", 1)
        .expect("record");
    assert!(store.get_record(&key).expect("get").is_some());
    let v = xtask(fx.root(), &["cache", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}
