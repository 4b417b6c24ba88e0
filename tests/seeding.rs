//! Seeding a large workspace end to end: a 10,000-file seed (small files in 500 directories
//! and a few larger ones, the shape of an SDK with its dependencies) reaches the guest intact
//! and owned by the guest user, the watcher's baseline of it is silent, and rewrites of
//! seeded files are still recorded, also one behind a restored mtime (which only a baseline
//! hash reveals). How fast it is belongs to `make bench`, not here.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const DIRS: usize = 500;
const SMALL_FILES: usize = 9_997;
const LARGE_FILES: usize = 3;
const LARGE_BYTES: usize = 2 << 20;

/// Deterministic bytes of file `i`: sizes 1..=8 KiB, content unique per file.
fn small_content(i: usize) -> Vec<u8> {
    let len = 1 + (i * 7919) % 8192;
    (0..len)
        .map(|k| (k.wrapping_mul(31) ^ i.wrapping_mul(2_654_435_761)) as u8)
        .collect()
}

/// Writes the seed under `root`; returns every file's relative path and sha256.
fn make_seed(root: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for d in 0..DIRS {
        std::fs::create_dir_all(root.join(dir_of(d))).expect("seed dir");
    }
    for i in 0..SMALL_FILES {
        let rel = format!("{}/f{i:05}.js", dir_of(i % DIRS));
        let data = small_content(i);
        std::fs::write(root.join(&rel), &data).expect("seed file");
        files.insert(rel, sha256_hex(&data));
    }
    for i in 0..LARGE_FILES {
        let rel = format!("lib/big{i}.bin");
        std::fs::create_dir_all(root.join("lib")).expect("lib dir");
        let data: Vec<u8> = (0..LARGE_BYTES)
            .map(|k| (k % 251) as u8 ^ i as u8)
            .collect();
        std::fs::write(root.join(&rel), &data).expect("large file");
        files.insert(rel, sha256_hex(&data));
    }
    files
}

fn dir_of(d: usize) -> String {
    format!("node_modules/pkg{:02}/mod{d:03}", d / 25)
}

/// Counts the files, hashes the sample, checks every entry's owner, then rewrites `plain`
/// and rewrites `hidden` through a hard link with its size and mtime restored.
const GUEST: &str = r#"
import hashlib, json, os, sys
ws = '/tmp/workspace'
arg = json.loads(sys.argv[1])
files, dirs, foreign = 0, 0, []
for top, ds, fs in os.walk(ws):
    dirs += len(ds)
    for name in ds + fs:
        st = os.lstat(os.path.join(top, name))
        if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            foreign.append(os.path.join(top, name))
    files += len(fs)
sample = {}
for rel in arg['sample']:
    with open(os.path.join(ws, rel), 'rb') as f:
        sample[rel] = hashlib.sha256(f.read()).hexdigest()
with open(os.path.join(ws, arg['plain']), 'wb') as f:
    f.write(b'rewritten by the guest')
hidden = os.path.join(ws, arg['hidden'])
st = os.stat(hidden)
os.link(hidden, ws + '/.h')
with open(ws + '/.h', 'r+b') as f:
    f.write(b'X' * 16)
os.utime(hidden, ns=(st.st_atime_ns, st.st_mtime_ns))
os.unlink(ws + '/.h')
after = os.stat(hidden)
restored = after.st_mtime_ns == st.st_mtime_ns and after.st_size == st.st_size
print('RESULT ' + json.dumps({'files': files, 'dirs': dirs, 'foreign': foreign[:5],
      'sample': sample, 'uid': os.getuid(), 'restored': restored}))
"#;

#[test]
fn a_10000_file_seed_arrives_intact_owned_and_silent_and_rewrites_are_recorded() {
    let seed = tempfile::tempdir().expect("seed");
    let files = make_seed(seed.path());
    assert_eq!(files.len(), SMALL_FILES + LARGE_FILES);
    let plain = format!("{}/f00042.js", dir_of(42));
    let hidden = format!("{}/f00777.js", dir_of(777 % DIRS));
    let sample: Vec<&String> = files
        .keys()
        .step_by(997)
        .chain(files.keys().filter(|k| k.starts_with("lib/")))
        .collect();
    let arg = serde_json::json!({ "sample": sample, "plain": plain, "hidden": hidden });
    let run = idagent_run(&[
        "--offline",
        "--workspace",
        seed.path().to_str().expect("utf-8 path"),
        "--image",
        GUEST_IMAGE,
        "--",
        "python3",
        "-c",
        GUEST,
        &arg.to_string(),
    ]);
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let r = run.result();

    // Intact: every file and directory arrived, the sampled contents are byte for byte.
    assert_eq!(r["files"], files.len() as u64, "{r}");
    // 500 leaf directories, 20 package directories, node_modules and lib.
    assert_eq!(r["dirs"], (DIRS + DIRS / 25 + 2) as u64, "{r}");
    for rel in &sample {
        assert_eq!(r["sample"][rel.as_str()], files[rel.as_str()], "{rel}");
    }
    // Owned by the guest user (not root, not the seed's owner on the host).
    assert_ne!(r["uid"], 0, "{r}");
    assert_eq!(r["foreign"], serde_json::json!([]), "{r}");
    assert_eq!(r["restored"], true, "size and mtime were restored: {r}");

    // Silent baseline: no `file` event names a seeded path but the two rewritten ones.
    let guest = |rel: &str| format!("/tmp/workspace/{rel}");
    let file_events: Vec<&Value> = run.of_kind("file").collect();
    let noisy: Vec<&&Value> = file_events
        .iter()
        .filter(|e| {
            let p = e["path"].as_str().unwrap_or_default();
            p.strip_prefix("/tmp/workspace/")
                .is_some_and(|rel| files.contains_key(rel))
                && p != guest(&plain)
                && p != guest(&hidden)
        })
        .collect();
    assert!(noisy.is_empty(), "seeded files reported: {noisy:?}");

    // Both rewrites recorded with the new content's hash.
    let modified = |rel: &str, data: &[u8]| {
        file_events.iter().any(|e| {
            e["op"] == "modify" && e["path"] == guest(rel) && e["sha256"] == sha256_hex(data)
        })
    };
    assert!(
        modified(&plain, b"rewritten by the guest"),
        "{}",
        run.explain()
    );
    let mut hidden_now = small_content(777);
    hidden_now[..16].copy_from_slice(&[b'X'; 16]);
    assert!(modified(&hidden, &hidden_now), "{}", run.explain());
    assert!(
        !run.of_kind("notice").any(|n| n["what"]
            .as_str()
            .is_some_and(|w| w.starts_with("fswatch_"))),
        "a watcher cap was hit: {}",
        run.explain()
    );

    // The exported workspace holds the seed with the guest's changes.
    let exported = run.run_dir().join("workspace");
    assert_eq!(
        std::fs::read(exported.join(&plain)).expect("exported"),
        b"rewritten by the guest"
    );
    let big = std::fs::read(exported.join("lib/big2.bin")).expect("exported");
    assert_eq!(sha256_hex(&big), files["lib/big2.bin"]);
}
