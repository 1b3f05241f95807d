//! Compression dictionaries for small blobs (format-spec §10): the first
//! backup trains one on its own small files, later blobs use it, and every
//! command that reads blobs (restore, check, prune, copy) still works; a
//! damaged or missing dictionary is named, and spares the other files.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// `n` source-like text files of about 12 KiB each (shared vocabulary, as
/// real source trees have) plus one incompressible 1 MiB file.
fn source_tree(root: &Path, n: usize, seed: u64) {
    const WORDS: &[&str] = &[
        "static",
        "int",
        "struct",
        "return",
        "unsigned",
        "long",
        "void",
        "const",
        "char",
        "#include",
        "<linux/module.h>",
        "if",
        "else",
        "for",
        "while",
        "NULL",
        "->",
        "err",
        "goto",
        "out;",
        "kfree(",
        "mutex_lock(&dev->lock);",
        "EXPORT_SYMBOL_GPL",
        "u32",
        "size_t",
        "switch",
        "case",
        "break;",
        "default:",
        "sizeof",
        "(struct",
        "device",
        "*dev)",
        "{",
        "}",
    ];
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    for i in 0..n {
        let dir = root.join(format!("d{:02}", i / 100));
        fs::create_dir_all(&dir).unwrap();
        let mut s = String::with_capacity(13 << 10);
        s.push_str(&format!(
            "// SPDX-License-Identifier: GPL-2.0\n/* file {i} */\n"
        ));
        while s.len() < 12 << 10 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push_str(WORDS[(x >> 40) as usize % WORDS.len()]);
            s.push(if x.is_multiple_of(9) { '\n' } else { ' ' });
        }
        fs::write(dir.join(format!("f{i:04}.c")), s).unwrap();
    }
    write_random(&root.join("zz-random.bin"), 1 << 20, seed);
}

