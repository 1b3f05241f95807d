//! `cairn serve`: the dashboard, the JSON API and the metrics of a real
//! repository, read over real HTTP from the real binary: what they show
//! matches what the CLI and the disk say, health turns on a missed RPO, a
//! missing pack and a failed check, running commands show with their
//! progress and locks, and a token guards every route.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The value of the metric line that starts with `prefix` (name and labels).
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .map(|l| l[prefix.len()..].trim().parse().unwrap())
}

/// Flips one bit in the middle of the largest pack; returns its path.
fn damage_biggest_pack(repo: &Path) -> PathBuf {
    let biggest = largest_pack(repo);
    let mut bytes = fs::read(&biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&biggest, &bytes).unwrap();
    biggest
}

fn findings(health: &Value) -> Vec<String> {
    health["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}: {}",
                f["level"].as_str().unwrap(),
                f["message"].as_str().unwrap()
            )
        })
        .collect()
}

fn hostname() -> String {
    let out = std::process::Command::new("hostname").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_dashboard_api_and_metrics_show_what_the_repository_holds() {
    let env = Env::new();
    let src = env.path("src");
    let other = env.path("other");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::create_dir_all(&other).unwrap();
    fs::write(src.join("a.txt"), "hello").unwrap();
    fs::write(src.join("sub/we ird&<name>.txt"), "x<y>&").unwrap();
    write_random(&src.join("big.bin"), 300_000, 1);
    write_random(&other.join("o.bin"), 50_000, 2);
    env.backup(&[&src]);
    fs::write(src.join("a.txt"), "hello again").unwrap();
    let second = env.backup(&[&src]);
    env.backup(&[&other]);
    env.assert_check_clean();

    let srv = Served::start(&env, &["--cache-for", "0s"]);
    let cli = snapshot_ids(&env);
    let api = srv.json("/api/v1/snapshots");
    let api_ids: Vec<String> = api
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        api_ids, cli,
        "the API lists what `cairn snapshots` lists, in order"
    );

    let o = srv.json("/api/v1/overview");
    let r = &o["repository"];
    assert_eq!(r["snapshots"], 3);
    assert_eq!(r["keys"], 1);
    let packs = packs(&env.repo);
    assert_eq!(r["packs"].as_u64().unwrap() as usize, packs.len());
    let on_disk: u64 = packs.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert_eq!(
        r["pack_bytes"].as_u64().unwrap(),
        on_disk,
        "sizes are the stored bytes"
    );
    assert_eq!(o["health"]["status"], "ok", "{o}");
    assert_eq!(o["last_check"]["ok"], true);
    assert_eq!(o["last_check"]["read_data"], "all");
    let sources = o["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{o}");
    let s = sources
        .iter()
        .find(|s| s["paths"][0] == src.to_str().unwrap())
        .unwrap();
    assert_eq!(s["snapshots"], 2);
    assert_eq!(s["latest"], second["snapshot_id"]);
    assert_eq!(s["latest_bytes"], second["total_bytes"]);
    assert_eq!(s["hostname"], hostname());
    assert!(o["operations"].as_array().unwrap().is_empty());
    assert!(o["locks"].as_array().unwrap().is_empty());

    // A directory of a snapshot, by ID prefix.
    let short = &second["short_id"].as_str().unwrap();
    let sub = src.join("sub");
    let ls = srv.json(&format!(
        "/api/v1/snapshots/{short}/ls?path={}",
        sub.to_str().unwrap().replace('/', "%2F")
    ));
    let entries = ls["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["name"], "we ird&<name>.txt");
    assert_eq!(entries[0]["size"], 5);
    let top = srv.json(&format!(
        "/api/v1/snapshots/latest/ls?path={}",
        other.display()
    ));
    assert_eq!(top["entries"][0]["name"], "o.bin");
    assert_eq!(top["entries"][0]["size"], 50_000);
    // Wrong names are 404 with a message, not a crash.
    let (status, body) = srv.get(&format!(
        "/api/v1/snapshots/{short}/ls?path={}/a.txt",
        src.display()
    ));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not a directory"), "{body}");
    assert_eq!(srv.status_of("/api/v1/snapshots/ffffffffff"), 404);
    assert_eq!(srv.status_of("/api/v1/snapshots/not-hex"), 404);

    // The dashboard names every snapshot and source; the snapshot page
    // escapes names it shows.
    let (status, html) = srv.get("/");
    assert_eq!(status, 200);
    for id in &cli {
        assert!(html.contains(&id[..8]), "dashboard lacks {id}");
    }
    assert!(html.contains(other.to_str().unwrap()));
    assert!(html.contains("badge ok"));
    let (status, page) = srv.get(&format!("/snapshots/{short}?path={}", sub.display()));
    assert_eq!(status, 200);
    assert!(page.contains("we ird&amp;&lt;name&gt;.txt"), "{page}");
    assert!(!page.contains("<name>"), "names are escaped");
    assert_eq!(srv.status_of("/snapshots/ffffffffff"), 404);

    let m = srv.get("/metrics").1;
    assert_eq!(metric(&m, "cairn_snapshots"), Some(3.0), "{m}");
    assert_eq!(metric(&m, "cairn_health_status"), Some(0.0));
    assert_eq!(metric(&m, "cairn_last_check_success"), Some(1.0));
    let label = format!(
        "{{hostname=\"{}\",paths=\"{}\"}}",
        hostname(),
        src.display()
    );
    assert_eq!(
        metric(&m, &format!("cairn_source_snapshots{label}")),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, &format!("cairn_source_latest_bytes{label}")),
        second["total_bytes"].as_f64()
    );
    assert_eq!(
        metric(&m, "cairn_repository_pack_bytes"),
        Some(on_disk as f64)
    );
    let took = metric(&m, &format!("cairn_source_latest_duration_seconds{label}")).unwrap();
    assert!((0.0..60.0).contains(&took), "{took}");

    let audit = srv.json("/api/v1/audit");
    let backups = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["command"] == "backup")
        .count();
    assert_eq!(backups, 3, "{audit}");

    // A snapshot written while the server runs is seen, and browsable.
    fs::write(other.join("new.txt"), "new").unwrap();
    let newest = env.backup(&[&other]);
    let latest = srv.json("/api/v1/snapshots/latest");
    assert_eq!(latest["id"], newest["snapshot_id"]);
    assert_eq!(srv.ls_names(other.to_str().unwrap()), ["new.txt", "o.bin"]);

    // Finding a file across snapshots: what `cairn find` finds, newest first.
    let cli_hits: u64 = env
        .json(&["find", "*.bin"])
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["hits"].as_u64().unwrap())
        .sum();
    let found = srv.json("/api/v1/find?pattern=*.bin");
    let matches = found["matches"].as_array().unwrap();
    assert_eq!(matches.len() as u64, cli_hits, "{found}");
    assert_eq!(found["truncated"], false);
    assert_eq!(
        matches[0]["snapshot"], newest["snapshot_id"],
        "newest first"
    );
    assert_eq!(matches[0]["name"], "o.bin");
    let one = srv.json("/api/v1/find?pattern=*.bin&limit=1");
    assert_eq!(one["matches"].as_array().unwrap().len(), 1);
    assert_eq!(one["truncated"], true);
    assert_eq!(srv.status_of("/api/v1/find"), 400);
    // A query that does not parse is an API error like the others: JSON.
    for (url, names) in [
        ("/api/v1/find?pattern=*&limit=abc", "limit"),
        ("/api/v1/snapshots/%FF/ls", "UTF-8"),
    ] {
        let (status, body) = srv.get(url);
        assert_eq!(status, 400, "{url}: {body}");
        let e: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"));
        assert!(e["error"].as_str().unwrap().contains(names), "{e}");
    }
    let (status, page) = srv.get("/find?pattern=we*");
    assert_eq!(status, 200);
    assert!(page.contains("we ird&amp;&lt;name&gt;.txt"), "{page}");
    assert!(
        page.contains("2 match(es)"),
        "in both snapshots of src: {page}"
    );
}

