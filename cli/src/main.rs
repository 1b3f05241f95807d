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

fn main() {
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
