//! Property tests: keys do not depend on the order files are created or listed in; parallel
//! hashing equals sequential hashing.

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
}
