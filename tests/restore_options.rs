//! Restore options: include/exclude, verify, resume, overwrite policies,
//! delete (inside the target only), dry runs, and damaged data.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn tree(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::create_dir_all(src.join("tmp")).unwrap();
    fs::write(src.join("docs/a.txt"), b"alpha").unwrap();
    fs::write(src.join("docs/b.md"), b"beta").unwrap();
    fs::write(src.join("tmp/c.txt"), b"gamma").unwrap();
    write_random(&src.join("big"), 3 << 20, 11);
    src
}

fn restore_json(env: &Env, target: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.json(&args)
}

#[test]
fn include_exclude_verify_and_dry_run() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);

    let t = env.path("dry");
    let r = restore_json(&env, &t, &["--dry-run"]);
    assert_eq!(r["files"], 4);
    assert!(
        !t.exists() || fs::read_dir(&t).unwrap().next().is_none(),
        "dry run wrote files"
    );

    let t = env.path("inc");
    restore_json(&env, &t, &["--include", "*.txt"]);
    let d = restored(&t, &src);
    assert!(d.join("docs/a.txt").exists() && d.join("tmp/c.txt").exists());
    assert!(!d.join("docs/b.md").exists() && !d.join("big").exists());

    let t = env.path("exc");
    // A bare "tmp" would match /tmp, where the test tree lives: anchor it.
    let pattern = format!("{}/tmp", src.display());
    restore_json(&env, &t, &["--exclude", &pattern]);
    let d = restored(&t, &src);
    assert!(d.join("docs/b.md").exists() && !d.join("tmp").exists());

    let t = env.path("verify");
    let r = restore_json(&env, &t, &["--verify"]);
    assert_eq!(r["verified"], 4);
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn resume_and_overwrite_policies() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);

    // Simulate an interrupted restore: one file half-written, one missing.
    fs::write(d.join("big"), b"half").unwrap();
    fs::remove_file(d.join("docs/a.txt")).unwrap();
    let r = restore_json(&env, &t, &[]);
    assert_eq!(r["files"], 2, "{r}");
    assert_eq!(r["files_skipped"], 2, "{r}");
    assert_same_tree(&src, &d);

    // never: an existing file is left alone.
    fs::write(d.join("docs/b.md"), b"local edit").unwrap();
    restore_json(&env, &t, &["--overwrite", "never"]);
    assert_eq!(fs::read(d.join("docs/b.md")).unwrap(), b"local edit");
    // if-changed (default) notices the edit even with the same size and mtime.
    fs::write(d.join("docs/b.md"), b"BETA").unwrap();
    let m = fs::metadata(src.join("docs/b.md")).unwrap();
    filetime::set_file_mtime(
        d.join("docs/b.md"),
        filetime::FileTime::from_last_modification_time(&m),
    )
    .unwrap();
    restore_json(&env, &t, &[]);
    assert_eq!(fs::read(d.join("docs/b.md")).unwrap(), b"beta");
    // always rewrites everything.
    let r = restore_json(&env, &t, &["--overwrite", "always"]);
    assert_eq!(r["files"], 4);
}

#[test]
fn delete_stays_inside_the_target() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), b"keep me").unwrap();

    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);
    fs::write(d.join("extra"), b"x").unwrap();
    fs::create_dir_all(d.join("extra-dir/deep")).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("escape")).unwrap();
    // A directory the snapshot has, replaced by a symlink pointing outside.
    fs::remove_dir_all(d.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("tmp")).unwrap();

    let r = restore_json(&env, &t, &["--delete"]);
    assert_eq!(r["deleted"], 3, "{r}");
    assert!(!d.join("extra").exists() && !d.join("extra-dir").exists());
    assert!(fs::symlink_metadata(d.join("escape")).is_err());
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep me");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        1,
        "restore wrote outside the target"
    );
    assert_same_tree(&src, &d);
}

#[test]
fn damaged_file_is_removed_and_reported() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("one"), "first file ".repeat(100)).unwrap();
    fs::write(src.join("two"), "second file ".repeat(100)).unwrap();
    let summary = env.backup(&[&src]);
    assert_eq!(summary["files_new"], 2);
    // Damage the first blob of the data pack.
    let pack = walkdir::WalkDir::new(env.repo.join("data"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .find(|p| {
            let id = p.file_name().unwrap().to_str().unwrap();
            env.ok(&["cat", "pack", id]).contains("\"blob_type\": 0")
        })
        .expect("a data pack");
    let id = pack.file_name().unwrap().to_str().unwrap().to_string();
    let header: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "pack", &id])).unwrap();
    let off = header[0]["offset"].as_u64().unwrap() as usize;
    let mut bytes = fs::read(&pack).unwrap();
    bytes[off + 3] ^= 0xff;
    fs::write(&pack, &bytes).unwrap();

    let t = env.path("t");
    let out = env.run(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let d = restored(&t, &src);
    let present: Vec<bool> = ["one", "two"].iter().map(|n| d.join(n).exists()).collect();
    assert_eq!(
        present.iter().filter(|p| **p).count(),
        1,
        "exactly the undamaged file is restored"
    );
    let missing = if present[0] { "two" } else { "one" };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(missing) && err.contains(&id), "{err}");
}
