//! `cache stats` and `cache gc` over the whole cache directory (issue 12), with a real Docker
//! engine: after a service is removed, the lockfile changes and images are built many times,
//! `gc` leaves no file that belongs to a key, a service or a lockfile that no longer exists, and
//! what it keeps still makes the next run a cache hit. The oracles: the engine's own cold analysis
//! of the same checkout (for the stat cache and the prunings) and Docker's image list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tests::{docker_ok, project, remove_images, xtask, Fixture};

const LOCKFILE: &str = "lockfileVersion: '6.0'

settings:
  autoInstallPeers: true
  excludeLinksFromLockfile: false

importers:

  .: {}

  services/a:
    dependencies:
      '@fx/shared':
        specifier: workspace:*
        version: link:../../shared

  services/b:
    dependencies:
      '@fx/shared':
        specifier: workspace:*
        version: link:../../shared

  services/c:
    dependencies:
      '@fx/shared':
        specifier: workspace:*
        version: link:../../shared

  shared: {}
";

struct Repo {
    fx: Fixture,
    prefix: String,
}

impl Drop for Repo {
    fn drop(&mut self) {
        remove_images(&self.prefix);
    }
}

impl Repo {
    fn new() -> Repo {
        tests::require_docker();
        let prefix = format!("kcg-{}-", std::process::id());
        let nonce = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut p = project()
            .shared()
            .file("images.toml", &format!("[images]\nprefix = \"{prefix}\"\n"))
            .file("pnpm-lock.yaml", LOCKFILE);
        for s in ["a", "b", "c"] {
            p = p
                .service(s, &[])
                .file(
                    &format!("services/{s}/Dockerfile"),
                    // The lockfile and the closure's packages are copied: the context holds
                    // the lockfile pruned to them.
                    &format!("FROM node:18-alpine\nCOPY pnpm-lock.yaml /app/\nCOPY shared/ /app/shared/\nCOPY services/{s}/ /app/\n"),
                )
                .file(
                    &format!("services/{s}/src/index.ts"),
                    &format!("// {prefix}{nonce}\n"),
                );
        }
        Repo {
            fx: p.build(),
            prefix,
        }
    }

    fn cache(&self) -> PathBuf {
        self.fx.path(".images-cache")
    }

    /// `images --json ARGS`: service -> (action, key).
    fn images(&self, args: &[&str]) -> (bool, BTreeMap<String, (String, String)>) {
        let mut all = vec!["images", "--json"];
        all.extend_from_slice(args);
        let out = xtask(self.fx.root(), &all);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
        let map = json["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|i| {
                (
                    i["service"].as_str().expect("service").to_string(),
                    (
                        i["action"].as_str().expect("action").to_string(),
                        i["key"].as_str().expect("key").to_string(),
                    ),
                )
            })
            .collect();
        (out.status.success(), map)
    }

    fn edit(&self, rel: &str, line: &str) {
        let p = self.fx.path(rel);
        let text = std::fs::read_to_string(&p).expect("read");
        std::fs::write(&p, format!("{text}{line}\n")).expect("write");
    }
}

/// Every regular file below `dir`, relative to it.
fn files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir)
                        .expect("below")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out
}

/// Sets every file below `dir` two days into the past: the cache as a long-running user has it
/// (nothing young enough to be protected from a concurrent writer).
fn age_everything(dir: &Path) {
    let then = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    for f in files(dir) {
        std::fs::File::options()
            .write(true)
            .open(dir.join(&f))
            .and_then(|file| file.set_modified(then))
            .unwrap_or_else(|e| panic!("set the mtime of {f}: {e}"));
    }
}

fn json_file(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json")
}