/// A snapshot record listed and gone when read was forgotten meanwhile (a
/// `forget` after each snapshot, by `watch --keep-*`): health said a record
/// could not be read and failed, paging someone for nothing.
#[test]
fn a_search_names_the_snapshots_it_could_search_only_in_part() {
    // A snapshot whose tree is gone was skipped without a word: "0
    // matches" where a copy of the file may well be. And `limit` had no
    // bound: `pattern=*` held every entry of every snapshot in memory.
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("thesis.pdf"), d.to_str().unwrap()).unwrap();
        env.backup(&[d]);
    }
    let tree = cairn_engine::Id::from_hex(&subtree_of(&env, &b)).unwrap();
    let pack = open_engine(&env)
        .index()
        .reader()
        .unwrap()
        .locate_tree(&tree)
        .unwrap()
        .pack
        .to_hex();
    let file = packs(&env.repo)
        .into_iter()
        .find(|p| p.file_name() == Some(OsStr::new(&pack)))
        .unwrap();
    fs::remove_file(file).unwrap();
    let srv = Served::start(&env, &["--cache-for", "0s"]);
    let found = srv.json("/api/v1/find?pattern=thesis.pdf");
    assert_eq!(found["matches"].as_array().unwrap().len(), 1, "{found}");
    let newest = &snapshot_ids(&env)[1];
    assert_eq!(
        found["incomplete"][0]["snapshot"],
        newest.as_str(),
        "{found}"
    );
    assert!(
        found["incomplete"][0]["error"]
            .as_str()
            .unwrap()
            .contains(&pack[..8]),
        "{found}"
    );
    let (status, page) = srv.get("/find?pattern=thesis.pdf");
    assert_eq!(status, 200);
    assert!(page.contains("searched only in part"), "{page}");
    let many = env.path("many");
    fs::create_dir_all(&many).unwrap();
    for i in 0..10_050 {
        fs::write(many.join(format!("f{i}")), b"").unwrap();
    }
    env.backup(&[&many]);
    let all = srv.json("/api/v1/find?pattern=f*&limit=1000000000");
    assert_eq!(all["matches"].as_array().unwrap().len(), 10_000);
    assert_eq!(all["truncated"], true);
}

