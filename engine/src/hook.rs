//! Notification commands: a shell command of the user's, run when a
//! scheduled backup succeeds or fails (a ping to a monitoring service, a
//! mail), told what happened through its environment.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a hook may run before it is killed: a hook that hangs must not
/// hold up the schedule.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a hook may still run once cairn is asked to stop: enough for a
/// ping or a mail to go out, not for a hung one to hold up the stop.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Variables given to every hook on top of the process's environment: a
/// front end that took the repository's password out of its environment
/// (so that the programs whose output is stored do not see it) hands it
/// back to hooks, the user's own commands, which may run `cairn` again.
static HOOK_ENV: std::sync::OnceLock<Vec<(String, std::ffi::OsString)>> =
    std::sync::OnceLock::new();

/// Sets the variables every hook gets on top of the environment (once).
pub fn pass_to_hooks(vars: Vec<(String, std::ffi::OsString)>) {
    let _ = HOOK_ENV.set(vars);
}

/// Runs `command` with `sh -c`, with `env` added to its environment and its
/// output sent to our standard error (standard output may carry JSON).
/// Fails if it cannot start, exits non-zero, runs longer than `timeout` or
/// is still running [`STOP_GRACE`] after this process is asked to stop
/// ([`crate::child::stopping`]): it is then killed, with every process it
/// started (its own process group; killing `sh` alone left a `sleep` or a
/// `curl` running on, one more each run).
pub fn run_hook(command: &str, env: &[(&str, &str)], timeout: Duration) -> Result<()> {
    let fail = |why: String| Error::InvalidInput(format!("hook {command:?} {why}"));
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| fail(format!("could not start: {e}")))?;
    let mut child = crate::child::dies_with_us(&mut Command::new("sh"))
        .arg("-c")
        .arg(command)
        .envs(HOOK_ENV.get().into_iter().flatten().map(|(k, v)| (k, v)))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}")))?;
    let mut deadline = Instant::now() + timeout;
    let mut stop_seen = false;
    loop {
        if !stop_seen && crate::child::stopping() {
            stop_seen = true;
            deadline = deadline.min(Instant::now() + STOP_GRACE);
        }
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(fail(format!("failed ({status})"))),
            Ok(None) if Instant::now() >= deadline => {
                // SAFETY: signals the group this function made for the hook.
                unsafe {
                    libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
                }
                let _ = child.wait();
                if stop_seen {
                    return Err(fail(format!(
                        "was killed: it ran on {} s after cairn was asked to stop",
                        STOP_GRACE.as_secs()
                    )));
                }
                return Err(fail(format!(
                    "ran longer than {} s and was killed",
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(fail(format!("could not be waited for: {e}"))),
        }
    }
}

/// Runs the success hook `command` for a snapshot (`snapshot_id` in hex,
/// empty if none was written): `CAIRN_SNAPSHOT_ID` holds it, and
/// `CAIRN_PARTIAL` is `1` if some entries could not be read, else `0`.
pub fn run_success_hook(command: &str, snapshot_id: &str, partial: bool) -> Result<()> {
    let partial = if partial { "1" } else { "0" };
    let env = [
        ("CAIRN_SNAPSHOT_ID", snapshot_id),
        ("CAIRN_PARTIAL", partial),
    ];
    run_hook(command, &env, HOOK_TIMEOUT)
}

/// Runs the failure hook `command`: `CAIRN_ERROR` holds the error.
pub fn run_failure_hook(command: &str, error: &str) -> Result<()> {
    run_hook(command, &[("CAIRN_ERROR", error)], HOOK_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_sees_its_environment_and_its_failures_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cmd = format!("echo \"$CAIRN_X\" > {}", out.display());
        run_hook(&cmd, &[("CAIRN_X", "hello")], HOOK_TIMEOUT).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello\n");
        let e = run_hook("exit 4", &[], HOOK_TIMEOUT).unwrap_err();
        assert!(e.to_string().contains("failed"), "{e}");
        // What the hook started goes with it (a `sleep` was left running).
        let pid_file = dir.path().join("pid");
        let cmd = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let e = run_hook(&cmd, &[], Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        let zombie =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
        assert!(!alive || zombie, "the hook's child {pid} is still running");
    }
}
