//! Small files compressed together (format version 3, format-spec §10.2):
//! small data blobs share zstd frames, every command that reads blobs
//! (restore, check, prune, copy, mount's and dump's single reads) gets each
//! member back, prune regroups live members, and an older format version
//! keeps writing one frame per blob.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use common::*;

/// `n` text files of 1-12 KiB with a shared vocabulary (as source trees
/// have), one of 300 KiB (a single blob too large for a group) and one
/// incompressible file of 1 MiB.
fn small_files(root: &Path, n: usize, seed: u64) {
    const WORDS: &[&str] = &[
        "static", "int", "struct", "return", "unsigned", "void", "const", "char", "if", "else",
        "NULL", "err", "goto", "out;", "u32", "size_t", "sizeof", "{", "}", "device",
    ];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut text = |len: usize| {
        let mut s = String::with_capacity(len + 32);
        while s.len() < len {
            s.push_str(WORDS[next() as usize % WORDS.len()]);
            s.push(if next() % 9 == 0 { '\n' } else { ' ' });
        }
        s
    };
    for i in 0..n {
        let dir = root.join(format!("d{:02}", i / 50));
        fs::create_dir_all(&dir).unwrap();
        let len = 1024 + (i * 7919) % (11 << 10);
        fs::write(dir.join(format!("f{i}.c")), text(len)).unwrap();
    }
    fs::write(root.join("large.txt"), text(300 << 10)).unwrap();
    write_random(&root.join("random.bin"), 64 << 10, seed);
}

