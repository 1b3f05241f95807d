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
