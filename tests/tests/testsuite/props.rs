//! Property tests: keys do not depend on the order files are created or listed in; parallel
//! hashing equals sequential hashing; listing cold, warm, in parallel or on one thread gives the
//! same contexts, whose digests are those of the files' bytes.

use proptest::prelude::*;
use tests::{keys, project};

fn file_set() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("[a-z]{1,6}(/[a-z]{1,6}){0,2}\\.ts", "[ -~]{0,40}", 1..12)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn keys_do_not_depend_on_file_order(files in file_set(), seed in any::<u64>()) {
        // Same files, written in two different orders into two fixtures.
        let mut shuffled = files.clone();
        let n = shuffled.len();
        for i in 0..n {
            let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % n as u64) as usize;
            shuffled.swap(i, j);
        }
        let mut a = project().shared().service("a", &[]);
        for (p, c) in &files {
            a = a.file(&format!("services/a/src/{p}"), c);
        }
        let mut b = project().shared().service("a", &[]);
        for (p, c) in shuffled.iter().rev() {
            b = b.file(&format!("services/a/src/{p}"), c);
        }
        // A path that is both a file and a directory prefix cannot exist; skip such sets.
        let clash = files.iter().any(|(p, _)| files.iter().any(|(q, _)| q.starts_with(&format!("{}/", p.trim_end_matches(".ts")))));
        prop_assume!(!clash);
        let (a, b) = (a.build(), b.build());
        prop_assert_eq!(keys(a.root()), keys(b.root()));
    }

    #[test]
    fn parallel_hashing_equals_sequential(files in file_set()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut list = Vec::new();
        for (i, (_, c)) in files.iter().enumerate() {
            let rel = format!("f{i}");
            std::fs::write(dir.path().join(&rel), c).expect("write");
            let st = engine::hash::FileStat::from_metadata(&std::fs::symlink_metadata(dir.path().join(&rel)).expect("stat"));
            list.push((rel, st));
        }
        let mut c1 = engine::hash::StatCache::new();
        let mut c2 = engine::hash::StatCache::new();
        let (par, _) = engine::hash::hash_files(dir.path(), &list, &mut c1, true).expect("hash");
        let (seq, _) = engine::hash::hash_files(dir.path(), &list, &mut c2, false).expect("hash");
        prop_assert_eq!(par, seq);
    }

    #[test]
    fn contexts_are_the_same_cold_warm_parallel_and_sequential(files in file_set(), shared in file_set()) {
        let mut p = project().shared().service("a", &[]).service("b", &[]);
        for (f, c) in &files {
            p = p.file(&format!("services/a/src/{f}"), c).file(&format!("services/b/{f}"), c);
        }
        for (f, c) in &shared {
            p = p.file(&format!("shared/src/{f}"), c);
        }
        let clash = |set: &[(String, String)]| set.iter().any(|(p, _)| set.iter().any(|(q, _)| q.starts_with(&format!("{}/", p.trim_end_matches(".ts")))));
        prop_assume!(!clash(&files) && !clash(&shared));
        let fx = p.build();
        let root = fx.root();
        std::os::unix::fs::symlink("index.ts", root.join("services/a/link.ts")).expect("symlink");
        let run = |parallel: bool, stat_cache: bool| {
            let mut o = engine::pipeline::Options::new(root);
            o.cache_dir = Some(root.join(".images-cache"));
            o.parallel = parallel;
            o.stat_cache = stat_cache;
            let a = engine::pipeline::analyze(&o).expect("analyze");
            a.images
                .iter()
                .map(|i| {
                    let files: Vec<(String, bool, bool, u32, String)> = i
                        .context
                        .files
                        .iter()
                        .map(|f| (f.path.to_string(), f.symlink, f.dir, f.mode, f.digest.to_hex()))
                        .collect();
                    (a.ws.services[i.service].name.clone(), i.key.to_hex(), files)
                })
                .collect::<Vec<_>>()
        };
        let cold = run(true, false);
        // Every disk file's digest is the blake3 of its bytes (a symlink: of its target; a
        // directory: of nothing, its entries are the other paths).
        for (_, _, files) in &cold {
            for (path, symlink, dir, _, digest) in files {
                if path == "pnpm-lock.yaml" {
                    continue; // the pruned lockfile, made by the engine
                }
                let abs = root.join(path);
                let bytes = if *dir {
                    prop_assert!(abs.is_dir(), "{}", path);
                    Vec::new()
                } else if *symlink {
                    std::fs::read_link(&abs).expect("link").into_os_string().into_encoded_bytes()
                } else {
                    std::fs::read(&abs).expect("read")
                };
                prop_assert_eq!(digest, &blake3::hash(&bytes).to_hex().to_string(), "{}", path);
            }
        }
        prop_assert_eq!(&cold, &run(false, false));
        // The first run with the cache writes it; the second answers from it.
        prop_assert_eq!(&cold, &run(true, true));
        prop_assert_eq!(&cold, &run(true, true));
        prop_assert_eq!(&cold, &run(false, true));
    }
}
