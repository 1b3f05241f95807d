//! Repositories in S3-compatible object storage, against a real Garage
//! server on loopback (`CAIRN_GARAGE` names the binary; tests/run-all.sh
//! installs it with `cargo install garage --locked` when missing).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use common::*;

const KEY_ID: &str = "GKca1f0000000000000000c0de";
const SECRET: &str = "5ec7e70000000000000000000000000000000000000000000000000000c0ffee";
const BUCKET: &str = "cairn";

fn garage_bin() -> PathBuf {
    std::env::var_os("CAIRN_GARAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("garage"))
}

/// A single-node Garage cluster in a scratch directory.
struct Garage {
    dir: tempfile::TempDir,
    s3_port: u16,
    server: Option<Child>,
}

/// A free port for a server, below the kernel's ephemeral range (which
/// starts at 32768 by default), so that no outgoing connection of a test
/// running alongside takes it between this check and the server's bind
/// (as one from the ephemeral range could), and a different one per call.
fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let n = std::process::id() * 97 + u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = 20000 + (n % 12000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Garage {
    fn start() -> Garage {
        static CREDENTIALS: Once = Once::new();
        CREDENTIALS.call_once(|| {
            // SAFETY: set once, before any test thread starts a cairn process
            // that reads them; every server imports the same key.
            unsafe {
                std::env::set_var("AWS_ACCESS_KEY_ID", KEY_ID);
                std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
                std::env::set_var("AWS_DEFAULT_REGION", "garage");
                std::env::remove_var("AWS_PROFILE");
            }
        });
        let dir = tempfile::Builder::new()
            .prefix("cairn-test-garage-")
            .tempdir()
            .unwrap();
        let (rpc, s3) = (free_port(), free_port());
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("garage.toml"),
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"lmdb\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n"
            ),
        )
        .unwrap();
        let mut g = Garage {
            dir,
            s3_port: s3,
            server: None,
        };
        g.run_server();
        // `node id` reads the node's key from disk: the server may not
        // answer yet (a loaded machine: "Connection refused").
        let node = g.admin_retrying(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_string();
        g.admin_retrying(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.admin(&["layout", "apply", "--version", "1"]);
        g.admin_retrying(&["bucket", "create", BUCKET]);
        g.admin(&["key", "import", "--yes", "-n", "cairn", KEY_ID, SECRET]);
        g.admin(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "cairn",
        ]);
        g
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    fn run_server(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(self.config())
            .arg("server")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start Garage ({}): {e}; tests/run-all.sh installs it, or set CAIRN_GARAGE",
                    garage_bin().display()
                )
            });
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            assert!(Instant::now() < deadline, "Garage did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Admin commands right after start may race the node's own startup.
    fn admin_retrying(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(garage_bin())
                .arg("-c")
                .arg(self.config())
                .args(args)
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "garage {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A repository location under its own prefix of the bucket.
    fn repo(&self, prefix: &str) -> PathBuf {
        PathBuf::from(format!(
            "s3:http://127.0.0.1:{}/{BUCKET}/{prefix}",
            self.s3_port
        ))
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An uninitialised scratch environment whose repository lives on `g`.
fn s3_env(g: &Garage, prefix: &str) -> Env {
    let mut env = Env::uninit();
    env.repo = g.repo(prefix);
    env.ok(&["init"]);
    env
}

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    for i in 0..40u64 {
        write_random(&root.join(format!("a/f{i}")), 3000 + i as usize * 97, i);
    }
    write_random(&root.join("a/b/big"), 5 << 20, 99);
    std::fs::write(root.join("a/b/small.txt"), b"hello object storage\n").unwrap();
}

fn cached_packs(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(repos) = std::fs::read_dir(cache) else {
        return out;
    };
    for r in repos.flatten() {
        let data = r.path().join("objects/data");
        for sub in std::fs::read_dir(&data).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(sub.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push(f.path());
            }
        }
    }
    out
}

#[test]
fn backup_restore_check_and_a_verified_cache_on_garage() {
    let g = Garage::start();
    let env = s3_env(&g, "roundtrip");
    let src = env.path("src");
    tree(&src);
    let first = env.backup(&[&src]);
    assert!(first["data_added"].as_u64().unwrap() > 5 << 20, "{first}");
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &restored(&out, &src));

    // Browsing reads trees from packs cached locally, verified on use: a
    // damaged cached copy is dropped and fetched again, never believed.
    let listing = env.ok(&["ls", "latest"]);
    assert!(listing.contains("small.txt"), "{listing}");
    let packs = cached_packs(&env.cache);
    assert!(
        !packs.is_empty(),
        "tree packs are cached under {:?}",
        env.cache
    );
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let n = b.len();
        b[n - 40] ^= 0xff;
        b[n / 2] ^= 0xff;
        std::fs::write(p, b).unwrap();
    }
    let again = env.ok(&["ls", "latest"]);
    assert_eq!(listing, again);

    // An unchanged second backup adds nothing; a change adds little.
    std::fs::write(src.join("a/b/small.txt"), b"changed\n").unwrap();
    let second = env.backup(&[&src]);
    assert!(second["data_added"].as_u64().unwrap() < 1 << 20, "{second}");
    let check = env.ok(&["check", "--read-data"]);
    assert!(check.contains("no errors were found"), "{check}");
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2);

    // Keys in the environment come before a named profile's (the SDKs'
    // order): said, not silently ignored.
    let out = env
        .cmd()
        .args(["--s3-profile", "elsewhere", "snapshots"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("not those of --s3-profile elsewhere"), "{err}");
}

