//! Programs cairn starts (a `--stdin-from-command` producer, `pg_dump`,
//! `psql`, hooks) that must not outlive it: killed with `kill -9`, cairn
//! cannot stop them itself, and a producer blocked on something other than
//! its pipe (a server, a lock, a sleep) would run on unseen.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the program `cmd` starts receive SIGTERM when this process dies
/// (Linux's parent-death signal; the thread that spawns it must wait for
/// it, since the signal follows the spawning thread).
pub fn dies_with_us(cmd: &mut Command) -> &mut Command {
    // SAFETY: getpid is async-signal-safe; read before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only calls the
    // async-signal-safe prctl, getppid and _exit.
    unsafe {
        cmd.pre_exec(move || {
            // cairn ignores SIGXFSZ (to report EFBIG itself); the program
            // gets the default, as from a shell.
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Died between the fork and the prctl: the signal never comes.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

/// The flag a signal sets to ask this process to stop (see [`stop_with`]).
static STOP: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

/// Makes `flag` the process's stop request: programs run through
/// [`output_stoppable`] are sent SIGTERM once it is set, and long
/// operations that poll [`stopping`] end with [`crate::Error::Interrupted`],
/// cleaning up what they made (a scratch database, a scratch directory).
pub fn stop_with(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let _ = STOP.set(flag);
}

/// Whether this process was asked to stop.
pub fn stopping() -> bool {
    STOP.get()
        .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
}

/// Runs `work`, calling `on_stop` once (from another thread) if a stop is
/// requested before it returns: what cannot poll [`stopping`] itself (a
/// child program, an SQLite statement) is ended that way.
pub fn stopped_by<R>(on_stop: impl Fn() + Sync, work: impl FnOnce() -> R) -> R {
    ended_when(stopping, on_stop, work)
}

/// [`stopped_by`] for another condition than a stop request: `on_stop`
/// is called once if `stop` turns true before `work` returns (it is
/// polled every 50 ms).
pub fn ended_when<R>(
    stop: impl Fn() -> bool + Sync,
    on_stop: impl Fn() + Sync,
    work: impl FnOnce() -> R,
) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let monitor = s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if stop() {
                    on_stop();
                    return;
                }
                std::thread::park_timeout(std::time::Duration::from_millis(50));
            }
        });
        let r = work();
        done.store(true, Ordering::SeqCst);
        monitor.thread().unpark();
        r
    })
}

/// [`Command::output`] of `cmd` (made to die with us), sending the program
/// SIGTERM if a stop is requested while it runs: `psql` loading a large
/// dump would otherwise run on past the request.
pub fn output_stoppable(cmd: &mut Command) -> std::io::Result<std::process::Output> {
    output_stoppable_fed(
        cmd,
        None::<fn(&mut std::process::ChildStdin) -> std::io::Result<()>>,
    )
}

/// [`output_stoppable`], with the program's standard input written by
/// `feed` (from another thread; the program ending before it read all is
/// no error of `feed`'s, a failure to produce the input is).
pub fn output_stoppable_fed(
    cmd: &mut Command,
    feed: Option<impl FnOnce(&mut std::process::ChildStdin) -> std::io::Result<()> + Send>,
) -> std::io::Result<std::process::Output> {
    if feed.is_some() {
        cmd.stdin(std::process::Stdio::piped());
    }
    // Piped as `output` does it (`spawn` alone inherits ours).
    let mut child = dies_with_us(cmd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let input = child.stdin.take();
    std::thread::scope(|s| {
        let fed = feed.zip(input).map(|(feed, mut input)| {
            s.spawn(move || match feed(&mut input) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r,
            })
        });
        let out = waited(child)?;
        if let Some(fed) = fed {
            fed.join().expect("feeding a child's input panicked")?;
        }
        Ok(out)
    })
}

/// Waits for `child`, sending it SIGTERM if a stop is requested meanwhile.
fn waited(child: std::process::Child) -> std::io::Result<std::process::Output> {
    let pid = child.id();
    let pidfd = pidfd_open(pid);
    stopped_by(
        || match &pidfd {
            Some(fd) => pidfd_sigterm(fd),
            // No pidfd (a kernel before 5.3, a seccomp filter): by PID,
            // which is still the child's unless it ended this instant.
            // SAFETY: kill has no memory effects.
            None => unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            },
        },
        || child.wait_with_output(),
    )
}

/// A pidfd for process `pid` (Linux 5.3+): it names that process only,
/// also once it is reaped, when its PID may be another's.
fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a PID and flags and returns a new
    // descriptor, owned here, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a descriptor pidfd_open just returned, owned by no one else.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Sends SIGTERM to the process `fd` names (nothing if it is gone).
fn pidfd_sigterm(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid pidfd, no siginfo, no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGTERM,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}