fn dict_files(env: &Env) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(env.repo.join("dicts"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check_read_data_ok(env: &Env) {
    let out = env.run(&["check", "--read-data"]);
    assert!(out.status.success(), "check --read-data: {}", text(&out));
}

#[test]
fn dictionary_blobs_round_trip_through_backup_prune_and_copy() {
    let env = Env::with_format(2);
    let src = env.path("src");
    // 1,000 files of 12 KiB: more than the 8 MiB of samples training
    // waits for, so the later files are stored with the dictionary.
    source_tree(&src, 1000, 1);
    env.backup(&[&src]);
    let dicts = dict_files(&env);
    assert_eq!(dicts.len(), 1, "one dictionary trained: {dicts:?}");
    let name = dicts[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    check_read_data_ok(&env);
    let t = env.path("t1");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));

    // The next backup uses the stored dictionary instead of training another.
    source_tree(&src.join("more"), 300, 2);
    env.backup(&[&src]);
    assert_eq!(dict_files(&env), dicts);

    // Prune moves blobs as stored; the dictionary stays and they still open.
    fs::remove_dir_all(src.join("d00")).unwrap();
    env.backup(&[&src]);
    env.ok(&["forget", "--keep-last", "1"]);
    env.ok(&["prune", "--max-unused", "0%"]);
    assert_eq!(dict_files(&env), dicts, "prune never deletes a dictionary");
    check_read_data_ok(&env);
    let t = env.path("t2");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));

    // Copy re-compresses into the destination, which trains its own.
    let dst = Env::uninit();
    let dst = Env {
        password: "another password".into(),
        ..dst
    };
    dst.ok(&["init", "--format-version", "2"]);
    copy(&dst, &env, &[]);
    let dst_dicts = dict_files(&dst);
    assert_eq!(dst_dicts.len(), 1, "{dst_dicts:?}");
    check_read_data_ok(&dst);
    let t = dst.path("t3");
    dst.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn a_damaged_or_missing_dictionary_is_named_and_spares_other_files() {
    let env = Env::with_format(2);
    let src = env.path("src");
    source_tree(&src, 1000, 3);
    env.backup(&[&src]);
    let dicts = dict_files(&env);
    assert_eq!(dicts.len(), 1);
    let dict = dicts[0].clone();
    let name = dict.file_name().unwrap().to_str().unwrap().to_owned();
    let good = fs::read(&dict).unwrap();

    // Damaged: one flipped bit fails authentication.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    fs::write(&dict, &bad).unwrap();
    let out = env.run(&["check"]);
    exits(&out, 1);
    assert!(
        text(&out).contains(&format!("dicts/{name}")),
        "{}",
        text(&out)
    );

    let t = env.path("t");
    let out = env.run(&["restore", "latest", "--target", t.to_str().unwrap()]);
    exits(&out, 1);
    assert!(
        text(&out).contains(&format!("dicts/{name}")),
        "{}",
        text(&out)
    );
    // Files stored without the dictionary come back intact, and no file
    // that needed it sits at its final name with wrong content.
    let r = restored(&t, &src);
    assert!(files_equal(
        &r.join("zz-random.bin"),
        &src.join("zz-random.bin")
    ));
    let mut intact = 0;
    for e in walkdir::WalkDir::new(&r)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
    {
        let rel = e.path().strip_prefix(&r).unwrap();
        assert!(files_equal(e.path(), &src.join(rel)), "{}", rel.display());
        intact += 1;
    }
    assert!(intact > 1, "files saved before training restore: {intact}");
    assert!(
        intact < 1001,
        "files that need the dictionary do not restore"
    );

    // Missing: plain `check` notices dictionary blobs with no dictionary,
    // `check --read-data` names the dictionary they need.
    fs::remove_file(&dict).unwrap();
    let out = env.run(&["check"]);
    exits(&out, 1);
    assert!(
        text(&out).contains("no readable dictionary"),
        "{}",
        text(&out)
    );
    let out = env.run(&["check", "--read-data"]);
    exits(&out, 1);
    let said = text(&out);
    assert!(said.contains(&format!("dicts/{name}")), "{said}");
    // Putting the file back comes first: `repair packs`, which check had
    // offered alone, drops those blobs for good.
    let back = said
        .find(&format!(
            "dictionary files missing: dicts/{name}. Put each back"
        ))
        .unwrap_or_else(|| panic!("{said}"));
    let repair = said
        .find("only if no copy has them: to keep what still reads")
        .unwrap_or_else(|| panic!("{said}"));
    assert!(back < repair, "{said}");
    let report = env.json_any(&["check", "--read-data"]);
    assert_eq!(
        report["missing_dictionaries"],
        serde_json::json!([format!("dicts/{name}")]),
        "{report}"
    );
    assert!(
        said.contains("cairn repair packs --dictionaries-lost "),
        "{said}"
    );
    let packs = salvageable(&report);
    // `repair packs` run anyway stops: dropping those blobs would keep the
    // file, once back, from helping. The packs stay, and so does the index.
    let before = stored_files(&env);
    let mut args = vec!["repair", "packs"];
    args.extend(packs.iter().map(String::as_str));
    let dry = env.json(&[&args[..], &["--dry-run"][..]].concat());
    assert_eq!(
        dry["dictionaries_missing"],
        serde_json::json!([name.clone()]),
        "{dry}"
    );
    let out = env.run(&args);
    exits(&out, 1);
    let err = text(&out);
    assert!(
        err.contains(&format!("dicts/{name}"))
            && err.contains("put the file back")
            && err.contains("--dictionaries-lost"),
        "{err}"
    );
    let after = stored_files(&env);
    assert!(
        before.iter().all(|f| after.contains(f)),
        "a pack or dictionary file was deleted or changed"
    );
    // On a copy where it is lost for good: dropped as asked, and the next
    // backup stores those files again.
    let lost = env.path("lost-copy");
    assert!(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&env.repo)
            .arg(&lost)
            .status()
            .unwrap()
            .success()
    );
    let on_copy = |args: &[&str]| {
        env.cmd()
            .env("CAIRN_REPOSITORY", &lost)
            .args(args)
            .output()
            .unwrap()
    };
    let out = on_copy(&[&args[..], &["--dictionaries-lost"][..]].concat());
    exits(&out, 0);
    let said = text(&out);
    assert!(
        said.contains(&format!(
            "dicts/{name} is missing: the blobs compressed with it were dropped"
        )) && !said.contains("put it back"),
        "{said}"
    );
    exits(&on_copy(&["backup", src.to_str().unwrap()]), 0);
    let out = on_copy(&["check", "--read-data"]);
    exits(&out, 0);
    let t = env.path("t-lost");
    exits(
        &on_copy(&["restore", "latest", "--target", t.to_str().unwrap()]),
        0,
    );
    assert_same_tree(&src, &restored(&t, &src));

    // Put back, everything reads again.
    fs::write(&dict, &good).unwrap();
    check_read_data_ok(&env);
    let t = env.path("t2");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn repair_packs_drops_what_a_damaged_dictionary_took_and_the_next_backup_stores_it_again() {
    // The packs' bytes were intact, so `repair packs` left them as they
    // were: the index kept naming blobs that could not be read, backups
    // deduplicated against them, and check failed for good.
    let env = Env::with_format(2);
    let src = env.path("src");
    source_tree(&src, 1000, 5);
    let first = env.backup(&[&src]);
    let dict = dict_files(&env)[0].clone();
    let name = dict.file_name().unwrap().to_str().unwrap().to_owned();
    let mut bad = fs::read(&dict).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    fs::write(&dict, &bad).unwrap();

    let report = env.json_any(&["check", "--read-data"]);
    let packs = salvageable(&report);
    let mut args = vec!["repair", "packs"];
    args.extend(packs.iter().map(String::as_str));
    let out = env.run(&args);
    let said = text(&out);
    exits(&out, 0);
    assert!(
        said.contains(&format!("dicts/{name} no longer opens: removed")),
        "{said}"
    );
    assert!(said.contains("which does not open"), "{said}");
    assert!(!dict.exists());

    // The next backup stores what was lost, and every snapshot is whole.
    env.backup(&[&src]);
    check_read_data_ok(&env);
    for id in [first["snapshot_id"].as_str().unwrap(), "latest"] {
        let t = env.path(&format!("t-{id}"));
        env.restore(id, &t);
        assert_same_tree(&src, &restored(&t, &src));
    }
}