#[test]
fn forget_prune_and_copy_on_garage() {
    let g = Garage::start();
    let env = s3_env(&g, "prune");
    let src = env.path("src");
    tree(&src);
    env.backup(&[&src]);
    std::fs::remove_file(src.join("a/b/big")).unwrap();
    write_random(&src.join("a/b/big2"), 3 << 20, 7);
    env.backup(&[&src]);
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert_holds(&env, &src);

    // Replication from object storage to a local repository with another key.
    let mut local = Env::new();
    local.password = "another password".into();
    let _ = std::fs::remove_dir_all(&local.repo);
    local.ok(&["init"]);
    let copy = |dst: &Env| {
        let out = dst
            .cmd()
            .env("CAIRN_FROM_PASSWORD", &env.password)
            .args(["--json", "copy", "--from-repo"])
            .arg(&env.repo)
            .output()
            .unwrap();
        assert_no_panic(&out);
        assert!(
            out.status.success(),
            "copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        serde_json::from_str::<serde_json::Value>(s.lines().last().unwrap()).unwrap()
    };
    let first = copy(&local);
    assert_eq!(first["snapshots_copied"], 1, "{first}");
    let second = copy(&local);
    assert_eq!(second["snapshots_copied"], 0, "{second}");
    let out2 = local.path("out");
    local.restore("latest", &out2);
    assert_same_tree(&src, &restored(&out2, &src));
}

/// A second bucket with a key of its own, which the default key cannot use.
const OTHER_BUCKET: &str = "elsewhere";
const OTHER_KEY_ID: &str = "GKca1f00000000000000000b0b";
const OTHER_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Cross-account replication: the source lives in a bucket only its own
/// keys reach, given to `copy` as CAIRN_FROM_AWS_*; the destination uses the
/// environment's. The source's region is its own too (--from-s3-region).
#[test]
fn copy_from_a_bucket_with_keys_and_region_of_its_own() {
    let g = Garage::start();
    g.admin(&["bucket", "create", OTHER_BUCKET]);
    g.admin(&[
        "key",
        "import",
        "--yes",
        "-n",
        "other",
        OTHER_KEY_ID,
        OTHER_SECRET,
    ]);
    g.admin(&[
        "bucket",
        "allow",
        "--read",
        "--write",
        "--owner",
        OTHER_BUCKET,
        "--key",
        "other",
    ]);
    let mut source = Env::uninit();
    source.repo = PathBuf::from(format!(
        "s3:http://127.0.0.1:{}/{OTHER_BUCKET}/src",
        g.s3_port
    ));
    let as_other = |args: &[&str]| {
        stdout_of(
            source
                .cmd()
                .env("AWS_ACCESS_KEY_ID", OTHER_KEY_ID)
                .env("AWS_SECRET_ACCESS_KEY", OTHER_SECRET)
                .args(args),
        )
    };
    as_other(&["init"]);
    let src = source.path("src");
    tree(&src);
    as_other(&["backup", src.to_str().unwrap()]);

    let dest = s3_env(&g, "replica");
    let copy = |dest: &Env, extra: &[(&str, &str)], args: &[&str]| {
        let mut c = dest.cmd();
        c.env("CAIRN_FROM_PASSWORD", &source.password);
        for (k, v) in extra {
            c.env(k, v);
        }
        let out = c
            .args(["copy", "--from-repo"])
            .arg(&source.repo)
            .args(args)
            .output()
            .unwrap();
        assert_no_panic(&out);
        out
    };
    // The environment's keys cannot read the source: the message says
    // where the source's own keys go.
    let denied = copy(&dest, &[], &[]);
    let err = exits(&denied, 1);
    assert!(err.contains("source repository"), "{err}");
    assert!(err.contains("CAIRN_FROM_AWS_ACCESS_KEY_ID"), "{err}");
    // The source's keys refused: the hint names them, not the
    // environment's variables, which are not the ones to check.
    let wrong = copy(
        &dest,
        &[
            ("CAIRN_FROM_AWS_ACCESS_KEY_ID", OTHER_KEY_ID),
            ("CAIRN_FROM_AWS_SECRET_ACCESS_KEY", &OTHER_SECRET[1..]),
        ],
        &[],
    );
    let err = exits(&wrong, 1);
    assert!(
        err.contains("check the credentials, CAIRN_FROM_AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(!err.contains("credentials, AWS_ACCESS_KEY_ID"), "{err}");
    // Half the pair, or a session token alone, is refused before anything
    // is read; so is a source setting that makes no sense, named as the
    // source's.
    for half in [
        ("CAIRN_FROM_AWS_ACCESS_KEY_ID", OTHER_KEY_ID),
        ("CAIRN_FROM_AWS_SESSION_TOKEN", "token"),
    ] {
        let out = copy(&dest, &[half], &[]);
        let err = exits(&out, 1);
        assert!(err.contains("CAIRN_FROM_AWS_SECRET_ACCESS_KEY"), "{err}");
    }
    let out = copy(&dest, &[], &["--from-s3-bucket-lookup", "sideways"]);
    let err = exits(&out, 2);
    assert!(
        err.contains("source repository") && err.contains("sideways"),
        "{err}"
    );
    assert!(dest.json(&["snapshots"]).as_array().unwrap().is_empty());

    let keys = [
        ("CAIRN_FROM_AWS_ACCESS_KEY_ID", OTHER_KEY_ID),
        ("CAIRN_FROM_AWS_SECRET_ACCESS_KEY", OTHER_SECRET),
    ];
    let done = copy(&dest, &keys, &[]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_holds(&dest, &src);

    // Into a local repository, with --s3-region naming a region Garage
    // refuses: the source fails with it, and works with its own.
    let local = Env::new();
    let wrong = copy(&local, &keys, &["--s3-region", "nowhere"]);
    exits(&wrong, 1);
    let done = copy(
        &local,
        &keys,
        &["--s3-region", "nowhere", "--from-s3-region", "garage"],
    );
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_holds(&dest, &src);
}

#[test]
fn a_server_killed_mid_backup_fails_clearly_and_the_repository_recovers() {
    let mut g = Garage::start();
    let env = s3_env(&g, "killed");
    let src = env.path("src");
    tree(&src);
    for i in 0..3 {
        write_random(&src.join(format!("a/more{i}")), 6 << 20, 100 + i);
    }
    // Stall the second object write long enough to kill the server under it.
    let child = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "stall-write=2:3000")
        .env("CAIRN_S3_TIMEOUT", "5")
        .arg("backup")
        .arg(&src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    g.kill();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&out);
    assert!(!out.status.success(), "backup succeeded without a server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gave up after 5s"), "{err}");
    // One budget, not one more for each call after (removing its lock,
    // writing its audit record): it took 3.7 of them.
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "took {:?} to give up",
        started.elapsed()
    );

    g.run_server();
    // The crash left no snapshot and nothing that looks complete but is not.
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
    let check = env.ok(&["check", "--read-data"]);
    assert!(check.contains("no errors were found"), "{check}");
    env.backup(&[&src]);
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &restored(&out, &src));
    env.ok(&["check", "--read-data"]);
}

/// Runs `cairn ARGS` with each pack read waiting 1 s before it goes out,
/// and stops the server once the first one is waiting (the listings are
/// done by then), so that the pack reads meet a dead server. Returns the
/// command's output (checked for panics) and how long it ran after that.
fn stop_server_at_first_pack_read(g: &mut Garage, env: &Env, args: &[&str]) -> (Output, Duration) {
    let mark = env.path("reading");
    let child = env
        .cmd()
        .env(
            "CAIRN_TEST_FAULTS",
            format!("slow-read=pack:1000,slow-read-mark={}", mark.display()),
        )
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(
        &mark,
        Duration::from_secs(60),
        &format!("{args:?} read no pack"),
    );
    g.kill();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&out);
    (out, started.elapsed())
}

/// Ctrl-C while every attempt fails (the server gone): a restore or a
/// backup stops within seconds, exit 130, instead of retrying out its
/// whole `--s3-timeout` and exiting 1 (a second Ctrl-C was the only way).
#[test]
fn ctrl_c_stops_a_restore_or_backup_retrying_against_a_dead_server() {
    let mut g = Garage::start();
    let env = s3_env(&g, "interrupted");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("f"), 2 << 20, 41);
    env.backup(&[&src]);
    let interrupt = |child: Child| {
        // Long enough for the calls under way to be retrying.
        std::thread::sleep(Duration::from_secs(3));
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success());
        let started = Instant::now();
        let out = child.wait_with_output().unwrap();
        assert_no_panic(&out);
        (out, started.elapsed())
    };

    let mark = env.path("reading");
    let t = env.path("t");
    let restore = env
        .cmd()
        .env(
            "CAIRN_TEST_FAULTS",
            format!("slow-read=pack:1000,slow-read-mark={}", mark.display()),
        )
        .args(["--s3-timeout", "120", "--no-cache", "restore", "latest"])
        .arg("--target")
        .arg(&t)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&mark, Duration::from_secs(60), "the restore read no pack");
    g.kill();
    let (out, took) = interrupt(restore);
    exits(&out, 130);
    assert!(
        took < Duration::from_secs(30),
        "restore took {took:?} to stop"
    );

    g.run_server();
    write_random(&src.join("g"), 2 << 20, 42);
    let backup = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "stall-write=2:2000")
        .args(["--s3-timeout", "120", "backup"])
        .arg(&src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    g.kill();
    let (out, took) = interrupt(backup);
    exits(&out, 130);
    assert!(
        took < Duration::from_secs(30),
        "backup took {took:?} to stop"
    );

    // Nothing of it is taken for damage, and the next backup completes.
    g.run_server();
    env.assert_check_clean();
    env.backup(&[&src]);
}

