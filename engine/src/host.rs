//! Facts about the machine the engine runs on.

/// This machine's host name.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The name of the user this process runs as: the password database's
/// entry for the effective user ID, which service managers and `sudo` do
/// not leave stale or empty as they may `$USER`; the environment's name where
/// there is no entry (a container without one); empty if neither. Looked
/// up once: every lock refresh, snapshot and audit record asks, and a
/// password database may be a network service.
pub fn username() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .unwrap_or_default()
    })
    .clone()
}

/// The home directory of the user this process runs as: `$HOME`, else the
/// password database's entry (a systemd service without `User=`, a cron
/// job or `env -i` has no `$HOME`); `None` if neither names one.
pub fn home_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
                .filter(|d| !d.as_os_str().is_empty())
        })
}

/// Whether a process `pid` exists here. Asked of the kernel, not of
/// `/proc`: with `hidepid` another user's processes are not listed there,
/// and without `/proc` (a chroot) none is, and a live process must not be
/// judged gone (its lock taken over, its scratch files removed).
pub fn running(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return true; // not a PID this system hands out: do not judge
    };
    let exists = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        // It exists, and belongs to someone we may not signal.
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    };
    // A zombie (killed, not yet reaped by its parent) holds nothing and
    // runs no more: its lock stood in the way until the parent waited. Only
    // `/proc` tells; where it cannot be read, the kernel's answer stands.
    exists && !is_zombie(pid)
}

/// Whether `/proc` shows process `pid` as a zombie (state `Z`, field 3 of
/// `/proc/<pid>/stat`).
fn is_zombie(pid: u32) -> bool {
    // A /proc mounted for another PID namespace (`unshare -p` without a
    // new mount) numbers other processes: its word is not taken.
    let own = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse::<u32>().ok());
    if own != Some(std::process::id()) {
        return false;
    }
    stat_field(pid, 0).is_some_and(|state| state == "Z")
}

/// Field `n` after the command name of `/proc/<pid>/stat` (0 is the
/// state, field 3); `None` if there is no such process.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n).map(str::to_string)
}

/// When process `pid` started, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`); `None` if there is no such process. Tells a process
/// from a later one that reuses its ID.
pub fn process_start(pid: u32) -> Option<u64> {
    stat_field(pid, 19)?.parse().ok()
}

/// Which running system and PID namespace this process is in, so that a
/// process ID recorded by another process can be judged (see
/// [`crate::lock`]). Empty fields are unknown (not Linux, or hidden).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessSpace {
    /// The kernel's random ID of this boot (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// The PID namespace (`/proc/self/ns/pid`, e.g. `pid:[4026531836]`).
    pub pid_namespace: String,
    /// The installation's ID (`/etc/machine-id`): tells a reboot of this
    /// machine from another machine of the same host name.
    pub machine_id: String,
    /// When this boot began, by the wall clock (now less `CLOCK_BOOTTIME`):
    /// tells a reboot from a clone (a VM or image copied with its
    /// machine ID) that runs beside this machine.
    pub booted: Option<chrono::DateTime<chrono::Utc>>,
}

impl ProcessSpace {
    /// This process's (read once: none of it changes while it runs).
    pub fn current() -> ProcessSpace {
        static CURRENT: std::sync::OnceLock<ProcessSpace> = std::sync::OnceLock::new();
        CURRENT.get_or_init(ProcessSpace::read).clone()
    }

    fn read() -> ProcessSpace {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        ProcessSpace {
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            pid_namespace: std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            machine_id: read("/etc/machine-id"),
            booted: nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
                .ok()
                .and_then(|t| chrono::TimeDelta::from_std(std::time::Duration::from(t)).ok())
                .map(|up| chrono::Utc::now() - up),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_process_not_yet_reaped_is_not_running() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(running(pid));
        child.kill().unwrap();
        // Not waited for: a zombie until then.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !is_zombie(pid) {
            assert!(std::time::Instant::now() < until, "never became a zombie");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!running(pid), "a zombie counted as running");
        child.wait().unwrap();
        assert!(!running(pid));
    }
}
