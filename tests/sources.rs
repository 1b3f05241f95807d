//! Awkward sources and selection: unreadable and changing files, streams
//! from stdin and commands, and every exclude option.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// Paths in the latest snapshot, relative to `root`.
fn listed(env: &Env, root: &Path) -> BTreeSet<String> {
    let prefix = format!("{}/", root.display());
    // Names that are not UTF-8 are printed as stored.
    String::from_utf8_lossy(&env.run(&["ls", "latest"]).stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(String::from))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn unreadable_entries_give_exit_3_and_a_partial_snapshot() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("locked")).unwrap();
    fs::write(src.join("ok"), b"readable").unwrap();
    fs::write(src.join("secret"), b"unreadable").unwrap();
    fs::write(src.join("locked/inner"), b"x").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();

    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = env.cmd();
    cmd.args(["--json", "backup", src.to_str().unwrap()]);
    as_unprivileged(&env, &mut cmd);
    let out = output_within(cmd, 60);
    let err = exits(&out, 3);
    assert!(err.contains("secret") && err.contains("locked"), "{err}");
}

#[test]
fn a_source_that_is_gone_is_reported_and_the_others_backed_up() {
    let env = Env::new();
    let a = env.path("a");
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("f"), b"kept").unwrap();
    let gone = env.path("gone");
    // One path of a list is gone: the rest is backed up, the snapshot is
    // partial (exit 3) and the missing path is named.
    let out = env
        .cmd()
        .args(["--json", "backup"])
        .arg(&a)
        .arg(&gone)
        .output()
        .unwrap();
    let err = exits(&out, 3);
    assert!(
        err.contains("gone") && err.contains("not backed up"),
        "{err}"
    );
    // The snapshot still names both sources: its group (the next parent,
    // retention) does not change while one is away.
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps[0]["partial"], true, "{snaps}");
    assert_eq!(
        snaps[0]["paths"],
        serde_json::json!([a.to_str().unwrap(), gone.to_str().unwrap()])
    );
    let out = env
        .cmd()
        .args(["--json", "backup"])
        .arg(&a)
        .arg(&gone)
        .output()
        .unwrap();
    exits(&out, 3);
    assert_eq!(last_json(&out)["parent"], snaps[0]["id"]);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_eq!(fs::read(restored(&t, &a).join("f")).unwrap(), b"kept");
    // Nothing found at all: an error, no snapshot.
    let err = env.fails(&[OsStr::new("backup"), gone.as_os_str()], 1);
    assert!(
        err.contains("gone") && err.contains("no snapshot written"),
        "{err}"
    );
    let gone2 = env.path("gone2");
    let err = env.fails(
        &[OsStr::new("backup"), gone.as_os_str(), gone2.as_os_str()],
        1,
    );
    assert!(
        err.contains(gone.to_str().unwrap()) && err.contains(gone2.to_str().unwrap()),
        "each is named: {err}"
    );
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    // One that cannot be reached (a symlink loop on the way; no access
    // alike) is left out the same way: it stopped the whole backup.
    std::os::unix::fs::symlink(env.path("l2"), env.path("l1")).unwrap();
    std::os::unix::fs::symlink(env.path("l1"), env.path("l2")).unwrap();
    let looped = env.path("l1/x");
    let out = env
        .cmd()
        .arg("backup")
        .arg(&a)
        .arg(&looped)
        .output()
        .unwrap();
    let err = exits(&out, 3);
    assert!(
        err.contains("l1/x") && err.contains("not backed up"),
        "{err}"
    );
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 3);
}

#[test]
fn a_source_below_a_symlink_that_is_a_source_too_is_named_not_dropped() {
    // `/home` a symlink (Fedora Atomic) and `backup /home /home/me`: the
    // snapshot can hold the link or a directory there, not both. The path
    // below was dropped without a word (exit 0, never restorable).
    let env = Env::new();
    let x = env.path("x");
    fs::create_dir_all(x.join("real/sub")).unwrap();
    fs::write(x.join("real/sub/file"), b"important").unwrap();
    std::os::unix::fs::symlink("real", x.join("link")).unwrap();
    let (link, below) = (x.join("link"), x.join("link/sub"));
    // The path below is named, whichever way round the two are given.
    let named_below = |first: &Path, second: &Path| {
        let err = env.fails(
            &[OsStr::new("backup"), first.as_os_str(), second.as_os_str()],
            3,
        );
        assert!(
            err.contains("link/sub") && err.contains("symbolic link"),
            "{err}"
        );
    };
    named_below(&below, &link);
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps[0]["partial"], true, "{snaps}");
    let ls = env.ok(&[OsStr::new("ls"), OsStr::new("latest"), x.as_os_str()]);
    assert!(ls.contains("link"), "{ls}");
    // A link between two sources, not itself one: `backup /srv
    // /srv/data/db` with /srv/data a link.
    named_below(&x, &below);
    // Given alone, the path through the link is backed up as before.
    env.ok(&[OsStr::new("backup"), below.as_os_str()]);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_eq!(
        fs::read(restored(&t, &below).join("file")).unwrap(),
        b"important"
    );
}

#[test]
fn partial_snapshot_is_recorded_and_restores_what_was_read() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok"), b"readable").unwrap();
    fs::create_dir_all(src.join("locked")).unwrap();
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = env.cmd();
    cmd.args(["backup", src.to_str().unwrap()]);
    as_unprivileged(&env, &mut cmd);
    let out = output_within(cmd, 60);
    exits(&out, 3);
    // Read the result as the same user.
    let mut cmd = env.cmd();
    cmd.args(["--json", "snapshots"]);
    as_unprivileged(&env, &mut cmd);
    let out = output_within(cmd, 60);
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps[0]["partial"], true, "{snaps}");
    assert_eq!(snaps[0]["summary"]["errors"], 1, "{snaps}");
    // What could not be read is missing from the snapshot: --delete over
    // the sources would delete it where it still is. Refused.
    fs::write(src.join("locked/inner"), b"live").unwrap();
    let spec = format!("latest:{}", src.display());
    let err = env.fails(
        &[
            "restore",
            &spec,
            "--target",
            src.to_str().unwrap(),
            "--delete",
        ],
        1,
    );
    assert!(err.contains("partial snapshot"), "{err}");
    assert_eq!(fs::read(src.join("locked/inner")).unwrap(), b"live");
}

#[test]
fn file_changing_while_read_is_flagged_and_stored_consistently() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let growing = src.join("growing");
    write_random(&growing, 48 << 20, 5);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, growing) = (stop.clone(), growing.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&growing).unwrap();
            // Keeps changing for up to ~20 s (at most 80 MiB), so both reads of
            // the backup see a change, yet a slow reader cannot make it grow without end.
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                f.write_all(&[7u8; 4096]).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let summary = env.backup(&[&src]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        summary["warnings"]
            .to_string()
            .contains("changed while it was read"),
        "{summary}"
    );
    // What was stored is self-consistent: recorded size = content, a prefix of the file now.
    let target = env.path("r");
    env.restore("latest", &target);
    let got = fs::read(restored(&target, &src).join("growing")).unwrap();
    let now = fs::read(&growing).unwrap();
    assert!(got.len() >= 48 << 20 && now.starts_with(&got));
    let tree = env.ok(&["ls", "latest", "-l"]);
    assert!(
        tree.contains(&format!(" {} ", got.len())),
        "recorded size differs from content: {tree}"
    );
}

