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

use clap::Parser;

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
    let cli = cmd::Cli::parse();
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn: error: {}", exit::describe(&e));
            exit::code_for(&e)
        }
    };
    std::process::exit(code);
}
