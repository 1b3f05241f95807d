//! `cairn`: the command-line interface of the cairn backup engine.
//!
//! Each command lives in `cmd/<name>.rs`, parses its options, calls one
//! engine function and renders the result (text or `--json`).

mod cmd;
mod common;
mod exit;
mod output;
mod progress;
mod snapshot_arg;
mod timefmt;
mod web;

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

fn main() {
    limit_allocator_retention();
    let matches = cmd::Cli::command().get_matches();
    // The command's name (with its subcommand: `key add`) for the audit trail.
    if let Some((name, sub)) = matches.subcommand() {
        let full = match sub.subcommand_name() {
            Some(s) => format!("{name} {s}"),
            None => name.to_string(),
        };
        cairn_engine::audit::set_command(&full);
    }
    let cli = match cmd::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn: error: {}", exit::describe(&e));
            exit::code_for(&e)
        }
    };
    std::process::exit(code);
}
