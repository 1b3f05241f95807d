//! `cairn completions`: shell completion scripts, generated from the
//! command tree so they never fall behind it.

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::exit;

/// Arguments of `cairn completions`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The shell to complete for
    shell: Shell,
}

pub fn run(a: Args) -> Result<i32> {
    let mut cmd = super::Cli::command();
    // Into a buffer: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "cairn", &mut script);
    print!("{}", String::from_utf8_lossy(&script));
    Ok(exit::OK)
}
