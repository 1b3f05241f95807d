//! Exit codes: the contract scripts rely on (documented in README.md).

use cairn_engine::Error;

/// Success.
pub const OK: i32 = 0;
/// Fatal error.
pub const FATAL: i32 = 1;
/// The command line is wrong (what clap finds, and [`Usage`]).
pub const USAGE: i32 = 2;
/// Snapshot written, but some source files could not be read.
pub const PARTIAL: i32 = 3;
/// The repository does not exist (or, on S3, its bucket).
pub const NO_REPOSITORY: i32 = 10;
/// The repository is locked by another process.
pub const LOCKED: i32 = 11;
/// Wrong password.
pub const WRONG_PASSWORD: i32 = 12;
/// Refused: the repository or the key in use is append-only.
pub const APPEND_ONLY: i32 = 13;
/// Interrupted (SIGINT, SIGTERM, SIGHUP).
pub const INTERRUPTED: i32 = 130;

/// A flag the first of `signals` sets, so that the command stops at its next
/// safe point; a second signal, while it stops, exits with [`INTERRUPTED`]
/// once the repository locks this process holds are removed (at most 3 s; a
/// third signal does not wait). SIGHUP ignored when cairn started stays
/// ignored (`nohup cairn watch` must outlive the session), and never exits
/// early: a closed session often sends it twice (the shell, then the kernel).
pub fn stop_flag(
    signals: &[std::ffi::c_int],
) -> std::io::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hurried = Vec::new();
    for &sig in signals {
        // SIGHUP only: a shell starts background jobs of a script with
        // SIGINT ignored, and `kill -INT` must still stop them.
        if sig == libc::SIGHUP && ignored(sig) {
            continue;
        }
        if sig != libc::SIGHUP {
            hurried.push(sig);
        }
        signal_hook::flag::register(sig, stop.clone())?;
    }
    if !hurried.is_empty() {
        let mut caught = signal_hook::iterator::Signals::new(&hurried)?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut caught = caught.forever();
                // The first stops the command where it is safe to.
                if caught.next().is_none() || caught.next().is_none() {
                    return;
                }
                // Before, the second exited at once and left the locks to
                // hold other hosts' prune and forget off for half an hour.
                std::thread::spawn(|| {
                    cairn_engine::lock::release_held();
                    cairn_engine::mount::detach_served();
                    hurry_out();
                });
                std::thread::spawn(|| {
                    std::thread::sleep(std::time::Duration::from_secs(3));
                    hurry_out();
                });
                if caught.next().is_some() {
                    hurry_out();
                }
            })?;
    }
    Ok(stop)
}

/// Ends the process with [`INTERRUPTED`] at once, running nothing else
/// (other threads may be mid-write; the temporaries are tidied by prune).
fn hurry_out() -> ! {
    // SAFETY: _exit ends the process; it touches no Rust state.
    unsafe { libc::_exit(INTERRUPTED) }
}

/// For a command with no stop of its own (prune, copy, forget, check...):
/// the first SIGINT, SIGTERM or SIGHUP (not one ignored at start, as in
/// [`stop_flag`]) removes the repository locks this process holds, then
/// the process dies by that signal, as before (a shell stops its script on
/// a child killed by SIGINT and puts the terminal back, systemd counts a
/// SIGTERM a clean stop); a second signal does not wait for the locks.
/// Their locks were left to block other hosts for half an hour.
pub fn exit_on_signal() -> std::io::Result<()> {
    let mut signals = vec![libc::SIGINT, libc::SIGTERM];
    if !ignored(libc::SIGHUP) {
        signals.push(libc::SIGHUP);
    }
    let mut signals = signal_hook::iterator::Signals::new(&signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut caught = signals.forever();
            let Some(sig) = caught.next() else {
                return;
            };
            crate::output::warn_line("cairn: interrupted");
            // Removing a lock from stalled storage may hang: a second
            // signal does not wait for it.
            std::thread::spawn(move || {
                cairn_engine::lock::release_held();
                die_by(sig);
            });
            if let Some(again) = caught.next() {
                die_by(again);
            }
        })?;
    Ok(())
}

/// Ends the process by `sig` at its default action.
pub(crate) fn die_by(sig: std::ffi::c_int) -> ! {
    let _ = signal_hook::low_level::emulate_default_handler(sig);
    // Only if the default action did not end it.
    std::process::exit(INTERRUPTED)
}

/// Whether `sig` is ignored (inherited from `nohup` or the parent).
pub fn ignored(sig: std::ffi::c_int) -> bool {
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    rc == 0 && old.sa_sigaction == libc::SIG_IGN
}

/// A command line that is wrong in a way its parser cannot see (options
/// that conflict only in some combinations): exit [`USAGE`], as for the
/// errors clap finds.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A [`Usage`] error saying `msg`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