/// Every data pack's entries, by pack ID, as `cat pack` prints them.
fn data_entries(env: &Env) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out = BTreeMap::new();
    for f in walkdir::WalkDir::new(env.repo.join("data"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
    {
        let id = f.file_name().to_str().unwrap().to_owned();
        let entries: Vec<serde_json::Value> =
            serde_json::from_str(&env.ok(&["cat", "pack", &id])).unwrap();
        if entries.iter().any(|e| e["blob_type"] == 0) {
            out.insert(id, entries);
        }
    }
    out
}

/// The group members among `entries`, and the frames (pack, offset) they share.
fn groups(packs: &BTreeMap<String, Vec<serde_json::Value>>) -> (usize, HashSet<(String, u64)>) {
    let mut members = 0;
    let mut frames = HashSet::new();
    for (pack, entries) in packs {
        for e in entries {
            if e["compression"] == 3 {
                assert!(e["start"].is_u64(), "a member without a start: {e}");
                members += 1;
                frames.insert((pack.clone(), e["offset"].as_u64().unwrap()));
            } else {
                assert!(e.get("start").is_none(), "start outside a group: {e}");
            }
        }
    }
    (members, frames)
}

#[test]
fn small_files_share_frames_and_round_trip_through_check_prune_and_copy() {
    let env = Env::new();
    let config: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "config"])).unwrap();
    assert_eq!(config["version"], 3, "{config}");
    let src = env.path("src");
    small_files(&src, 400, 1);
    env.backup(&[&src]);

    let packs = data_entries(&env);
    let (members, frames) = groups(&packs);
    assert!(
        members >= 400,
        "{members} group members for 400 small files"
    );
    assert!(
        frames.len() >= 10 && frames.len() * 5 < members,
        "{} frames for {members} members",
        frames.len()
    );
    // Blobs of 256 KiB or more are frames of their own.
    for e in packs.values().flatten() {
        if e["raw_length"].as_u64().unwrap() >= 256 << 10 {
            assert_ne!(e["compression"], 3, "{e}");
        }
    }
    env.assert_check_clean();
    let t = env.path("t1");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));

    // One frame per blob (format version 1, no dictionary either) takes
    // more room for the same files.
    let old = Env::with_format(1);
    old.backup(&[&src]);
    assert_eq!(groups(&data_entries(&old)).0, 0);
    let (grouped, alone) = (
        files_size(&env.repo.join("data")),
        files_size(&old.repo.join("data")),
    );
    assert!(
        grouped * 20 < alone * 19,
        "grouped {grouped} bytes, one by one {alone}"
    );

    // Prune after a third of the files are gone: frames holding only dead
    // members go, the live members of mixed frames are grouped again, and
    // nothing unused is left.
    for i in (0..400).step_by(3) {
        fs::remove_file(src.join(format!("d{:02}/f{i}.c", i / 50))).unwrap();
    }
    env.backup(&[&src]);
    env.ok(&["forget", "--keep-last", "1"]);
    let report = env.json(&["prune", "--max-unused", "0%"]);
    assert!(report["packs_repacked"].as_u64().unwrap() >= 1, "{report}");
    let again = env.json(&["prune", "--dry-run", "--max-unused", "0%"]);
    assert_eq!(again["unused_blobs"], 0, "{again}");
    assert_eq!(again["unused_bytes_kept"], 0, "{again}");
    let (left, _) = groups(&data_entries(&env));
    assert!(
        (260..=270).contains(&left),
        "{left} members left for 266 small files"
    );
    env.assert_check_clean();
    let t = env.path("t2");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));

    // Copy into a version 2 repository: one frame per blob there.
    let dst = Env::with_format(2);
    copy(&dst, &env, &[]);
    assert_eq!(groups(&data_entries(&dst)).0, 0);
    dst.assert_check_clean();
    let t = dst.path("t3");
    dst.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn one_file_at_a_time_reads_its_member_of_a_frame() {
    // dump reads blob by blob through the repository (not a planned bulk
    // read), so neighbours in one frame come from the frame cache or a
    // fresh decode; each must be its own bytes.
    let env = Env::new();
    let src = env.path("src");
    small_files(&src, 60, 2);
    env.backup(&[&src]);
    let members = groups(&data_entries(&env)).0;
    assert!(
        members >= 60,
        "{members} members for 60 small files: {:?}",
        data_entries(&env)
    );
    for i in [0, 1, 2, 30, 59] {
        let path = src.join(format!("d{:02}/f{i}.c", i / 50));
        let out = env.run(&["dump".as_ref(), "latest".as_ref(), path.as_os_str()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, fs::read(&path).unwrap(), "{}", path.display());
    }
}

#[test]
fn a_damaged_frame_loses_its_members_only_and_is_reported() {
    let env = Env::new();
    let src = env.path("src");
    small_files(&src, 400, 3);
    env.backup(&[&src]);
    let packs = data_entries(&env);
    let (_, frames) = groups(&packs);
    assert!(frames.len() >= 2);
    // Flip one byte inside the first frame of the pack with the most frames.
    let (pack, entries) = packs
        .iter()
        .max_by_key(|(_, e)| e.iter().filter(|e| e["compression"] == 3).count())
        .unwrap();
    let frame = entries.iter().find(|e| e["compression"] == 3).unwrap();
    let (offset, length) = (
        frame["offset"].as_u64().unwrap(),
        frame["length"].as_u64().unwrap(),
    );
    let members = entries
        .iter()
        .filter(|e| e["offset"].as_u64() == Some(offset))
        .count();
    let path = env.repo.join("data").join(&pack[..2]).join(pack);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(offset + length / 2) as usize] ^= 0x08;
    fs::write(&path, bytes).unwrap();

    let out = env.run(&["check", "--read-data"]);
    exits(&out, 1);
    let report =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(report.contains(pack.as_str()), "{report}");

    // Restore gets every file outside the damaged frame, byte for byte,
    // names the others, and says the restore is incomplete.
    let t = env.path("t");
    let out = env.run(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        t.as_os_str(),
    ]);
    assert_no_panic(&out);
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Each is reported once, as it happens, as an error.
    let failed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error:") && l.contains("not restored"))
        .collect();
    let distinct: std::collections::BTreeSet<&str> = failed.iter().copied().collect();
    assert_eq!(
        (failed.len(), distinct.len()),
        (members, members),
        "{members} members: {stderr}"
    );
    assert!(
        stderr.contains(&format!("group frame at offset {offset} in pack {pack}")),
        "{stderr}"
    );
    let root = restored(&t, &src);
    let mut intact = 0;
    for e in walkdir::WalkDir::new(&src)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(&src).unwrap();
        if let Ok(got) = fs::read(root.join(rel)) {
            assert_eq!(got, fs::read(e.path()).unwrap(), "{}", rel.display());
            intact += 1;
        }
    }
    assert_eq!(intact, 402 - members);
}

