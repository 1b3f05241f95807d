//! The command tree.

mod audit;
mod backup;
mod cache;
mod cat;
mod check;
mod completions;
mod config;
mod copy;
mod diff;
mod dump;
mod find;
mod forget;
mod hold;
mod init;
mod key;
mod ls;
mod man;
mod mount;
mod prune;
mod recover;
mod repair;
mod restore;
mod restore_db;
mod rewrite;
mod serve;
mod snapshots;
mod stats;
mod tag;
mod unlock;
mod verify_restore;
mod watch;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::common::Global;

/// cairn: deduplicating, encrypted backups of files and databases.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, long_about = None)]
pub struct Cli {
    // Listed apart in every command's help: mixed in, they hid the
    // command's own options.
    #[command(flatten, next_help_heading = "Global options")]
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
    /// Watch paths and write a snapshot whenever they change
    Watch(Box<watch::Args>),
    /// Restore a snapshot (or part of it) into a directory
    Restore(restore::Args),
    /// Load a PostgreSQL dump from a snapshot into a database (psql, stops at the first error)
    RestoreDb(restore_db::Args),
    /// List snapshots
    Snapshots(snapshots::Args),
    /// Remove snapshots by policy (--keep-*) or by ID
    Forget(Box<forget::Args>),
    /// Put snapshots under legal hold, or release them (--release)
    Hold(hold::Args),
    /// List the files in a snapshot
    Ls(ls::Args),
    /// Find files and directories by name or path across snapshots
    Find(find::Args),
    /// Show what changed between two snapshots
    Diff(diff::Args),
    /// Write a file, or a directory as a tar or zip archive, to standard output
    Dump(dump::Args),
    /// Sizes and counts over snapshots (restore size, raw data, dedup ratio)
    Stats(stats::Args),
    /// Browse every snapshot as a read-only filesystem (FUSE)
    Mount(mount::Args),
    /// Print repository objects (config, snapshot, index, key, tree, blob, pack)
    Cat(cat::Args),
    /// Show or change repository settings (append-only mode, format version)
    #[command(subcommand)]
    Config(config::Command),
    /// Manage keys (passwords)
    #[command(subcommand)]
    Key(key::Command),
    /// Add, remove or replace snapshot tags
    Tag(tag::Args),
    /// Verify the repository
    Check(check::Args),
    /// Copy snapshots from another repository (--from-repo), re-encrypting and re-chunking
    Copy(Box<copy::Args>),
    /// Remove data no snapshot references
    Prune(prune::Args),
    /// Make a snapshot of the trees no snapshot refers to (lost or forgotten snapshots, before prune)
    Recover(recover::Args),
    /// Rebuild derived state from what the repository holds
    #[command(subcommand)]
    Repair(repair::Command),
    /// Remove files or directories from existing snapshots (--exclude), replacing them
    Rewrite(rewrite::Args),
    /// Restore snapshots into a scratch directory and check bytes and databases
    VerifyRestore(verify_restore::Args),
    /// Remove stale locks (of processes that are gone), or all with --remove-all
    Unlock(unlock::Args),
    /// List the audit trail: which command changed what, when, by whom
    Audit(audit::Args),
    /// Serve a dashboard, a JSON API and Prometheus metrics over HTTP (read-only)
    Serve(serve::Args),
    /// List the local caches (one per repository) or remove old ones (--cleanup)
    Cache(cache::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(completions::Args),
    /// Write manual pages for cairn and each of its commands into a directory
    Man(man::Args),
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    crate::exit::NO_LOCK_GIVEN.store(g.no_lock, std::sync::atomic::Ordering::Relaxed);
    crate::common::QUIET.store(g.quiet, std::sync::atomic::Ordering::Relaxed);
    // These stop at a safe point of their own on a signal; any other
    // command removes its locks and dies by the signal.
    let own_stop = match &cli.command {
        Command::Backup(_)
        | Command::Watch(_)
        | Command::Restore(_)
        | Command::RestoreDb(_)
        | Command::Mount(_)
        | Command::VerifyRestore(_)
        | Command::Serve(_) => true,
        // Printing text only, no repository.
        Command::Completions(_) | Command::Man(_) => true,
        _ => false,
    };
    if !own_stop {
        crate::exit::exit_on_signal().context("cannot start a thread")?;
    }
    match cli.command {
        Command::Init(a) => init::run(g, a),
        Command::Backup(a) => backup::run(g, *a),
        Command::Watch(a) => watch::run(g, *a),
        Command::Restore(a) => restore::run(g, a),
        Command::RestoreDb(a) => restore_db::run(g, a),
        Command::Snapshots(a) => snapshots::run(g, a),
        Command::Forget(a) => forget::run(g, *a),
        Command::Hold(a) => hold::run(g, a),
        Command::Ls(a) => ls::run(g, a),
        Command::Find(a) => find::run(g, a),
        Command::Diff(a) => diff::run(g, a),
        Command::Dump(a) => dump::run(g, a),
        Command::Stats(a) => stats::run(g, a),
        Command::Mount(a) => mount::run(g, a),
        Command::Cat(a) => cat::run(g, a),
        Command::Config(c) => config::run(g, c),
        Command::Key(c) => key::run(g, c),
        Command::Tag(a) => tag::run(g, a),
        Command::Check(a) => check::run(g, a),
        Command::Copy(a) => copy::run(g, *a),
        Command::Prune(a) => prune::run(g, a),
        Command::Recover(a) => recover::run(g, a),
        Command::Repair(c) => repair::run(g, c),
        Command::Rewrite(a) => rewrite::run(g, a),
        Command::VerifyRestore(a) => verify_restore::run(g, a),
        Command::Unlock(a) => unlock::run(g, a),
        Command::Audit(a) => audit::run(g, a),
        Command::Serve(a) => serve::run(g, a),
        Command::Cache(a) => cache::run(g, a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
    }
}
