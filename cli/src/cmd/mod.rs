//! The command tree.

mod backup;
mod cat;
mod check;
mod forget;
mod hold;
mod init;
mod key;
mod ls;
mod mount;
mod prune;
mod repair;
mod restore;
mod snapshots;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::common::Global;

/// cairn: deduplicating, encrypted backups of files and databases.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new repository
    Init(init::Args),
    /// Back up files and directories
    Backup(Box<backup::Args>),
    /// Restore a snapshot (or part of it) into a directory
    Restore(restore::Args),
    /// List snapshots
    Snapshots(snapshots::Args),
    /// Remove snapshots by policy (--keep-*) or by ID
    Forget(Box<forget::Args>),
    /// Put snapshots under legal hold, or release them (--release)
    Hold(hold::Args),
    /// List the files in a snapshot
    Ls(ls::Args),
    /// Browse every snapshot as a read-only filesystem (FUSE)
    Mount(mount::Args),
    /// Print repository objects (config, snapshot, index, key, tree, blob, pack)
    Cat(cat::Args),
    /// Manage keys (passwords)
    #[command(subcommand)]
    Key(key::Command),
    /// Verify the repository
    Check(check::Args),
    /// Remove data no snapshot references
    Prune(prune::Args),
    /// Rebuild derived state from what the repository holds
    #[command(subcommand)]
    Repair(repair::Command),
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => init::run(g, a),
        Command::Backup(a) => backup::run(g, *a),
        Command::Restore(a) => restore::run(g, a),
        Command::Snapshots(a) => snapshots::run(g, a),
        Command::Forget(a) => forget::run(g, *a),
        Command::Hold(a) => hold::run(g, a),
        Command::Ls(a) => ls::run(g, a),
        Command::Mount(a) => mount::run(g, a),
        Command::Cat(a) => cat::run(g, a),
        Command::Key(c) => key::run(g, c),
        Command::Check(a) => check::run(g, a),
        Command::Prune(a) => prune::run(g, a),
        Command::Repair(c) => repair::run(g, c),
    }
}
