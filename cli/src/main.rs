//! `cairn`: the command-line interface of the cairn backup engine.
//!
//! Each command lives in `cmd/<name>.rs`, parses its options, calls one
//! engine function and renders the result (text or `--json`).

mod cmd;
mod common;
mod exit;
mod output;
mod progress;
mod prompt;
mod snapshot_arg;
mod timefmt;
mod web;

use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory, FromArgMatches};

/// glibc serves multi-MiB buffers (chunks, the chunker's window, packs)
/// from its per-thread arenas once a large block has been freed, and keeps
/// the freed memory there: a backup of the kernel tree peaked at 110 MiB
/// for about 60 MiB in use. A fixed threshold maps every buffer of 1 MiB or
/// more on its own and returns it on free: 73 MiB, for about 5 % more time.
fn limit_allocator_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation policy; called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Raises the soft limit on open files towards the hard one, as Go programs
/// (restic) do at start: a walk keeps one descriptor open per directory
/// level, and the common soft limit of 1024 stopped a backup of a tree
/// about that deep with EMFILE. At most to [`OPEN_FILES`]: programs cairn
/// runs (pg_dump, hooks) inherit the limit, and some close every possible
/// descriptor up to it.
fn raise_open_files_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            let want = l.rlim_max.min(OPEN_FILES);
            if l.rlim_cur < want {
                l.rlim_cur = want;
                libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            }
        }
    }
}

/// A file-size limit (`ulimit -f`, systemd's LimitFSIZE) killed the
/// process by SIGXFSZ mid-write, silently, leaving a truncated file in a
/// restore and a lock behind. Ignored, the write fails with EFBIG, which
/// is reported and cleaned up like a full disk.
fn fail_writes_beyond_the_file_size_limit() {
    // SAFETY: sets a signal's disposition before any other thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The soft open-files limit [`raise_open_files_limit`] aims at.
const OPEN_FILES: libc::rlim_t = 65536;

/// Set when `print!` failed because standard output's reader went away.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// Why `print!` failed otherwise (a full disk, an I/O error), as an error
/// message: the command then fails with exit code 1, not a panic's 101.
static STDOUT_FAILED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Why a thread could not be started (the process or thread limit is
/// reached: `ulimit -u`, a cgroup's pids.max): std and rayon panic then,
/// so the command fails with exit code 1 and a message, not a panic's 101.
static NO_THREAD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The OS's words in a panic message that quotes an `io::Error`
/// (`Os { code: 11, kind: WouldBlock, message: "Resource temporarily
/// unavailable" }`), or the whole message.
fn os_message(msg: &str) -> &str {
    msg.split_once("message: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or(msg, |(said, _)| said)
}

/// Output cut short by its reader (`cairn ls | head`) ends the process as it
/// ends other tools: by SIGPIPE, without a panic message. Rust ignores
/// SIGPIPE, so that writes to closed sockets and to children's pipes return
/// errors (which cairn reports), and `println!` then panics on EPIPE. That
/// panic is only marked here; `main` ends the process once it has unwound,
/// so the repository was dropped: its audit record written, its lock gone.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = output::panic_message(info.payload());
        if msg.starts_with("failed printing to std") && msg.contains("(os error 32)") {
            STDOUT_GONE.store(true, Ordering::SeqCst);
            return;
        }
        if let Some(why) = msg.strip_prefix("failed printing to stdout: ") {
            let _ = STDOUT_FAILED.set(format!("write <stdout>: {why}"));
            return;
        }
        if msg.starts_with("failed to spawn thread")
            || msg.starts_with("The global thread pool has not been initialized")
        {
            let _ = NO_THREAD.set(os_message(msg).to_string());
            return;
        }
        default(info);
    }));
}

/// Ends the process by SIGPIPE, as a tool whose reader went away ends.
fn end_by_sigpipe() {
    // SAFETY: restores the default action and raises the signal, which
    // ends the process (SIGPIPE is not blocked: cairn blocks no signal).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
}

/// Whether `e` is standard output's reader having gone away (listings and
/// `dump` report it as an error on `<stdout>` or `<output>`).
fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<cairn_engine::Error>(),
            Some(cairn_engine::Error::Io { path, source, .. })
                if (path.as_os_str() == "<stdout>" || path.as_os_str() == "<output>")
                    && source.kind() == std::io::ErrorKind::BrokenPipe
        )
    })
}

/// The command as the audit trail names it: with its subcommand (`key
/// add`), and for `hold` and `tag` with what tells one use from its
/// opposite (`hold --release`, `tag --remove old`), which the records'
/// added and removed snapshot IDs do not.
fn audit_name(name: &str, sub: &clap::ArgMatches) -> String {
    let mut full = name.to_string();
    if let Some(s) = sub.subcommand_name() {
        full = format!("{full} {s}");
    }
    match name {
        "hold" if sub.get_flag("release") => full.push_str(" --release"),
        "tag" => {
            for opt in ["add", "remove", "set"] {
                if let Some(v) = sub.get_many::<String>(opt) {
                    let v: Vec<&str> = v.map(String::as_str).collect();
                    full = format!("{full} --{opt} {}", v.join(","));
                }
            }
        }
        _ => {}
    }
    full
}

fn main() {
    common::drop_empty_env_settings();
    common::take_env_passwords();
    limit_allocator_retention();
    raise_open_files_limit();
    fail_writes_beyond_the_file_size_limit();
    quiet_on_broken_pipe();
    let matches = cmd::Cli::command().get_matches();
    if let Some((name, sub)) = matches.subcommand() {
        cairn_engine::audit::set_command(&audit_name(name, sub));
    }
    let cli = match cmd::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd::run(cli)));
    let ran = match ran {
        Ok(r) => r,
        Err(_) if STDOUT_GONE.load(Ordering::SeqCst) => {
            end_by_sigpipe();
            std::process::exit(exit::FATAL)
        }
        Err(_) if STDOUT_FAILED.get().is_some() => {
            crate::warn!("cairn: error: {}", STDOUT_FAILED.get().expect("set"));
            if let Some(done) = exit::what_was_done() {
                crate::warn!("cairn: note: {done}; only this report was lost");
            }
            std::process::exit(exit::FATAL)
        }
        Err(_) if NO_THREAD.get().is_some() => {
            crate::warn!(
                "cairn: error: cannot start a thread: {}",
                NO_THREAD.get().expect("set")
            );
            crate::warn!(
                "cairn: hint: the limit on processes or threads is reached (ulimit -u, systemd \
                 TasksMax, a cgroup's pids.max); the repository is as a stopped command leaves it"
            );
            std::process::exit(exit::FATAL)
        }
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let code = match ran {
        Ok(code) => code,
        Err(e) => {
            if stdout_closed(&e) {
                end_by_sigpipe();
            }
            crate::warn!("cairn: error: {}", exit::describe(&e));
            // Work committed before the failure stays: say so, so that it
            // is not taken for lost and done again.
            if let Some(done) = exit::what_was_done() {
                crate::warn!("cairn: note: {done} before the error");
            }
            if let Some(hint) = exit::hint(&e) {
                crate::warn!("cairn: hint: {hint}");
            }
            exit::code_for(&e)
        }
    };
    std::process::exit(code);
}