#[test]
fn gc_leaves_nothing_of_keys_services_and_lockfiles_that_are_gone() {
    let _guard = tests::docker_lock();
    let repo = Repo::new();
    let cache = repo.cache();

    // A run with verification: these trivial images break the architecture's rules, so they are
    // reported failed and recorded nowhere, but their verification is kept.
    let (ok, first) = repo.images(&["--keep-going"]);
    assert!(!ok);
    assert!(first.values().all(|(a, _)| a == "failed"), "{first:?}");
    assert_eq!(files(&cache.join("verified")).len(), 3);

    // Built and recorded without the gate; then `a` built twice more, and a failed build of b.
    let (ok, built) = repo.images(&["--no-verify"]);
    assert!(ok && built.values().all(|(a, _)| a == "built"), "{built:?}");
    let mut keys_of_a = vec![built["a"].1.clone()];
    for n in 0..2 {
        repo.edit("services/a/src/index.ts", &format!("// edit {n}"));
        let (ok, again) = repo.images(&["--no-verify", "a"]);
        assert!(ok && again["a"].0 == "built", "{again:?}");
        keys_of_a.push(again["a"].1.clone());
    }
    let dockerfile_b = repo.fx.read("services/b/Dockerfile");
    repo.fx.write(
        "services/b/Dockerfile",
        &format!("{dockerfile_b}RUN exit 3\n"),
    );
    let (ok, failed) = repo.images(&["--no-verify", "b"]);
    assert!(!ok && failed["b"].0 == "failed", "{failed:?}");
    assert_eq!(files(&cache.join("logs")).len(), 1);
    repo.fx.write("services/b/Dockerfile", &dockerfile_b);

    // The lockfile changes (its prunings are stored under new keys, beside the old ones, by a run
    // of one service), then service c is removed from the checkout.
    repo.edit("pnpm-lock.yaml", "# regenerated");
    let (ok, b_only) = repo.images(&["--no-verify", "b"]);
    assert!(ok && b_only["b"].0 == "cached", "{b_only:?}");
    std::fs::remove_dir_all(repo.fx.path("services/c")).expect("remove c");
    let c_key = built["c"].1.clone();

    // The old images of a are removed from the engine (as a user's prune would); c's image stays.
    for k in &keys_of_a[..2] {
        docker_ok(&["rmi", &format!("{}a:key-{}", repo.prefix, &k[..32])]);
    }
    // A scratch file a killed build left, and time passes.
    std::fs::write(cache.join("work/a.999999.0.iid"), "sha256:0").expect("write");
    age_everything(&cache);

    let out = xtask(repo.fx.root(), &["cache", "gc", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["records_removed"], 3, "{report}");
    assert!(
        report["stat_entries_removed"].as_u64() > Some(0),
        "{report}"
    );
    assert!(report["prunings_removed"].as_u64() > Some(0), "{report}");
    assert_eq!(report["logs_removed"], 1, "{report}");
    assert_eq!(report["work_removed"], 1, "{report}");

    // What is left belongs to the current keys of a and b, and to nothing else (the keys as a
    // cold analysis of the checkout computes them, in a cache directory of its own).
    let cold = tempfile::tempdir().expect("tempdir");
    let mut o = engine::pipeline::Options::new(repo.fx.root());
    o.cache_dir = Some(cold.path().to_path_buf());
    let fresh = engine::pipeline::analyze(&o).expect("cold analysis");
    let current: BTreeMap<String, String> = fresh
        .images
        .iter()
        .map(|i| (fresh.ws.services[i.service].name.clone(), i.key.to_hex()))
        .collect();
    assert_eq!(
        current.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "c is gone from the checkout"
    );
    assert_eq!(current["a"], keys_of_a[2]);
    let store = cache::Store::open(&cache).expect("store");
    let records: BTreeSet<String> = store.record_keys().expect("keys").into_iter().collect();
    assert_eq!(
        records,
        current.values().cloned().collect::<BTreeSet<_>>(),
        "records of the current keys only (c's image is still in the engine: {c_key})"
    );
    let mut referenced = BTreeSet::new();
    for k in &records {
        let r = store.get_record(k).expect("read").expect("record");
        referenced.insert(r.manifest.clone());
        referenced.extend(r.log.clone());
    }
    let left = files(&cache);
    for f in &left {
        let name = f.rsplit('/').next().unwrap_or(f);
        let ok = match f.split('/').next() {
            Some("v1") if f.starts_with("v1/blobs/") => referenced.contains(name),
            Some("v1") if f.starts_with("v1/records/") => {
                records.contains(name.trim_end_matches(".json"))
            }
            Some("v1") if f.starts_with("v1/services/") => {
                let svc = name.trim_end_matches(".json");
                let pointer = json_file(&cache.join(f));
                current.get(svc).map(String::as_str) == pointer["key"].as_str()
            }
            Some("verified") => records.contains(name.trim_end_matches(".json")),
            Some("stat-cache.bin" | "pruned-lockfiles.bin") => true,
            _ => false,
        };
        assert!(ok, "`{f}` belongs to nothing that still exists: {left:#?}");
    }

    // The analysis caches hold exactly what the workspace uses: the stat cache has the entries a
    // cold analysis of this checkout writes (none of c), the prunings are those of the current
    // lockfile for a and b.
    let layout = cache::Layout::new(&cache);
    let cold_layout = cache::Layout::new(cold.path());
    let (stat, _) = engine::hash::StatCache::load(&layout.stat_cache());
    let (cold_stat, _) = engine::hash::StatCache::load(&cold_layout.stat_cache());
    assert_eq!(stat.len(), cold_stat.len());
    assert!(stat.entry("services/c/src/index.ts").is_none());
    assert!(stat.entry("services/a/src/index.ts").is_some());
    let (prunings, _) = engine::prunecache::PruneCache::load(&layout.pruned_lockfiles());
    let lock = fresh
        .ws
        .lockfile
        .as_ref()
        .expect("a readable lockfile")
        .as_ref()
        .expect("a lockfile");
    assert_eq!(prunings.len(), 2);
    for i in &fresh.images {
        let importers: BTreeSet<String> = fresh
            .ws
            .closure(fresh.ws.services[i.service].package)
            .into_iter()
            .map(|p| fresh.ws.packages[p].dir.clone())
            .chain(std::iter::once(".".to_string()))
            .collect();
        assert!(prunings.get(&lock.prune_key(&importers)).is_some());
    }

    // `cache stats` adds up, and names nothing it does not know.
    let out = xtask(repo.fx.root(), &["cache", "stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let parts = stats["parts"].as_array().expect("parts");
    let sum: u64 = parts
        .iter()
        .map(|p| p["bytes"].as_u64().expect("bytes"))
        .sum();
    assert_eq!(stats["total_bytes"].as_u64(), Some(sum), "{stats}");
    assert_eq!(stats["records"], 2, "{stats}");
    assert!(
        stats["unknown"].as_array().is_some_and(|u| u.is_empty()),
        "{stats}"
    );

    // What gc kept is what a run needs: everything is cached.
    let (ok, after) = repo.images(&["--no-verify"]);
    assert!(
        ok && after.values().all(|(a, _)| a == "cached"),
        "{after:?}"
    );
}