/// How far the process `pid` has read into `file` (the furthest of its
/// descriptors open on it), if it has it open.
fn read_position(pid: u32, file: &Path) -> Option<u64> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter(|e| fs::read_link(e.path()).is_ok_and(|l| l == file))
        .filter_map(|e| {
            let info = fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .ok()?;
            let pos = info.lines().find_map(|l| l.strip_prefix("pos:"))?;
            pos.trim().parse().ok()
        })
        .max()
}

/// Starts `cairn backup src` and returns once it is reading `file`, with
/// at least `from` of it read but not the whole (`len` bytes).
fn backup_reading(env: &Env, src: &Path, file: &Path, from: u64, len: u64) -> std::process::Child {
    let mut child = env
        .cmd()
        .args(["--json", "backup"])
        .arg(src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_reading(&mut child, file, |pos| pos >= from && pos < len);
    child
}

/// Waits until `child` reads `file` at a position `at` accepts.
fn wait_reading(child: &mut std::process::Child, file: &Path, mut at: impl FnMut(u64) -> bool) {
    let start = std::time::Instant::now();
    loop {
        if read_position(child.id(), file).is_some_and(&mut at) {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it was seen reading {}",
            file.display()
        );
        assert!(start.elapsed().as_secs() < 60, "never seen reading");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// `src/big`, 256 MiB (returned with `src` and its length), labelled
/// `before` in xattr `user.label`.
fn labelled_big_file(env: &Env, seed: u64) -> (std::path::PathBuf, std::path::PathBuf, u64) {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("big");
    let len = 256u64 << 20;
    write_random(&big, len as usize, seed);
    xattr::set(&big, "user.label", b"before").unwrap();
    (src, big, len)
}

#[test]
fn xattrs_changed_while_a_file_is_read_are_stored_as_they_are_after() {
    // The change moved the file's ctime, so it was read again, but with
    // the xattrs listed before: the snapshot held the new ctime beside the
    // old xattrs, and every later backup took them over as unchanged.
    let env = Env::new();
    let (src, big, len) = labelled_big_file(&env, 11);
    let child = backup_reading(&env, &src, &big, 1 << 20, len);
    xattr::set(&big, "user.label", b"after").unwrap();
    exits(&child.wait_with_output().unwrap(), 0);
    let target = env.path("r");
    env.restore("latest", &target);
    let got = restored(&target, &src).join("big");
    assert_eq!(xattr::get(&got, "user.label").unwrap().unwrap(), b"after");
    assert!(files_equal(&got, &big));
}

#[test]
fn a_file_changed_during_both_reads_is_read_again_whole_by_the_next_backup() {
    // A file changed during both reads is stored as read, with a warning,
    // and its content is read again next time. It was recorded with its
    // times after the second read, so the next backup took its xattrs over
    // from the snapshot as unchanged: the ones listed before the change.
    let env = Env::new();
    let (src, big, len) = labelled_big_file(&env, 12);
    let mut child = backup_reading(&env, &src, &big, 1 << 20, len);
    let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[b'A'; 4096], 0).unwrap();
    // The second read: the file is opened again, from its start, and read
    // from (after its xattrs were listed). Going by how far the first read
    // went, a poll late on a loaded machine still sees it.
    let mut furthest = 0;
    wait_reading(&mut child, &big, |pos| {
        let again = pos > 0 && pos < furthest;
        furthest = furthest.max(pos);
        again
    });
    xattr::set(&big, "user.label", b"after").unwrap();
    let out = child.wait_with_output().unwrap();
    exits(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("changed while it was read"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    env.backup(&[&src]);
    let target = env.path("r");
    env.restore("latest", &target);
    let got = restored(&target, &src).join("big");
    assert!(files_equal(&got, &big));
    assert_eq!(xattr::get(&got, "user.label").unwrap().unwrap(), b"after");
}

#[test]
fn a_source_deleted_during_the_backup_makes_it_partial() {
    // A source is found at the start and gone when its turn comes (a USB
    // disk unplugged, its mount point removed): it was a warning, exit 0,
    // a snapshot taken for complete that held nothing of it.
    let env = Env::new();
    let (first, big, len) = labelled_big_file(&env, 13);
    let second = env.path("usb");
    fs::create_dir_all(&second).unwrap();
    fs::write(second.join("photo"), b"only copy").unwrap();
    let mut child = env
        .cmd()
        .args(["--json", "backup"])
        .args([&first, &second])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_reading(&mut child, &big, |pos| pos < len);
    fs::remove_dir_all(&second).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = exits(&out, 3);
    assert!(err.contains(&second.display().to_string()), "{err}");
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps[0]["partial"], true, "{snaps}");
    assert_eq!(snaps[0]["summary"]["errors"], 1, "{snaps}");
}

#[test]
fn a_pseudo_file_of_size_0_is_read_once_and_not_called_changed() {
    // /proc reports size 0 for files that hold text: read and stored, once,
    // without a "changed while read" warning (and a re-read every time).
    let env = Env::new();
    let summary = env.backup(&[Path::new("/proc/version")]);
    assert_eq!(summary["warnings"], serde_json::json!([]), "{summary}");
    let want = fs::read("/proc/version").unwrap();
    assert!(!want.is_empty());
    assert_eq!(summary["bytes_read"], want.len(), "{summary}");
    let out = env
        .cmd()
        .args(["dump", "latest", "/proc/version"])
        .output()
        .unwrap();
    exits(&out, 0);
    assert_eq!(out.stdout, want);
}

#[test]
fn stdin_and_command_streams() {
    let env = Env::new();
    let mut child = env
        .cmd()
        .args([
            "--json",
            "backup",
            "--stdin",
            "--stdin-filename",
            "dump.sql",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let target = env.path("r");
    env.restore("latest", &target);
    assert_eq!(fs::read(target.join("dump.sql")).unwrap(), data);

    // A command that succeeds is stored; paths record the file name.
    let s = env.json(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "cmd.out",
        "--",
        "sh",
        "-c",
        "printf 'from a command'",
    ]);
    assert_eq!(s["files_new"], 1);
    env.restore("latest", &env.path("r2"));
    assert_eq!(fs::read(env.path("r2/cmd.out")).unwrap(), b"from a command");

    // Paths after `--` are paths, not a command nobody runs (they were
    // left out of the snapshot, exit 0), a name starting with `-` too.
    let dir = env.path("dd");
    fs::create_dir_all(dir.join("-dash")).unwrap();
    fs::write(dir.join("a"), "a").unwrap();
    fs::write(dir.join("-dash/b"), "b").unwrap();
    let out = env
        .cmd()
        .current_dir(&dir)
        .args(["--json", "backup", "a", "--", "-dash"])
        .output()
        .unwrap();
    exits(&out, 0);
    let id = last_json(&out)["snapshot_id"].as_str().unwrap().to_string();
    let snaps = env.json(&["snapshots"]);
    let snap = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap();
    let paths = &snap["paths"];
    let want = [dir.join("-dash"), dir.join("a")].map(|p| p.to_str().unwrap().to_string());
    assert_eq!(paths, &serde_json::json!(want), "{paths}");
    // An option of restic's passed on as clap's tip says (`-- -v`), and no
    // such path: refused (it made a partial snapshot of a source `-v`).
    let before = env.json(&["snapshots"]).as_array().unwrap().len();
    let out = env
        .cmd()
        .current_dir(&dir)
        .args(["backup", "a", "--", "-v"])
        .output()
        .unwrap();
    let err = exits(&out, 2);
    assert!(err.contains("has no such option"), "{err}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), before);

    // Without --stdin-filename the file is `stdin`, as in restic (it was
    // a usage error).
    let s = env.json(&["backup", "--stdin-from-command", "--", "echo", "plain"]);
    assert_eq!(s["files_new"], 1);
    env.restore("latest", &env.path("r3"));
    assert_eq!(fs::read(env.path("r3/stdin")).unwrap(), b"plain\n");

    // The command, whose output is stored, does not see the repository's
    // password.
    env.json(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "env.txt",
        "--",
        "sh",
        "-c",
        "env",
    ]);
    let stored = env.ok(&["dump", "latest", "env.txt"]);
    assert!(stored.contains("CAIRN_REPOSITORY="), "{stored}");
    assert!(!stored.contains("CAIRN_PASSWORD="), "{stored}");

    // A command that fails leaves no snapshot, exit 1.
    let before = env.json(&["snapshots"]).as_array().unwrap().len();
    let err = env.fails(
        &[
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "x",
            "--",
            "sh",
            "-c",
            "printf partial; exit 3",
        ],
        1,
    );
    assert!(err.contains("exited with"), "{err}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), before);

    // Empty output is refused unless allowed.
    let err = env.fails(
        &[
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "x",
            "--",
            "true",
        ],
        1,
    );
    assert!(err.contains("--allow-empty"));
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), before);
    env.ok(&[
        "backup",
        "--allow-empty",
        "--stdin-from-command",
        "--stdin-filename",
        "x",
        "--",
        "true",
    ]);
    assert_eq!(
        env.json(&["snapshots"]).as_array().unwrap().len(),
        before + 1
    );

    // A relative path puts the stream in directories of those names (as
    // restic does); `.` and `..` are a usage error, before anything runs.
    env.ok(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "/db//app.sql",
        "--",
        "sh",
        "-c",
        "printf 'in a directory'",
    ]);
    let snaps = env.json(&["snapshots"]);
    let last = snaps.as_array().unwrap().last().unwrap();
    assert_eq!(last["paths"], serde_json::json!(["/db/app.sql"]));
    let listing = env.ok(&["ls", "latest", "-l"]);
    assert!(listing.contains("drwxr-xr-x"), "{listing}");
    assert!(listing.contains(" /db\n"), "{listing}");
    assert_eq!(env.ok(&["dump", "latest", "/db/app.sql"]), "in a directory");
    env.restore("latest", &env.path("r3"));
    assert_eq!(
        fs::read(env.path("r3/db/app.sql")).unwrap(),
        b"in a directory"
    );
    // A stream (a dump, most often) is private to its owner once restored.
    let mode = fs::metadata(env.path("r3/db/app.sql"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    // No command after `--`: a usage error too.
    let err = env.fails(
        &["backup", "--stdin-from-command", "--stdin-filename", "x"],
        2,
    );
    assert!(err.contains("needs the command after `--`"), "{err}");
    for bad in ["../x", "db/./x", "/", ""] {
        let err = env.fails(&["backup", "--stdin", "--stdin-filename", bad], 2);
        assert!(err.contains("--stdin-filename"), "{bad}: {err}");
    }
    assert_eq!(
        env.json(&["snapshots"]).as_array().unwrap().len(),
        before + 2
    );
}

#[test]
fn exclude_options() {
    let env = Env::new();
    let src = env.path("src");
    for d in [
        "keep",
        "logs",
        "marked",
        "cache-valid",
        "cache-invalid",
        "Mixed",
    ] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("keep/a.txt"), b"a").unwrap();
    fs::write(src.join("keep/b.log"), b"log").unwrap();
    fs::write(src.join("logs/c.txt"), b"c").unwrap();
    fs::write(src.join("marked/.nobackup"), b"").unwrap();
    fs::write(src.join("marked/d.txt"), b"d").unwrap();
    fs::write(
        src.join("cache-valid/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# cache",
    )
    .unwrap();
    fs::write(src.join("cache-valid/e"), b"e").unwrap();
    fs::write(src.join("cache-invalid/CACHEDIR.TAG"), b"not a signature").unwrap();
    fs::write(src.join("cache-invalid/f"), b"f").unwrap();
    fs::write(src.join("Mixed/G.TMP"), b"g").unwrap();
    fs::write(src.join("big"), vec![1u8; 4096]).unwrap();
    // A marker that is a directory is not kept: it would bring back what
    // the marker leaves out.
    fs::create_dir_all(src.join("proj/.git/objects")).unwrap();
    fs::write(src.join("proj/.git/objects/o"), b"o").unwrap();
    fs::write(src.join("proj/main.c"), b"c").unwrap();
    let exclude_file = env.path("excludes");
    let s = src.to_str().unwrap();
    // borg's pattern styles and pattern-file lines, taken literally, would
    // match nothing: refused, with the spelling that works.
    fs::write(&exclude_file, "- *.log\n").unwrap();
    let ef = exclude_file.to_str().unwrap();
    for args in [
        &["backup", s, "--exclude", "sh:**/*.log"][..],
        &["backup", s, "--exclude-file", ef],
    ] {
        let err = env.fails(args, 2);
        assert!(err.contains("gitignore-style"), "{err}");
        assert!(err.contains("*.log`"), "{err}");
    }
    assert!(env.json(&["snapshots"]).as_array().unwrap().is_empty());
    fs::write(&exclude_file, "# comment\n\nlogs/\n").unwrap();
    env.ok(&[
        "backup",
        s,
        "--exclude",
        "*.log",
        "--iexclude",
        "*.tmp",
        "--exclude-file",
        exclude_file.to_str().unwrap(),
        "--exclude-if-present",
        ".nobackup",
        "--exclude-if-present",
        ".git",
        "--exclude-caches",
        "--exclude-larger-than",
        "1K",
    ]);
    assert_eq!(
        listed(&env, &src),
        // A directory a marker excludes keeps its marker, as restic's.
        set(&[
            "Mixed",
            "cache-invalid",
            "cache-invalid/CACHEDIR.TAG",
            "cache-invalid/f",
            "cache-valid",
            "cache-valid/CACHEDIR.TAG",
            "keep",
            "keep/a.txt",
            "marked",
            "marked/.nobackup",
            "proj"
        ])
    );
}

/// A path named as a source is backed up whatever the exclude options say
/// of it (a file named with `--exclude-larger-than` made an empty
/// snapshot, exit 0); below it they apply as usual.
#[test]
fn a_source_named_is_never_excluded_and_what_is_below_it_is_judged_as_usual() {
    let env = Env::new();
    let big = env.path("disk.img");
    fs::write(&big, vec![7u8; 8192]).unwrap();
    let cache = env.path("home/stash");
    fs::create_dir_all(cache.join("keep/cache")).unwrap();
    fs::create_dir_all(cache.join("marked")).unwrap();
    // (A marker in the source itself: see
    // a_marker_in_a_source_itself_leaves_out_what_is_below_it.)
    fs::write(cache.join("keep/f"), b"f").unwrap();
    fs::write(cache.join("keep/cache/y"), b"y").unwrap();
    fs::write(cache.join("x.tmp"), b"t").unwrap();
    fs::write(cache.join("marked/.nobackup"), b"").unwrap();
    fs::write(cache.join("marked/m"), b"m").unwrap();
    let excludes = [
        "--exclude",
        "cache",
        "--exclude",
        "*.img",
        "--iexclude",
        "*.TMP",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-caches",
        "--exclude-larger-than",
        "1K",
    ];
    let mut args = vec!["backup", big.to_str().unwrap(), cache.to_str().unwrap()];
    args.extend(excludes);
    let r = env.json(&args);
    assert_eq!(r["files_new"], 3, "{r}");
    let t = env.path("t");
    env.restore("latest", &t);
    assert_eq!(fs::read(restored(&t, &big)).unwrap(), vec![7u8; 8192]);
    assert_eq!(
        listed(&env, &cache),
        set(&["keep", "keep/f", "marked", "marked/.nobackup"])
    );
}

/// restic's rules where gitignore's differ: a pattern with a slash inside
/// matches at any depth; exclude files are trimmed and expand `$VARS`;
/// `--exclude-if-present NAME:HEADER` checks the file's start; restore's
/// includes follow the same rule.
#[test]
fn exclude_patterns_follow_restics_rules() {
    let env = Env::new();
    let src = env.path("src");
    for d in [
        "proj/node_modules/.cache",
        "proj/build",
        "tagged",
        "signed",
        "unsigned",
    ] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("proj/node_modules/.cache/x"), b"x").unwrap();
    fs::write(src.join("proj/node_modules/keep.js"), b"k").unwrap();
    fs::write(src.join("proj/build/out.o"), b"o").unwrap();
    fs::write(src.join("proj/main.c"), b"c").unwrap();
    fs::write(src.join("signed/.tag"), b"MAGIC here").unwrap();
    fs::write(src.join("signed/s"), b"s").unwrap();
    fs::write(src.join("unsigned/.tag"), b"other").unwrap();
    fs::write(src.join("unsigned/u"), b"u").unwrap();
    let list = env.path("excludes");
    fs::write(
        &list,
        "  # indented comment
   $BUILD_DIR/*.o  
",
    )
    .unwrap();
    let s = src.to_str().unwrap();
    let mut cmd = env.cmd();
    cmd.args([
        "backup",
        s,
        "--exclude",
        "node_modules/.cache",
        "--exclude-file",
        list.to_str().unwrap(),
        "--exclude-if-present",
        ".tag:MAGIC",
    ])
    .env("BUILD_DIR", src.join("proj/build"));
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        listed(&env, &src),
        set(&[
            "proj",
            "proj/build",
            "proj/main.c",
            "proj/node_modules",
            "proj/node_modules/keep.js",
            // The marker stays, as restic keeps it.
            "signed",
            "signed/.tag",
            "tagged",
            "unsigned",
            "unsigned/.tag",
            "unsigned/u",
        ])
    );
    // An unset variable is an error, not a pattern that matches elsewhere.
    fs::write(&list, "$NO_SUCH_VARIABLE_HERE/x\n").unwrap();
    let err = env.fails(&["backup", s, "--exclude-file", list.to_str().unwrap()], 1);
    assert!(err.contains("NO_SUCH_VARIABLE_HERE"), "{err}");
    // A restore include with a slash inside matches at any depth too.
    let t = env.path("t");
    let r = env.json(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--include",
        "proj/main.c",
    ]);
    assert_eq!(r["files"], 1, "{r}");
    assert!(restored(&t, &src).join("proj/main.c").exists());
}

#[test]
fn files_from_lists() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for n in ["a", "b", "c"] {
        fs::write(src.join(n), n).unwrap();
    }
    let list = env.path("list");
    fs::write(
        &list,
        format!(
            "# wanted\n{}\n\n{}\n",
            src.join("a").display(),
            src.join("c").display()
        ),
    )
    .unwrap();
    env.ok(&["backup", "--files-from", list.to_str().unwrap()]);
    assert_eq!(listed(&env, &src), set(&["a", "c"]));
    let raw = env.path("raw");
    fs::write(&raw, format!("{}\0", src.join("b").display())).unwrap();
    env.ok(&["backup", "--files-from-raw", raw.to_str().unwrap()]);
    assert_eq!(listed(&env, &src), set(&["b"]));
    // As restic reads it: lines trimmed, globs expanded (a list written for
    // restic backed up part of itself, exit 3, and recorded `  /x  ` and
    // `*.tmp` as sources).
    fs::write(src.join("d.tmp"), "d").unwrap();
    fs::write(src.join("e.tmp"), "e").unwrap();
    fs::write(
        &list,
        format!(
            "  {}  \n\t{}/*.tmp\n",
            src.join("a").display(),
            src.display()
        ),
    )
    .unwrap();
    env.ok(&["backup", "--files-from", list.to_str().unwrap()]);
    assert_eq!(listed(&env, &src), set(&["a", "d.tmp", "e.tmp"]));
    // Dotfiles by `.*` (never `.` and `..`, which took in the directory
    // and its parent), names that are not UTF-8, and a name with `[` in
    // it that exists as written.
    use std::os::unix::ffi::OsStrExt;
    let dots = src.join("dots");
    fs::create_dir_all(&dots).unwrap();
    fs::write(dots.join(".rc"), "r").unwrap();
    fs::write(dots.join(OsStr::from_bytes(b"caf\xe9")), "l").unwrap();
    fs::write(dots.join("IMG[1]"), "i").unwrap();
    fs::write(dots.join("IMG1"), "j").unwrap();
    fs::write(
        &list,
        format!(
            "{d}/.*\n{d}/caf*\n{d}/IMG[1]\n{d}/nothing-*\n",
            d = dots.display()
        ),
    )
    .unwrap();
    let out = env
        .cmd()
        .args(["backup", "--files-from", list.to_str().unwrap()])
        .output()
        .unwrap();
    // The glob that matches nothing is kept as written, and named.
    let err = exits(&out, 3);
    assert!(err.contains("nothing-*"), "{err}");
    let got = listed(&env, &dots);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.contains(".rc") && got.contains("IMG[1]"), "{got:?}");
    assert!(got.iter().any(|n| n.starts_with("caf")), "{got:?}");
    // `ls` prints the name that is not UTF-8 as stored.
    let ls = String::from_utf8_lossy(&env.run(&["ls", "latest"]).stdout).into_owned();
    let parent_file = src.join("a").display().to_string();
    assert!(!ls.lines().any(|l| l == parent_file), "`..` taken in: {ls}");
    // Verbatim: a name with a space at its end, and a `*` in it.
    fs::write(src.join("odd* "), "f").unwrap();
    fs::write(&list, format!("{}\n", src.join("odd* ").display())).unwrap();
    env.ok(&["backup", "--files-from-verbatim", list.to_str().unwrap()]);
    assert_eq!(listed(&env, &src), set(&["odd* "]));
    // A glob over several names: only paths that are there (`g/*/x.txt`
    // added `g/b/x.txt` for a `g/b` without one, exit 3), and no file
    // where a directory is wanted (`g/*/*.txt` took in the file `g/file`).
    let g = src.join("g");
    fs::create_dir_all(g.join("a")).unwrap();
    fs::create_dir_all(g.join("b")).unwrap();
    fs::write(g.join("a/x.txt"), "x").unwrap();
    fs::write(g.join("file"), "secret").unwrap();
    fs::write(
        &list,
        format!("{g}/*/x.txt\n{g}/*/*.txt\n", g = g.display()),
    )
    .unwrap();
    env.ok(&["backup", "--files-from", list.to_str().unwrap()]);
    let ls = env.ok(&["ls", "latest"]);
    assert!(
        ls.lines().any(|l| Path::new(l) == g.join("a/x.txt")),
        "{ls}"
    );
    assert!(!ls.lines().any(|l| Path::new(l) == g.join("file")), "{ls}");
    assert!(
        !ls.lines().any(|l| Path::new(l) == g.join("b/x.txt")),
        "{ls}"
    );
}

#[test]
fn exclude_patterns_are_read_as_restic_reads_them() {
    // restic's own example of `!` (all of home but Documents) stored
    // Documents empty, exit 0: gitignore's `!dir` took back the directory
    // only. A pattern starting with `#` was a comment (`--exclude '#*#'`
    // excluded nothing), and trailing spaces were dropped.
    let env = Env::new();
    let home = env.path("home");
    fs::create_dir_all(home.join("Documents/sub")).unwrap();
    fs::create_dir_all(home.join("junk")).unwrap();
    fs::write(home.join("Documents/report.txt"), "important").unwrap();
    fs::write(home.join("Documents/sub/deep.txt"), "deep").unwrap();
    fs::write(home.join("junk/x"), "x").unwrap();
    fs::write(home.join("#notes.txt#"), "autosave").unwrap();
    fs::write(home.join("report "), "with a space").unwrap();
    fs::write(home.join("report"), "without").unwrap();
    let list = env.path("exclude");
    fs::write(&list, "$H/**/*\n!$H/Documents\n").unwrap();
    env.cmd()
        .env("H", &home)
        .args(["backup", "--exclude-file"])
        .arg(&list)
        .arg(&home)
        .output()
        .map(|o| exits(&o, 0))
        .unwrap();
    let ls = env.ok(&["ls", "latest"]);
    for kept in [
        "Documents",
        "Documents/report.txt",
        "Documents/sub/deep.txt",
    ] {
        assert!(
            ls.lines().any(|l| Path::new(l) == home.join(kept)),
            "{kept}: {ls}"
        );
    }
    assert!(!ls.contains("junk"), "{ls}");
    let h = home.to_str().unwrap();
    env.ok(&["backup", "--exclude", "#*#", "--exclude", "report ", h]);
    assert_eq!(
        listed(&env, &home),
        set(&[
            "Documents",
            "Documents/report.txt",
            "Documents/sub",
            "Documents/sub/deep.txt",
            "junk",
            "junk/x",
            "report"
        ])
    );
    // gitignore's "only these files": `!*/` takes back directories alone
    // (it took back all below them). `dir/**` is `dir` too, as in restic,
    // and `//` is read as `/` (both left Documents out, exit 0).
    fs::write(home.join("Documents/notes.txt"), "txt").unwrap();
    env.ok(&["backup", "-e", "*", "-e", "!*/", "-e", "!*.txt", h]);
    assert_eq!(
        listed(&env, &home),
        set(&[
            "Documents",
            "Documents/notes.txt",
            "Documents/report.txt",
            "Documents/sub",
            "Documents/sub/deep.txt",
            "junk"
        ])
    );
    let all = format!("{h}/*");
    let docs = format!("!{h}//Documents/**");
    env.ok(&["backup", "-e", &all, "-e", &docs, h]);
    assert_eq!(
        listed(&env, &home),
        set(&[
            "Documents",
            "Documents/notes.txt",
            "Documents/report.txt",
            "Documents/sub",
            "Documents/sub/deep.txt"
        ])
    );
}

#[test]
fn one_file_system_stops_at_mount_points() {
    // /dev and /dev/pts are different filesystems on Linux.
    let env = Env::new();
    let pts = fs::symlink_metadata("/dev/pts/ptmx");
    assert!(pts.is_ok(), "/dev/pts/ptmx is needed for this test");
    env.ok(&["backup", "/dev", "-x"]);
    let ls = env.ok(&["ls", "latest"]);
    assert!(ls.lines().any(|l| l == "/dev/pts"), "{ls}");
    assert!(!ls.contains("/dev/pts/ptmx"), "-x descended into /dev/pts");
    env.ok(&["backup", "/dev"]);
    assert!(env.ok(&["ls", "latest"]).contains("/dev/pts/ptmx"));
    // A source named on its own is read whole, even below another source.
    env.ok(&["backup", "/dev", "/dev/pts", "-x"]);
    assert!(env.ok(&["ls", "latest"]).contains("/dev/pts/ptmx"));
    // Also below a mount point the walk stops at (`-x / /home/me`, with
    // /home a filesystem of its own): it stored /dev/pts empty, exit 0.
    let summary = env.backup(&["/dev", "/dev/pts/ptmx", "-x"]);
    assert_eq!(summary["partial"], false, "{summary}");
    let ls = env.ok(&["ls", "latest"]);
    let pts: Vec<&str> = ls.lines().filter(|l| l.starts_with("/dev/pts/")).collect();
    assert_eq!(pts, ["/dev/pts/ptmx"], "{ls}");
}

/// A source below a directory that the walk of another source leaves out
/// (its marker file, `--exclude-if-present`) is read whole, as it is when
/// named alone; what surrounds it stays out.
#[test]
fn a_source_below_a_directory_another_source_leaves_out_is_kept() {
    let env = Env::new();
    let h = env.path("h");
    fs::create_dir_all(h.join("me/proj/sub")).unwrap();
    fs::write(h.join("top.txt"), b"top").unwrap();
    fs::write(h.join("me/.nobackup"), b"").unwrap();
    fs::write(h.join("me/other.txt"), b"other").unwrap();
    fs::write(h.join("me/proj/a.txt"), b"project a").unwrap();
    fs::write(h.join("me/proj/sub/b.txt"), b"project b").unwrap();
    let proj = h.join("me/proj");
    let summary = env.backup(&[
        OsStr::new("--exclude-if-present"),
        OsStr::new(".nobackup"),
        h.as_os_str(),
        proj.as_os_str(),
    ]);
    assert_eq!(summary["partial"], false, "{summary}");
    assert_eq!(
        listed(&env, &h),
        set(&[
            "me",
            "me/proj",
            "me/proj/a.txt",
            "me/proj/sub",
            "me/proj/sub/b.txt",
            "top.txt"
        ])
    );
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&proj, &restored(&t, &proj));
    assert!(!restored(&t, &h).join("me/other.txt").exists());
    // `--delete` leaves what the directory left out holds: its listing in
    // the snapshot is only the way down to proj. Below proj it deletes.
    let copy = env.path("copy");
    fs::create_dir_all(copy.join("me/proj")).unwrap();
    fs::write(copy.join("me/other.txt"), b"never backed up").unwrap();
    fs::write(copy.join("me/proj/stale.txt"), b"stale").unwrap();
    env.ok(&[
        OsStr::new("restore"),
        OsStr::new(&format!("latest:{}", h.display())),
        OsStr::new("--delete"),
        OsStr::new("--target"),
        copy.as_os_str(),
    ]);
    assert_eq!(
        fs::read(copy.join("me/other.txt")).unwrap(),
        b"never backed up"
    );
    assert!(!copy.join("me/proj/stale.txt").exists());
    assert_same_tree(&proj, &copy.join("me/proj"));
}

/// With -x, a mount point below a source is recorded without being opened:
/// one the user may not read (another user's FUSE mount, a private tmpfs)
/// does not make the backup partial, and a stale NFS mount cannot hang it.
#[test]
fn one_file_system_does_not_open_the_mount_points_it_skips() {
    assert!(
        is_root(),
        "this test mounts a tmpfs in a namespace: run it as root"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("locked")).unwrap();
    fs::write(src.join("f"), b"readable").unwrap();
    let mut probe = env.cmd();
    as_unprivileged(&env, &mut probe);
    let script = format!(
        "mount -t tmpfs -o mode=700 none '{}' && exec setpriv --reuid=65534 --regid=65534 \
         --clear-groups \"$0\" \"$@\"",
        src.join("locked").display()
    );
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ];
    let out = env
        .cmd_via(&wrapper)
        .env("HOME", env.dir.path())
        .args(["--json", "backup", "-x"])
        .arg(&src)
        .output()
        .unwrap();
    assert_no_panic(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("cannot read"), "{err}");
    let ls = env.ok(&["ls", "latest"]);
    let locked = src.join("locked").display().to_string();
    assert!(ls.lines().any(|l| l == locked), "{ls}");
}

/// With -x, another user's FUSE mount (without `allow_other`), which
/// refuses even root a stat, is kept as an empty directory: it was an
/// error that made the snapshot partial (exit 3) and left it out.
#[test]
fn one_file_system_keeps_a_mount_that_refuses_root_a_stat() {
    assert!(
        is_root(),
        "this test mounts FUSE in a namespace: run it as root"
    );
    let env = Env::new();
    let src = env.path("src");
    let (mnt, data) = (src.join("theirs"), env.path("data"));
    fs::create_dir_all(&mnt).unwrap();
    fs::create_dir_all(&data).unwrap();
    fs::write(src.join("f"), b"readable").unwrap();
    fs::write(data.join("private"), b"theirs").unwrap();
    for p in [&mnt, &data] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    // /dev/fuse for that user alone, in a mount namespace of the test's.
    let dev = env.path("fuse");
    let script = format!(
        "mknod '{dev}' c 10 229 && chmod 666 '{dev}' && mount --bind '{dev}' /dev/fuse && \
         {{ setpriv --reuid=65534 --regid=65534 --clear-groups bindfs -f --no-allow-other '{data}' '{mnt}' & }} && \
         n=0; until grep -q ' {mnt} ' /proc/self/mounts; do n=$((n+1)); [ $n -lt 200 ] || exit 99; \
         sleep 0.05; done; \"$0\" \"$@\"; rc=$?; kill $!; wait; exit $rc",
        dev = dev.display(),
        data = data.display(),
        mnt = mnt.display(),
    );
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ];
    let out = env
        .cmd_via(&wrapper)
        .args(["backup", "-x"])
        .arg(&src)
        .output()
        .unwrap();
    assert_no_panic(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("refuses even root"), "{err}");
    let ls = env.ok(&["ls", "latest"]);
    let theirs = mnt.display().to_string();
    assert!(ls.lines().any(|l| l == theirs), "{ls}");
    assert!(!ls.contains("private"), "{ls}");
}

#[test]
fn files_vanishing_during_the_walk_are_warnings_not_failures() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..5000 {
        fs::write(src.join(format!("f{i}")), b"x").unwrap();
    }
    // Delete files while the backup walks the directory.
    let deleter = {
        let src = src.clone();
        std::thread::spawn(move || {
            for i in (0..5000).rev() {
                let _ = fs::remove_file(src.join(format!("f{i}")));
            }
        })
    };
    let out = env
        .cmd()
        .args(["--json", "backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    deleter.join().unwrap();
    assert_no_panic(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(s["partial"], false, "{s}");
    for w in s["warnings"].as_array().unwrap() {
        assert!(
            w.as_str().unwrap().contains("vanished"),
            "unexpected warning {w}"
        );
    }
    // Whatever was stored restores (a subset of what existed).
    let t = env.path("t");
    env.restore("latest", &t);
}

/// Exclude patterns that leave, of the whole filesystem, only `keep`: at
/// each level every entry is excluded and the one leading to `keep` is
/// taken back (gitignore's `!`).
fn only(keep: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let mut at = std::path::PathBuf::from("/");
    for c in keep.components().skip(1) {
        lines.push(format!("{}/*", at.display()).replace("//", "/"));
        at.push(c);
        lines.push(format!("!{}", at.display()));
    }
    lines
}

#[test]
fn the_root_directory_as_a_source_is_backed_up() {
    // Before, `/` had no path components, and the snapshot was empty.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    fs::write(src.join("notes"), b"kept").unwrap();
    let patterns = env.path("patterns");
    fs::write(&patterns, only(&src).join("\n")).unwrap();
    let p = patterns.to_str().unwrap();
    env.ok(&["backup", "/", "--exclude-file", p]);
    let snap = &env.json(&["snapshots"])[0];
    assert_eq!(snap["paths"], serde_json::json!(["/"]));
    assert_eq!(snap["summary"]["files_new"], 2, "{snap}");
    // Every entry of `/` that is not excluded is in the snapshot: here the
    // one that leads to src.
    let ls = env.ok(&["ls", "latest"]);
    let top: Vec<&str> = ls
        .lines()
        .filter(|l| l.starts_with('/') && l.matches('/').count() == 1)
        .collect();
    let first = src
        .components()
        .nth(1)
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap();
    assert_eq!(top, [format!("/{first}")], "{ls}");
    assert!(
        ls.lines()
            .any(|l| l == format!("{}/etc/hosts", src.display())),
        "{ls}"
    );
    let target = env.path("target");
    env.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));
    // `ls --at` and `dump` find the path in a snapshot of `/`.
    let hosts = src.join("etc/hosts");
    let dumped = env.ok(&["dump", "latest", hosts.to_str().unwrap()]);
    assert_eq!(dumped, "127.0.0.1 localhost\n");
    let at = ["dump", "--at", "2099-01-01 00:00", hosts.to_str().unwrap()];
    assert_eq!(env.ok(&at), "127.0.0.1 localhost\n");

    // With -x, `/`'s entries stay on its filesystem: /proc (a filesystem
    // of its own) is kept as an empty directory, as any mount point is.
    let proc_dev = fs::metadata("/proc").unwrap().dev();
    assert_ne!(
        proc_dev,
        fs::metadata("/").unwrap().dev(),
        "/proc must be a mount here"
    );
    let with_proc = env.path("with-proc");
    fs::write(&with_proc, format!("{}\n!/proc", only(&src).join("\n"))).unwrap();
    env.ok(&[
        "backup",
        "/",
        "-x",
        "--exclude-file",
        with_proc.to_str().unwrap(),
    ]);
    let ls = env.ok(&["ls", "latest"]);
    assert!(ls.lines().any(|l| l == "/proc"), "{ls}");
    assert!(
        !ls.lines().any(|l| l.starts_with("/proc/")),
        "-x descended into /proc"
    );
    // A source below `/` given with it is covered by it, not walked twice.
    env.ok(&["backup", "/", src.to_str().unwrap(), "--exclude-file", p]);
    let again = env.ok(&["ls", "latest"]);
    assert_eq!(
        again
            .lines()
            .filter(|l| *l == src.display().to_string())
            .count(),
        1
    );
}

#[test]
fn a_backup_without_proc_mounted_reads_every_entry() {
    // Entries were reached through /proc/self/fd; without /proc (a chroot,
    // a rescue system) each looked vanished, and the snapshot held none.
    assert!(
        is_root(),
        "this test mounts over /proc in a namespace: run it as root"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"deep").unwrap();
    fs::write(src.join("g"), b"top").unwrap();
    xattr::set(src.join("g"), "user.tag", b"kept").unwrap();
    let hide_proc = "mount -t tmpfs none /proc && test ! -e /proc/self && exec \"$0\" \"$@\"";
    let unshare = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        hide_proc,
    ];
    let out = env
        .cmd_via(&unshare)
        .args(["--json", "backup"])
        .arg(&src)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("vanished"), "{err}");
    let summary = last_json(&out);
    assert_eq!(summary["files_new"], 2, "{summary}");
    let target = env.path("target");
    env.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));
    let tag = xattr::get(restored(&target, &src).join("g"), "user.tag").unwrap();
    assert_eq!(tag.as_deref(), Some(&b"kept"[..]));
}

