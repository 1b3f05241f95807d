//! End-to-end tests of the read-only commands: ls, find, diff, dump, stats.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use filetime::FileTime;

/// The first version of the tree the diff tests change.
fn make_v1(src: &Path) {
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::create_dir_all(src.join("olddir")).unwrap();
    fs::write(src.join("keep.txt"), b"kept as it is").unwrap();
    fs::write(src.join("remove.txt"), b"this one goes away").unwrap();
    fs::write(src.join("modify.txt"), b"old content").unwrap();
    fs::write(src.join("chmod.txt"), b"only the mode changes").unwrap();
    fs::write(src.join("becomes-dir"), b"a file that becomes a directory").unwrap();
    fs::write(src.join("sub/deep.txt"), b"deep and unchanged").unwrap();
    fs::write(src.join("olddir/x"), b"inside a removed directory").unwrap();
    std::os::unix::fs::symlink("keep.txt", src.join("link")).unwrap();
    fs::set_permissions(src.join("chmod.txt"), fs::Permissions::from_mode(0o644)).unwrap();
}

/// Every kind of change: add, remove, modify content, chmod only, a file
/// replaced by a directory, a directory added and one removed.
fn make_v2(src: &Path) {
    fs::remove_file(src.join("remove.txt")).unwrap();
    fs::write(src.join("modify.txt"), b"new content, longer").unwrap();
    fs::set_permissions(src.join("chmod.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("becomes-dir")).unwrap();
    fs::create_dir(src.join("becomes-dir")).unwrap();
    fs::write(src.join("becomes-dir/inner.txt"), b"inner").unwrap();
    fs::write(src.join("added.txt"), b"added later").unwrap();
    fs::create_dir(src.join("newdir")).unwrap();
    fs::write(src.join("newdir/y"), b"why").unwrap();
    fs::remove_dir_all(src.join("olddir")).unwrap();
}

/// A repository with two snapshots of `src`: before and after [`make_v2`].
struct TwoSnapshots {
    env: Env,
    src: PathBuf,
    first: String,
    second: String,
}

fn two_snapshots() -> TwoSnapshots {
    let env = Env::new();
    let src = env.path("src");
    make_v1(&src);
    let first = env.backup(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    make_v2(&src);
    let second = env.backup(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    TwoSnapshots {
        env,
        src,
        first,
        second,
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Parses every line of `out` as JSON.
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect()
}

#[test]
fn diff_reports_every_kind_of_change() {
    let t = two_snapshots();
    let src = s(&t.src);
    let out = t.env.ok(&["diff", &t.first, &t.second]);
    let lines: Vec<&str> = out.lines().collect();
    let expected_changes = [
        format!("+    {src}/added.txt"),
        format!("T    {src}/becomes-dir/"),
        format!("+    {src}/becomes-dir/inner.txt"),
        format!("M    {src}/modify.txt"),
        format!("+    {src}/newdir/"),
        format!("+    {src}/newdir/y"),
        format!("-    {src}/olddir/"),
        format!("-    {src}/olddir/x"),
        format!("-    {src}/remove.txt"),
    ];
    let mut expected = vec![
        format!(
            "comparing snapshot {} to {}:",
            &t.first[..8],
            &t.second[..8]
        ),
        String::new(),
    ];
    expected.extend(expected_changes.iter().cloned());
    expected.extend([
        String::new(),
        "Files:           3 new,     3 removed,     1 changed".into(),
        "Dirs:            2 new,     1 removed".into(),
        "Others:          0 new,     0 removed".into(),
        // New content: added.txt, inner.txt, y, modify.txt's new version.
        "Data Blobs:      4 new,     4 removed".into(),
    ]);
    assert_eq!(&lines[..expected.len()], expected.as_slice(), "{out}");
    assert!(lines[expected.len()].starts_with("Tree Blobs:"), "{out}");

    // --metadata adds the chmod (and src/, whose mtime changed) as U; the
    // directories above src may change under other tests, so look below src.
    let out = t.env.ok(&["diff", "--metadata", &t.first, &t.second]);
    let below_src: Vec<&str> = out
        .lines()
        .filter(|l| l.len() > 5 && l[5..].starts_with(&format!("{src}/")))
        .collect();
    let mut with_meta: Vec<String> = expected_changes.to_vec();
    with_meta.insert(0, format!("U    {src}/"));
    with_meta.insert(4, format!("U    {src}/chmod.txt"));
    assert_eq!(below_src, with_meta, "{out}");

    // JSON: one object per change, then the statistics.
    let out = t.env.ok(&["--json", "diff", &t.first, &t.second]);
    let v = json_lines(&out);
    let (stats, changes) = v.split_last().unwrap();
    let got: Vec<String> = changes
        .iter()
        .map(|c| {
            assert_eq!(c["message_type"], "change", "{c}");
            format!(
                "{:<5}{}",
                c["modifier"].as_str().unwrap(),
                c["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(got, expected_changes, "{out}");
    assert_eq!(stats["message_type"], "statistics");
    assert_eq!(stats["source_snapshot"], t.first.as_str());
    assert_eq!(stats["target_snapshot"], t.second.as_str());
    assert_eq!(stats["changed_files"], 1);
    let added = &stats["added"];
    let removed = &stats["removed"];
    assert_eq!(
        (&added["files"], &added["dirs"], &added["others"]),
        (&3.into(), &2.into(), &0.into()),
        "{stats}"
    );
    assert_eq!(
        (&removed["files"], &removed["dirs"], &removed["others"]),
        (&3.into(), &1.into(), &0.into()),
        "{stats}"
    );
    assert_eq!(added["data_blobs"], 4);
    assert_eq!(removed["data_blobs"], 4);
    // Plaintext bytes of the new data blobs, plus the new trees.
    let new_content =
        ("added later".len() + "inner".len() + "why".len() + "new content, longer".len()) as u64;
    assert!(added["bytes"].as_u64().unwrap() > new_content, "{stats}");

    // Identical snapshots: nothing to report, nothing read below the root.
    let v = t.env.json(&["diff", &t.second, &t.second]);
    assert_eq!(v["changed_files"], 0);
    assert_eq!(v["added"]["files"], 0);
    assert_eq!(v["removed"]["bytes"], 0);

    // SNAPSHOT:SUBFOLDER compares below a directory.
    let out = t.env.ok(&[
        "diff",
        &format!("{}:{src}/olddir", t.first),
        &format!("{}:{src}/newdir", t.second),
    ]);
    assert!(out.contains("-    /x\n"), "{out}");
    assert!(out.contains("+    /y\n"), "{out}");

    t.env.fails(&["diff", &t.first, "ffffffff"], 1);
}

#[test]
fn find_matches_names_and_paths_per_snapshot() {
    let t = two_snapshots();
    let src = s(&t.src);

    let v = t.env.json(&["find", "*.txt"]);
    let groups = v.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    let paths = |g: &serde_json::Value| -> BTreeSet<String> {
        g["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["path"].as_str().unwrap().to_string())
            .collect()
    };
    let set = |names: &[&str]| -> BTreeSet<String> {
        names.iter().map(|n| format!("{src}/{n}")).collect()
    };
    assert_eq!(groups[0]["snapshot"], t.first.as_str());
    assert_eq!(
        paths(&groups[0]),
        set(&[
            "keep.txt",
            "remove.txt",
            "modify.txt",
            "chmod.txt",
            "sub/deep.txt"
        ])
    );
    assert_eq!(groups[0]["hits"], 5);
    assert_eq!(groups[1]["snapshot"], t.second.as_str());
    assert_eq!(
        paths(&groups[1]),
        set(&[
            "added.txt",
            "becomes-dir/inner.txt",
            "keep.txt",
            "modify.txt",
            "chmod.txt",
            "sub/deep.txt"
        ])
    );
    let m = groups[1]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "chmod.txt")
        .unwrap();
    assert_eq!(m["type"], "file");
    assert_eq!(m["mode"], 0o600);
    assert_eq!(m["permissions"], "-rw-------");
    assert_eq!(m["size"], "only the mode changes".len());

    // A pattern with '/' matches paths, at any depth unless anchored.
    let v = t
        .env
        .json(&["find", "newdir/*", "--snapshot", &t.second[..8]]);
    assert_eq!(paths(&v[0]), set(&["newdir/y"]));
    let v = t.env.json(&["find", &format!("{src}/sub/*")]);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(paths(&v[1]), set(&["sub/deep.txt"]));
    // Several patterns, a directory match, case folding, one snapshot.
    let v = t
        .env
        .json(&["find", "-i", "KEEP.TXT", "becomes-*", "-s", &t.first]);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(paths(&v[0]), set(&["becomes-dir", "keep.txt"]));
    // Nothing found: an empty array, and success.
    assert_eq!(t.env.json(&["find", "no-such-name"]), serde_json::json!([]));

    // Text: a heading per snapshot with matches, then the paths.
    let out = t.env.ok(&["find", "y"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>()[1..],
        [format!("{src}/newdir/y")],
        "{out}"
    );
    assert!(
        out.starts_with(&format!(
            "Found matching entries in snapshot {}",
            &t.second[..8]
        )),
        "{out}"
    );
    let out = t.env.ok(&["find", "-l", "link"]);
    assert!(out.contains(&format!("{src}/link -> keep.txt")), "{out}");
    assert!(out.contains("lrwxrwxrwx"), "{out}");

    let err = t.env.fails(&["find", "[unclosed"], 2);
    assert!(err.contains("bad pattern"));
}

#[test]
fn ls_json_long_and_directory_filters() {
    let t = two_snapshots();
    let src = s(&t.src);
    let out = t.env.ok(&["--json", "ls", &t.second, &src]);
    let v = json_lines(&out);
    let snap = &v[0];
    assert_eq!(snap["struct_type"], "snapshot");
    assert_eq!(snap["message_type"], "snapshot");
    assert_eq!(snap["id"], t.second.as_str());
    assert_eq!(snap["short_id"], &t.second[..8]);
    assert_eq!(snap["paths"][0], src.as_str());
    assert!(snap["time"].as_str().unwrap().contains('T'));

    // restic's rule: the directory itself and its direct entries.
    let nodes = &v[1..];
    let listed: Vec<&str> = nodes.iter().map(|n| n["path"].as_str().unwrap()).collect();
    let mut expected = vec![src.clone()];
    for n in [
        "added.txt",
        "becomes-dir",
        "chmod.txt",
        "keep.txt",
        "link",
        "modify.txt",
        "newdir",
        "sub",
    ] {
        expected.push(format!("{src}/{n}"));
    }
    assert_eq!(listed, expected);
    for n in nodes {
        assert_eq!(n["struct_type"], "node");
        for k in [
            "name", "type", "path", "uid", "gid", "size", "mode", "mtime", "atime", "ctime",
        ] {
            assert!(!n[k].is_null(), "node JSON lacks {k}: {n}");
        }
        let path = Path::new(n["path"].as_str().unwrap());
        let meta = fs::symlink_metadata(path).unwrap();
        assert_eq!(n["name"], path.file_name().unwrap().to_str().unwrap());
        assert_eq!(n["uid"], meta.uid());
        assert_eq!(n["gid"], meta.gid());
        assert_eq!(n["mode"], meta.mode() & 0o7777, "{n}");
        let mtime = chrono::DateTime::parse_from_rfc3339(n["mtime"].as_str().unwrap()).unwrap();
        assert_eq!(
            (mtime.timestamp(), mtime.timestamp_subsec_nanos() as i64),
            (meta.mtime(), meta.mtime_nsec()),
            "{n}"
        );
        chrono::DateTime::parse_from_rfc3339(n["atime"].as_str().unwrap()).unwrap();
        chrono::DateTime::parse_from_rfc3339(n["ctime"].as_str().unwrap()).unwrap();
        if meta.is_file() {
            assert_eq!(n["type"], "file");
            assert_eq!(n["size"], meta.len());
        }
    }
    let link = nodes.iter().find(|n| n["name"] == "link").unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["link_target"], "keep.txt");
    assert_eq!(nodes[0]["type"], "dir");

    // --recursive goes below the entries; no directory lists everything.
    let out = t.env.ok(&["ls", &t.second, &src, "--recursive"]);
    assert!(out.contains(&format!("{src}/sub/deep.txt\n")), "{out}");
    let out = t.env.ok(&["ls", &t.second, &src]);
    assert!(!out.contains("deep.txt"), "{out}");
    let out = t.env.ok(&["ls", &t.second]);
    assert!(out.contains(&format!("{src}/newdir/y\n")), "{out}");
    assert!(out.starts_with(&format!("snapshot {} of [{src}]", &t.second[..8])));

    // Long format: permissions, uid, gid, size, time, path, link target.
    let out = t.env.ok(&["ls", "-l", &t.second, &src]);
    let chmod = out.lines().find(|l| l.ends_with("/chmod.txt")).unwrap();
    assert!(chmod.starts_with("-rw------- "), "{chmod}");
    assert!(
        chmod.contains(&format!(" {} ", "only the mode changes".len())),
        "{chmod}"
    );
    assert!(
        out.lines()
            .any(|l| l.ends_with(&format!("{src}/link -> keep.txt"))),
        "{out}"
    );

    // A relative path is a wrong command line; a missing entry is not.
    let err = t.env.fails(&["ls", &t.second, "relative/path"], 2);
    assert!(err.contains("absolute paths"), "{err}");
    let err = t
        .env
        .fails(&["ls", &t.second, &format!("{src}/no-such-entry")], 1);
    assert!(err.contains("no-such-entry"), "{err}");
}

/// Runs `cairn ARGS` with stdout into `dest`; asserts success.
/// Runs cairn with standard output into `dest`; asserts success and
/// returns the output (its standard error).
fn run_to_file(env: &Env, args: &[&str], dest: &Path) -> std::process::Output {
    let out = env
        .cmd()
        .args(args)
        .stdout(Stdio::from(fs::File::create(dest).unwrap()))
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(
        out.status.success(),
        "cairn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Sets whole-second and sub-second mtimes (and one before 1970), deepest
/// entries first, so that directory mtimes stay as set.
fn set_times(root: &Path) {
    let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .contents_first(true)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect();
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in entries.iter().enumerate() {
        let t = if p.ends_with("old.txt") {
            FileTime::from_unix_time(-1_234_567_890, 123_456_789)
        } else {
            FileTime::from_unix_time(1_600_000_000 + i as i64 * 1000, (i as u32) * 7_000_001)
        };
        filetime::set_symlink_file_times(p, t, t).unwrap();
    }
}

#[test]
fn dump_writes_files_and_directories_as_tar_and_zip() {
    let env = Env::new();
    let src = env.path("src");
    make_v1(&src);
    write_random(&src.join("sub/big.bin"), 10 << 20, 3);
    fs::write(src.join("sub/old.txt"), b"from before 1970").unwrap();
    fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(src.join("keep.txt"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o700)).unwrap();
    set_times(&src);
    env.backup(&[&src]);
    let srcs = s(&src);

    // A file: its bytes, as they are (the big one spans several blobs).
    assert_eq!(
        env.ok(&["dump", "latest", &format!("{srcs}/modify.txt")]),
        "old content"
    );
    let big = env.path("big.out");
    run_to_file(
        &env,
        &["dump", "latest", &format!("{srcs}/sub/big.bin")],
        &big,
    );
    assert!(files_equal(&big, &src.join("sub/big.bin")));

    // A directory: a tar whose entries are named by path without the
    // leading '/', and which extracts to an identical tree.
    let tarball = env.path("src.tar");
    run_to_file(&env, &["dump", "latest", &srcs], &tarball);
    let rel = srcs.trim_start_matches('/');
    let mut names = BTreeSet::new();
    let mut ar = tar::Archive::new(fs::File::open(&tarball).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_str().unwrap().to_string();
        if name.ends_with("/modify.txt") {
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            assert_eq!(body, "old content");
        }
        if name.ends_with("/keep.txt") {
            assert_eq!(e.header().mode().unwrap(), 0o4755);
        }
        // The directory asked for is an entry too, with its own mode.
        if name.trim_end_matches('/') == rel {
            assert_eq!(e.header().mode().unwrap(), 0o700);
        }
        names.insert(name.trim_end_matches('/').to_string());
    }
    let expected: BTreeSet<String> = walkdir::WalkDir::new(&src)
        .into_iter()
        .map(|e| {
            let p = e.unwrap().into_path();
            let below = p.strip_prefix(&src).unwrap();
            if below.as_os_str().is_empty() {
                rel.to_string()
            } else {
                format!("{rel}/{}", below.display())
            }
        })
        .collect();
    assert_eq!(names, expected);
    let target = env.path("untar");
    fs::create_dir(&target).unwrap();
    // GNU tar reads the PAX records, so nanoseconds and pre-1970 times survive.
    let st = std::process::Command::new("tar")
        .args([
            "-xpf",
            tarball.to_str().unwrap(),
            "-C",
            target.to_str().unwrap(),
        ])
        .status()
        .expect("run tar");
    assert!(st.success());
    assert_same_tree(&src, &target.join(rel));
    assert_eq!(
        fs::metadata(target.join(rel)).unwrap().permissions().mode() & 0o7777,
        0o700
    );

    // SNAPSHOT:SUBFOLDER puts the subfolder's contents at the archive root.
    let tarball = env.path("sub.tar");
    run_to_file(
        &env,
        &["dump", &format!("latest:{srcs}/sub"), "/"],
        &tarball,
    );
    let mut ar = tar::Archive::new(fs::File::open(&tarball).unwrap());
    let names: BTreeSet<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["big.bin", "deep.txt", "old.txt"]
            .map(String::from)
            .into_iter()
            .collect()
    );

    // zip: the same entries (directories with '/'), modes, symlinks, content.
    let zipfile = env.path("src.zip");
    run_to_file(
        &env,
        &["dump", "--archive", "zip", "latest", &srcs],
        &zipfile,
    );
    let mut z = zip::ZipArchive::new(fs::File::open(&zipfile).unwrap()).unwrap();
    let names: BTreeSet<String> = z
        .file_names()
        .map(|n| n.unwrap().trim_end_matches('/').to_string())
        .collect();
    assert_eq!(names, expected);
    {
        let mut f = z.by_name(&format!("{rel}/chmod.txt")).unwrap();
        assert_eq!(f.unix_mode().unwrap() & 0o777, 0o644);
        let mut body = String::new();
        f.read_to_string(&mut body).unwrap();
        assert_eq!(body, "only the mode changes");
    }
    {
        let f = z.by_name(&format!("{rel}/sub/")).unwrap();
        assert!(f.is_dir());
        assert_eq!(f.unix_mode().unwrap() & 0o777, 0o750);
    }
    {
        let mut f = z.by_name(&format!("{rel}/link")).unwrap();
        assert!(f.is_symlink());
        let mut target = String::new();
        f.read_to_string(&mut target).unwrap();
        assert_eq!(target, "keep.txt");
    }
    {
        let mut f = z.by_name(&format!("{rel}/sub/big.bin")).unwrap();
        let mut body = Vec::new();
        f.read_to_end(&mut body).unwrap();
        assert_eq!(body, fs::read(src.join("sub/big.bin")).unwrap());
    }

    // Not a file or directory, not there, not a format: clear errors.
    for args in [
        vec!["dump", "latest", &format!("{srcs}/link")],
        vec!["dump", "latest", &format!("{srcs}/nothing")],
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
    let out = env.run(&["dump", "--archive", "rar", "latest", &srcs]);
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn stats_counts_restore_size_raw_data_and_dedup() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write_random(&src.join("a"), 1000, 1);
    write_random(&src.join("d/b"), 5000, 2);
    fs::copy(src.join("d/b"), src.join("dup")).unwrap();
    let text: String = (0..1000)
        .map(|i| format!("line {i} compresses\n"))
        .collect();
    fs::write(src.join("t.txt"), &text).unwrap();
    // A link's target length (43 bytes) is no file bytes (restic counts 0,
    // as `snapshots` does; it was added).
    std::os::unix::fs::symlink("a-target-of-forty-four-characters-in-length", src.join("l"))
        .unwrap();
    let files = 1000 + 5000 + 5000 + text.len() as u64;
    let distinct = 1000 + 5000 + text.len() as u64;
    let first = env.backup(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    // restore-size: every entry (as restic counts), the sum of sizes.
    let v = env.json(&["stats", &first]);
    assert_eq!(v["mode"], "restore-size");
    assert_eq!(v["snapshots_count"], 1);
    assert_eq!(v["total_size"], files, "{v}");
    let entries = json_lines(&env.ok(&["--json", "ls", &first])).len() - 1;
    assert_eq!(v["total_file_count"], entries as u64, "{v}");

    // raw-data: distinct blobs; the duplicate is stored once.
    let v = env.json(&["stats", "--mode", "raw-data", "latest"]);
    let raw = v["total_uncompressed_size"].as_u64().unwrap();
    assert!(raw > distinct && raw < files, "{v}");
    assert!(v["total_size"].as_u64().unwrap() < raw, "{v}");
    assert!(v["compression_ratio"].as_f64().unwrap() > 1.0, "{v}");
    assert!(v["compression_space_saving"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["restore_size"], files);
    let dedup = v["deduplication_ratio"].as_f64().unwrap();
    assert!((dedup - files as f64 / distinct as f64).abs() < 1e-9, "{v}");
    assert!(dedup > 1.0);
    // Three data blobs, and trees for the root, the directories down to
    // src, and d.
    let trees = src.components().count() as u64 + 1;
    assert_eq!(v["total_blob_count"], 3 + trees, "{v}");

    let v = env.json(&["stats", "--mode", "files-by-contents"]);
    assert_eq!(v["total_file_count"], 3);
    assert_eq!(v["total_size"], distinct);
    let v = env.json(&["stats", "--mode", "blobs-per-file"]);
    assert_eq!(v["total_file_count"], 4);
    assert_eq!(v["total_blob_count"], 4);
    assert_eq!(v["total_size"], files);

    // Default: all snapshots, summed.
    env.backup(&[&src]);
    let v = env.json(&["stats"]);
    assert_eq!(v["snapshots_count"], 2);
    assert_eq!(v["total_size"], 2 * files);
    // A second snapshot of the same files adds no data: dedup doubles.
    let v = env.json(&["stats", "--mode", "raw-data"]);
    assert_eq!(v["restore_size"], 2 * files);
    let dedup = v["deduplication_ratio"].as_f64().unwrap();
    assert!(
        (dedup - 2.0 * files as f64 / distinct as f64).abs() < 1e-9,
        "{v}"
    );

    let out = env.ok(&["stats"]);
    assert!(out.starts_with("Stats in restore-size mode:"), "{out}");
    assert!(out.contains("Snapshots processed:  2"), "{out}");
    assert_ne!(
        env.run(&["stats", "--mode", "nonsense"]).status.code(),
        Some(0)
    );
}

#[test]
fn a_tar_dump_keeps_hard_links_and_a_zip_says_it_copies_them() {
    // Names of one inode come out of a tar as one inode again (as from
    // restore and the mount); they were full copies, so extracting
    // doubled the space and broke the links.
    let env = Env::new();
    let src = env.path("src");
    let deep = src.join(format!("{}/{}", "d".repeat(90), "e".repeat(90)));
    fs::create_dir_all(&deep).unwrap();
    write_random(&src.join("a.bin"), 300_000, 7);
    fs::hard_link(src.join("a.bin"), src.join("b.bin")).unwrap();
    // A link name beyond the header's 100 bytes needs GNU's long link.
    fs::hard_link(src.join("a.bin"), deep.join("c.bin")).unwrap();
    fs::write(src.join("alone.txt"), "no links").unwrap();
    std::os::unix::fs::symlink("a.bin", src.join("sym")).unwrap();
    fs::hard_link(src.join("sym"), src.join("sym2")).unwrap();
    env.backup(&[&src]);
    let srcs = s(&src);

    let tarball = env.path("src.tar");
    run_to_file(&env, &["dump", "latest", &srcs], &tarball);
    // The content is in the archive once.
    let size = fs::metadata(&tarball).unwrap().len();
    assert!(size < 2 * 300_000, "{size}");
    let mut kinds = Vec::new();
    let mut ar = tar::Archive::new(fs::File::open(&tarball).unwrap());
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        if e.header().entry_type() == tar::EntryType::Link {
            kinds.push(e.path().unwrap().file_name().unwrap().to_owned());
        }
    }
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    let target = env.path("untar");
    fs::create_dir(&target).unwrap();
    let st = std::process::Command::new("tar")
        .args(["-xpf", s(&tarball).as_str(), "-C", s(&target).as_str()])
        .status()
        .expect("run tar");
    assert!(st.success());
    let out = target.join(srcs.trim_start_matches('/'));
    assert_same_tree(&src, &out);
    let ino = |p: PathBuf| fs::symlink_metadata(p).unwrap().ino();
    let a = ino(out.join("a.bin"));
    assert_eq!(ino(out.join("b.bin")), a);
    let rel = deep.strip_prefix(&src).unwrap();
    assert_eq!(ino(out.join(rel).join("c.bin")), a);
    assert_eq!(fs::metadata(out.join("a.bin")).unwrap().nlink(), 3);
    assert_eq!(ino(out.join("sym2")), ino(out.join("sym")));
    assert_ne!(ino(out.join("alone.txt")), a);

    // A zip holds copies, and says so.
    let zipfile = env.path("src.zip");
    let o = run_to_file(
        &env,
        &["dump", "--archive", "zip", "latest", &srcs],
        &zipfile,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: 3 hard-linked name(s) hold copies in the zip"),
        "{err}"
    );
    let o = run_to_file(&env, &["dump", "latest", &srcs], &tarball);
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_zip_dump_keeps_names_apart_that_are_not_utf8() {
    // Zip names are text. Two names that differ only in bytes that are not
    // UTF-8 must stay two entries (and the archive complete); tar keeps
    // the bytes as they are.
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let a = src.join(std::ffi::OsStr::from_bytes(b"a\xff"));
    let b = src.join(std::ffi::OsStr::from_bytes(b"a\xfe"));
    fs::write(&a, b"first").unwrap();
    fs::write(&b, b"second").unwrap();
    fs::write(src.join("z-plain"), b"last").unwrap();
    // A real name equal to an escaped one: the zip writer refused the
    // second mid-archive (exit 1, a truncated zip); it gets a suffix.
    fs::write(src.join("a\\xfe"), b"literal").unwrap();
    // The same of directories: what the second holds went into the first.
    fs::create_dir_all(src.join("d\\xe9")).unwrap();
    fs::write(src.join("d\\xe9/g"), b"in literal").unwrap();
    let d = src.join(std::ffi::OsStr::from_bytes(b"d\xe9"));
    fs::create_dir_all(d.join("sub")).unwrap();
    fs::write(d.join("sub/g"), b"in escaped").unwrap();
    // A directory whose name ends in a backslash was written without its
    // `/`, so unzip took it for a file and failed on what it holds.
    fs::create_dir_all(src.join("back\\")).unwrap();
    fs::write(src.join("back\\/h"), b"h").unwrap();
    // After 2038 the extended timestamp cannot hold the time: it was
    // written as 2038-01-19, which unzip prefers to the right DOS time.
    let future = 2_524_608_000; // 2050-01-01
    fs::write(src.join("future"), b"f").unwrap();
    filetime::set_file_mtime(src.join("future"), FileTime::from_unix_time(future, 0)).unwrap();
    // Beyond what a DOS time holds: it became 1980-01-01 without a word.
    fs::write(src.join("far"), b"f").unwrap();
    filetime::set_file_mtime(src.join("far"), FileTime::from_unix_time(13_569_465_600, 0)).unwrap(); // 2400-01-01
    // What a zip cannot hold is said too (it was left out or changed
    // without a word, exit 0).
    mknod(&src.join("fifo"), libc::S_IFIFO, 0o644, 0);
    fs::write(src.join("suid"), b"s").unwrap();
    fs::set_permissions(src.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(b"t\xff"), src.join("link")).unwrap();
    env.backup(&[&src]);
    let srcs = src.to_str().unwrap();
    let rel = srcs.trim_start_matches('/');

    let zipfile = env.path("src.zip");
    let out = run_to_file(
        &env,
        &["dump", "--archive", "zip", "latest", srcs],
        &zipfile,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for said in [
        "5 entry path(s) are not UTF-8",
        "1 FIFO(s), device(s) or socket(s) left out",
        "1 entries lost their setuid",
        "1 symbolic link target(s) are not UTF-8",
        "2 entry path(s) equalled another's once escaped",
        "1 modification time(s) are outside the 1980-2107",
    ] {
        assert!(err.contains(said), "{said}: {err}");
    }
    let mut z = zip::ZipArchive::new(fs::File::open(&zipfile).unwrap()).unwrap();
    for (name, body) in [
        (format!("{rel}/a\\xff"), "first"),
        (format!("{rel}/a\\xfe"), "literal"),
        (format!("{rel}/a\\xfe~1"), "second"),
        (format!("{rel}/z-plain"), "last"),
        (format!("{rel}/d\\xe9/g"), "in literal"),
        (format!("{rel}/d\\xe9~1/sub/g"), "in escaped"),
        (format!("{rel}/back\\/h"), "h"),
    ] {
        let mut f = z.by_name(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut got = String::new();
        f.read_to_string(&mut got).unwrap();
        assert_eq!(got, body, "{name}");
    }
    for dir in ["d\\xe9~1/", "d\\xe9~1/sub/", "back\\/"] {
        let name = format!("{rel}/{dir}");
        let f = z.by_name(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(f.is_dir(), "{name}");
    }
    {
        let f = z.by_name(&format!("{rel}/future")).unwrap();
        assert_eq!(f.last_modified().unwrap().year(), 2050);
        for x in f.extra_data_fields() {
            if let zip::extra_fields::ExtraField::ExtendedTimestamp(t) = x {
                assert_eq!(t.mod_time(), Some(future as u32));
            }
        }
    }

    let tarfile = env.path("src.tar");
    run_to_file(&env, &["dump", "latest", srcs], &tarfile);
    let mut t = tar::Archive::new(fs::File::open(&tarfile).unwrap());
    let names: BTreeSet<Vec<u8>> = t
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    assert!(
        names.contains(
            &format!("{rel}/")
                .into_bytes()
                .into_iter()
                .chain(*b"a\xff")
                .collect::<Vec<u8>>()
        ),
        "{names:?}"
    );
}

#[test]
fn a_tar_dump_keeps_long_names_and_link_targets_that_start_with_bytes_not_utf8() {
    // A name or link target too long for the header, whose first byte is
    // not UTF-8: the tar writer cut the header's copy at that byte and
    // refused the empty rest (exit 1, half an archive). Only a top-level
    // directory puts such a byte first in an archive's names.
    use std::os::unix::ffi::OsStrExt;
    assert!(
        is_root(),
        "this test backs up a directory made in /: run the suite as root (tests/run-all.sh)"
    );
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let top = [
        b"/\xff-cairn-test-".as_slice(),
        std::process::id().to_string().as_bytes(),
    ]
    .concat();
    let top = Gone(PathBuf::from(std::ffi::OsStr::from_bytes(&top)));
    let deep = top.0.join("d".repeat(120));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f"), b"deep").unwrap();
    fs::hard_link(deep.join("f"), top.0.join("link-to-f")).unwrap();
    let target = [b"\xfe".as_slice(), "t".repeat(150).as_bytes()].concat();
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), top.0.join("sym")).unwrap();
    let env = Env::new();
    env.backup(&[&top.0]);

    let tarball = env.path("all.tar");
    run_to_file(&env, &["dump", "latest", "/"], &tarball);
    let out = env.path("untar");
    fs::create_dir(&out).unwrap();
    let st = std::process::Command::new("tar")
        .args(["-xpf", s(&tarball).as_str(), "-C", s(&out).as_str()])
        .status()
        .expect("run tar");
    assert!(st.success());
    let back = out.join(top.0.strip_prefix("/").unwrap());
    let rel = deep.strip_prefix(&top.0).unwrap();
    assert_eq!(fs::read(back.join(rel).join("f")).unwrap(), b"deep");
    let ino = |p: PathBuf| fs::symlink_metadata(p).unwrap().ino();
    assert_eq!(ino(back.join(rel).join("f")), ino(back.join("link-to-f")));
    let got = fs::read_link(back.join("sym")).unwrap();
    assert!(got.as_os_str().as_bytes() == target.as_slice(), "{got:?}");
    assert_same_tree(&top.0, &back);
}

#[test]
fn ls_and_find_print_names_that_are_not_utf8_as_stored() {
    // They were printed with U+FFFD in place of each byte that is not
    // UTF-8: a listing compared with the source's (`find`, `ls`) differed.
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let name: &[u8] = b"caf\xe9-\xff";
    fs::write(src.join(std::ffi::OsStr::from_bytes(name)), b"x").unwrap();
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(b"t\xfe"), src.join("link")).unwrap();
    env.backup(&[&src]);
    let path = [src.as_os_str().as_bytes(), b"/", name].concat();
    let lines = |args: &[&str]| -> Vec<Vec<u8>> {
        let out = env.run(args);
        exits(&out, 0);
        out.stdout
            .split(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    };
    for args in [&["ls", "latest"][..], &["find", "caf*"]] {
        assert!(
            lines(args).contains(&path),
            "{args:?}: {}",
            String::from_utf8_lossy(&env.run(args).stdout)
        );
    }
    let long = lines(&["ls", "-l", "latest"]);
    assert!(long.iter().any(|l| l.ends_with(&path)), "{long:?}");
    assert!(
        long.iter().any(|l| l.ends_with(b"/link -> t\xfe")),
        "{long:?}"
    );
}

/// The JSON lines of `out` (which must have exited 0) whose
/// `message_type` is `kind`.
fn messages(out: &std::process::Output, kind: &str) -> Vec<serde_json::Value> {
    exits(out, 0);
    out.stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .filter(|v: &serde_json::Value| v["message_type"] == kind)
        .collect()
}

#[test]
fn ls_dump_restore_and_diff_take_paths_that_are_not_utf8() {
    // A path argument naming a directory whose name is not UTF-8 was
    // refused before anything ran ("invalid UTF-8 was detected"): such a
    // directory could be listed whole, but not asked for.
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let src = env.path("src");
    let dir = src.join(OsStr::from_bytes(b"caf\xe9"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("f"), b"inside").unwrap();
    fs::write(src.join("other"), b"outside").unwrap();
    env.backup(&[&src]);
    let os = |parts: &[&[u8]]| OsStr::from_bytes(&parts.concat()).to_owned();
    let d = dir.as_os_str().as_bytes();

    let out = env.run(&[os(&[b"ls"]), os(&[b"latest"]), os(&[d])]);
    exits(&out, 0);
    let listed: Vec<&[u8]> = out.stdout.split(|b| *b == b'\n').collect();
    assert!(
        listed.contains(&[d, b"/f"].concat().as_slice()),
        "{listed:?}"
    );
    assert!(!listed.iter().any(|l| l.ends_with(b"/other")), "{listed:?}");

    let out = env.run(&[os(&[b"dump"]), os(&[b"latest"]), os(&[d, b"/f"])]);
    exits(&out, 0);
    assert_eq!(out.stdout, b"inside");

    let t = env.path("t");
    let out = env.run(&[
        os(&[b"restore"]),
        os(&[b"latest:", d]),
        os(&[b"--target"]),
        t.clone().into_os_string(),
    ]);
    exits(&out, 0);
    assert_eq!(fs::read(t.join("f")).unwrap(), b"inside");
    assert!(!t.join("other").exists());

    let out = env.run(&[os(&[b"diff"]), os(&[b"latest:", d]), os(&[b"latest:", d])]);
    exits(&out, 0);

    // Changes and listings give the exact bytes too: the text as stored,
    // the JSON beside its lossy strings (they had U+FFFD only).
    fs::write(dir.join("g"), b"new").unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"t\xfe"), dir.join("l")).unwrap();
    env.backup(&[&src]);
    let ids = snapshot_ids(&env);
    let out = env.run(&["diff", &ids[0], &ids[1]]);
    exits(&out, 0);
    let lines: Vec<&[u8]> = out.stdout.split(|b| *b == b'\n').collect();
    assert!(
        lines.contains(&[b"+    ", d, b"/g"].concat().as_slice()),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let changes = messages(&env.run(&["--json", "diff", &ids[0], &ids[1]]), "change");
    let g = changes
        .iter()
        .find(|c| c["path"].as_str().unwrap().ends_with("/g"))
        .expect("g changed");
    let bytes: Vec<u8> = serde_json::from_value(g["path_bytes"].clone()).unwrap();
    assert_eq!(bytes, [d, b"/g"].concat(), "{g}");
    for c in &changes {
        let lossy = c["path"].as_str().unwrap().contains('\u{FFFD}');
        assert_eq!(c["path_bytes"].is_array(), lossy, "{c}");
    }
    let nodes = messages(
        &env.run(&[os(&[b"--json"]), os(&[b"ls"]), os(&[b"latest"]), os(&[d])]),
        "node",
    );
    let l = nodes.iter().find(|n| n["name"] == "l").expect("the link");
    let target: Vec<u8> = serde_json::from_value(l["link_target_bytes"].clone()).unwrap();
    assert_eq!(target, b"t\xfe", "{l}");
    let path: Vec<u8> = serde_json::from_value(l["path_bytes"].clone()).unwrap();
    assert_eq!(path, [d, b"/l"].concat(), "{l}");
    assert!(l["name_bytes"].is_null(), "{l}");
    let top = nodes
        .iter()
        .find(|n| n["name_bytes"].is_array())
        .expect("the directory itself");
    let name: Vec<u8> = serde_json::from_value(top["name_bytes"].clone()).unwrap();
    assert_eq!(name, b"caf\xe9", "{top}");

    // A name that is not there is named with its bytes as \xNN.
    let err = env.fails(&[os(&[b"ls"]), os(&[b"latest"]), os(&[d, b"-gone"])], 1);
    assert!(err.contains("caf\\xe9-gone\" not found"), "{err}");
}

#[test]
fn cat_tree_shows_names_as_text_and_keeps_other_bytes_exact() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("héllo wörld.txt"), b"text").unwrap();
    fs::write(src.join(std::ffi::OsStr::from_bytes(b"bin\xff")), b"bytes").unwrap();
    std::os::unix::fs::symlink("héllo wörld.txt", src.join("link")).unwrap();
    env.backup(&[&src]);
    let tree: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "tree", &subtree_of(&env, &src)])).unwrap();
    let nodes = tree["nodes"].as_array().unwrap();
    let by_name = |want: &[u8]| {
        nodes
            .iter()
            .find(|n| node_name(n) == want)
            .unwrap_or_else(|| panic!("{:?} not in {tree}", String::from_utf8_lossy(want)))
    };
    assert_eq!(
        by_name("héllo wörld.txt".as_bytes())["name"],
        "héllo wörld.txt"
    );
    let link = by_name(b"link");
    assert_eq!(link["name"], "link");
    assert_eq!(link["link_target"], "héllo wörld.txt");
    // Not UTF-8: the exact bytes, as an array.
    assert_eq!(
        by_name(b"bin\xff")["name"],
        serde_json::json!([98, 105, 110, 255])
    );
}

#[test]
fn new_keys_use_the_default_argon2id_settings_and_older_keys_still_open() {
    let env = Env::uninit();
    // The real parameters (the suite otherwise runs with the test-only weak
    // ones): 48 MiB, 6 passes, 4 lanes (format-spec §7).
    let real =
        |args: &[&str]| stdout_of(env.cmd().env_remove("CAIRN_TEST_INSECURE_KDF").args(args));
    real(&["init"]);
    let keys: serde_json::Value = serde_json::from_str(&real(&["--json", "key", "list"])).unwrap();
    assert_eq!(
        keys[0]["kdf"],
        serde_json::json!({"m_cost": 49152, "t_cost": 6, "p_cost": 4})
    );
    // A key with one lane, as keys were made before, opens the repository.
    let pw2 = env.path("pw2");
    fs::write(&pw2, "second password").unwrap();
    env.ok(&["key", "add", "--new-password-file", pw2.to_str().unwrap()]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"lanes").unwrap();
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "second password")
        .args(["--json", "key", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lanes: BTreeSet<u64> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kdf"]["p_cost"].as_u64().unwrap())
        .collect();
    assert_eq!(lanes, BTreeSet::from([1, 4]));
    real(&["backup", s(&src).as_str()]);
    let restored_to = env.path("restored");
    real(&["restore", "latest", "--target", s(&restored_to).as_str()]);
    assert_eq!(
        fs::read(restored(&restored_to, &src).join("f")).unwrap(),
        b"lanes"
    );
    // `key passwd` given the same password moves an older key to the
    // current parameters (docs/security.md), and it still opens.
    let second = |args: &[&str]| {
        stdout_of(
            env.cmd()
                .env_remove("CAIRN_TEST_INSECURE_KDF")
                .env("CAIRN_PASSWORD", "second password")
                .args(args),
        )
    };
    second(&[
        "key",
        "passwd",
        "--new-password-file",
        pw2.to_str().unwrap(),
    ]);
    let keys: serde_json::Value =
        serde_json::from_str(&second(&["--json", "key", "list"])).unwrap();
    for k in keys.as_array().unwrap() {
        assert_eq!(
            k["kdf"],
            serde_json::json!({"m_cost": 49152, "t_cost": 6, "p_cost": 4}),
            "{keys}"
        );
    }
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    second(&["backup", s(&src).as_str()]);
}

/// What bash offers after `line` (ending in a space to complete a new
/// word), through the function the completion script registers.
fn bash_completions(script: &Path, line: &str) -> Vec<String> {
    let sh = r#"source "$1" || exit 3
COMP_LINE=$2; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<< "$2"
[[ $2 == *' ' ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
spec=$(complete -p cairn) || exit 4
f=${spec#*-F }; f=${f%% *}
"$f" cairn "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    stdout_of(
        std::process::Command::new("bash")
            .args(["--norc", "-c", sh, "bash"])
            .arg(script)
            .arg(line),
    )
    .lines()
    .map(|l| l.trim().to_string())
    .filter(|l| !l.is_empty())
    .collect()
}

#[test]
fn bash_completes_commands_subcommands_and_options() {
    let env = Env::uninit();
    let script = env.path("cairn.bash");
    fs::write(&script, env.ok(&["completions", "bash"])).unwrap();
    let set = |line| {
        bash_completions(&script, line)
            .into_iter()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        set("cairn rest"),
        BTreeSet::from(["restore".to_string(), "restore-db".to_string()])
    );
    assert!(set("cairn key ").is_superset(&BTreeSet::from([
        "add".to_string(),
        "list".to_string(),
        "passwd".to_string(),
        "remove".to_string()
    ])));
    let backup = set("cairn backup --files-f");
    assert_eq!(
        backup,
        BTreeSet::from([
            "--files-from".to_string(),
            "--files-from-raw".to_string(),
            "--files-from-verbatim".to_string()
        ])
    );
    // Every shell clap knows gets a script naming the commands.
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let s = env.ok(&["completions", shell]);
        assert!(s.contains("verify-restore"), "{shell}: {s}");
    }
    let err = env.fails(&["completions", "tcsh"], 2);
    assert!(err.contains("invalid value 'tcsh'"));
}

#[test]
fn a_commands_help_lists_its_own_options_before_the_global_ones() {
    let env = Env::uninit();
    for (cmd, own) in [("watch", "--debounce"), ("mount", "--allow-other")] {
        let help = env.ok(&[cmd, "--help"]);
        let at = |what: &str| help.find(what).unwrap_or_else(|| panic!("{what}: {help}"));
        // Mixed in, `--repo` and the `--s3-*` options stood between them.
        assert!(at(own) < at("Global options:"), "{help}");
        assert!(at("Global options:") < at("--repo"), "{help}");
        assert!(at("Global options:") < at("--s3-region"), "{help}");
    }
}

#[test]
fn man_writes_a_page_per_command_that_man_renders() {
    let env = Env::uninit();
    let dir = env.path("man");
    let said = env.ok(&["man", s(&dir).as_str()]);
    for page in [
        "cairn.1",
        "cairn-backup.1",
        "cairn-key-add.1",
        "cairn-repair-index.1",
    ] {
        assert!(dir.join(page).is_file(), "{page} missing; {said}");
    }
    let pages = fs::read_dir(&dir).unwrap().count();
    assert!(
        said.starts_with(&format!("{pages} manual pages written")),
        "{said}"
    );
    assert!(!dir.join("cairn-help.1").exists());
    // Rendered by man itself, as a user would read it.
    let text = stdout_of(
        std::process::Command::new("man")
            .arg("-l")
            .arg(dir.join("cairn-backup.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100"),
    );
    // Without a terminal man may still overstrike bold text: drop "X\b".
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    // Justified text: compare with single spaces.
    let plain = plain.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        plain.contains("NAME cairn-backup - Back up files and directories"),
        "{plain}"
    );
    // How to run it, with the global options it takes (and their variables).
    assert!(plain.contains("SYNOPSIS cairn backup ["), "{plain}");
    assert!(plain.contains("--files-from"), "{plain}");
    assert!(
        plain.contains("CAIRN_REPOSITORY environment variable"),
        "{plain}"
    );
}

#[test]
fn a_standard_error_that_cannot_be_written_costs_the_message_only() {
    // A closed terminal, a killed `| tee`: the message is lost, the exit
    // code stands. It panicked (exit 101); in a mount, each error reported
    // so ended a FUSE thread, and the first ended the mount.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    env.backup(&[&src]);
    let args = ["ls", "latest", "/no/such/path"];
    let told = env.run(&args);
    let code = told.status.code();
    assert!(matches!(code, Some(1..=99)), "{told:?}");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = env.cmd().args(args).stderr(writer).output().unwrap();
    assert_eq!(out.status.code(), code, "{out:?}");
}

#[test]
fn output_cut_short_by_its_reader_ends_the_process_as_other_tools() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // More than a pipe holds (64 KiB), so the writer meets the closed pipe.
    for i in 0..3000 {
        fs::write(
            src.join(format!("a-file-with-a-rather-long-name-{i:05}")),
            b"x",
        )
        .unwrap();
    }
    // One blob larger than a pipe holds, for `cat blob`.
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    fs::write(src.join("big"), &big).unwrap();
    env.backup(&[&src]);
    let blob = blob_of(&env, "latest", &src.join("big"));
    let at = src.to_str().unwrap();
    // An older snapshot of another source, for a long `diff`.
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    env.ok(&[
        "backup",
        other.to_str().unwrap(),
        "--time",
        "2020-01-01 00:00:00",
    ]);
    let other_id = env.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for args in [
        vec!["ls", "latest"],
        vec!["ls", "latest", "-l"],
        vec!["find", "a-file*"],
        vec!["--json", "find", "a-file*"],
        vec!["diff", other_id.as_str(), "latest"],
        vec!["completions", "bash"],
        vec!["dump", "--archive", "tar", "latest", at],
        vec!["dump", "--archive", "zip", "latest", at],
        vec!["cat", "blob", blob.as_str()],
    ] {
        let mut child = env
            .cmd()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // What `| head -c 16` does: read a little, then close the pipe.
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        out.read_exact(&mut first).unwrap();
        drop(out);
        let done = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&done.stderr);
        assert_eq!(done.status.signal(), Some(libc::SIGPIPE), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Other failures to write are errors (exit 1, the cause named), not
    // a panic's 101, also after a command that changed the repository.
    let full = || {
        fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    for args in [
        vec!["snapshots"],
        vec!["--json", "snapshots"],
        vec!["ls", "latest"],
        vec!["cat", "config"],
        vec!["backup", at],
    ] {
        let done = env.cmd().args(&args).stdout(full()).output().unwrap();
        let err = String::from_utf8_lossy(&done.stderr);
        assert_eq!(done.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("No space left on device"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // A backup that was saved says so: a cron job's full log disk
        // must not pass for a failed backup.
        if args[0] == "backup" {
            let all = env.json(&["snapshots"]);
            let saved = all.as_array().unwrap().last().unwrap()["short_id"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                err.contains(&format!(
                    "snapshot {saved} was saved; only this report was lost"
                )),
                "{err}"
            );
        }
    }
    // A command that changed the repository still finishes its audit record
    // and removes its lock before it ends: here its reader is gone at once.
    let first = env.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut child = env
        .cmd()
        .args(["forget", first.as_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let done = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.signal(), Some(libc::SIGPIPE), "{err}");
    let left = env.json(&["snapshots"]);
    assert!(
        left.as_array()
            .unwrap()
            .iter()
            .all(|s| s["id"] != first.as_str())
    );
    let audit = env.ok(&["audit"]);
    assert!(
        audit.contains(&format!("forget: -snapshots {}", &first[..8])),
        "{audit}"
    );
    assert!(!audit.contains("not finished"), "{audit}");
    assert_eq!(fs::read_dir(env.repo.join("locks")).unwrap().count(), 0);
}

#[test]
fn quiet_commands_say_nothing_on_success_and_still_report_errors() {
    // What a cron job relies on: mail only when something is wrong.
    let env = Env::uninit();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    fs::write(src.join("b"), b"b").unwrap();
    let pw = env.path("pw2");
    fs::write(&pw, "second").unwrap();
    let s = src.to_str().unwrap();
    let out_dir = env.path("out");
    let steps: &[&[&str]] = &[
        &["init"],
        &["backup", s],
        &["backup", s, "--tag", "x"],
        &["tag", "--add", "y", "latest"],
        &["hold", "latest"],
        &["hold", "--release", "latest"],
        &["recover"],
        &["forget", "--keep-last", "1"],
        &["prune"],
        &["rewrite", "--exclude", "a", "latest"],
        &["repair", "index"],
        &["repair", "snapshots"],
        &["key", "add", "--new-password-file", pw.to_str().unwrap()],
        &["unlock"],
        &["config", "append-only", "on"],
        &["config", "append-only", "off"],
        &["check", "--read-data"],
        &["restore", "latest", "--target", out_dir.to_str().unwrap()],
        &["verify-restore", "latest"],
        &["forget", "--prune", "--keep-last", "1"],
    ];
    for args in steps {
        let out = env.cmd().arg("-q").args(*args).output().unwrap();
        exits(&out, 0);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "",
            "-q {args:?} printed something on stdout"
        );
    }
    assert_eq!(
        fs::read(restored(&env.path("out"), &src).join("b")).unwrap(),
        b"b"
    );
    // A dry run's report is its result, and listings are what was asked for.
    env.ok(&["-q", "backup", s]);
    let out = env.ok(&["-q", "forget", "--keep-last", "1", "--dry-run"]);
    assert!(out.contains("would remove 1 snapshot (dry run"), "{out}");
    let out = env.ok(&["-q", "backup", "--dry-run", s]);
    assert!(out.contains("dry run: nothing was stored"), "{out}");
    let t = env.path("dry");
    let out = env.ok(&[
        "-q",
        "restore",
        "latest",
        "--dry-run",
        "--target",
        t.to_str().unwrap(),
    ]);
    assert!(out.contains("would restore snapshot"), "{out}");
    let out = env.ok(&["-q", "cache", "--cleanup", "--max-age", "0s", "--dry-run"]);
    assert!(out.contains("would remove"), "{out}");
    let listed = env.ok(&["-q", "snapshots"]);
    assert!(listed.contains("2 snapshots"), "{listed}");
    assert!(
        env.ok(&["-q", "config", "append-only"])
            .contains("append-only: off")
    );
    // Errors are still said, on stderr.
    let out = env
        .cmd()
        .args(["-q", "restore", "nosuch", "--target", "x"])
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("nosuch"), "{err}");
}

#[test]
fn cat_reads_nothing_outside_the_repository() {
    let env = Env::new();
    for kind in ["key", "snapshot", "index", "pack"] {
        let out = env
            .cmd()
            .args(["cat", kind, "../../../../../../etc/passwd"])
            .output()
            .unwrap();
        assert_no_panic(&out);
        assert_ne!(out.status.code(), Some(0), "{kind}: {out:?}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("root:"),
            "{kind}"
        );
    }
}

#[test]
fn key_list_escapes_what_anyone_with_storage_access_can_write() {
    let env = Env::new();
    // hostname and username are not authenticated: a forged escape
    // sequence must reach the terminal as text.
    let key = fs::read_dir(env.repo.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&key).unwrap()).unwrap();
    v["hostname"] = "\u{1b}[2Jfake\nline".into();
    fs::write(&key, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = on_a_terminal(&env, &["key", "list"]);
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(out.contains("\\u{1b}[2Jfake\\nline"), "{out:?}");
}

/// Runs cairn with standard output and error on a terminal (`script`
/// gives it one); returns what the terminal showed, lines ending in `\n`.
fn on_a_terminal(env: &Env, args: &[&str]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut line = quote(cairn_bin().to_str().unwrap());
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    for (k, v) in env.cmd().get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c.output().expect("run script");
    assert_no_panic(&out);
    String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")
}

#[test]
fn names_anyone_could_write_reach_a_terminal_escaped() {
    // A backup host (append-only too) chooses paths, host names and tags;
    // `snapshots`, the `ls` header, `forget` and `rewrite` printed them
    // raw, so an escape sequence in them drove the admin's terminal.
    let env = Env::new();
    let dir = env.path("p\u{1b}[7mX");
    fs::create_dir_all(&dir).unwrap();
    // A name with backslash-n and one with a newline must look different.
    fs::write(dir.join("a\\nb"), "backslash").unwrap();
    fs::write(dir.join("a\nb"), "newline").unwrap();
    fs::write(dir.join("drop\u{1b}[5m"), "x").unwrap();
    let d = s(&dir);
    env.ok(&[
        "backup",
        "--host",
        "h\u{1b}[2Jx",
        "--tag",
        "t\u{1b}]0;title\u{7}",
        &d,
    ]);
    let out = on_a_terminal(&env, &["ls", "latest"]);
    let shown = d.replace('\u{1b}', "\\u{1b}");
    assert!(out.contains(&format!("of [{shown}]")), "{out}");
    assert!(out.contains(&format!("{shown}/a\\\\nb\n")), "{out}");
    assert!(out.contains(&format!("{shown}/a\\nb\n")), "{out}");
    for args in [
        &["snapshots"][..],
        &["forget", "--keep-last", "1", "--dry-run"],
        &["rewrite", "--exclude", "drop*", "--dry-run"],
        // An error quoting a path, on standard error.
        &["dump", "latest", &format!("{d}/none")],
    ] {
        let out = on_a_terminal(&env, args);
        assert!(!out.contains('\u{1b}'), "{args:?}: {out:?}");
        assert!(!out.contains('\u{7}'), "{args:?}: {out:?}");
        assert!(out.contains(&shown), "{args:?}: {out}");
    }
    // Columns are padded to what is shown: a row whose host holds an
    // escape lines up with one that does not.
    env.ok(&["backup", "--host", "alpha", &d]);
    env.ok(&["backup", "--host", "h\u{1b}[2Jx", &d]);
    let out = on_a_terminal(&env, &["snapshots"]);
    let at: Vec<usize> = out
        .lines()
        .filter(|l| !l.contains("title"))
        .filter_map(|l| l.find(&format!("  {shown}")))
        .collect();
    assert_eq!(at.len(), 2, "{out}");
    assert_eq!(at[0], at[1], "{out}");
    // Piped, the text is as it was (as GNU ls and restic write it).
    assert!(env.ok(&["snapshots"]).contains("h\u{1b}[2Jx"));
}

#[test]
fn an_s3_location_or_timeout_that_cannot_be_read_is_a_usage_error() {
    let env = Env::new();
    for repo in ["s3:", "s3:ftp://host/bucket", "s3:http://host"] {
        let out = env.cmd().args(["-r", repo, "snapshots"]).output().unwrap();
        let err = exits(&out, 2);
        assert!(err.contains("s3"), "{repo}: {err}");
    }
    // Keys in the address were not used, and every message showed them.
    let out = env
        .cmd()
        .args(["-r", "s3:http://AKIAX:s3cr3tKEY@127.0.0.1:9/b/p", "init"])
        .output()
        .unwrap();
    let err = exits(&out, 2);
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    let out = env
        .cmd()
        .args(["--s3-timeout", "0", "snapshots"])
        .output()
        .unwrap();
    exits(&out, 2);
    // From the environment, read for S3 alone (a local repository's
    // commands take no notice), and named when it cannot be read.
    for (var, value) in [("CAIRN_S3_TIMEOUT", "0"), ("CAIRN_S3_MIN_RATE", "fast")] {
        let out = env
            .cmd()
            .env(var, value)
            .args(["-r", "s3:http://127.0.0.1:9/bucket", "snapshots"])
            .output()
            .unwrap();
        let err = exits(&out, 2);
        assert!(err.contains(&format!("{var}=\"{value}\"")), "{err}");
    }
}

#[test]
fn values_out_of_range_and_missing_options_are_usage_errors() {
    // Exit 2 ("nothing was done"), as the README's table says; these
    // exited 1.
    let env = Env::new();
    let other = env.path("other");
    let o = other.to_str().unwrap();
    for args in [
        vec!["init", "-r", o, "--compression", "99"],
        vec!["init", "-r", o, "--pack-size-mib", "0"],
        // (serve without a token on a public address: tests/serve.rs)
        vec!["repair", "packs", "abc"],
    ] {
        let out = env.cmd().args(&args).output().unwrap();
        exits(&out, 2);
        assert!(!other.exists(), "{args:?} made a repository");
    }
    // A negative level is one (zstd's fast levels).
    let out = env
        .cmd()
        .args(["init", "-r", o, "--compression", "-3"])
        .output()
        .unwrap();
    exits(&out, 0);
}

#[test]
fn a_bare_date_whose_midnight_a_clock_change_skips_starts_at_its_first_instant() {
    // Santiago moved from 00:00 to 01:00 on 6 September 2026: a lower bound
    // of that day was refused as a time that does not exist.
    assert!(
        Path::new("/usr/share/zoneinfo/America/Santiago").exists(),
        "the time zone database is missing: install tzdata (tests/run-all.sh does)"
    );
    let env = Env::new();
    let out = env
        .cmd()
        .env("TZ", "America/Santiago")
        .args(["audit", "--since", "2026-09-06"])
        .output()
        .unwrap();
    exits(&out, 0);
    let out = env
        .cmd()
        .env("TZ", "America/Santiago")
        .args(["audit", "--since", "2026-09-06 00:30"])
        .output()
        .unwrap();
    assert!(exits(&out, 2).contains("does not exist"));
}

#[test]
fn a_setting_set_to_the_empty_string_counts_as_unset() {
    // As restic reads its own: CAIRN_PASSWORD_FILE= made every command
    // fail with "a value is required" (exit 2).
    let env = Env::new();
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD_FILE", "")
        .env("CAIRN_CACHE_DIR", "")
        .args(["snapshots"])
        .output()
        .unwrap();
    exits(&out, 0);
}

#[test]
fn an_empty_host_name_records_the_machines_as_restic_does() {
    // `--host "$UNSET"` in a script: an empty host name made a group of its
    // own (no parent, so a full re-read; retention apart).
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let first = env.json(&["backup", src.to_str().unwrap()]);
    let second = env.json(&["backup", src.to_str().unwrap(), "--host", ""]);
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps[1]["hostname"], snaps[0]["hostname"], "{snaps}");
    assert_ne!(snaps[1]["hostname"], "", "{snaps}");
}

#[test]
fn a_password_file_written_for_restic_with_spaces_around_opens_the_repository() {
    let env = Env::new();
    env.ok(&["snapshots"]);
    let run = |bytes: &[u8]| {
        let f = env.path("pw");
        fs::write(&f, bytes).unwrap();
        env.cmd()
            .env_remove("CAIRN_PASSWORD")
            .args(["snapshots", "--password-file"])
            .arg(&f)
            .output()
            .unwrap()
    };
    let pw = env.password.as_bytes();
    // restic trims what it reads: these open its repositories, and cairn's.
    for padded in [
        [pw, b"  \n"].concat(),
        [pw, b"\n\n"].concat(),
        [b"\t", pw, b" "].concat(),
    ] {
        exits(&run(&padded), 0);
    }
    // Another password still fails, and so does one only whitespace.
    let err = exits(&run(&[pw, b"x \n"].concat()), 12);
    assert!(err.contains("wrong password"), "{err}");
    exits(&run(b" \n"), 12);
}

#[test]
fn a_new_password_from_a_file_leaves_the_whitespace_around_it_out() {
    // Kept, "pw4 " from a file made a key that `pw4` typed at the prompt
    // or set in CAIRN_PASSWORD did not open: a lockout for whoever lost
    // the file.
    let mut env = Env::uninit();
    let f = env.path("pw");
    fs::write(&f, b"first pw \n").unwrap();
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .arg("init")
        .arg("--password-file")
        .arg(&f)
        .output()
        .unwrap();
    let err = exits(&out, 0);
    assert!(err.contains("is not part of it"), "{err}");
    env.password = "first pw".into();
    env.ok(&["snapshots"]);

    fs::write(&f, b"\tsecond pw  \n\n").unwrap();
    let args = ["key", "add", "--new-password-file", f.to_str().unwrap()];
    env.ok(&args);
    env.password = "second pw".into();
    env.ok(&["snapshots"]);
    // A file whose line just ends, as files do, is no cause for a warning
    // (as for --password-file).
    fs::write(&f, b"third pw\n").unwrap();
    let err = exits(&env.run(&args), 0);
    assert!(!err.contains("whitespace"), "{err}");
    env.password = "third pw".into();
    env.ok(&["snapshots"]);
    // Only whitespace is no password.
    fs::write(&f, b" \n").unwrap();
    let err = env.fails(&args, 1);
    assert!(err.contains("is empty"), "{err}");
}

/// A terminal on standard input but no controlling terminal (`setsid`, some
/// service managers and containers): the prompt cannot open /dev/tty, and
/// the error was the bare "No such device or address (os error 6)".
#[test]
fn a_password_prompt_without_a_controlling_terminal_says_how_else_to_give_it() {
    let env = Env::new();
    let script = "import json,os,pty,subprocess,sys\n\
                  m,s=pty.openpty()\n\
                  e=dict(os.environ); e.pop('CAIRN_PASSWORD',None)\n\
                  r=subprocess.run([sys.argv[1],'snapshots'],stdin=s,capture_output=True,\
                  start_new_session=True,env=e,timeout=60)\n\
                  print(json.dumps({'rc':r.returncode,'err':r.stderr.decode()}))";
    let mut c = std::process::Command::new("python3");
    c.args(["-c", script]).arg(cairn_bin());
    for (k, v) in env.cmd().get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let r = c.env_remove("CAIRN_PASSWORD").output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["rc"], 1, "{v}");
    let err = v["err"].as_str().unwrap();
    assert!(
        err.contains("cannot ask for the password on the terminal")
            && err.contains("CAIRN_PASSWORD_FILE"),
        "{err}"
    );
}

#[test]
fn case_insensitive_patterns_fold_unicode_letters_as_restic_does() {
    // globset folds ASCII letters only: `--iexclude äpfel.txt` kept
    // `Äpfel.txt`, and `find -i` missed it.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("Übung")).unwrap();
    fs::write(src.join("Äpfel.txt"), b"a").unwrap();
    fs::write(src.join("Übung/Straße.md"), b"b").unwrap();
    fs::write(src.join("kept.txt"), b"c").unwrap();
    let s = src.to_str().unwrap();
    env.ok(&["backup", s, "--iexclude", "äpfel.txt"]);
    let listed = env.ok(&["ls", "latest"]);
    assert!(!listed.contains("Äpfel.txt"), "{listed}");
    assert!(
        listed.contains("kept.txt") && listed.contains("Straße.md"),
        "{listed}"
    );
    let found = env.ok(&["find", "-i", "STRAßE.MD"]);
    assert!(found.contains("Straße.md"), "{found}");
    let found = env.ok(&["find", "-i", &format!("{s}/übung/*")]);
    assert!(found.contains("Straße.md"), "{found}");
}

#[test]
fn cache_lists_caches_and_cleanup_removes_only_those_long_unused() {
    let env = Env::new();
    fs::create_dir_all(env.path("src")).unwrap();
    fs::write(env.path("src/a"), "a").unwrap();
    env.backup(&[env.path("src")]);
    let config: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "config"])).unwrap();
    let id = config["id"].as_str().unwrap().to_string();
    let long_ago = FileTime::from_unix_time(FileTime::now().unix_seconds() - 60 * 86400, 0);
    let age = |dir: &Path| {
        for e in fs::read_dir(dir).unwrap() {
            filetime::set_file_mtime(e.unwrap().path(), long_ago).unwrap();
        }
        filetime::set_file_mtime(dir, long_ago).unwrap();
    };
    // The cache of a repository that is gone: 60 days unused, 1000 bytes.
    let gone = env.cache.join("0f".repeat(32));
    fs::create_dir_all(gone.join("objects")).unwrap();
    fs::write(gone.join("index.redb"), vec![7u8; 1000]).unwrap();
    age(&gone);
    // Not caches: left alone whatever their age.
    let other = env.cache.join("notes");
    fs::create_dir(&other).unwrap();
    age(&other);
    std::os::unix::fs::symlink(&gone, env.cache.join("1e".repeat(32))).unwrap();

    let listed = env.json(&["cache"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["id"], "0f".repeat(32), "oldest first: {listed:?}");
    assert_eq!(listed[0]["old"], true);
    assert_eq!(listed[0]["bytes"], 1000);
    assert_eq!(listed[0]["place"], serde_json::Value::Null, "not recorded");
    assert_eq!(listed[1]["id"], id.as_str());
    assert_eq!(listed[1]["old"], false);
    assert!(listed[1]["bytes"].as_u64().unwrap() > 0);
    let text = env.ok(&["cache"]);
    assert!(
        text.contains("2 cache(s) in") && text.contains("1 not used for 30d"),
        "{text}"
    );

    // Commands that open a repository say so, unless asked to be quiet.
    let out = env.run(&["snapshots"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("note: 1 cache(s) in") && err.contains("`cairn cache --cleanup` removes them"),
        "{err}"
    );
    let out = env.run(&["-q", "snapshots"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A repository only read from (no write into its cache) is still in use:
    // opening it marks its cache used.
    age(&env.cache.join(&id));
    assert_eq!(env.json(&["cache"])[1]["old"], true);
    env.ok(&["snapshots"]);
    let listed = env.json(&["cache"]);
    assert_eq!(listed[1]["id"], id.as_str());
    assert_eq!(listed[1]["old"], false, "{listed}");

    let dry = env.ok(&["cache", "--cleanup", "--dry-run"]);
    assert!(dry.contains("would remove 1 cache(s)"), "{dry}");
    assert!(gone.exists());
    let done = env.json(&["cache", "--cleanup"]);
    assert_eq!(done["removed"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(done["bytes"], 1000);
    assert!(!gone.exists());
    assert!(other.exists() && env.cache.join(&id).join("index.redb").exists());
    assert!(fs::symlink_metadata(env.cache.join("1e".repeat(32))).is_ok());
    // --max-age picks which are old: 0s takes the repository's own, which
    // is rebuilt by the next command.
    env.ok(&["cache", "--cleanup", "--max-age", "0s"]);
    assert!(!env.cache.join(&id).exists());
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    assert!(env.cache.join(&id).join("index.redb").exists());

    exits(&env.run(&["--no-cache", "cache"]), 2);
    exits(&env.run(&["cache", "--dry-run"]), 2);
}

#[test]
fn two_copies_of_a_repository_in_use_at_once_keep_their_caches_apart() {
    // A copy (cp -a, rsync, a clone) keeps the repository's ID. Sharing one
    // local index, a backup into one copy found blobs "already stored"
    // that a backup running meanwhile had just put into the other, and
    // left them out: exit 0, and a snapshot that restores nothing.
    let env = Env::new();
    fs::create_dir_all(env.path("src")).unwrap();
    fs::write(env.path("src/a"), "a").unwrap();
    env.backup(&[env.path("src")]);
    let copy = env.path("copy");
    exits(
        &std::process::Command::new("cp")
            .arg("-a")
            .arg(&env.repo)
            .arg(&copy)
            .output()
            .unwrap(),
        0,
    );
    write_random(&env.path("src/big"), 3 << 20, 11);
    // The copy's backup opens the repository, then waits for its stream
    // until the other backup has stored the same bytes.
    let go = env.path("go");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; cat '{}'",
        go.display(),
        env.path("src/big").display()
    );
    let into_copy = env
        .cmd()
        .env("CAIRN_REPOSITORY", &copy)
        .args([
            "backup",
            "--stdin-filename",
            "big",
            "--stdin-from-command",
            "--",
        ])
        .args(["sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    env.backup(&[env.path("src")]);
    fs::write(&go, "").unwrap();
    exits(&into_copy.wait_with_output().unwrap(), 0);
    // Checked and restored as another machine would: with a cache of its own.
    let fresh = |args: &[&str]| {
        env.cmd()
            .env("CAIRN_REPOSITORY", &copy)
            .env("CAIRN_CACHE_DIR", env.path("other-cache"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = fresh(&["check", "--read-data"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fresh(&["dump", "latest", "/big"]);
    exits(&out, 0);
    assert!(out.stdout == fs::read(env.path("src/big")).unwrap());
    // Each copy has a cache of its own, and `cairn cache` lists both,
    // told apart by where each repository is.
    let listed = env.json(&["cache"]);
    let mut places: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["place"].as_str().unwrap().to_string())
        .collect();
    places.sort();
    let canonical = |p: &Path| fs::canonicalize(p).unwrap().display().to_string();
    let mut want = vec![canonical(&env.repo), canonical(&copy)];
    want.sort();
    assert_eq!(places, want, "{listed}");
    let text = env.ok(&["cache"]);
    assert!(want.iter().all(|p| text.contains(p.as_str())), "{text}");
}

/// The `--json` lines of `out` whose `message_type` is `status`.
fn status_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["message_type"] == "status")
        .collect()
}

/// Thirty files of random bytes and sizes from 17 bytes up, spread over
/// `dirs` directories of `src`; their bytes in all.
fn thirty_files(src: &Path, dirs: u64) -> u64 {
    let mut bytes = 0;
    for i in 0..30u64 {
        let len = 1000 * i + 17;
        let dir = src.join(format!("d{}", i % dirs));
        fs::create_dir_all(&dir).unwrap();
        write_random(&dir.join(format!("f{i}")), len as usize, i);
        bytes += len;
    }
    bytes
}

#[test]
fn backup_with_json_tells_its_status_every_second_as_restic_does() {
    let mut env = Env::uninit();
    let src = env.path("src");
    let bytes = thirty_files(&src, 4);
    // The repository and its cache in the tree: the backup leaves them
    // out, and so must its count (it took the first backup's packs for
    // more to do, the second time).
    env.repo = src.join("repo");
    env.cache = src.join("d1/.cache");
    env.ok(&["init"]);
    // Left out by the backup, and by the count of what it will do.
    fs::write(src.join("d0/skip.tmp"), vec![1u8; 5000]).unwrap();
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::write(src.join("cache/.nobackup"), "").unwrap();
    fs::write(src.join("cache/big"), vec![2u8; 50_000]).unwrap();
    let backup = |env: &Env, extra: &[&str]| {
        let out = env
            .cmd()
            .args(["--json", "backup", "--exclude", "*.tmp"])
            .args(["--exclude-if-present", ".nobackup"])
            .args(extra)
            .arg(&src)
            // The first write waits 2.5 s: a backup long enough for two lines.
            .env("CAIRN_TEST_FAULTS", "stall-write=1:2500")
            .output()
            .unwrap();
        exits(&out, 0);
        out
    };
    for run in ["first", "unchanged"] {
        let out = backup(&env, &[]);
        let status = status_lines(&out);
        assert!(status.len() >= 2, "{run}: {status:?}");
        let summary = last_json(&out);
        assert_eq!(summary["message_type"], "summary");
        let mut elapsed = 0;
        for s in &status {
            assert!(s["seconds_elapsed"].as_u64().unwrap() >= elapsed, "{s}");
            elapsed = s["seconds_elapsed"].as_u64().unwrap();
            let share = s["percent_done"].as_f64().unwrap();
            assert!((0.0..1.0).contains(&share), "{s}");
            // The thirty, and the marker kept of cache/.
            assert!(s["files_done"].as_u64().unwrap() <= 31, "{s}");
            assert!(s["bytes_done"].as_u64().unwrap() <= bytes, "{s}");
            assert_eq!(s["error_count"], 0);
        }
        // The scan counts what the backup then stores, and by the stall at
        // its first write (after the sources were read) every file is done:
        // read the first time, taken from the parent unread the second.
        let last = status.last().unwrap();
        assert_eq!(last["scan_complete"], true, "{run}: {last}");
        assert_eq!(last["total_files"], 31, "{run}: {last}");
        assert_eq!(last["total_bytes"], bytes, "{run}: {last}");
        assert_eq!(summary["total_bytes"], bytes);
        assert_eq!(last["files_done"], 31, "{run}: {last}");
        assert_eq!(last["bytes_done"], bytes, "{run}: {last}");
        assert!(last["percent_done"].as_f64().unwrap() > 0.99, "{last}");
        assert_eq!(last["seconds_remaining"], 0, "{last}");
    }
    // Quiet, and without --json, no status lines.
    assert!(status_lines(&backup(&env, &["-q"])).is_empty());
    let out = env
        .cmd()
        .args(["backup", "-q"])
        .arg(&src)
        .env("CAIRN_TEST_FAULTS", "stall-write=1:1500")
        .output()
        .unwrap();
    exits(&out, 0);
    assert!(out.stdout.is_empty());
}

#[test]
fn restore_with_json_tells_its_status_every_second_as_restic_does() {
    let env = Env::new();
    let src = env.path("src");
    let bytes = thirty_files(&src, 3);
    env.backup(&[&src]);
    let restore = |target: &str, extra: &[&str]| {
        let out = env
            .cmd()
            .args(["--json", "restore", "latest", "--target"])
            .arg(env.path(target))
            .args(extra)
            // Each read of a pack waits 1.1 s: one is enough for a line.
            .env("CAIRN_TEST_FAULTS", "slow-read=pack:1100")
            .output()
            .unwrap();
        exits(&out, 0);
        let summary = last_json(&out);
        assert_eq!(summary["message_type"], "summary");
        (status_lines(&out), summary)
    };
    // The share done counts bytes written and bytes found in place alike.
    let share_of = |s: &serde_json::Value| {
        let done = s["bytes_restored"].as_u64().unwrap() + s["bytes_skipped"].as_u64().unwrap();
        assert!(done <= bytes, "{s}");
        let share = s["percent_done"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&share), "{s}");
        assert!(
            (share - (done as f64 / bytes as f64).min(0.999)).abs() < 1e-9,
            "{s}"
        );
        done
    };
    let (status, summary) = restore("all", &[]);
    assert!(!status.is_empty());
    for s in &status {
        assert_eq!(s["total_files"], 30, "{s}");
        assert_eq!(s["total_bytes"], bytes, "{s}");
        assert!(s["files_restored"].as_u64().unwrap() <= 30, "{s}");
        assert_eq!(s["bytes_skipped"], 0, "{s}");
        share_of(s);
    }
    assert_eq!(summary["bytes"], bytes, "{summary}");
    assert_eq!(summary["bytes_skipped"], 0, "{summary}");
    let all = restored(&env.path("all"), &src);
    assert_same_tree(&src, &all);

    // Restored again over the same tree with one file changed: the rest is
    // found in place, and counts as done.
    let changed = all.join("d2/f29");
    let len = fs::metadata(&changed).unwrap().len();
    write_random(&changed, len as usize, 99);
    let (status, summary) = restore("all", &[]);
    assert!(!status.is_empty());
    let done: Vec<u64> = status.iter().map(share_of).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{status:?}");
    assert!(
        status
            .iter()
            .any(|s| s["bytes_skipped"].as_u64().unwrap() > 0),
        "{status:?}"
    );
    assert_eq!(summary["bytes"], len, "{summary}");
    assert_eq!(summary["bytes_skipped"], bytes - len, "{summary}");
    assert_eq!(summary["files_skipped"], 29, "{summary}");
    assert_same_tree(&src, &all);
    // Part of the snapshot: what it holds in all is not known.
    let (status, _) = restore("part", &["--include", "d1"]);
    assert!(!status.is_empty());
    for s in &status {
        assert!(
            s.get("total_bytes").is_none() && s.get("percent_done").is_none(),
            "{s}"
        );
        assert!(s["files_restored"].as_u64().unwrap() <= 10, "{s}");
    }
    assert!(restore("quiet", &["-q"]).0.is_empty());
}

#[test]
fn an_exclude_file_that_is_a_pipe_is_read_once_for_the_backup_and_its_status() {
    // The scan behind the status read `--exclude-file` too: from a pipe it
    // took the patterns (the backup got none, and stored what was to be
    // left out) or waited for a writer that was gone.
    let env = Env::new();
    let src = env.path("src");
    thirty_files(&src, 2);
    fs::write(src.join("d0/key.secret"), "do not keep").unwrap();
    let fifo = env.path("patterns");
    mknod(&fifo, libc::S_IFIFO, 0o600, 0);
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::write(fifo, "*.secret\n").unwrap())
    };
    let mut cmd = env.cmd();
    cmd.args(["--json", "backup", "--exclude-file"])
        .arg(&fifo)
        .arg(&src)
        .env("CAIRN_TEST_FAULTS", "stall-write=1:1500");
    let out = output_within(cmd, 60);
    exits(&out, 0);
    writer.join().unwrap();
    let status = status_lines(&out);
    assert!(!status.is_empty());
    assert_eq!(status.last().unwrap()["total_files"], 30);
    assert_eq!(last_json(&out)["files_new"], 30);
    assert_eq!(env.json(&["find", "*.secret"]), serde_json::json!([]));
}

/// A bad `find` pattern and a `dump` without PATH are mistakes on the
/// command line: exit 2 before the password is asked for (the repository
/// was opened first, and the mistake told only after a password).
#[test]
fn find_and_dump_reject_a_bad_command_line_before_opening_the_repository() {
    let env = Env::new();
    for args in [&["find", "["][..], &["dump", "latest"]] {
        let out = run_as(&env, "not the password", args);
        let err = exits(&out, 2);
        assert!(!err.contains("password"), "{args:?}: {err}");
    }
}

#[test]
fn a_pattern_that_cannot_be_read_is_refused_before_anything_is_done() {
    // Found only once the repository was open and locked: exit 1 after
    // the work, and `backup --schedule` failed every run without end.
    let t = two_snapshots();
    let src = s(&t.src);
    let target = t.env.path("target");
    let target = s(&target);
    let before = t.env.ok(&["snapshots"]);
    let runs: [&[&str]; 6] = [
        &["backup", &src, "--exclude", "{a,b"],
        &["backup", &src, "--iexclude", "{a,b", "--schedule", "1h"],
        &[
            "restore",
            "latest",
            "--target",
            &target,
            "--include",
            "{a,b",
        ],
        &[
            "restore",
            "latest",
            "--target",
            &target,
            "--iexclude",
            "{a,b",
        ],
        &["rewrite", "--exclude", "{a,b"],
        &["watch", &src, "--exclude", "{a,b"],
    ];
    for args in runs {
        // A wrong password: refused before it is tried.
        let mut cmd = t.env.cmd();
        cmd.env("CAIRN_PASSWORD", "wrong").args(args);
        let out = output_within(cmd, 60);
        let err = exits(&out, 2);
        assert!(err.contains("{a,b"), "{args:?}: {err}");
    }
    assert!(!Path::new(&target).exists());
    assert_eq!(t.env.ok(&["snapshots"]), before);
}

#[test]
fn json_output_names_paths_that_are_not_utf8() {
    // serde_json refuses such a path: `restore --json` ended in a panic
    // (exit 101) once everything was restored, `cache --json` too.
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let t = two_snapshots();
    let odd = t
        .env
        .path("x")
        .with_file_name(OsStr::from_bytes(b"caf\xe9"));
    let out = t
        .env
        .cmd()
        .args(["--json", "restore", "latest", "--target"])
        .arg(&odd)
        .output()
        .unwrap();
    exits(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(
        summary["target"].as_str().unwrap().ends_with("caf\u{fffd}"),
        "{summary}"
    );
    assert!(summary["files"].as_u64().unwrap() > 0, "{summary}");
    let cache = odd.join("cache");
    let with_cache = |args: &[&str]| {
        let out = t
            .env
            .cmd()
            .env("CAIRN_CACHE_DIR", &cache)
            .args(args)
            .output()
            .unwrap();
        exits(&out, 0);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    with_cache(&["snapshots"]);
    let listed = with_cache(&["--json", "cache"]);
    assert!(listed.contains("caf\u{fffd}/cache"), "{listed}");
}

/// `verify-restore latest` narrowed to one source: without it, the monthly
/// restore test of a repository with several sources tested whichever
/// was newest (a tiny stream), and monitoring took that for a test of all.
#[test]
fn verify_restore_latest_is_narrowed_by_path_host_and_tag() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("f"), "a").unwrap();
    fs::write(b.join("g"), "b").unwrap();
    let snap_a = env.json(&["backup", a.to_str().unwrap(), "--tag", "big"])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let snap_b = env.backup(&[&b])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let tested = |args: &[&str]| {
        env.json(&[&["verify-restore"][..], args].concat())["snapshot"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(tested(&["latest"]), snap_b);
    assert_eq!(tested(&["--path", a.to_str().unwrap(), "latest"]), snap_a);
    assert_eq!(tested(&["--tag", "big"]), snap_a);
    env.fails(&["verify-restore", "--host", "elsewhere", "latest"], 1);
}

/// Dry runs only read, so a backup going on beside them does not keep them
/// out: `repair snapshots --dry-run` took the exclusive lock and failed
/// (exit 11) while any backup ran, as `repair packs --dry-run` does not.
#[test]
fn repair_dry_runs_go_on_beside_a_backup() {
    use std::io::Write;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.backup(&[&src]);
    let mut backup = env
        .cmd()
        .args(["backup", "--stdin", "--stdin-filename", "slow.bin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = backup.stdin.take().unwrap();
    stdin.write_all(b"started").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fs::read_dir(env.repo.join("locks")).unwrap().count() == 0 {
        assert!(std::time::Instant::now() < deadline, "no lock taken");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for args in [
        &["repair", "snapshots", "--dry-run"][..],
        &["repair", "packs", "00", "--dry-run"][..],
        &["recover", "--dry-run"][..],
    ] {
        let out = env.run(args);
        assert_ne!(
            out.status.code(),
            Some(11),
            "{args:?} was kept out by the lock"
        );
    }
    let out = env.ok(&["repair", "snapshots", "--dry-run"]);
    assert!(out.contains("0 of 1 snapshot would be repaired"), "{out}");
    drop(stdin);
    assert!(backup.wait().unwrap().success());
}

/// Holes of a sparse file (chunks of zeros) go into a tar as a PAX sparse
/// entry: a 256 MiB file that is nearly all hole made a 256 MiB archive.
/// GNU tar extracts the same bytes, with holes again; zip holds the zeros.
#[test]
fn a_tar_dump_writes_sparse_files_as_sparse_entries() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let image = src.join("d/disk.img");
    let f = fs::File::create(&image).unwrap();
    f.set_len(256 << 20).unwrap();
    drop(f);
    let data = env.path("data");
    write_random(&data, 300_000, 9);
    let mut f = fs::OpenOptions::new().write(true).open(&image).unwrap();
    use std::io::{Seek, SeekFrom, Write};
    f.seek(SeekFrom::Start(100 << 20)).unwrap();
    f.write_all(&fs::read(&data).unwrap()).unwrap();
    drop(f);
    // A file that is all hole, one that ends in one, and one with none.
    fs::File::create(src.join("empty.img"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    write_random(&src.join("d/head"), 5_000_000, 4);
    fs::OpenOptions::new()
        .write(true)
        .open(src.join("d/head"))
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    write_random(&src.join("plain"), 100_000, 5);
    // A path that is not UTF-8 is written whole, in its own header (bsdtar
    // cannot make a path of it from a PAX record).
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"odd\xff.img");
    fs::File::create(src.join(odd))
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    env.backup(&[&src]);

    let tarball = env.path("out.tar");
    run_to_file(&env, &["dump", "latest", src.to_str().unwrap()], &tarball);
    let size = fs::metadata(&tarball).unwrap().len();
    assert!(size < 32 << 20, "the archive holds the holes: {size} bytes");
    assert!(size > 8 << 20, "the odd name's file is whole: {size} bytes");
    let x = env.path("x");
    fs::create_dir_all(&x).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-C")
        .arg(&x)
        .arg("-xf")
        .arg(&tarball)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let back = restored(&x, &src);
    for name in ["d/disk.img", "empty.img", "d/head", "plain"] {
        assert!(
            files_equal(&back.join(name), &src.join(name)),
            "{name} differs"
        );
    }
    assert!(files_equal(&back.join(odd), &src.join(odd)));
    use std::os::unix::fs::MetadataExt;
    let blocks = fs::metadata(back.join("d/disk.img")).unwrap().blocks() * 512;
    assert!(
        blocks < 16 << 20,
        "extracted with holes: {blocks} bytes used"
    );
    assert_eq!(fs::metadata(back.join("empty.img")).unwrap().blocks(), 0);

    // --no-sparse: every file whole, for readers without sparse entries.
    let whole = env.path("whole.tar");
    run_to_file(
        &env,
        &["dump", "latest", src.to_str().unwrap(), "--no-sparse"],
        &whole,
    );
    assert!(fs::metadata(&whole).unwrap().len() > 256 << 20);

    // zip has no sparse entries: the zeros are there, the bytes the same.
    let zipped = env.path("out.zip");
    run_to_file(
        &env,
        &["dump", "latest", src.to_str().unwrap(), "--archive", "zip"],
        &zipped,
    );
    let mut z = zip::ZipArchive::new(fs::File::open(&zipped).unwrap()).unwrap();
    let rel = format!("{}/empty.img", src.display());
    let e = z.by_name(rel.trim_start_matches('/')).unwrap();
    assert_eq!(e.size(), 64 << 20);
}