#[test]
fn init_writes_the_format_version_asked_for_and_refuses_unknown_ones() {
    let env = Env::with_format(2);
    let config: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "config"])).unwrap();
    assert_eq!(config["version"], 2, "{config}");
    let src = env.path("src");
    small_files(&src, 100, 4);
    env.backup(&[&src]);
    assert_eq!(groups(&data_entries(&env)).0, 0, "no group in version 2");
    env.assert_check_clean();

    let none = Env::uninit();
    let err = none.fails(&["init", "--format-version", "4"], 2);
    assert!(err.contains("4 is not in 1..=3"), "{err}");
    assert!(!none.repo.join("config").exists());

    // Raising the version rewrites the config: refused in an append-only
    // repository (exit 13), which stays as it was.
    let locked = Env::uninit();
    locked.ok(&["init", "--format-version", "2", "--append-only"]);
    let err = locked.fails(&["config", "format-version", "3"], 13);
    assert!(err.contains("config append-only off"), "{err}");
    let config: serde_json::Value = serde_json::from_str(&locked.ok(&["cat", "config"])).unwrap();
    assert_eq!(config["version"], 2, "{config}");
    // Asking for the version it has changes nothing, so it is no refusal.
    let same = locked.json(&["config", "format-version", "2"]);
    assert_eq!(
        (same["format_version"].as_u64(), same["changed"].as_bool()),
        (Some(2), Some(false))
    );

    // An append-only key may not raise it either, in a repository that is
    // not append-only.
    let env = Env::with_format(2);
    add_append_only_key(&env, "only adds");
    let out = run_as(&env, "only adds", &["config", "format-version", "3"]);
    let err = exits(&out, 13);
    assert!(err.contains("key that is not append-only"), "{err}");
    let raised = env.json(&["config", "format-version", "3"]);
    assert_eq!(
        (
            raised["format_version"].as_u64(),
            raised["changed"].as_bool()
        ),
        (Some(3), Some(true))
    );
}

#[test]
fn an_older_repository_raised_to_version_3_groups_new_files_and_reads_old_ones() {
    let env = Env::with_format(2);
    let src = env.path("src");
    small_files(&src, 100, 5);
    env.backup(&[&src]);
    assert_eq!(groups(&data_entries(&env)).0, 0);
    assert!(
        env.ok(&["config", "format-version"])
            .contains("format version: 2")
    );

    // Never lowered: version 2 objects may exist.
    let err = env.fails(&["config", "format-version", "1"], 1);
    assert!(err.contains("never lowered"), "{err}");
    let out = env.ok(&["config", "format-version", "3"]);
    assert!(out.contains("format version: 3"), "{out}");
    let config: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "config"])).unwrap();
    assert_eq!(config["version"], 3, "{config}");
    assert!(
        env.ok(&["config", "format-version", "3"])
            .contains("(unchanged)")
    );

    // The next backup groups its new small files; the old blobs stay as
    // they were and every snapshot still reads back.
    small_files(&src.join("more"), 100, 6);
    env.backup(&[&src]);
    let (members, _) = groups(&data_entries(&env));
    assert!(members >= 100, "{members} members after the upgrade");
    env.assert_check_clean();
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
    let first = &snapshot_ids(&env)[0];
    let t0 = env.path("t0");
    env.restore(first, &t0);
    assert_same_tree(&src.join("d01"), &restored(&t0, &src).join("d01"));
    assert!(!restored(&t0, &src).join("more").exists());
}