/// The packs `check --read-data`'s JSON `report` offers to repair (at
/// least one).
fn salvageable(report: &serde_json::Value) -> Vec<String> {
    let packs: Vec<String> = report["salvageable_packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(!packs.is_empty(), "check offers no repair: {report}");
    packs
}

/// The packs and dictionary files of `env`'s repository, with their bytes.
fn stored_files(env: &Env) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = walkdir::WalkDir::new(&env.repo)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| {
            p.is_file()
                && (p.starts_with(env.repo.join("data")) || p.starts_with(env.repo.join("dicts")))
        })
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_dictionary_renamed_or_copied_over_is_named_and_repair_packs_deletes_nothing() {
    // The file of one dictionary holding another (names swapped, a file
    // put back under the wrong name) authenticates: it is intact. Check
    // advised `repair packs`, which deleted it as damaged, with the packs
    // whose blobs needed it, for good.
    let env = Env::with_format(2);
    // A twin: the same key, so its dictionary authenticates in `env`.
    let twin = Env::uninit();
    assert!(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&env.repo)
            .arg(&twin.repo)
            .status()
            .unwrap()
            .success()
    );
    let twin = Env {
        password: env.password.clone(),
        ..twin
    };
    let src = env.path("src");
    source_tree(&src, 1000, 11);
    env.backup(&[&src]);
    let other = twin.path("src");
    source_tree(&other, 1000, 12);
    twin.backup(&[&other]);
    let dict = dict_files(&env)[0].clone();
    let name = dict.file_name().unwrap().to_str().unwrap().to_owned();
    let theirs = dict_files(&twin)[0].clone();
    let their_name = theirs.file_name().unwrap().to_str().unwrap().to_owned();
    assert_ne!(name, their_name);
    let saved = fs::read(&dict).unwrap();

    // Renamed: the blobs' dictionary is gone, and another name holds it.
    // Copied over: the blobs' dictionary's file holds another.
    let renamed = env.repo.join("dicts").join(&their_name);
    for (case, file, holds) in [("renamed", &renamed, &name), ("copied", &dict, &their_name)] {
        if case == "renamed" {
            fs::rename(&dict, &renamed).unwrap();
        } else {
            fs::copy(&theirs, &dict).unwrap();
        }
        let before = stored_files(&env);
        let out = env.run(&["check", "--read-data"]);
        let said = text(&out);
        exits(&out, 1);
        let file_name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            said.contains(&format!("dicts/{file_name} holds {holds}")),
            "{case}: {said}"
        );
        assert!(
            said.contains("Give each its own name back"),
            "{case}: {said}"
        );
        assert!(!said.contains("cairn repair packs"), "{case}: {said}");
        let report = env.json_any(&["check", "--read-data"]);
        let packs: Vec<&str> = report["salvageable_packs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(!packs.is_empty(), "{case}: {report}");
        // Run anyway, the repair stops and changes nothing.
        let mut args = vec!["repair", "packs"];
        args.extend(packs);
        let out = env.run(&args);
        let said = text(&out);
        exits(&out, 1);
        assert!(said.contains("renamed or copied over"), "{case}: {said}");
        assert!(
            said.contains("Nothing was dropped or deleted"),
            "{case}: {said}"
        );
        assert_eq!(
            stored_files(&env),
            before,
            "{case}: the repair changed files"
        );
        // Given its name back, every blob reads again.
        if case == "renamed" {
            fs::rename(&renamed, &dict).unwrap();
        } else {
            fs::write(&dict, &saved).unwrap();
        }
        check_read_data_ok(&env);
    }
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn a_dictionary_this_user_cannot_read_is_not_damage_and_repair_packs_deletes_nothing() {
    // Any failure to open a blob counted as damage: a dictionary this user
    // may not read made repair packs drop its blobs and delete an intact
    // pack.
    use std::os::unix::fs::{PermissionsExt, lchown};
    use std::os::unix::process::CommandExt;
    assert_root();
    let env = Env::with_format(2);
    let src = env.path("src");
    source_tree(&src, 1000, 7);
    env.backup(&[&src]);
    let packs_before: Vec<PathBuf> = walkdir::WalkDir::new(env.repo.join("data"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for p in [env.repo.as_path(), env.cache.as_path()] {
        for e in walkdir::WalkDir::new(p) {
            lchown(e.unwrap().path(), Some(65534), Some(65534)).unwrap();
        }
    }
    let dict = dict_files(&env)[0].clone();
    lchown(&dict, Some(0), Some(0)).unwrap();
    fs::set_permissions(&dict, fs::Permissions::from_mode(0o600)).unwrap();
    let as_nobody = |args: &[&str]| {
        env.cmd()
            .uid(65534)
            .gid(65534)
            .env("HOME", env.dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let names: Vec<String> = packs_before
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    let mut args = vec!["repair", "packs"];
    args.extend(names.iter().map(String::as_str));
    let out = as_nobody(&args);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    for p in &packs_before {
        assert!(p.exists(), "{} was deleted", p.display());
    }
    assert!(dict.exists());
    lchown(&dict, Some(65534), Some(65534)).unwrap();
    check_read_data_ok(&env);
}

#[test]
fn a_dictionary_read_that_fails_once_costs_repair_packs_no_blob() {
    // Blobs that did not open because one read of their dictionary failed
    // (memory, the wire) were counted lost, and their pack deleted, though
    // the dictionary read intact a moment later.
    let env = Env::with_format(2);
    let src = env.path("src");
    source_tree(&src, 1000, 5);
    env.backup(&[&src]);
    assert!(!dict_files(&env).is_empty());
    let pack = largest_pack(&env.repo);
    let len = fs::metadata(&pack).unwrap().len() as usize;
    flip_byte(&pack, len / 2);
    let name = pack.file_name().unwrap().to_str().unwrap().to_owned();
    let out = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "flip-read-once=dict")
        .args(["repair", "packs", &name])
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("reads intact now"), "{err}");
    assert!(pack.exists(), "the pack was deleted");
    // Without the fault, the repair loses only what the flip damaged.
    let r = env.json(&["repair", "packs", &name]);
    assert_eq!(r["lost"], 1, "{r}");
    assert!(!pack.exists());
}
