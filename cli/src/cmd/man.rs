//! `cairn man`: manual pages for `cairn` and each of its commands
//! (`cairn-backup.1`, `cairn-key-add.1`, ...), generated from the command
//! tree.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::exit;

/// Arguments of `cairn man`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write the pages into (created if missing)
    dir: PathBuf,
}

pub fn run(a: Args) -> Result<i32> {
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    let mut cmd = super::Cli::command();
    // Built, so that each command knows how it is invoked (`cairn key add`)
    // and carries the global options it accepts.
    cmd.build();
    let written = write_pages(&a.dir, cmd)?;
    println!("{written} manual pages written to {}", a.dir.display());
    Ok(exit::OK)
}

/// Writes the page of `cmd` and of every subcommand below it; returns how
/// many were written.
fn write_pages(dir: &Path, cmd: clap::Command) -> Result<usize> {
    let name = cmd.get_name().to_string();
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .source(format!("cairn {}", env!("CARGO_PKG_VERSION")))
        .manual("cairn manual")
        .render(&mut out)
        .with_context(|| format!("cannot render the page of {name}"))?;
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        written += write_pages(dir, sub.clone().name(sub_name))?;
    }
    Ok(written)
}
