//! Shared helpers for the end-to-end tests: they drive the real `cairn`
//! binary against real directories.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tempfile::TempDir;

/// The `cairn` binary built next to this test executable.
pub fn cairn_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = dir.join("cairn");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build --release` or run tests/run-all.sh)",
        bin.display()
    );
    bin
}

/// A scratch directory with a repository in it.
pub struct Env {
    pub dir: TempDir,
    pub repo: PathBuf,
    pub cache: PathBuf,
    pub password: String,
}

impl Env {
    /// A new scratch directory and an initialised repository.
    pub fn new() -> Env {
        let env = Env::uninit();
        env.ok(&["init"]);
        env
    }

    /// A scratch directory and a repository of format version `v`.
    pub fn with_format(v: u32) -> Env {
        let env = Env::uninit();
        env.ok(&["init", "--format-version", &v.to_string()]);
        env
    }

    /// A scratch directory without a repository.
    pub fn uninit() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("cairn-test-")
            .tempdir()
            .expect("tempdir");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        Env {
            dir,
            repo,
            cache,
            password: "correct horse battery staple".into(),
        }
    }

    /// A path inside the scratch directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A `cairn` command bound to this repository, password and cache.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(cairn_bin());
        c.env("CAIRN_REPOSITORY", &self.repo)
            .env("CAIRN_PASSWORD", &self.password)
            .env("CAIRN_CACHE_DIR", &self.cache)
            .env("CAIRN_TEST_INSECURE_KDF", "1")
            // Tests stop backups (SIGSTOP) once their lock is in place,
            // perhaps inside a write to the shared cache: the others give
            // that up sooner than the 60 s a user's commands wait.
            .env("CAIRN_TEST_CACHE_WAIT_SECS", "20")
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_PASSWORD_COMMAND");
        // As from a terminal: a suite run under nohup hands SIGHUP down
        // ignored, and cairn keeps an ignored SIGHUP ignored (as nohup
        // asks), so the tests that hang up on it would wait forever.
        // SAFETY: signal() is async-signal-safe, allowed between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                Ok(())
            });
        }
        c
    }

    /// Gives the repository and the cache to nobody (65534), for a
    /// command run as nobody ([`Env::cmd_as_nobody`]).
    pub fn give_to_nobody(&self) {
        let chown = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&self.repo)
            .arg(&self.cache)
            .status()
            .unwrap();
        assert!(chown.success());
    }

    /// [`Env::cmd`] run as nobody (65534), without root's groups.
    pub fn cmd_as_nobody(&self) -> Command {
        self.cmd_via(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ])
    }

    /// [`Env::cmd`] run through `wrapper` (`setpriv ...`, `unshare ...`),
    /// which is given the `cairn` binary as its next argument.
    pub fn cmd_via(&self, wrapper: &[&str]) -> Command {
        let mut c = Command::new(wrapper[0]);
        c.args(&wrapper[1..]).arg(cairn_bin());
        for (k, v) in self.cmd().get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    /// Runs `cairn ARGS`.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.cmd().args(args).output().expect("run cairn")
    }

    /// Runs `cairn ARGS`, asserts exit 0 and no panic, returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert_no_panic(&out);
        assert!(
            out.status.success(),
            "cairn {:?} failed with {:?}\nstdout: {}\nstderr: {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs `cairn ARGS`, asserts exit `code` and no panic, returns stderr.
    #[track_caller]
    pub fn fails<S: AsRef<OsStr>>(&self, args: &[S], code: i32) -> String {
        exits(&self.run(args), code)
    }

    /// Runs `cairn --json ARGS` and parses the last line of stdout.
    pub fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> serde_json::Value {
        let mut all: Vec<&OsStr> = vec![OsStr::new("--json")];
        all.extend(args.iter().map(|a| a.as_ref()));
        let out = self.ok(&all);
        let last = out
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no JSON output from {all:?}"));
        serde_json::from_str(last).unwrap_or_else(|e| panic!("bad JSON {last:?}: {e}"))
    }

    /// Runs `cairn --json ARGS` whatever its exit code and parses the last line.
    pub fn json_any<S: AsRef<OsStr>>(&self, args: &[S]) -> serde_json::Value {
        let out = self
            .cmd()
            .arg("--json")
            .args(args)
            .output()
            .expect("run cairn");
        last_json(&out)
    }

    /// Backs up `paths` and returns the JSON summary.
    pub fn backup<S: AsRef<OsStr>>(&self, paths: &[S]) -> serde_json::Value {
        let mut args: Vec<&OsStr> = vec![OsStr::new("backup")];
        args.extend(paths.iter().map(|a| a.as_ref()));
        self.json(&args)
    }

    /// Runs `check --read-data`, asserts that it found no error and returns
    /// its report.
    pub fn assert_check_clean(&self) -> serde_json::Value {
        let report = self.json(&["check", "--read-data"]);
        assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
        report
    }

    /// Restores the newest snapshot `cairn recover` wrote into `target`.
    pub fn restore_recovered(&self, target: &Path) {
        self.ok(&[
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--tag"),
            OsStr::new("recovered"),
            OsStr::new("--target"),
            target.as_os_str(),
        ]);
    }

    /// Restores `spec` into `target`.
    pub fn restore(&self, spec: &str, target: &Path) {
        self.ok(&[
            OsStr::new("restore"),
            OsStr::new(spec),
            OsStr::new("--target"),
            target.as_os_str(),
        ]);
    }
}

/// The last line of a `--json` run's standard output, parsed (fails if the
/// process panicked or printed no JSON).
pub fn last_json(out: &Output) -> serde_json::Value {
    assert_no_panic(out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no JSON output: {}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad JSON {last:?}: {e}"))
}

/// Fails if the process panicked.
pub fn assert_no_panic(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "cairn panicked: {err}");
    assert_ne!(
        out.status.code(),
        Some(101),
        "cairn panicked (exit 101): {err}"
    );
}

/// Asserts that the process did not panic and exited with `code`; returns
/// its standard error (lossy UTF-8).
#[track_caller]
pub fn exits(out: &Output, code: i32) -> String {
    assert_no_panic(out);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}, got {:?}\nstdout: {}\nstderr: {err}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

/// Where a backed-up absolute path lands inside a restore target.
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("absolute source"))
}

/// Asserts that two trees hold the same entries with the same bytes, kinds,
/// permission bits, symlink targets and modification times (directories too).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let list = |root: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                e.expect("walk")
                    .path()
                    .strip_prefix(root)
                    .expect("prefix")
                    .to_path_buf()
            })
            .collect();
        v.sort();
        v
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(
        la,
        lb,
        "entries differ between {} and {}",
        a.display(),
        b.display()
    );
    for rel in la {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa).unwrap(),
            std::fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "type of {}", rel.display());
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap(),
                "link {}",
                rel.display()
            );
            continue;
        }
        assert_eq!(
            ma.permissions().mode() & 0o7777,
            mb.permissions().mode() & 0o7777,
            "mode of {}",
            rel.display()
        );
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {}",
            rel.display()
        );
        if ma.is_file() {
            assert_eq!(ma.len(), mb.len(), "size of {}", rel.display());
            assert!(
                files_equal(&pa, &pb),
                "content of {} differs",
                rel.display()
            );
        }
    }
}

/// Compares two files byte by byte without loading them whole.
pub fn files_equal(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]).unwrap() {
                0 => break,
                k => n += k,
            }
        }
        n
    }
}

/// A source of one 3 MB file stored twice, in two data packs (a backup
/// run while the index was away), and those packs, by ID.
pub fn stored_twice(env: &Env) -> (PathBuf, Vec<PathBuf>) {
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("a.bin"), 3_000_000, 5);
    env.backup(&[&src]);
    let index = env.repo.join("index");
    let aside = env.path("index-aside");
    std::fs::rename(&index, &aside).unwrap();
    std::fs::create_dir_all(&index).unwrap();
    env.ok(&["backup", "--force", src.to_str().unwrap()]);
    for e in std::fs::read_dir(&aside).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), index.join(e.file_name())).unwrap();
    }
    // The data pack with the lower ID: the one a tie in live share picks.
    let mut data: Vec<PathBuf> = walkdir::WalkDir::new(env.repo.join("data"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let id = p.file_name().unwrap().to_str().unwrap();
            env.ok(&["cat", "pack", id]).contains("\"blob_type\": 0")
        })
        .collect();
    data.sort();
    assert_eq!(data.len(), 2, "{data:?}");
    (src, data)
}

/// Flips the lowest bit of the byte at `at` in the file at `path`.
pub fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 1;
    std::fs::write(path, bytes).unwrap();
}

/// Writes `len` pseudo-random bytes (seeded, so reproducible) to `path`.
pub fn write_random(path: &Path, len: usize, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill_bytes(&mut buf[..n]);
        std::io::Write::write_all(&mut f, &buf[..n]).unwrap();
        left -= n;
    }
}

/// Whether the tests run as root (needed for devices, ownership, and to
/// make files unreadable by dropping privileges).
/// Fails a test that switches to another user unless it runs as root.
pub fn assert_root() {
    assert!(
        is_root(),
        "this test switches to another user: run the suite as root (tests/run-all.sh)"
    );
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Makes `cmd` run as nobody when the tests run as root, who reads every
/// file whatever its permissions: the repository and the cache are handed
/// over first, and the scratch directory opened to all.
pub fn as_unprivileged(env: &Env, cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    if !is_root() {
        return;
    }
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in walkdir::WalkDir::new(&env.repo)
        .into_iter()
        .chain(walkdir::WalkDir::new(&env.cache))
    {
        std::os::unix::fs::lchown(e.unwrap().path(), Some(65534), Some(65534)).unwrap();
    }
    cmd.uid(65534).gid(65534).env("HOME", env.dir.path());
}

/// The pack files of the repository at `repo`, sorted (temporary files
/// left out).
pub fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(repo.join("data"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

/// The largest pack of the repository at `repo` (in the tests, the one
/// holding the biggest file's data).
pub fn largest_pack(repo: &Path) -> PathBuf {
    packs(repo)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a pack")
}

/// Runs a command, failing the test if it does not finish within `secs`.
pub fn output_within(mut cmd: std::process::Command, secs: u64) -> Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("command did not finish within {secs} s (hung?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A tmpfs of `size` mounted at a directory, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// A ramfs at `at` (as root): a filesystem without extended
    /// attributes, ACLs included. Unmounted when dropped.
    pub fn ramfs(at: &Path) -> Tmpfs {
        let st = Command::new("mount")
            .args(["-t", "ramfs", "none"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount ramfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }

    /// An ext4 of 16 MiB in the file `image`, with 128-byte inodes: times
    /// to the second only, as on FAT, SMB or ext3 targets. Mounted at `at`
    /// through a loop device (as root), unmounted when dropped.
    pub fn coarse_times(image: &Path, at: &Path) -> Tmpfs {
        let f = std::fs::File::create(image).unwrap();
        f.set_len(16 << 20).unwrap();
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-I", "128"])
            .arg(image)
            .status()
            .expect("run mkfs.ext4");
        assert!(st.success(), "mkfs.ext4 {}", image.display());
        let st = Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount {} at {}",
            image.display(),
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }

    /// An exFAT of 32 MiB in the file `image`, through FUSE on a loop
    /// device (as root): names that differ only in case are one entry,
    /// as on FAT, NTFS, SMB or a casefolded ext4. Unmounted when dropped.
    pub fn case_insensitive(image: &Path, at: &Path) -> Tmpfs {
        let f = std::fs::File::create(image).unwrap();
        f.set_len(32 << 20).unwrap();
        let st = Command::new("mkfs.exfat")
            .arg(image)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run mkfs.exfat");
        assert!(st.success(), "mkfs.exfat {}", image.display());
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output()
            .expect("run losetup");
        assert!(out.status.success(), "losetup {}", image.display());
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let st = Command::new("mount.exfat-fuse")
            .arg(&dev)
            .arg(at)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run mount.exfat-fuse");
        // Detached once unmounted (the kernel defers a detach while in use).
        let _ = Command::new("losetup").args(["-d", &dev]).status();
        assert!(st.success(), "mount exfat {dev} at {}", at.display());
        Tmpfs(at.to_path_buf())
    }

    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "none"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

/// A new directory `disk` in `env`'s scratch directory with a tmpfs of
/// `size` mounted on it (as root): a small disk to fill.
pub fn small_disk(env: &Env, size: &str) -> (PathBuf, Tmpfs) {
    let disk = env.path("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = Tmpfs::mount(&disk, size);
    (disk, mounted)
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A bind mount of a directory (as root), unmounted when dropped.
pub struct BindMount(PathBuf);

impl BindMount {
    /// A read-only view of `dir` at `at`: a read-only disk that even root
    /// cannot write to.
    pub fn mount(dir: &Path, at: &Path) -> BindMount {
        let view = Self::bind(dir, at, &["--bind", "-o", "ro"]);
        assert!(
            std::fs::write(at.join(".probe"), b"").is_err(),
            "{} is still writable",
            at.display()
        );
        view
    }

    /// `dir` bound at `at`, writable: the same filesystem seen twice.
    pub fn writable(dir: &Path, at: &Path) -> BindMount {
        Self::bind(dir, at, &["--bind"])
    }

    fn bind(dir: &Path, at: &Path, how: &[&str]) -> BindMount {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(how)
            .arg(dir)
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "bind mount at {}", at.display());
        BindMount(at.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `env`'s repository (not made yet) at `tree/backup/repo`, given to cairn
/// by another path: `tree/backup` bound at `repo-view` in the scratch
/// directory (a container's `-v /srv/backup:/repo`). As root.
pub fn repository_bound_into(env: &mut Env, tree: &Path) -> BindMount {
    std::fs::create_dir_all(tree.join("backup")).unwrap();
    let view = BindMount::writable(&tree.join("backup"), &env.path("repo-view"));
    env.repo = env.path("repo-view/repo");
    view
}

/// Fills the filesystem of `dir` with a file, then gives back `room` bytes.
pub fn fill_leaving(dir: &Path, room: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0x5au8; 1 << 16];
    while f.write_all(&block).is_ok() {}
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(room)).unwrap();
    path
}

/// Waits until `path` exists (a fault's mark: the command got that far),
/// failing the test with `what` after `within`.
pub fn wait_for_file(path: &Path, within: std::time::Duration, what: &str) {
    let until = std::time::Instant::now() + within;
    while !path.exists() {
        assert!(std::time::Instant::now() < until, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `cmd` with `stall` (a `stall-write=N:MS` or `stall-delete=N:MS`
/// item of the fault spec, engine/src/backend/fault.rs) and kills it with
/// SIGKILL once it is stalled there. False if it exited before it got
/// there, which it must have done with success.
pub fn kill_when_stalled(env: &Env, mut cmd: Command, stall: &str) -> bool {
    let mark = env.path("stalled");
    let _ = std::fs::remove_file(&mark);
    let mut child = cmd
        .env(
            "CAIRN_TEST_FAULTS",
            format!("{stall},stall-mark={}", mark.display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if mark.exists() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "{cmd:?} failed before {stall}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return false;
        }
        assert!(
            std::time::Instant::now() < until,
            "{cmd:?} never got to {stall}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Kills a helper process when a test ends however it ends.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Creates a special file (FIFO or device) with `mknod`.
pub fn mknod(path: &Path, kind: u32, mode: u32, dev: u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string; mknod does not retain it.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | mode, dev as libc::dev_t) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Every extended attribute of `p` (not following symlinks), sorted.
pub fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let mut v: Vec<_> = xattr::list(p)
        .unwrap()
        .map(|n| {
            (
                n.as_bytes().to_vec(),
                xattr::get(p, &n).unwrap().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Every entry below `root`, relative to it, sorted.
pub fn entries(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(root).unwrap().to_path_buf())
        .collect();
    v.sort();
    v
}

// SQLite databases, written and checked through python3's sqlite3 module
// (a real SQLite independent of the one cairn links).

/// Runs a python3 script with arguments; returns its stdout.
pub fn py(script: &str, args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `PRAGMA integrity_check` and `count(*)` of `table` in a database file.
pub fn check_db(db: &Path, table: &str) -> (String, u64) {
    let out = py(
        &format!(
            "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
             print(c.execute('pragma integrity_check').fetchone()[0])\n\
             print(c.execute('select count(*) from {table}').fetchone()[0])"
        ),
        &[db],
    );
    let mut l = out.lines();
    (
        l.next().unwrap().to_string(),
        l.next().unwrap().parse().unwrap(),
    )
}

/// Creates `events` in a database in `mode` (wal or delete) with `rows` rows.
/// A [`py`] script making table `t` of 40,000 rows with random payloads
/// in the database named by its argument (about 7 MiB).
pub const ROWS_40K: &str = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
    c.execute('create table t(id integer primary key, payload text)')\n\
    c.execute(\"with recursive n(x) as (select 1 union all select x+1 from n where x<40000) \
               insert into t select x, 'row '||x||' '||hex(randomblob(80)) from n\")\n\
    c.commit()";

/// A [`py`] script rewriting 1% of the rows of [`ROWS_40K`]'s table, at
/// random, with same-size values.
pub const UPDATE_ROWS: &str = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
    c.execute(\"update t set payload='row '||id||' '||hex(randomblob(80)) \
               where id in (select abs(random()) % 40000 + 1 from t limit 400)\")\n\
    c.commit()";

pub fn create_db(db: &Path, mode: &str, rows: u32) {
    py(
        &format!(
            "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
             c.execute('pragma journal_mode={mode}')\n\
             c.execute('create table events(id integer primary key, payload text)')\n\
             c.executemany('insert into events(payload) values (?)', [('p'*200,)]*{rows})\n\
             c.commit()"
        ),
        &[db],
    );
}

/// The ID of the first key `key list` shows with `field` true
/// (`current`, `append_only`).
pub fn key_where(env: &Env, field: &str) -> String {
    env.json(&["key", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k[field] == true)
        .unwrap_or_else(|| panic!("no key with {field}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs `cairn ARGS` with another password than the environment's.
pub fn run_as(env: &Env, password: &str, args: &[&str]) -> Output {
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", password)
        .args(args)
        .output()
        .expect("run cairn");
    assert_no_panic(&out);
    out
}

/// Adds an append-only key opened by `password` (`key add --append-only`,
/// run with the repository's password).
pub fn add_append_only_key(env: &Env, password: &str) {
    let file = env.path("new-key-password");
    std::fs::write(&file, password).unwrap();
    env.ok(&[
        "key",
        "add",
        "--append-only",
        "--new-password-file",
        file.to_str().unwrap(),
    ]);
}

/// The IDs of the repository's snapshots, as `snapshots --json` lists them.
pub fn snapshot_ids(env: &Env) -> Vec<String> {
    env.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Runs `cmd` (any program), asserts exit 0 and no panic, returns stdout.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert_no_panic(&out);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Like [`run_as`], asserting success; returns stdout.
pub fn ok_as(env: &Env, password: &str, args: &[&str]) -> String {
    let out = run_as(env, password, args);
    assert!(
        out.status.success(),
        "cairn {args:?} failed with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `cairn serve` on a free loopback port, read over real HTTP;
/// stopped on drop.
pub struct Served {
    pub child: Child,
    pub base: String,
    agent: ureq::Agent,
    pub auth: Option<String>,
}

impl Served {
    pub fn start(env: &Env, extra: &[&str]) -> Served {
        Self::start_with(env, extra, "")
    }

    /// [`Served::start`] over a backend with `faults` (`CAIRN_TEST_FAULTS`).
    pub fn start_with(env: &Env, extra: &[&str], faults: &str) -> Served {
        let mut cmd = env.cmd();
        if !faults.is_empty() {
            cmd.env("CAIRN_TEST_FAULTS", faults);
        }
        let mut child = cmd
            .args(["--json", "serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cairn serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["message_type"], "listening", "{v}");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Served {
            child,
            base: v["url"].as_str().unwrap().trim_end_matches('/').to_string(),
            agent,
            auth: None,
        }
    }

    /// GET `path` with `auth` as the Authorization header (or the default).
    pub fn get_with(&self, path: &str, auth: Option<&str>) -> (u16, String, Option<String>) {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(a) = auth.or(self.auth.as_deref()) {
            req = req.header("Authorization", a);
        }
        let mut resp = req.call().expect("HTTP request");
        let www = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap(), www)
    }

    /// GET `path` with another Host header than the URL's.
    pub fn get_with_host(&self, path: &str, host: &str) -> (u16, String, Option<String>) {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Host", host)
            .call()
            .expect("HTTP request");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap(), None)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let (s, b, _) = self.get_with(path, None);
        (s, b)
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The names in directory `dir` of the latest snapshot, via the API.
    pub fn ls_names(&self, dir: &str) -> Vec<String> {
        let ls = self.json(&format!("/api/v1/snapshots/latest/ls?path={dir}"));
        ls["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn status_of(&self, path: &str) -> u16 {
        self.get(path).0
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Not a PID that was already reaped (it could be someone else's now).
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM: the server stops cleanly (checked in the token test).
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// Objects in a repository directory (`locks/`, `audit/`, ...): an object
/// being written has a hidden temporary name until it is complete.
pub fn finished_objects(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count()
}

/// The bytes of every file under `dir` (a repository's size on disk).
pub fn files_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// The name of a node of `cat tree`'s output, as bytes: a string when the
/// name is UTF-8, else an array of bytes.
pub fn node_name(node: &serde_json::Value) -> Vec<u8> {
    match &node["name"] {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        other => serde_json::from_value(other.clone()).unwrap(),
    }
}

/// The subtree ID recorded for the directory `dir` in the newest snapshot.
pub fn subtree_of(env: &Env, dir: &Path) -> String {
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
    let mut id = list.as_array().unwrap().last().unwrap()["tree"]
        .as_str()
        .unwrap()
        .to_string();
    for c in dir.components().skip(1) {
        let name = c.as_os_str().as_encoded_bytes();
        let tree: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "tree", &id])).unwrap();
        let node = tree["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| node_name(n) == name)
            .unwrap_or_else(|| panic!("{} not in tree {id}", dir.display()));
        id = node["subtree"].as_str().unwrap().to_string();
    }
    id
}

/// How many tree blobs a change that stops at `dir` itself adds at most:
/// one per directory above it, root included. The directories above the
/// source are not ours: other tests create entries in /tmp meanwhile.
pub fn trees_above(dir: &Path) -> u64 {
    dir.components().skip(1).count() as u64
}

/// The ID of the first content blob of the file at absolute `path` in
/// snapshot `spec`, found through `cat snapshot` and `cat tree`.
pub fn blob_of(env: &Env, spec: &str, path: &Path) -> String {
    let snap: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat", "snapshot", spec])).unwrap();
    let mut tree = snap["tree"].as_str().unwrap().to_string();
    let names: Vec<_> = path.components().skip(1).collect();
    for (i, name) in names.iter().enumerate() {
        let t: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "tree", &tree])).unwrap();
        let want = name.as_os_str().to_str().unwrap().as_bytes();
        let node = t["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| node_name(n) == want)
            .unwrap_or_else(|| panic!("{name:?} not in tree {tree}"))
            .clone();
        if i + 1 == names.len() {
            return node["content"][0].as_str().unwrap().to_string();
        }
        tree = node["subtree"].as_str().unwrap().to_string();
    }
    unreachable!("empty path")
}

/// A command on `env` that sees none of the caller's source settings.
pub fn from_env_cleared(env: &Env) -> std::process::Command {
    let mut c = env.cmd();
    for var in [
        "CAIRN_FROM_REPOSITORY",
        "CAIRN_FROM_PASSWORD",
        "CAIRN_FROM_PASSWORD_FILE",
        "CAIRN_FROM_PASSWORD_COMMAND",
    ] {
        c.env_remove(var);
    }
    c
}

/// Runs `cairn -r DST copy --from-repo SRC ARGS` with the source password in
/// CAIRN_FROM_PASSWORD.
pub fn run_copy(dst: &Env, src: &Env, from_password: &str, args: &[&str]) -> Output {
    let out = from_env_cleared(dst)
        .env("CAIRN_FROM_PASSWORD", from_password)
        .arg("--json")
        .arg("copy")
        .arg("--from-repo")
        .arg(&src.repo)
        .args(args)
        .output()
        .expect("run cairn copy");
    assert_no_panic(&out);
    out
}

/// `copy` that must succeed; returns its JSON summary.
pub fn copy(dst: &Env, src: &Env, args: &[&str]) -> serde_json::Value {
    let out = run_copy(dst, src, &src.password, args);
    assert!(
        out.status.success(),
        "copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap();
    assert_eq!(v["message_type"], "summary");
    v
}

/// A `bindfs` (FUSE) view of `dir` at `at`, unmounted when dropped: a
/// writable filesystem without unnamed files (`O_TMPFILE`), as NFS, SMB
/// and FAT are.
pub struct Bindfs(PathBuf);

impl Bindfs {
    pub fn mount(dir: &Path, at: &Path) -> Bindfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("bindfs")
            .arg(dir)
            .arg(at)
            .status()
            .expect("run bindfs (tests/run-all.sh installs it)");
        assert!(st.success(), "bindfs {} {}", dir.display(), at.display());
        Bindfs(at.to_path_buf())
    }
}

impl Drop for Bindfs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).status();
    }
}

/// Writes a copy of snapshot `real` (of one directory) whose first entry
/// at the bottom of its first directories `mutate` changed, tagged
/// `forged`, as anyone holding the key could; returns its ID.
pub fn forge_first_entry(
    env: &Env,
    real: &str,
    mutate: &dyn Fn(&mut cairn_engine::tree::Node),
) -> String {
    use cairn_engine::blob::BlobType;
    use cairn_engine::tree::NodeKind;
    let repo = open_engine(env);
    let mut snap = repo
        .load_snapshot(&cairn_engine::Id::from_hex(real).unwrap())
        .unwrap();
    // Down to the directory backed up.
    let mut chain = vec![repo.load_tree(&snap.tree).unwrap()];
    while chain.last().unwrap().nodes[0].kind == NodeKind::Dir {
        let sub = chain.last().unwrap().nodes[0].subtree.unwrap();
        chain.push(repo.load_tree(&sub).unwrap());
    }
    mutate(&mut chain.last_mut().unwrap().nodes[0]);
    let saver = cairn_engine::saver::BlobSaver::new(&repo);
    let mut id = saver
        .save(BlobType::Tree, &chain.pop().unwrap().encode())
        .unwrap()
        .0;
    while let Some(mut t) = chain.pop() {
        t.nodes[0].subtree = Some(id);
        id = saver.save(BlobType::Tree, &t.encode()).unwrap().0;
    }
    saver.flush().unwrap();
    snap.tree = id;
    snap.tags = vec!["forged".into()];
    repo.save_snapshot(&snap).unwrap().to_hex()
}

/// The test's repository opened through the engine, without a cache.
pub fn open_engine(env: &Env) -> cairn_engine::Repository {
    // SAFETY: set before the test starts threads of its own; the variable
    // is only read by the engine.
    unsafe { std::env::set_var("CAIRN_TEST_INSECURE_KDF", "1") };
    cairn_engine::Repository::open(
        std::sync::Arc::new(cairn_engine::backend::LocalBackend::new(&env.repo)),
        env.password.as_bytes(),
        &cairn_engine::OpenOptions {
            cache_dir: None,
            no_object_cache: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The local index database in the test's cache.
pub fn cache_db(env: &Env) -> PathBuf {
    walkdir::WalkDir::new(&env.cache)
        .into_iter()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name() == "index.redb")
        .expect("local index in the cache")
        .into_path()
}

/// Damages the local index at `db` as redb reads it without panicking:
/// every row then names a pack number its `packs` table lacks. Shared with
/// the processes that hold it open, as cairn opens it.
pub fn empty_cache_packs_table(db: &Path) {
    let d = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .open(db)
        .unwrap();
    let tx = d.begin_write().unwrap();
    {
        let packs: redb::TableDefinition<u32, ([u8; 32], u64)> =
            redb::TableDefinition::new("packs");
        let mut t = tx.open_table(packs).unwrap();
        t.retain(|_, _| false).unwrap();
    }
    tx.commit().unwrap();
}