#[test]
fn a_snapshot_forgotten_while_health_is_worked_out_is_no_failure() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    env.backup(&[&src]);
    // Every record answers "not found" when read, as if just forgotten.
    let srv = Served::start_with(&env, &["--cache-for", "0s"], "vanish-read=snapshot");
    let h = srv.json("/api/v1/health");
    assert_ne!(h["status"], "failing", "{h}");
    assert!(
        !findings(&h).iter().any(|f| f.contains("cannot be read")),
        "{h}"
    );
}

#[test]
fn health_fails_past_the_rpo_on_a_missing_pack_and_after_a_failed_check() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("f.bin"), 200_000, 3);
    let srv = Served::start(&env, &["--cache-for", "0s", "--rpo", "1h"]);
    // A backup of `dir` recorded at `time`.
    let backup_at = |dir: &Path, time: &str| {
        env.ok(&[
            OsStr::new("backup"),
            dir.as_os_str(),
            OsStr::new("--time"),
            OsStr::new(time),
        ]);
    };
    // Empty: nothing is wrong, but there is nothing to restore either.
    let h = srv.json("/api/v1/health");
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(findings(&h)[0].contains("no snapshot"), "{h}");

    // The newest snapshot of the source was taken two hours ago.
    let two_hours_ago = (chrono::Local::now() - chrono::Duration::hours(2))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    backup_at(&src, &two_hours_ago);
    let (status, body) = srv.get("/api/v1/health");
    assert_eq!(status, 503, "past the RPO the health check fails: {body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "failing");
    assert!(
        findings(&h)
            .iter()
            .any(|f| f.starts_with("error:") && f.contains("past the RPO")),
        "{h}"
    );
    let m = srv.get("/metrics").1;
    assert_eq!(metric(&m, "cairn_health_status"), Some(2.0));
    let label = format!(
        "{{hostname=\"{}\",paths=\"{}\"}}",
        hostname(),
        src.display()
    );
    assert_eq!(
        metric(&m, &format!("cairn_source_overdue{label}")),
        Some(1.0),
        "{m}"
    );
    // One made by a host whose clock is a year ahead does not hide it.
    let next_year = (chrono::Local::now() + chrono::Duration::days(365))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    backup_at(&src, &next_year);
    assert_eq!(srv.status_of("/api/v1/health"), 503);
    let m = srv.get("/metrics").1;
    let age = metric(&m, &format!("cairn_source_latest_age_seconds{label}")).unwrap();
    assert!((7000.0..8000.0).contains(&age), "{m}");
    // A new snapshot meets the RPO again.
    env.backup(&[&src]);
    assert_eq!(srv.status_of("/api/v1/health"), 200);

    // A damaged pack: the check that finds it turns the health.
    let biggest = damage_biggest_pack(&env.repo);
    env.fails(&["check", "--read-data"], 1);
    let (status, body) = srv.get("/api/v1/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the last check"), "{body}");
    assert_eq!(
        metric(&srv.get("/metrics").1, "cairn_last_check_success"),
        Some(0.0)
    );

    // A pack gone from the storage is found without any check.
    fs::remove_file(biggest).unwrap();
    let h = srv.get("/api/v1/health").1;
    assert!(h.contains("missing from the storage"), "{h}");

    // A source whose every snapshot is dated ahead cannot be said to meet
    // the RPO.
    let ahead = env.path("ahead");
    fs::create_dir_all(&ahead).unwrap();
    backup_at(&ahead, &next_year);
    let h = srv.get("/api/v1/health").1;
    assert!(h.contains("is dated in the future"), "{h}");
    let m = srv.get("/metrics").1;
    let ahead_label = format!(
        "{{hostname=\"{}\",paths=\"{}\"}}",
        hostname(),
        ahead.display()
    );
    assert_eq!(
        metric(&m, &format!("cairn_source_dated_ahead{ahead_label}")),
        Some(1.0),
        "{m}"
    );
}

/// Polls `/api/v1/operations` until `child` exits; returns every answer.
fn watch_operations(srv: &Served, child: &mut Child) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the command did not finish");
        seen.push(srv.json("/api/v1/operations"));
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