#[test]
fn a_server_gone_during_a_check_is_given_up_on_once_not_once_per_pack() {
    let mut g = Garage::start();
    let env = s3_env(&g, "gone");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // A pack or two per backup.
    for i in 0..8u64 {
        write_random(&src.join(format!("f{i}")), 200_000, 300 + i);
        env.backup(&[&src]);
    }
    // The 1 s wait of each pack read is shorter than an attempt (2 s at
    // --s3-timeout 6), so that reads come while others are refused, one
    // reader thread or several.
    let (out, took) = stop_server_at_first_pack_read(
        &mut g,
        &env,
        &["--s3-timeout", "6", "--no-cache", "check", "--read-data"],
    );
    assert!(!out.status.success(), "check passed without a server");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The first calls waited their budget and say what failed; the ones
    // after were not sent, instead of each waiting 3 s more.
    assert!(said.contains("gave up after"), "{said}");
    assert!(said.contains("the last attempt:"), "{said}");
    assert!(said.matches("not sent: the last").count() >= 2, "{said}");
    // The cause, from under the HTTP client's "error sending request".
    assert!(said.contains("Connection refused"), "{said}");
    // Unread is not damaged.
    assert!(said.contains("not known to be damaged"), "{said}");
    assert!(took < Duration::from_secs(90), "took {took:?}");
    g.run_server();
    env.assert_check_clean();
}

#[test]
fn a_large_read_from_a_dead_server_gives_up_after_the_timeout_not_its_transfer_time() {
    let mut g = Garage::start();
    let env = s3_env(&g, "large");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big"), 40 << 20, 7);
    env.backup(&[&src]);
    let out_dir = env.path("out");
    let (out, took) = stop_server_at_first_pack_read(
        &mut g,
        &env,
        &[
            "--s3-timeout",
            "3",
            "--no-cache",
            "restore",
            "latest",
            "--target",
            out_dir.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "restored without a server");
    let err = String::from_utf8_lossy(&out.stderr);
    // The call reported is the one that failed last: the 3 s budget, or one
    // attempt when a call running beside it (a lock check, another read)
    // had already given up.
    assert!(
        err.contains("gave up after 3s") || err.contains("as an earlier call had given up"),
        "{err}"
    );
    // Reads of several MiB are given time to move them at --s3-min-rate
    // (64 KiB/s: minutes), which a server refusing every attempt used up
    // in full.
    assert!(took < Duration::from_secs(60), "took {took:?}: {err}");
    g.run_server();
    env.assert_check_clean();
}

#[test]
fn a_wrong_region_or_refused_credentials_are_named() {
    let g = Garage::start();
    let env = s3_env(&g, "region");
    // Garage answers a bare 400 (a HEAD request, no reason given).
    for args in [
        &["--s3-region", "us-east-1", "snapshots"][..],
        &["--s3-region", "us-east-1", "init"][..],
    ] {
        let out = env.run(args);
        let err = exits(&out, 1);
        assert!(
            err.contains(
                "signed for another region than the server's: this one is signed for us-east-1"
            ),
            "{args:?}: {err}"
        );
    }
    assert!(env.json(&["snapshots"]).as_array().unwrap().is_empty());
    // Credentials the server turns away: the raw 403 named no variable.
    let out = env
        .cmd()
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .arg("snapshots")
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(
        err.contains("access denied: check the credentials, AWS_ACCESS_KEY_ID"),
        "{err}"
    );

    // Without a region in the environment, a profile's region in the AWS
    // config file is the one signed for (`[default]` unless one is named);
    // it had been ignored, and us-east-1 signed for.
    let config = env.path("aws-config");
    std::fs::write(
        &config,
        "[default]\nregion = us-east-1\n\n[profile garage]\nregion = garage\n",
    )
    .unwrap();
    let with_config = |args: &[&str]| {
        let mut c = env.cmd();
        c.env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_REGION")
            .env("AWS_CONFIG_FILE", &config)
            .args(args);
        let out = c.output().unwrap();
        assert_no_panic(&out);
        out
    };
    let out = with_config(&["--s3-profile", "garage", "snapshots"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = exits(&with_config(&["snapshots"]), 1);
    assert!(err.contains("signed for us-east-1"), "{err}");
    std::fs::write(&config, "[default]\nregion = garage\n").unwrap();
    let out = with_config(&["snapshots"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_bucket_is_named_and_not_taken_for_a_repository_to_init() {
    let g = Garage::start();
    let mut env = Env::uninit();
    env.repo = PathBuf::from(format!(
        "s3:http://127.0.0.1:{}/no-such-bucket/repo",
        g.s3_port
    ));
    for args in [&["snapshots"][..], &["init"][..]] {
        let out = env.run(args);
        let err = exits(&out, 10);
        assert!(err.contains("the bucket does not exist"), "{args:?}: {err}");
        assert!(!err.contains("create one with"), "{args:?}: {err}");
    }
    // The bucket's own repository is there to init.
    env.repo = g.repo("fresh");
    env.ok(&["init"]);
    assert!(env.json(&["snapshots"]).as_array().unwrap().is_empty());

    // A 404 page from something that is not S3 (a web server on that port,
    // a proxy whose store is down) is not a missing bucket: exit 1, not
    // the advice to create one.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 8192];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\
                  Content-Length: 22\r\nConnection: close\r\n\r\n<h1>404 Not Found</h1>",
            );
        }
    });
    env.repo = PathBuf::from(format!("s3:http://127.0.0.1:{port}/cairn/repo"));
    let out = env.run(&["snapshots"]);
    let err = exits(&out, 1);
    assert!(err.contains("without S3's NoSuchBucket code"), "{err}");
    assert!(!err.contains("the bucket does not exist"), "{err}");
}

/// Whether a cairn FUSE filesystem is mounted at `path`.
fn fuse_mounted(path: &Path) -> bool {
    let want = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()) && l.contains(" - fuse"))
}

/// Waits up to `secs` for `child` to exit; kills it if it does not.
fn exits_within(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn interrupt(child: &Child) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
}