#[test]
fn pattern_files_count_in_the_order_given_whether_pipes_or_files() {
    // A pipe's patterns were put before every regular file's, so a `!`
    // from a pipe given last was overridden by the file given first.
    let env = Env::new();
    let data = env.path("data");
    fs::create_dir_all(data.join("cache")).unwrap();
    fs::write(data.join("cache/keep"), "keep").unwrap();
    fs::write(data.join("cache/drop"), "drop").unwrap();
    let base = env.path("base.txt");
    fs::write(&base, format!("{}/cache/*\n", data.display())).unwrap();
    let mut backup = env
        .cmd()
        .args(["backup", "--exclude-file"])
        .arg(&base)
        .args(["--exclude-file", "/dev/stdin"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = backup.stdin.take().unwrap();
    writeln!(stdin, "!{}/cache/keep", data.display()).unwrap();
    drop(stdin);
    exits(&backup.wait_with_output().unwrap(), 0);
    assert_eq!(listed(&env, &data), set(&["cache", "cache/keep"]));
}

/// A cache tag (`--exclude-caches`) or a database beside a SQLite journal
/// (`--sqlite-aware`) is opened to read its first bytes. Anyone who may
/// write in a backed-up tree could put a symbolic link there, to any file
/// or device, or a FIFO, and have root's backup open it (opening a watchdog
/// arms it). Neither is opened, and a link to a real tag marks nothing.
#[test]
fn tags_and_databases_beside_journals_are_not_opened_through_links_or_as_fifos() {
    let env = Env::new();
    let src = env.path("src");
    for d in ["linked", "fifo-linked", "fifo", "db"] {
        fs::create_dir_all(src.join(d)).unwrap();
        fs::write(src.join(d).join("keep"), d).unwrap();
    }
    let probe = env.path("probe");
    let made = Command::new("mkfifo").arg(&probe).status().unwrap();
    assert!(made.success());
    let made = Command::new("mkfifo")
        .arg(src.join("fifo/CACHEDIR.TAG"))
        .status()
        .unwrap();
    assert!(made.success());
    let real_tag = env.path("real-tag");
    fs::write(&real_tag, b"Signature: 8a477f597d28d172789f06886806bc55\n").unwrap();
    std::os::unix::fs::symlink(&real_tag, src.join("linked/CACHEDIR.TAG")).unwrap();
    std::os::unix::fs::symlink(&probe, src.join("fifo-linked/CACHEDIR.TAG")).unwrap();
    std::os::unix::fs::symlink(&probe, src.join("db/app.db")).unwrap();
    fs::write(src.join("db/app.db-wal"), b"").unwrap();
    // Writers that say when a reader opens their FIFO.
    let opened = env.path("opened");
    let writer = |fifo: &Path| {
        Command::new("sh")
            .arg("-c")
            .arg(r#": > "$1"; echo "$1" >> "$2""#)
            .arg("sh")
            .arg(fifo)
            .arg(&opened)
            .spawn()
            .unwrap()
    };
    let mut writers = [writer(&probe), writer(&src.join("fifo/CACHEDIR.TAG"))];
    // Each blocked in its open first, or an open and close by the backup
    // before it would go unseen.
    for w in &writers {
        let proc = std::path::PathBuf::from(format!("/proc/{}", w.id()));
        let blocked = || {
            fs::read_to_string(proc.join("wchan")).is_ok_and(|c| c == "wait_for_partner")
                || fs::read_to_string(proc.join("syscall")).is_ok_and(|c| {
                    c.starts_with(if cfg!(target_arch = "aarch64") {
                        "56 "
                    } else {
                        "257 "
                    })
                })
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !blocked() {
            assert!(
                std::time::Instant::now() < until,
                "the writer never blocked in its open"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let out = env.run(&[
        "backup",
        "--exclude-caches",
        "--sqlite-aware",
        src.to_str().unwrap(),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    for w in &mut writers {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert!(
        !opened.exists(),
        "the backup opened {}",
        fs::read_to_string(&opened).unwrap_or_default()
    );
    exits(&out, 0);
    let kept = listed(&env, &src);
    for d in ["linked", "fifo-linked", "fifo", "db"] {
        assert!(
            kept.contains(&format!("{d}/keep")),
            "{d} left out: {kept:?}"
        );
    }
}

/// A backup leaves the repository's own files and its cache out. Named as
/// a source, the repository (or a directory of it, or the cache) gave an
/// empty snapshot, saved with exit 0.
#[test]
fn a_source_that_is_nothing_but_the_repository_is_refused() {
    let env = Env::new();
    let repo = env.repo.clone();
    for source in [repo.clone(), repo.join("data"), env.cache.clone()] {
        let out = env.run(&["backup", source.to_str().unwrap()]);
        exits(&out, 1);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "{}: the repository's own files (or its cache)",
                source.display()
            )),
            "{err}"
        );
    }
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
    // Beside other sources (a glob, a `find` list), it is told and left
    // out, and the others are backed up; a link to it is stored as a link.
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("f"), b"f").unwrap();
    let link = env.path("link");
    std::os::unix::fs::symlink(&repo, &link).unwrap();
    let out = env.run(&[
        "backup",
        other.to_str().unwrap(),
        repo.to_str().unwrap(),
        link.to_str().unwrap(),
    ]);
    let err = exits(&out, 0);
    assert!(
        err.contains(&format!(
            "{}: the repository's own files (or its cache)",
            repo.display()
        )) && !err.contains(&format!("{}:", link.display())),
        "{err}"
    );
    assert_eq!(listed(&env, &other), set(&["f"]));
    let ls = env.ok(&["ls", "-l", "latest", link.to_str().unwrap()]);
    assert!(
        ls.lines().any(|l| l.starts_with("lrwx")
            && l.ends_with(&format!("{} -> {}", link.display(), repo.display()))),
        "{ls}"
    );
    // A repository made at the top of a disk that holds other files: those
    // are backed up.
    fs::write(repo.join("notes.txt"), b"mine").unwrap();
    env.backup(&[&repo]);
    assert_eq!(
        listed(&env, &repo),
        BTreeSet::from(["notes.txt".to_string()])
    );
}

/// A named source that an exclude pattern matches is kept, but what is
/// below it is left out by the same pattern: `backup ~/Documents --exclude
/// Documents` stored an empty directory with exit 0 and no word, and so did
/// a source below a directory a pattern matches.
#[test]
fn a_source_an_exclude_pattern_matches_is_warned_of() {
    let env = Env::new();
    let docs = env.path("home/Documents");
    fs::create_dir_all(docs.join("sub")).unwrap();
    fs::write(docs.join("a.txt"), b"a").unwrap();
    fs::write(docs.join("sub/b.txt"), b"b").unwrap();
    let other = env.path("home/other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("c.txt"), b"c").unwrap();
    let warned = "an exclude pattern matches this source";
    for source in [&docs, &docs.join("sub")] {
        let out = env.run(&[
            "backup",
            source.to_str().unwrap(),
            other.to_str().unwrap(),
            "--exclude",
            "Documents",
        ]);
        let err = exits(&out, 0);
        assert!(
            err.contains(&format!("{}: {warned}", source.display())),
            "{err}"
        );
        assert!(!err.contains(&format!("{}:", other.display())), "{err}");
        assert!(listed(&env, source).is_empty());
    }
    // Not matched: not warned.
    let out = env.run(&["backup", docs.to_str().unwrap(), "--exclude", "*.tmp"]);
    assert!(!exits(&out, 0).contains(warned));
    // A `find` list names what is below a matched directory too, and all
    // of it is kept as named: no warning.
    let list = env.path("list");
    let found = [
        &docs,
        &docs.join("a.txt"),
        &docs.join("sub"),
        &docs.join("sub/b.txt"),
    ];
    let lines: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
    fs::write(&list, lines.join("\n") + "\n").unwrap();
    let out = env.run(&[
        "backup",
        "--files-from",
        list.to_str().unwrap(),
        "--exclude",
        "Documents",
    ]);
    assert!(!exits(&out, 0).contains(warned));
    assert!(listed(&env, &docs).contains("sub/b.txt"));
}

/// A marker file in a directory named as a source leaves out what is below
/// it, as in any other directory and as in restic, and says so: the source
/// kept all of its contents without a word, unlike one an exclude pattern
/// matches.
#[test]
fn a_marker_in_a_source_itself_leaves_out_what_is_below_it() {
    let env = Env::new();
    let cache = env.path("appcache");
    fs::create_dir_all(cache.join("sub")).unwrap();
    fs::write(
        cache.join("CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    fs::write(cache.join("blob"), b"cached").unwrap();
    fs::write(cache.join("sub/more"), b"cached").unwrap();
    let out = env.run(&["backup", cache.to_str().unwrap(), "--exclude-caches"]);
    let err = exits(&out, 0);
    assert!(err.contains("a marker file in this source"), "{err}");
    assert_eq!(listed(&env, &cache), set(&["CACHEDIR.TAG"]));

    let proj = env.path("proj");
    fs::create_dir_all(&proj).unwrap();
    fs::write(proj.join(".nobackup"), b"").unwrap();
    fs::write(proj.join("big.iso"), b"iso").unwrap();
    let out = env.run(&[
        "backup",
        proj.to_str().unwrap(),
        "--exclude-if-present",
        ".nobackup",
    ]);
    let err = exits(&out, 0);
    assert!(err.contains("a marker file in this source"), "{err}");
    assert_eq!(listed(&env, &proj), set(&[".nobackup"]));
    // Without the option, all of it.
    env.backup(&[&proj]);
    assert_eq!(listed(&env, &proj), set(&[".nobackup", "big.iso"]));
    // With a source named below it: that source alone, and said.
    fs::create_dir_all(proj.join("keep")).unwrap();
    fs::write(proj.join("keep/k"), b"k").unwrap();
    let keep = proj.join("keep");
    let out = env.run(&[
        "backup",
        proj.to_str().unwrap(),
        keep.to_str().unwrap(),
        "--exclude-if-present",
        ".nobackup",
    ]);
    let err = exits(&out, 0);
    assert!(err.contains("with the sources named below it"), "{err}");
    assert_eq!(listed(&env, &proj), set(&["keep", "keep/k"]));
}