#[test]
fn running_commands_show_their_progress_and_locks() {
    let env = Env::uninit();
    env.ok(&["init", "--pack-size-mib", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..24 {
        write_random(&src.join(format!("f{i:02}.bin")), 1 << 20, 10 + i);
    }
    let snap = env.backup(&[&src]);
    let id = snap["snapshot_id"].as_str().unwrap().to_string();
    let srv = Served::start(&env, &["--cache-for", "0s"]);

    // A restore from slow storage: its progress and its lock show while it runs.
    let mut restore = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "slow-read=pack:400")
        // Reads one after another however many CPUs there are, so the
        // restore lasts long enough to be seen part-way.
        .env("RAYON_NUM_THREADS", "1")
        .args(["restore", &id, "--target"])
        .arg(env.path("restored"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = restore.id();
    let seen = watch_operations(&srv, &mut restore);
    assert!(restore.wait().unwrap().success());
    let ops: Vec<&Value> = seen
        .iter()
        .flat_map(|v| v["operations"].as_array().unwrap())
        .filter(|o| o["command"] == "restore")
        .collect();
    assert!(!ops.is_empty(), "the restore never showed: {seen:?}");
    for o in &ops {
        assert_eq!(o["pid"], pid);
        assert_eq!(o["snapshot"], id.as_str());
        assert_eq!(o["bytes_total"], snap["total_bytes"], "{o}");
    }
    let total = snap["total_bytes"].as_u64().unwrap();
    let done: Vec<u64> = ops
        .iter()
        .map(|o| o["bytes_done"].as_u64().unwrap())
        .collect();
    assert!(
        done.iter().any(|&d| d > 0 && d < total),
        "progress was seen part-way: {done:?} of {total}"
    );
    let lock = seen
        .iter()
        .flat_map(|v| v["locks"].as_array().unwrap())
        .find(|l| l["pid"] == pid)
        .expect("the restore's lock showed");
    assert_eq!(lock["command"], "restore");
    assert_eq!(lock["exclusive"], false);
    assert_eq!(lock["stale"], false);
    assert!(lock["started"].is_string());
    assert_restored(&src, &env.path("restored"));
    let after = srv.json("/api/v1/operations");
    assert!(
        after["operations"].as_array().unwrap().is_empty(),
        "{after}"
    );
    assert!(after["locks"].as_array().unwrap().is_empty(), "{after}");

    // A backup reading a stream: shown while it reads, with its lock; once
    // killed, it no longer shows as running and its lock shows as stale.
    let mut backup = env
        .cmd()
        .args(["backup", "--stdin", "--stdin-filename", "dump.sql"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = backup.id();
    let mut stdin = backup.stdin.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let op = loop {
        assert!(
            Instant::now() < deadline,
            "the backup never showed progress"
        );
        stdin.write_all(&[b'x'; 64 << 10]).unwrap();
        let v = srv.json("/api/v1/operations");
        let found = v["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["pid"] == pid && o["bytes_done"].as_u64().unwrap() > 0)
            .cloned();
        if let Some(o) = found {
            let lock = v["locks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["pid"] == pid)
                .cloned();
            break (o, lock.expect("a running backup holds a lock"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(op.0["command"], "backup");
    assert_eq!(op.1["command"], "backup");
    assert_eq!(op.1["stale"], false);
    backup.kill().unwrap();
    backup.wait().unwrap();
    drop(stdin);
    let o = srv.json("/api/v1/overview");
    assert!(
        o["operations"].as_array().unwrap().is_empty(),
        "a killed command is not running: {o}"
    );
    assert_eq!(o["locks"][0]["stale"], true, "{o}");
    assert_eq!(o["health"]["status"], "degraded");
    assert!(findings(&o["health"])[0].contains("cairn unlock"), "{o}");
    env.ok(&["unlock"]);
    assert_eq!(srv.json("/api/v1/health")["status"], "ok");
}

#[test]
fn a_lock_that_cannot_be_read_shows_and_fails_health_until_removed() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    env.backup(&[&src]);
    env.ok(&["check"]);
    // A lock that does not decrypt blocks every command: a dashboard that
    // left it out showed "ok" while every backup failed.
    let name = "ab".repeat(32);
    fs::write(env.repo.join("locks").join(&name), b"not a lock").unwrap();
    env.fails(&["backup", src.to_str().unwrap()], 11);

    let srv = Served::start(&env, &["--cache-for", "0s"]);
    let o = srv.json("/api/v1/overview");
    assert_eq!(o["unreadable_locks"][0]["name"], name.as_str(), "{o}");
    assert_eq!(o["unreadable_locks"][0]["stale"], false, "{o}");
    assert_eq!(o["health"]["status"], "failing", "{o}");
    let f = findings(&o["health"]);
    assert!(
        f.iter()
            .any(|f| f.contains(&format!("locks/{name}")) && f.contains("--remove-all")),
        "{f:?}"
    );
    assert_eq!(
        srv.json("/api/v1/operations")["unreadable_locks"][0]["name"],
        name.as_str()
    );
    let m = srv.get("/metrics").1;
    assert_eq!(
        metric(&m, "cairn_locks{kind=\"unreadable\",stale=\"false\"}"),
        Some(1.0),
        "{m}"
    );
    let page = srv.get("/").1;
    assert!(page.contains(&name) && page.contains("blocks every command"));

    // An hour old by the storage's clock it is stale: no command waits
    // for it, a warning says `cairn unlock` removes it.
    let lock = env.repo.join("locks").join(&name);
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let o = srv.json("/api/v1/overview");
    assert_eq!(o["unreadable_locks"][0]["stale"], true, "{o}");
    assert_eq!(o["health"]["status"], "degraded", "{o}");
    assert!(findings(&o["health"])[0].contains("cairn unlock"), "{o}");
    env.ok(&["backup", src.to_str().unwrap()]);
    assert!(!lock.exists(), "the backup removed the stale lock");
    fs::write(&lock, b"not a lock").unwrap();

    env.ok(&["unlock", "--remove-all"]);
    let o = srv.json("/api/v1/overview");
    assert!(o["unreadable_locks"].as_array().unwrap().is_empty(), "{o}");
    assert_eq!(o["health"]["status"], "ok", "{o}");
}

fn assert_restored(src: &Path, target: &Path) {
    assert_same_tree(src, &restored(target, src));
}

#[test]
fn a_token_guards_every_route() {
    let env = Env::new();
    let token = "0123456789abcdef0123456789abcdef";
    let file = env.path("token");
    fs::write(&file, format!("{token}\n")).unwrap();
    let mut srv = Served::start(&env, &["--token-file", file.to_str().unwrap()]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    env.backup(&[&src]);
    use base64::Engine;
    let basic = |user_pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    };
    let good_bearer = format!("Bearer {token}");
    let good_basic = basic(&format!("anyone:{token}"));
    let wrong = [
        // The same length as the token, one character off.
        "Bearer 0123456789abcdef0123456789abcdeF".to_string(),
        "Bearer wrong".to_string(),
        basic("anyone:0123456789abcdef0123456789abcdeF"),
        basic(token),
        format!("Token {token}"),
    ];
    let ls = format!("/api/v1/snapshots/latest/ls?path={}", src.display());
    for path in [
        "/",
        "/snapshots/latest",
        "/api/v1/overview",
        "/api/v1/health",
        "/api/v1/snapshots",
        "/api/v1/snapshots/latest",
        &ls,
        "/api/v1/operations",
        "/api/v1/audit",
        "/api/v1/find?pattern=a",
        "/find?pattern=a",
        "/metrics",
        "/no-such-route",
    ] {
        let (status, body, www) = srv.get_with(path, None);
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(
            www.unwrap().starts_with("Basic"),
            "browsers are asked for it"
        );
        for w in &wrong {
            assert_eq!(srv.get_with(path, Some(w)).0, 401, "{path} with {w}");
        }
        let expected = if path == "/no-such-route" { 404 } else { 200 };
        assert_eq!(srv.get_with(path, Some(&good_bearer)).0, expected, "{path}");
        assert_eq!(srv.get_with(path, Some(&good_basic)).0, expected, "{path}");
        // The scheme's name in any case (RFC 7235).
        let lower = format!("bearer {token}");
        assert_eq!(srv.get_with(path, Some(&lower)).0, expected, "{path}");
    }
    // SIGTERM stops the server with exit 0, and so does SIGHUP (a closed
    // session; it died by it).
    unsafe { libc::kill(srv.child.id() as i32, libc::SIGTERM) };
    assert!(srv.child.wait().unwrap().success());
    let mut hup = Served::start(&env, &["--token-file", file.to_str().unwrap()]);
    // Serving (its signal handlers set up) once it has answered.
    assert_eq!(hup.get_with("/api/v1/overview", Some(&good_bearer)).0, 200);
    unsafe { libc::kill(hup.child.id() as i32, libc::SIGHUP) };
    let status = hup.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    srv.auth = None;

    // Reachable from other machines: a token is required (a usage error).
    let err = env.fails(&["serve", "--listen", "0.0.0.0:0"], 2);
    assert!(err.contains("--token-file"), "{err}");
    fs::write(&file, "short").unwrap();
    let err = env.fails(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            file.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("shorter than 16"));

    // A host name is an address too (it was "invalid socket address
    // syntax"); one that names nothing is a usage error that says so.
    let mut named = env
        .cmd()
        .args(["--json", "serve", "--listen", "localhost:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(named.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["message_type"], "listening", "{v}");
    let address = v["address"].as_str().unwrap();
    assert!(
        address.starts_with("127.0.0.1:") || address.starts_with("[::1]:"),
        "{v}"
    );
    unsafe { libc::kill(named.id() as i32, libc::SIGTERM) };
    named.wait().unwrap();
    let err = env.fails(&["serve", "--listen", "no-such-host.invalid:8722"], 2);
    assert!(err.contains("not an address to listen on"), "{err}");
    // What the resolver would read another way than meant is refused.
    let err = env.fails(&["serve", "--listen", "fd00::10:1"], 2);
    assert!(err.contains("in brackets"), "{err}");
    for short in ["127.1:0", "0x7f000001:0", "0x7f.1:0"] {
        let err = env.fails(&["serve", "--listen", short], 2);
        assert!(err.contains("not a whole IP address"), "{short}: {err}");
    }
    let err = env.fails(&["serve", "--listen", "127.0.0.1:99999"], 2);
    assert!(err.contains("the port"), "{err}");
}

#[test]
fn without_a_token_only_requests_for_loopback_names_are_answered() {
    // A web page that points its own domain at 127.0.0.1 sends its own
    // name in Host (DNS rebinding): such requests are refused.
    let env = Env::new();
    let srv = Served::start(&env, &[]);
    let port = srv.base.rsplit(':').next().unwrap().to_string();
    for host in [
        "evil.example",
        "evil.example:80",
        &format!("attacker.test:{port}"),
    ] {
        let (status, body, _) = srv.get_with_host("/api/v1/health", host);
        assert_eq!(status, 403, "Host {host}: {body}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".into(),
    ] {
        let (status, body, _) = srv.get_with_host("/api/v1/health", &host);
        assert_eq!(status, 200, "Host {host}: {body}");
    }
}

#[test]
fn the_append_only_mode_shown_follows_the_repository() {
    // serve read the config once: switched on (or off) elsewhere, the
    // dashboard and the API kept showing the mode it started with.
    let env = Env::new();
    let srv = Served::start(&env, &["--cache-for", "0s"]);
    let mode = || {
        let (status, body) = srv.get("/api/v1/overview");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["repository"]["append_only"].clone()
    };
    assert_eq!(mode(), false);
    env.ok(&["config", "append-only", "on"]);
    assert_eq!(mode(), true);
    env.ok(&["config", "append-only", "off"]);
    assert_eq!(mode(), false);
}

#[test]
fn metric_labels_hold_any_path_safely() {
    // Quotes, backslashes and newlines are legal in file names; in a
    // label they must be escaped or the scrape breaks (or is forged).
    let env = Env::new();
    let src = env.path("we\"ird\\dir\nline} 1");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    env.backup(&[&src]);
    let srv = Served::start(&env, &[]);
    let (status, m) = srv.get("/metrics");
    assert_eq!(status, 200);
    let escaped = src
        .to_str()
        .unwrap()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    let line = format!(
        "cairn_source_snapshots{{hostname=\"{}\",paths=\"{escaped}\"}}",
        hostname()
    );
    assert_eq!(metric(&m, &line), Some(1.0), "{m}");
    // Every sample line is NAME[{LABELS}] VALUE with nothing left over.
    for l in m.lines().filter(|l| !l.starts_with('#')) {
        let value = l.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad line {l:?}");
        assert!(l.starts_with("cairn_"), "bad line {l:?}");
    }
}

#[test]
fn restore_tests_and_checks_are_shown_and_their_absence_warns() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        write_random(&src.join(format!("f{i}")), 100_000, 40 + i);
    }
    let snap = env.backup(&[&src]);
    let srv = Served::start(
        &env,
        &[
            "--cache-for",
            "0s",
            "--check-every",
            "1h",
            "--restore-test-every",
            "30d",
        ],
    );
    let h = srv.json("/api/v1/health");
    assert_eq!(h["status"], "degraded", "{h}");
    let f = findings(&h);
    assert!(
        f.iter()
            .any(|f| f.contains("no check has run on this machine in the last 1h")),
        "{h}"
    );
    // The part read turns with the day: a fixed `1/7` read the same
    // seventh every day.
    assert!(
        f.iter()
            .any(|f| f.contains(r#"--read-data-subset "$(date +%u)/7"` daily"#)),
        "{h}"
    );
    assert!(
        f.iter()
            .any(|f| f.contains("no restore test has run on this machine in the last 30d")),
        "{h}"
    );

    env.ok(&["check"]);
    env.ok(&["verify-restore"]);
    let o = srv.json("/api/v1/overview");
    assert_eq!(o["health"]["status"], "ok", "{o}");
    let t = &o["last_restore_test"];
    assert_eq!(t["ok"], true);
    assert_eq!(t["files"], 3);
    assert_eq!(t["bytes"], 300_000);
    assert_eq!(t["snapshots"][0], snap["snapshot_id"]);
    let m = srv.get("/metrics").1;
    assert_eq!(
        metric(&m, "cairn_last_restore_test_success"),
        Some(1.0),
        "{m}"
    );
    let (_, html) = srv.get("/");
    assert!(html.contains("Last restore test on this machine"), "{html}");

    // A restore test that fails turns the health, even after a good check.
    damage_biggest_pack(&env.repo);
    env.fails(&["verify-restore"], 1);
    let (status, body) = srv.get("/api/v1/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the last restore test"), "{body}");
    assert_eq!(
        metric(&srv.get("/metrics").1, "cairn_last_restore_test_success"),
        Some(0.0)
    );
}

/// Damage a check found stays a failure until a check that reads it again
/// passes: a plain check, or another part of a subset rotation, after it
/// turned the health back to ok with the damaged pack still there.
#[test]
fn a_failed_check_stands_until_a_check_reading_that_data_passes() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big"), 3_000_000, 9);
    env.backup(&[&src]);
    let srv = Served::start(&env, &["--cache-for", "0s"]);
    let pack = largest_pack(&env.repo);
    let good = fs::read(&pack).unwrap();
    damage_biggest_pack(&env.repo);
    env.fails(&["check", "--read-data"], 1);
    assert_eq!(srv.get("/api/v1/health").0, 503);

    // A plain check reads no pack: it passes, the damage is still there.
    env.ok(&["check"]);
    let (status, body) = srv.get("/api/v1/health");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("no check since has read that data and passed (`cairn check --read-data`)"),
        "{body}"
    );
    let m = srv.get("/metrics").1;
    assert_eq!(metric(&m, "cairn_last_check_success"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "cairn_checks_unresolved"), Some(1.0), "{m}");

    // The pack whole again and read: healthy.
    fs::write(&pack, &good).unwrap();
    env.ok(&["check", "--read-data"]);
    let h = srv.json("/api/v1/health");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(
        metric(&srv.get("/metrics").1, "cairn_checks_unresolved"),
        Some(0.0)
    );

    // A failure no pack read showed (here a pack missing; a store that did
    // not answer alike) is covered by any check that passes: a random
    // subset's failure needed a read of everything.
    let aside = env.path("pack-aside");
    fs::rename(&pack, &aside).unwrap();
    env.fails(&["check", "--read-data-subset", "5%"], 1);
    assert_eq!(srv.get("/api/v1/health").0, 503);
    fs::rename(&aside, &pack).unwrap();
    env.ok(&["check"]);
    let h = srv.json("/api/v1/health");
    assert_eq!(h["status"], "ok", "{h}");
}

/// Each source keeps its last restore test: a run that tests one source
/// no longer hides the failed test of another behind its pass.
#[test]
fn a_failed_restore_test_of_one_source_is_not_hidden_by_another_passing() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    write_random(&a.join("big"), 3_000_000, 7);
    write_random(&b.join("small"), 50_000, 8);
    let snap_a = env.backup(&[&a])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let snap_b = env.backup(&[&b])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let srv = Served::start(&env, &["--cache-for", "0s"]);

    // A's data damaged: its test fails; then B's passes.
    let pack = largest_pack(&env.repo);
    let good = fs::read(&pack).unwrap();
    damage_biggest_pack(&env.repo);
    env.fails(&["verify-restore", &snap_a], 1);
    env.ok(&["verify-restore", &snap_b]);
    let (status, body) = srv.get("/api/v1/health");
    assert_eq!(status, 503, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    let f = findings(&h);
    let about_a = format!(
        "error: the last restore test of {} on {} (snapshot {}, ",
        a.display(),
        hostname(),
        &snap_a[..8]
    );
    assert!(f.iter().any(|f| f.starts_with(&about_a)), "{h}");
    assert!(
        !f.iter().any(|f| f.contains(&b.display().to_string())),
        "{h}"
    );
    let o = srv.json("/api/v1/overview");
    assert_eq!(
        o["last_restore_test"]["ok"], true,
        "the last run passed: {o}"
    );
    let source = |p: &Path| {
        o["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["paths"][0] == p.display().to_string())
            .unwrap()["restore_test"]
            .clone()
    };
    assert_eq!(source(&a)["ok"], false, "{o}");
    assert_eq!(source(&a)["snapshot"], snap_a.as_str(), "{o}");
    assert_eq!(source(&b)["ok"], true, "{o}");
    let m = srv.get("/metrics").1;
    let labels = |p: &Path| {
        format!(
            "cairn_source_restore_test_success{{hostname=\"{}\",paths=\"{}\"}}",
            hostname(),
            p.display()
        )
    };
    assert_eq!(metric(&m, &labels(&a)), Some(0.0), "{m}");
    assert_eq!(metric(&m, &labels(&b)), Some(1.0), "{m}");
    let (_, html) = srv.get("/");
    assert!(html.contains("FAILED"), "{html}");

    // A tested again once its data is whole: healthy again.
    fs::write(&pack, &good).unwrap();
    env.ok(&["verify-restore", &snap_a]);
    let h = srv.json("/api/v1/health");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(
        metric(&srv.get("/metrics").1, &labels(&a)),
        Some(1.0),
        "{h}"
    );
}

/// An audit record that cannot be read is left out of the trail shown, and
/// said to be: the dashboard showed the rest as the whole trail.
#[test]
fn an_audit_record_that_cannot_be_read_is_counted_not_hidden() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    env.backup(&[&src]);
    let name = "cd".repeat(32);
    fs::write(env.repo.join("audit").join(&name), b"not a record").unwrap();

    let srv = Served::start(&env, &["--cache-for", "0s"]);
    let audit = srv.json("/api/v1/audit");
    assert_eq!(
        audit.as_array().unwrap().len(),
        2,
        "init and backup: {audit}"
    );
    let m = srv.get("/metrics").1;
    assert_eq!(metric(&m, "cairn_audit_records"), Some(2.0), "{m}");
    assert_eq!(
        metric(&m, "cairn_audit_records_unreadable"),
        Some(1.0),
        "{m}"
    );
    let page = srv.get("/").1;
    assert!(
        page.contains("1 audit record(s) left out") && page.contains(&name),
        "{page}"
    );

    fs::remove_file(env.repo.join("audit").join(&name)).unwrap();
    let m = srv.get("/metrics").1;
    assert_eq!(
        metric(&m, "cairn_audit_records_unreadable"),
        Some(0.0),
        "{m}"
    );
    assert!(!srv.get("/").1.contains("left out"));
}

/// A client that sent half a request and then nothing held a stop off
/// until it left (minutes, or for ever), and a second signal did nothing:
/// the requests under way are now waited for 10 s at most, and a second
/// SIGINT or SIGTERM stops at once.
#[test]
fn a_stalled_client_holds_no_stop_off() {
    let env = Env::new();
    for (second, within) in [(None, 30), (Some(libc::SIGINT), 8)] {
        let mut srv = Served::start(&env, &[]);
        // Serving (its signal handlers set up) once it has answered.
        assert_eq!(srv.get_with("/api/v1/overview", None).0, 200);
        let addr = srv.base.trim_start_matches("http://").to_string();
        let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
        stalled
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let began = Instant::now();
        // SAFETY: signals a child process of this test.
        unsafe { libc::kill(srv.child.id() as i32, libc::SIGTERM) };
        if let Some(sig) = second {
            std::thread::sleep(Duration::from_millis(500));
            // SAFETY: as above.
            unsafe { libc::kill(srv.child.id() as i32, sig) };
        }
        let status = loop {
            if let Some(s) = srv.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                began.elapsed() < Duration::from_secs(within),
                "still serving {within} s after the stop (second signal: {second:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0), "{status:?}");
        drop(stalled);
    }
}

/// A request stuck in a storage read (a hung NFS mount; here a snapshot
/// record whose read takes ten minutes) held the exit off after the drain,
/// and every signal after: only SIGKILL ended the server.
#[test]
fn a_request_stuck_in_a_storage_read_holds_no_stop_off() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    env.backup(&[&src]);
    let mark = env.path("reading");
    let faults = format!(
        "slow-read=snapshot:600000,slow-read-mark={}",
        mark.display()
    );
    let mut srv = Served::start_with(&env, &["--cache-for", "0s"], &faults);
    // Serving (its signal handlers set up) once it has answered: a request
    // for another host is refused before any repository read.
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut probe = std::net::TcpStream::connect(&addr).unwrap();
    probe
        .write_all(
            b"GET /api/v1/health HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut probe, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let url = format!("{}/api/v1/snapshots", srv.base);
    std::thread::spawn(move || {
        let _ = ureq::get(&url).call();
    });
    let waited = Instant::now();
    while !mark.exists() {
        assert!(waited.elapsed() < Duration::from_secs(30), "no stuck read");
        std::thread::sleep(Duration::from_millis(20));
    }
    let began = Instant::now();
    // SAFETY: signals a child process of this test.
    unsafe { libc::kill(srv.child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = srv.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "still serving 30 s after the stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// A client that sends half a request, or nothing, is cut off after 10 s:
/// each held its connection for ever, and a few hundred of them starved
/// the server, token or not.
#[test]
fn a_client_that_never_finishes_its_request_is_cut_off() {
    use std::io::Read;
    let env = Env::new();
    let srv = Served::start(&env, &[]);
    let addr = srv.base.trim_start_matches("http://").to_string();
    let open = |first: &[u8]| {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.write_all(first).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        c
    };
    let mut clients = [
        open(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: "),
        open(b""),
    ];
    let began = Instant::now();
    for c in &mut clients {
        // The server closes it (after a 408 answer, or none).
        let mut buf = Vec::new();
        let read = c.read_to_end(&mut buf);
        assert!(
            read.is_ok(),
            "still open after {:?}: {read:?}",
            began.elapsed()
        );
    }
    assert!(began.elapsed() < Duration::from_secs(30));
    // Others are served as before.
    assert_eq!(srv.get("/api/v1/health").0, 200);
}