#[test]
fn find_diff_dump_repair_mount_and_watch_on_garage() {
    let g = Garage::start();
    let env = s3_env(&g, "views");
    let src = env.path("src");
    tree(&src);
    env.backup(&[&src]);
    std::fs::write(src.join("a/b/small.txt"), b"changed in object storage\n").unwrap();
    env.backup(&[&src]);
    let snaps = env.json(&["snapshots"]);
    let ids: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);

    let found = env.ok(&["find", "small.txt"]);
    assert!(found.contains("a/b/small.txt"), "{found}");
    let diff = env.ok(&["diff", ids[0], ids[1]]);
    assert!(diff.contains("a/b/small.txt"), "{diff}");
    assert!(!diff.contains("a/f1"), "only the changed file: {diff}");
    let small = format!("{}/a/b/small.txt", src.display());
    let out = env.cmd().args(["dump", "latest", &small]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"changed in object storage\n");
    let big = format!("{}/a/b/big", src.display());
    let out = env.cmd().args(["dump", ids[0], &big]).output().unwrap();
    assert_eq!(out.stdout, std::fs::read(src.join("a/b/big")).unwrap());

    // The local index and cache lost: rebuilt from the bucket, nothing lost.
    std::fs::remove_dir_all(&env.cache).unwrap();
    env.ok(&["repair", "index"]);
    let dry = env.json(&["repair", "snapshots", "--dry-run"]);
    assert!(dry["repaired"].as_array().unwrap().is_empty(), "{dry}");
    let check = env.ok(&["check", "--read-data"]);
    assert!(check.contains("no errors were found"), "{check}");

    // Browsing through FUSE.
    assert!(
        is_root(),
        "run as root (tests/run-all.sh): the test mounts FUSE"
    );
    let mnt = env.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut m = env
        .cmd()
        .arg("mount")
        .arg(&mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fuse_mounted(&mnt) {
        assert!(m.try_wait().unwrap().is_none(), "cairn mount exited");
        assert!(Instant::now() < deadline, "not mounted after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let inside = mnt.join("latest").join(src.strip_prefix("/").unwrap());
    let read = std::fs::read(inside.join("a/b/big"));
    let small_read = std::fs::read(inside.join("a/b/small.txt"));
    interrupt(&m);
    assert!(exits_within(&mut m, 30).is_some_and(|s| s.success()));
    assert_eq!(read.unwrap(), std::fs::read(src.join("a/b/big")).unwrap());
    assert_eq!(small_read.unwrap(), b"changed in object storage\n");

    // Continuous protection into the bucket.
    let mut w = env
        .cmd()
        .args(["--json", "watch"])
        .arg(&src)
        .args(["--debounce", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = w.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let next = |kinds: &[&str]| loop {
        let v = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no {kinds:?} event from cairn watch"));
        assert_ne!(v["message_type"], "snapshot_failed", "{v}");
        if kinds.iter().any(|k| v["message_type"] == *k) {
            return v;
        }
    };
    next(&["watching"]);
    // The first full pass finds the tree as the last backup left it.
    let first = next(&["snapshot", "unchanged"]);
    assert_eq!(first["full_rescan"], true, "{first}");
    std::fs::write(src.join("a/new.txt"), b"written while watched\n").unwrap();
    let snap = next(&["snapshot"]);
    assert_eq!(snap["full_rescan"], false, "{snap}");
    interrupt(&w);
    assert!(exits_within(&mut w, 60).is_some_and(|s| s.success()));
    let new = format!("{}/a/new.txt", src.display());
    let id = snap["snapshot_id"].as_str().unwrap();
    let out = env.cmd().args(["dump", id, &new]).output().unwrap();
    assert_eq!(out.stdout, b"written while watched\n", "{snap}");

    // The dashboard's view of the bucket.
    let srv = Served::start(&env, &["--cache-for", "0s"]);
    let o = srv.json("/api/v1/overview");
    assert!(
        o["repository"]["location"]
            .as_str()
            .unwrap()
            .starts_with("s3:"),
        "{o}"
    );
    let listed = env.json(&["snapshots"]).as_array().unwrap().len();
    assert_eq!(o["repository"]["snapshots"], listed, "{o}");
    assert_eq!(o["health"]["status"], "ok", "{o}");
    assert_eq!(o["sources"][0]["latest"], id, "{o}");
    let names = srv.ls_names(&format!("{}/a", src.display()));
    assert!(names.iter().any(|n| n == "new.txt"), "{names:?}");
}

/// What [`faulty_proxy`] does to a `PUT` whose body is at least a given size.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Passes the body on at this many bytes per second (a slow uplink).
    Slow(usize),
    /// Changes one byte of the first such body (a network path or
    /// middlebox that damages data on the way).
    Damage,
    /// Never passes any such request on, nor answers it (a connection that
    /// hangs mid-upload).
    Stall,
    /// Passes every answer on at this many bytes per second (a slow
    /// downlink); requests go through as they are.
    SlowDown(usize),
    /// Answers the first this many `GET`s of packs itself with a plain
    /// 404 page, as a reverse proxy does while the store behind it
    /// restarts (whatever `min_body`).
    NotFoundPage(usize),
    /// Passes everything on as it is, counting the one-byte `GET`s
    /// (`range: bytes=0-0`) that confirm a `HEAD`'s 404.
    CountProbes,
}

/// A TCP proxy in front of `upstream` that applies `fault` to `PUT`s whose
/// body is at least `min_body` bytes long. Returns its port and the number
/// of requests the fault hit.
fn faulty_proxy(upstream: u16, min_body: usize, fault: Fault) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let (mut s_in, mut c_out) = (server, client);
                let _ = match fault {
                    Fault::SlowDown(rate) => throttled_copy(&mut s_in, &mut c_out, rate),
                    _ => std::io::copy(&mut s_in, &mut c_out).map(|_| ()),
                };
                let _ = c_out.shutdown(std::net::Shutdown::Both);
            });
            let counter = counter.clone();
            std::thread::spawn(move || {
                let _ = forward_requests(&mut c_in, &mut s_out, min_body, fault, &counter);
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, hits)
}

/// Copies `from` to `to` at `rate` bytes per second, a tenth of a second's
/// worth at a time.
fn throttled_copy(from: &mut TcpStream, to: &mut TcpStream, rate: usize) -> std::io::Result<()> {
    let mut buf = vec![0u8; (rate / 10).max(1)];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Copies HTTP/1.1 requests from `from` to `to`, applying `fault` (see
/// [`faulty_proxy`]). A chunked body is passed on untouched.
fn forward_requests(
    from: &mut TcpStream,
    to: &mut TcpStream,
    min_body: usize,
    fault: Fault,
    hits: &AtomicUsize,
) -> std::io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // The head of the next request.
        let end = loop {
            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = from.read(&mut buf)?;
            if n == 0 {
                return to.write_all(&pending);
            }
            pending.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let big_put = head.starts_with("put ") && length >= min_body;
        if fault == Fault::CountProbes
            && head.starts_with("get ")
            && head.contains("range: bytes=0-0")
        {
            hits.fetch_add(1, Ordering::SeqCst);
        }
        if let Fault::NotFoundPage(n) = fault
            && head.starts_with("get ")
            && head
                .split(['?', ' '])
                .nth(1)
                .is_some_and(|p| p.contains("/data/"))
            && hits
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| {
                    (h < n).then_some(h + 1)
                })
                .is_ok()
        {
            // The answer before it went out whole: no request is in flight.
            let page = "404 page not found\n";
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{page}",
                page.len()
            );
            from.write_all(answer.as_bytes())?;
            pending.drain(..end);
            continue;
        }
        if big_put && fault == Fault::Stall {
            hits.fetch_add(1, Ordering::SeqCst);
            // Swallow the connection until the client gives up on it.
            while from.read(&mut buf)? > 0 {}
            return Ok(());
        }
        to.write_all(&pending[..end])?;
        pending.drain(..end);
        if head.contains("transfer-encoding: chunked") {
            to.write_all(&pending)?;
            std::io::copy(from, to)?;
            return Ok(());
        }
        let damage = big_put
            && fault == Fault::Damage
            && hits
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
        // The body, with its middle byte flipped if chosen.
        let mut body = Vec::with_capacity(length);
        while pending.len() < length {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
        }
        let take = length.min(pending.len());
        body.extend(pending.drain(..take));
        if damage {
            body[length / 2] ^= 0x01;
        }
        match fault {
            Fault::Slow(rate) if big_put => {
                hits.fetch_add(1, Ordering::SeqCst);
                // A tenth of a second's worth at a time.
                for piece in body.chunks((rate / 10).max(1)) {
                    to.write_all(piece)?;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            _ => to.write_all(&body)?,
        }
    }
}

/// A 404 that is not S3's own `NoSuchKey` (a proxy's page while the store
/// restarts) is a store that failed, not an object missing: `repair index`
/// dropped a pack that was there from the index for it, and `check` then
/// called the repository damaged.
#[test]
fn a_proxys_404_page_is_not_taken_for_a_missing_pack() {
    let g = Garage::start();
    let (port, given) = faulty_proxy(g.s3_port, 0, Fault::NotFoundPage(1));
    let mut env = Env::uninit();
    env.repo = PathBuf::from(format!("s3:http://127.0.0.1:{port}/{BUCKET}/proxied"));
    env.ok(&["init"]);
    let src = env.path("src");
    tree(&src);
    env.backup(&[&src]);
    let r = env.json(&["repair", "index"]);
    assert_eq!(given.load(Ordering::SeqCst), 1, "a pack read got the page");
    assert!(
        !r.to_string()
            .contains("deleted while the index was rebuilt"),
        "{r}"
    );
    // Read without the proxy: every pack still in the index.
    env.repo = g.repo("proxied");
    assert_holds(&env, &src);

    // A check reading data meets the page: the store failed to answer,
    // no pack is called damaged or missing.
    let (port, given) = faulty_proxy(g.s3_port, 0, Fault::NotFoundPage(usize::MAX));
    env.repo = PathBuf::from(format!("s3:http://127.0.0.1:{port}/{BUCKET}/proxied"));
    let out = env.cmd().args(["check", "--read-data"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(given.load(Ordering::SeqCst) > 0);
    assert!(err.contains("without S3's NoSuchKey"), "{err}");
    assert!(!err.contains("repair packs"), "{err}");
    assert!(!err.contains("missing from"), "{err}");
    assert_ne!(out.status.code(), Some(0), "{err}");
}

/// An append-only client asks whether each object it writes is there
/// already (it may not write over one): a `HEAD` answers that. The one-byte
/// `GET` that confirms a `HEAD`'s 404 before prune or repair act on it cost
/// one more request per object here, and failed backups on a store whose
/// `GET` 404 says no `NoSuchKey`.
#[test]
fn an_append_only_backup_asks_by_head_alone_whether_what_it_writes_is_there() {
    let g = Garage::start();
    let (port, probes) = faulty_proxy(g.s3_port, 0, Fault::CountProbes);
    let mut env = Env::uninit();
    env.repo = PathBuf::from(format!("s3:http://127.0.0.1:{port}/{BUCKET}/appending"));
    env.ok(&["init", "--append-only"]);
    let src = env.path("src");
    tree(&src);
    env.backup(&[&src]);
    std::fs::write(src.join("new.txt"), b"written by the second backup").unwrap();
    env.backup(&[&src]);
    assert_eq!(probes.load(Ordering::SeqCst), 0, "one-byte GETs sent");
    env.repo = g.repo("appending");
    assert_holds(&env, &src);
}

#[test]
fn a_pack_damaged_on_the_way_to_the_server_is_refused_and_sent_again() {
    let g = Garage::start();
    let (port, damaged) = faulty_proxy(g.s3_port, 1 << 20, Fault::Damage);
    let mut env = Env::uninit();
    env.repo = PathBuf::from(format!("s3:http://127.0.0.1:{port}/{BUCKET}/damaged"));
    env.ok(&["init"]);
    let src = env.path("src");
    tree(&src);
    env.backup(&[&src]);
    assert_eq!(
        damaged.load(Ordering::SeqCst),
        1,
        "a pack upload was damaged"
    );
    // What the server holds, read without the proxy: every byte as sent.
    env.repo = g.repo("damaged");
    assert_holds(&env, &src);
}

/// `check --read-data` passes on `env`'s repository and its latest
/// snapshot restores `src` as it is.
fn assert_holds(env: &Env, src: &Path) {
    let check = env.ok(&["check", "--read-data"]);
    assert!(check.contains("no errors were found"), "{check}");
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(src, &restored(&out, src));
}

#[test]
fn packs_slower_to_upload_than_the_whole_timeout_still_go_up() {
    let g = Garage::start();
    // 1 MiB packs at 256 KiB/s: each takes 4 s, more than the 3 s budget
    // for waiting on the server.
    let (port, slowed) = faulty_proxy(g.s3_port, 256 << 10, Fault::Slow(256 << 10));
    let mut env = Env::uninit();
    env.repo = PathBuf::from(format!("s3:http://127.0.0.1:{port}/{BUCKET}/slow"));
    env.ok(&["init", "--pack-size-mib", "1"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("data"), 2 << 20, 11);
    let started = std::time::Instant::now();
    let out = env
        .cmd()
        .args(["--s3-timeout", "3", "backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_no_panic(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(slowed.load(Ordering::SeqCst) >= 1, "no upload was slowed");
    assert!(
        started.elapsed() > std::time::Duration::from_secs(3),
        "the uploads took less than the budget"
    );
    env.repo = g.repo("slow");
    assert_holds(&env, &src);
}

/// Reading packs over a link slower than a pack per --s3-timeout: check
/// --read-data and restore still read every one (a read is cut off when it
/// stalls, not for taking long).
#[test]
fn packs_slower_to_download_than_the_whole_timeout_still_come_down() {
    let g = Garage::start();
    let mut env = Env::uninit();
    env.repo = g.repo("slow-down");
    env.ok(&["init", "--pack-size-mib", "1"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("data"), 5 << 18, 12);
    env.backup(&[&src]);
    // A pack of 1 MiB or more at 256 KiB/s takes 4 s, more than the 3 s budget.
    let (port, _) = faulty_proxy(g.s3_port, 0, Fault::SlowDown(256 << 10));
    env.repo = PathBuf::from(format!("s3:http://127.0.0.1:{port}/{BUCKET}/slow-down"));
    let started = std::time::Instant::now();
    env.ok(&["--s3-timeout", "3", "--no-cache", "check", "--read-data"]);
    assert!(started.elapsed() > std::time::Duration::from_secs(3));
    // Not given the time (a higher floor on the link's speed): the packs
    // could not be read, which is not damage; scripts reading --json see
    // that the check did not pass.
    let hurried = |extra: &[&str]| {
        let out = env
            .cmd()
            .args(["--s3-timeout", "1", "--s3-min-rate", "4M", "--no-cache"])
            .args(extra)
            .args(["check", "--read-data"])
            .output()
            .unwrap();
        exits(&out, 1);
        out
    };
    let err = String::from_utf8_lossy(&hurried(&[]).stderr).into_owned();
    assert!(err.contains("could not be read from the store"), "{err}");
    assert!(!err.contains("the repository is damaged"), "{err}");
    assert!(!err.contains("affected snapshot paths"), "{err}");
    let report = last_json(&hurried(&["--json"]));
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert!(!report["unreadable"].as_array().unwrap().is_empty());
    let target = env.path("out");
    env.ok(&[
        "--s3-timeout",
        "3",
        "--no-cache",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &restored(&target, &src));
}

/// An index file slower to download than --s3-timeout (prune and `repair
/// index` write them up to 65,536 blobs): read as a pack is, given the time
/// to move it at --s3-min-rate. It was cut off at --s3-timeout, and every
/// command that synced the index failed until the timeout was raised.
#[test]
fn index_files_slower_to_download_than_the_whole_timeout_still_come_down() {
    use cairn_engine::backend::{Backend, FileKind};
    let g = Garage::start();
    let mut env = s3_env(&g, "slow-index");
    let src = env.path("src");
    for d in 0..60 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..200 {
            std::fs::write(dir.join(format!("f{f}")), format!("{d} {f}\n")).unwrap();
        }
    }
    env.backup(&[&src]);
    let biggest = bucket_of(&env)
        .list(FileKind::Index)
        .unwrap()
        .into_iter()
        .max_by_key(|l| l.size)
        .unwrap();
    // At 128 KiB/s, more than the 2 s budget.
    assert!(biggest.size > 384 << 10, "{} bytes", biggest.size);
    let (port, _) = faulty_proxy(g.s3_port, 0, Fault::SlowDown(128 << 10));
    env.repo = PathBuf::from(format!("s3:http://127.0.0.1:{port}/{BUCKET}/slow-index"));
    let out = env.ok(&[
        "--s3-timeout",
        "2",
        "--no-cache",
        "cat",
        "index",
        &biggest.name,
    ]);
    assert!(out.contains("\"packs\""), "{out}");
}

/// SHA-256 of no bytes.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Puts an empty object under each of `keys` in the bucket, straight
/// through S3 (curl signs the requests), as another program might.
fn put_empty_objects(g: &Garage, keys: impl Iterator<Item = String>) {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let mut config = String::new();
    for key in keys {
        config.push_str(&format!(
            "upload-file = \"{}\"\nurl = \"http://127.0.0.1:{}/{BUCKET}/{key}\"\n",
            empty.display(),
            g.s3_port
        ));
    }
    let list = dir.path().join("curl.conf");
    std::fs::write(&list, config).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--aws-sigv4", "aws:amz:garage:s3"])
        // Of the empty body: S3 wants the payload's hash named.
        .args(["-H", &format!("x-amz-content-sha256: {EMPTY_SHA256}")])
        .args(["--user", &format!("{KEY_ID}:{SECRET}"), "-K"])
        .arg(&list)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A listing is paged (1,000 names a page): over a slow link, a long one
/// took longer than --s3-timeout in all and was given up on, "without a
/// successful answer from the server", though every page came. Each page
/// now has the timeout's time. Here 4,000 objects under `data/` that are
/// not packs (listed, then left out by name) make four pages of under 1 s
/// each over the proxy (about 430 KB at 512 KiB/s), against a timeout of 2 s.
#[test]
fn a_listing_is_given_the_timeout_per_page_not_in_all() {
    let g = Garage::start();
    let mut env = s3_env(&g, "long-list");
    let src = env.path("src");
    tree(&src);
    env.backup(&[&src]);
    put_empty_objects(
        &g,
        (0..4000).map(|i| format!("long-list/data/00/not-a-pack-{i:05}")),
    );
    let (port, _) = faulty_proxy(g.s3_port, 0, Fault::SlowDown(512 << 10));
    env.repo = PathBuf::from(format!("s3:http://127.0.0.1:{port}/{BUCKET}/long-list"));
    let started = Instant::now();
    let out = env.ok(&["--s3-timeout", "2", "--no-cache", "check"]);
    let took = started.elapsed();
    assert!(out.contains("no errors"), "{out}");
    assert!(took > Duration::from_secs(3), "the check took {took:?}");
}

/// Backs up `old` here (caching its tree pack), then on another machine
/// (a cache of its own) backs up `new`, forgets the first snapshot and
/// prunes. Returns the cached packs that prune deleted, and `new`.
fn cached_packs_pruned_elsewhere(env: &Env) -> (Vec<PathBuf>, PathBuf) {
    let (old, new) = (env.path("old"), env.path("new"));
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(old.join("a"), "only in the first snapshot").unwrap();
    std::fs::write(new.join("b"), "in the second").unwrap();
    let first = env.backup(&[&old]);
    env.ok(&["ls", "latest"]);
    let cached = cached_packs(&env.cache);
    assert!(!cached.is_empty(), "the tree pack is cached");
    let other = |args: &[&str]| {
        stdout_of(
            env.cmd()
                .env("CAIRN_CACHE_DIR", env.path("other-cache"))
                .args(args),
        )
    };
    other(&["backup", new.to_str().unwrap()]);
    other(&["forget", first["snapshot_id"].as_str().unwrap()]);
    let pruned = other(&["prune"]);
    assert!(cached.iter().all(|p| p.exists()), "{pruned}");
    (cached, new)
}

/// Tree packs this machine cached, which another machine's prune deleted,
/// do not stay in the cache for good: the next prune here (even a dry run)
/// drops them.
#[test]
fn cached_packs_that_another_machine_pruned_are_dropped() {
    let g = Garage::start();
    let env = s3_env(&g, "two-machines");
    let (stale, _) = cached_packs_pruned_elsewhere(&env);
    env.ok(&["prune", "--dry-run"]);
    let left: Vec<_> = stale.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "still cached: {left:?}");
    env.ok(&["ls", "latest"]);
}

/// A machine that only backs up never lists the packs; its next backup,
/// which finds the index changed, drops the cached packs a prune elsewhere
/// deleted and keeps the live ones.
#[test]
fn a_backup_after_a_prune_elsewhere_drops_the_cached_packs_it_deleted() {
    let g = Garage::start();
    let env = s3_env(&g, "backup-only");
    let (stale, new) = cached_packs_pruned_elsewhere(&env);
    // A crashed download's leftover, two hours old, goes too; a fresh one
    // (another process's download in the making) stays.
    let dir = stale[0].parent().unwrap();
    let (abandoned, in_making) = (dir.join(".tmp-abandoned"), dir.join(".tmp-in-making"));
    std::fs::write(&abandoned, "half").unwrap();
    std::fs::write(&in_making, "half").unwrap();
    let two_hours_ago =
        filetime::FileTime::from_unix_time(filetime::FileTime::now().unix_seconds() - 7200, 0);
    filetime::set_file_mtime(&abandoned, two_hours_ago).unwrap();

    // A check first (it reads without the object cache) finds the index
    // rebuilt; the tidying waits for a command that has the cache.
    env.ok(&["check"]);
    assert!(stale.iter().all(|p| p.exists()));
    env.backup(&[&new]);
    let left: Vec<_> = stale.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "still cached: {left:?}");
    assert!(!abandoned.exists());
    assert!(in_making.exists());
    // The live tree packs are still cached (and used).
    assert!(!cached_packs(&env.cache).is_empty());
    let listed = env.ok(&["ls", "latest"]);
    assert!(listed.contains("/b"), "{listed}");
    env.ok(&["check"]);
}

/// A tree pack damaged in one tree, on the server: the pack cannot be kept
/// in the local cache whole any more, but its other trees are still read
/// (by range), and the damaged one is named.
/// The test repository's bucket, reached through the engine directly.
fn bucket_of(env: &Env) -> cairn_engine::backend::S3Backend {
    use cairn_engine::backend::{S3Backend, S3Location, S3Options};
    let s3_opts = S3Options {
        region: Some("garage".into()),
        ..S3Options::default()
    };
    let url = env.repo.to_str().unwrap();
    S3Backend::new(&S3Location::parse(url).unwrap(), &s3_opts).unwrap()
}

/// A tree pack damaged or lost in the store may be whole in this machine's
/// cache: `repair packs` and `repair index` went by the store alone,
/// dropped its trees, and deleted the cached copy with the pack.
#[test]
fn a_tree_pack_lost_in_the_store_is_put_back_from_the_cache() {
    use cairn_engine::backend::{Backend, FileKind};
    let g = Garage::start();
    let env = s3_env(&g, "put-back");
    let src = env.path("src");
    tree(&src);
    env.backup(&[&src]);
    env.ok(&["ls", "latest"]);
    let cached = cached_packs(&env.cache);
    assert_eq!(cached.len(), 1, "{cached:?}");
    let name = cached[0].file_name().unwrap().to_str().unwrap().to_string();
    let bucket = bucket_of(&env);
    // Damaged in the store.
    let mut pack = bucket.read(FileKind::Pack, &name).unwrap();
    let middle = pack.len() / 2;
    pack[middle] ^= 0x01;
    bucket.write(FileKind::Pack, &name, &pack).unwrap();
    let check = env.run(&["check", "--read-data"]);
    exits(&check, 1);
    let dry = env.ok(&["repair", "packs", &name[..8], "--dry-run"]);
    assert!(
        dry.contains("would be put back from this machine's cache"),
        "{dry}"
    );
    let out = env.ok(&["repair", "packs", &name[..8]]);
    assert!(out.contains("put back from this machine's cache"), "{out}");
    assert_holds(&env, &src);
    // Lost from the store.
    bucket.delete(FileKind::Pack, &name).unwrap();
    let out = env.run(&["--json", "repair", "index"]);
    let said = String::from_utf8_lossy(&out.stdout);
    exits(&out, 0);
    assert!(
        said.contains("put back from this machine's cache"),
        "{said}"
    );
    assert!(bucket.stored_size(FileKind::Pack, &name).unwrap().is_some());
    assert_holds(&env, &src);
}

#[test]
fn a_tree_pack_damaged_in_one_place_still_gives_its_other_trees() {
    use cairn_engine::backend::{Backend, FileKind};
    use cairn_engine::id::Id;
    use cairn_engine::{OpenOptions, Repository};
    let g = Garage::start();
    let env = s3_env(&g, "damaged-tree");
    let src = env.path("src");
    for d in ["a", "b"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        std::fs::write(src.join(d).join("f"), d).unwrap();
    }
    env.backup(&[&src]);
    let a_tree = subtree_of(&env, &src.join("a"));
    let backend = Arc::new(bucket_of(&env));
    let open = OpenOptions {
        cache_dir: None,
        no_object_cache: true,
        ..Default::default()
    };
    let repo = Repository::open(backend.clone(), env.password.as_bytes(), &open).unwrap();
    let loc = repo
        .index()
        .reader()
        .unwrap()
        .locate_tree(&Id::from_hex(&a_tree).unwrap())
        .unwrap();
    let name = loc.pack.to_hex();
    let mut pack = backend.read(FileKind::Pack, &name).unwrap();
    pack[(loc.blob.offset + loc.blob.length / 2) as usize] ^= 0x01;
    backend.write(FileKind::Pack, &name, &pack).unwrap();

    // Through a cache that does not hold the pack yet.
    let fresh = env.path("fresh-cache");
    let ls = |dir: &str| {
        env.cmd()
            .env("CAIRN_CACHE_DIR", &fresh)
            .args(["ls", "latest", src.join(dir).to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = ls("b");
    assert_no_panic(&out);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("b/f"),
        "{listed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ls("a");
    let err = exits(&out, 1);
    assert!(err.contains(&a_tree[..8]), "{err}");
}

#[test]
fn verify_restore_reads_the_store_not_the_trees_this_machine_cached() {
    // A tree pack lost from the bucket, still in this machine's cache: a
    // restore elsewhere fails, and the restore test passed.
    use cairn_engine::backend::{Backend, FileKind};
    let g = Garage::start();
    let env = s3_env(&g, "verify-uncached");
    let src = env.path("src");
    tree(&src);
    env.backup(&[&src]);
    env.ok(&["ls", "latest"]);
    let cached = cached_packs(&env.cache);
    assert!(
        !cached.is_empty(),
        "tree packs are cached under {:?}",
        env.cache
    );
    let backend = bucket_of(&env);
    for p in &cached {
        let name = p.file_name().unwrap().to_str().unwrap();
        backend.delete(FileKind::Pack, name).unwrap();
    }
    env.ok(&["ls", "latest"]);
    let out = env.run(&["verify-restore", "latest"]);
    exits(&out, 1);
    // Reported as a failed test of that snapshot, on standard output.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("FAILED") && (said.contains("not found") || said.contains("missing")),
        "{said}"
    );
}

#[test]
fn a_truncated_pack_costs_only_the_files_that_used_it() {
    // A range past the object's end (HTTP 416, or a short body) stopped
    // the whole restore as a failed storage: on disk the same damage costs
    // the files using it, named, and everything else is restored.
    use cairn_engine::backend::{Backend, FileKind};
    let g = Garage::start();
    let env = s3_env(&g, "truncated");
    let src = env.path("src");
    std::fs::create_dir_all(src.join("small")).unwrap();
    for i in 0..30 {
        std::fs::write(src.join(format!("small/{i}")), format!("file {i}")).unwrap();
    }
    env.backup(&[&src]);
    write_random(&src.join("big"), 6 << 20, 7);
    env.backup(&[&src]);
    let backend = bucket_of(&env);
    let biggest = backend
        .list(FileKind::Pack)
        .unwrap()
        .into_iter()
        .max_by_key(|l| l.size)
        .unwrap();
    let pack = backend.read(FileKind::Pack, &biggest.name).unwrap();
    backend
        .write(FileKind::Pack, &biggest.name, &pack[..pack.len() / 2])
        .unwrap();

    let t = env.path("t");
    let out = env
        .cmd()
        .args(["--no-cache", "restore", "latest", "--target"])
        .arg(&t)
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("big") && err.contains("truncated"), "{err}");
    let r = restored(&t, &src);
    for i in 0..30 {
        assert_eq!(
            std::fs::read_to_string(r.join(format!("small/{i}"))).unwrap(),
            format!("file {i}"),
            "{err}"
        );
    }
    assert!(!r.join("big").exists(), "a damaged file is removed");
}

#[test]
fn a_key_that_may_only_read_is_told_about_no_lock() {
    let g = Garage::start();
    let env = s3_env(&g, "read-only");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "kept").unwrap();
    env.backup(&[&src]);
    let (id, secret) = ("GK0000000000000000000000aa", "aa".repeat(32));
    g.admin(&["key", "import", "--yes", "-n", "ro", id, &secret]);
    g.admin(&["bucket", "allow", "--read", BUCKET, "--key", "ro"]);
    let as_reader = |args: &[&str]| {
        env.cmd()
            .env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .args(args)
            .output()
            .unwrap()
    };
    let err = exits(&as_reader(&["check"]), 1);
    assert!(err.contains("hint:") && err.contains("--no-lock"), "{err}");
    exits(&as_reader(&["--no-lock", "check"]), 0);
}

/// How many unfinished multipart uploads Garage reports for the bucket
/// (`bucket info` leaves the line out when there are none).
fn unfinished_multipart_uploads(g: &Garage) -> u64 {
    let info = g.admin(&["bucket", "info", BUCKET]);
    assert!(
        info.contains("Objects:"),
        "not a bucket's information:\n{info}"
    );
    match info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Unfinished uploads:"))
    {
        None => 0,
        Some(v) => v
            .trim()
            .strip_suffix("multipart uploads")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected count of unfinished uploads in:\n{info}")),
    }
}

/// A repository on `g` (through `port`, a proxy, if given) with packs of
/// 80 MiB, which go up as multipart uploads (above 64 MiB), and a source
/// that fills one.
fn multipart_env(g: &Garage, prefix: &str, port: Option<u16>) -> (Env, PathBuf) {
    let mut env = Env::uninit();
    let port = port.unwrap_or(g.s3_port);
    env.repo = PathBuf::from(format!("s3:http://127.0.0.1:{port}/{BUCKET}/{prefix}"));
    env.ok(&["init", "--pack-size-mib", "80"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big"), 100 << 20, 7);
    (env, src)
}

#[test]
fn packs_above_64_mib_go_up_in_parts() {
    let g = Garage::start();
    let (env, src) = multipart_env(&g, "parts", None);
    env.backup(&[&src]);
    assert_holds(&env, &src);
    assert_eq!(unfinished_multipart_uploads(&g), 0);
}

#[test]
fn a_part_damaged_on_the_way_to_the_server_is_refused_and_sent_again() {
    let g = Garage::start();
    // Parts are 64 MiB and 16 MiB: the first part's upload is damaged.
    let (port, damaged) = faulty_proxy(g.s3_port, 8 << 20, Fault::Damage);
    let (mut env, src) = multipart_env(&g, "damaged-part", Some(port));
    env.backup(&[&src]);
    assert_eq!(damaged.load(Ordering::SeqCst), 1, "a part was damaged");
    assert_eq!(unfinished_multipart_uploads(&g), 0);
    // What the server holds, read without the proxy: every byte as sent.
    env.repo = g.repo("damaged-part");
    assert_holds(&env, &src);
}

#[test]
fn a_multipart_upload_that_fails_is_aborted() {
    let g = Garage::start();
    // Every upload of a part hangs: the pack's upload runs out of time.
    let (port, stalled) = faulty_proxy(g.s3_port, 8 << 20, Fault::Stall);
    let (env, src) = multipart_env(&g, "stalled", Some(port));
    // Transfers are given next to no time of their own: a stalled attempt
    // is abandoned after the third of the budget it may wait.
    let out = env
        .cmd()
        .args(["--s3-timeout", "5", "--s3-min-rate", "1G"])
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("gave up after 5s"), "{err}");
    assert!(stalled.load(Ordering::SeqCst) >= 1);
    // Every upload it started was aborted: the server keeps no parts.
    assert_eq!(unfinished_multipart_uploads(&g), 0, "{err}");
    assert!(env.json(&["snapshots"]).as_array().unwrap().is_empty());
}

#[test]
fn prune_aborts_the_upload_a_killed_backup_left_unfinished_once_it_is_old() {
    let g = Garage::start();
    // Every part's upload hangs, so the backup is killed with its upload
    // started and unfinished.
    let (port, stalled) = faulty_proxy(g.s3_port, 8 << 20, Fault::Stall);
    let (mut env, src) = multipart_env(&g, "nested/inner", Some(port));
    let mut backup = Killed(
        env.cmd()
            .args(["backup", src.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while stalled.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no part upload reached the proxy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    backup.0.kill().unwrap();
    backup.0.wait().unwrap();
    let left = unfinished_multipart_uploads(&g);
    assert!(left >= 1, "the killed backup left its upload unfinished");
    env.repo = g.repo("nested/inner");
    let young = |env: &Env| {
        let out = env.ok(&["prune"]);
        assert!(!out.contains("leftovers"), "{out}");
        assert_eq!(unfinished_multipart_uploads(&g), left);
    };
    // A young upload may be a live backup's on another machine: kept.
    young(&env);
    // A repository at a prefix above leaves uploads below it alone, old or not.
    let outer = s3_env(&g, "nested");
    std::thread::sleep(Duration::from_secs(3));
    let stale_in = |env: &Env, args: &[&str]| {
        let out = env
            .cmd()
            .env("CAIRN_TEST_LOCK_STALE_SECS", "1")
            .args(args)
            .output()
            .unwrap();
        assert_no_panic(&out);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{err}");
        (String::from_utf8(out.stdout).unwrap(), err)
    };
    let (out, err) = stale_in(&outer, &["prune"]);
    assert!(
        !out.contains("leftovers") && !err.contains("warning"),
        "{out}{err}"
    );
    assert_eq!(unfinished_multipart_uploads(&g), left);
    // Older than twice the time a lock stays valid (1 s here, 30 min by
    // default): no process can still be sending it. check counts it, and
    // prune aborts it.
    let (_, err) = stale_in(&env, &["check"]);
    assert!(
        err.contains(&format!("warning: {left} leftovers of interrupted writes")),
        "{err}"
    );
    let (out, err) = stale_in(&env, &["prune"]);
    assert!(
        out.contains(&format!("removed {left} leftovers of interrupted writes")),
        "{out}{err}"
    );
    assert_eq!(unfinished_multipart_uploads(&g), 0);
    env.backup(&[&src]);
    assert_holds(&env, &src);
    outer.assert_check_clean();
}

/// A snapshot record or an index file that the store's listing leaves out
/// (a server whose paging loses entries) is asked for by name when this
/// machine has seen it. The snapshot looked forgotten, and prune deleted
/// the data no other snapshot used; the index file's packs looked like
/// leftovers, and prune refused to run.
#[test]
fn records_a_listing_leaves_out_are_asked_for_by_name() {
    let g = Garage::start();
    let env = s3_env(&g, "lossy-listing");
    let src = env.path("src");
    let mut ids = Vec::new();
    for i in 0..4u64 {
        // Data of its own in each snapshot.
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).unwrap();
        write_random(&src.join(format!("only{i}")), 300 << 10, 40 + i);
        let id = env.backup(&[&src])["snapshot_id"]
            .as_str()
            .unwrap()
            .to_string();
        ids.push(id);
    }
    let hiding = |kind: &str, args: &[&str]| {
        let out = env
            .cmd()
            .env("CAIRN_TEST_FAULTS", format!("hide-list={kind}"))
            .args(args)
            .output()
            .unwrap();
        exits(&out, 0);
        last_json(&out)
    };
    let listed = hiding("snapshot", &["--json", "snapshots"]);
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    for kind in ["snapshot", "index"] {
        let r = hiding(kind, &["--json", "prune"]);
        assert_eq!(r["packs_deleted"], 0, "{kind}: {r}");
        assert_eq!(r["unindexed_packs_deleted"], 0, "{kind}: {r}");
    }
    env.assert_check_clean();
    for (i, id) in ids.iter().enumerate() {
        let t = env.path(&format!("t{i}"));
        env.restore(id, &t);
        let want = env.path(&format!("want{i}"));
        write_random(&want, 300 << 10, 40 + i as u64);
        let got = restored(&t, &src).join(format!("only{i}"));
        assert_eq!(std::fs::read(got).unwrap(), std::fs::read(want).unwrap());
    }
}