/// The exit code for an error.
pub fn code_for(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<Usage>().is_some() {
        return USAGE;
    }
    match e.downcast_ref::<Error>() {
        Some(Error::RepositoryNotFound(_) | Error::BucketNotFound(_)) => NO_REPOSITORY,
        Some(Error::Locked(_)) => LOCKED,
        Some(Error::WrongPassword { .. }) => WRONG_PASSWORD,
        Some(Error::AppendOnly(_)) => APPEND_ONLY,
        Some(Error::Interrupted) => INTERRUPTED,
        _ => FATAL,
    }
}

/// What the command had done for good when it went on to print its
/// report: said if printing fails (a full disk under a cron job's log), so
/// that the error is not taken for a failed backup.
static DONE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Records what [`DONE`] says (the latest call counts: a scheduled backup
/// saves one snapshot a run).
pub fn done(what: String) {
    *DONE.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
}

/// What [`done`] recorded, if anything.
pub fn what_was_done() -> Option<String> {
    DONE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `--no-lock` was given: the hint for a lock that cannot be written must
/// not suggest it again.
pub static NO_LOCK_GIVEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What to do about an error, where the message alone does not say.
pub fn hint(e: &anyhow::Error) -> Option<&'static str> {
    let engine = || e.chain().filter_map(|c| c.downcast_ref::<Error>());
    if let Some(cache) = engine().find(|c| c.is_cache_io()) {
        let kind = match cache {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        };
        return Some(if kind == Some(std::io::ErrorKind::StorageFull) {
            "the repository is intact; free space on the cache's disk, or run with --no-cache"
        } else if kind == Some(std::io::ErrorKind::TimedOut) {
            "the repository is intact; resume (`kill -CONT`) or end the cairn that holds the \
             cache, or run with --no-cache"
        } else {
            "the repository is intact; run with --no-cache, or give --cache-dir on a working disk"
        });
    }
    let unwritable_lock = engine().any(|c| match c {
        Error::Io { path, source, .. } => {
            path.parent().and_then(|p| p.file_name()) == Some("locks".as_ref())
                && matches!(
                    source.kind(),
                    std::io::ErrorKind::ReadOnlyFilesystem
                        | std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::StorageFull
                        | std::io::ErrorKind::QuotaExceeded
                )
        }
        // An S3 key that may only read: its answer to the lock's upload.
        Error::Backend(said) => denied_lock_upload(said),
        _ => false,
    });
    // Held by another process (not our own lock lost on the way).
    let held = engine().find_map(|c| match c {
        Error::Locked(why) if !why.starts_with("lock lost") => Some(why.contains("(waited ")),
        _ => None,
    });
    if let Some(waited) = held.filter(|_| !unwritable_lock) {
        return Some(if waited {
            "a lock left by a process that is gone (a crash, a machine turned off) is removed \
             by `cairn unlock` once stale"
        } else {
            "wait for it with --retry-lock DURATION; a lock left by a process that is gone \
             (a crash, a machine turned off) is removed by `cairn unlock` once stale"
        });
    }
    unwritable_lock.then_some(
        if NO_LOCK_GIVEN.load(std::sync::atomic::Ordering::Relaxed) {
            "no lock can be written to the repository: this command changes it and locks it \
             even with --no-lock, so it cannot run on a read-only or full repository (prune, \
             forget and recover preview one with --dry-run --no-lock)"
        } else {
            "no lock can be written to the repository; a read-only or full repository is read \
             with --no-lock"
        },
    )
}

/// Whether an S3 backend's message `said` is a refused upload of a lock
/// (`<location>: upload [PREFIX/]locks/ID: PermissionDenied ...`).
fn denied_lock_upload(said: &str) -> bool {
    said.split_once(": upload ").is_some_and(|(_, rest)| {
        let key = rest.split(": ").next().unwrap_or_default();
        std::path::Path::new(key)
            .parent()
            .and_then(|p| p.file_name())
            == Some("locks".as_ref())
            && rest.contains("PermissionDenied")
    })
}

/// The message for an error, with its causes.
pub fn describe(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_key_that_may_only_read_gets_the_no_lock_hint() {
        let denied = "s3:http://h/b/r1: upload r1/locks/ab12: PermissionDenied (persistent) at \
                      write, context: { ... } => S3Error { code: \"AccessDenied\" }";
        assert!(denied_lock_upload(denied));
        assert!(denied_lock_upload(&denied.replace("r1/locks", "locks")));
        let e = anyhow::Error::from(Error::Backend(denied.into()));
        assert!(hint(&e).is_some_and(|h| h.contains("--no-lock")));
        // Other refusals are not about locks.
        assert!(!denied_lock_upload(&denied.replace("locks/", "data/ab/")));
        assert!(!denied_lock_upload(
            "s3:http://h/b: upload locks/ab: gave up after 5s"
        ));
    }
}
