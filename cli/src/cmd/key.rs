//! `cairn key list | add | remove | passwd`

use std::path::PathBuf;

use anyhow::{Context, Result};
use cairn_engine::keyfile::KdfParams;

use crate::common::{Global, print_json, prompt_new};
use crate::exit;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List key files
    List,
    /// Add a key (a new password for the same repository)
    Add {
        #[command(flatten)]
        password: NewPassword,
        /// Restrict the new key: backup and restore work, but whatever
        /// deletes or replaces (forget, prune, rewrite, repair index, repair
        /// packs, repair snapshots --forget, tag, hold, key remove and
        /// passwd, unlock --remove-all, config format-version and
        /// append-only off) is refused (exit 13)
        #[arg(long)]
        append_only: bool,
    },
    /// Remove a key file
    Remove {
        /// Key ID or unique prefix
        #[arg(value_parser = crate::common::id_prefix)]
        id: String,
    },
    /// Change the password of the key in use
    Passwd(NewPassword),
}

#[derive(clap::Args, Debug)]
pub struct NewPassword {
    /// Read the new password from this file (surrounding whitespace is
    /// not part of it)
    #[arg(long)]
    new_password_file: Option<PathBuf>,
}

fn new_password(a: &NewPassword) -> Result<Vec<u8>> {
    let pw = match &a.new_password_file {
        // One final newline is how files end, as for --password-file.
        Some(f) => crate::common::trimmed_new_password(
            crate::common::strip_newline(
                std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
            ),
            &f.display().to_string(),
        )?,
        None => prompt_new("new password", "use --new-password-file")?,
    };
    // Said once the new key is certain to be written with it.
    crate::common::warn_insecure_kdf();
    Ok(pw)
}

pub fn run(g: &Global, c: Command) -> Result<i32> {
    let repo = g.open()?;
    match c {
        Command::List => {
            let (keys, damaged) = repo.keys()?;
            for e in &damaged {
                crate::warn!("error: {e}");
            }
            if g.json {
                print_json(&keys)?;
            } else {
                crate::say!(
                    " {:<10} {:<12} {:<20} {:<26} KDF",
                    "ID",
                    "User",
                    "Host",
                    "Created"
                );
                for k in keys {
                    crate::output::say_cells(&format!(
                        "{}{:<10} {:<12} {:<20} {:<26} argon2id m={}KiB t={} p={}{}",
                        if k.current { "*" } else { " " },
                        &k.id[..8],
                        // Not authenticated: anyone who can write to the
                        // storage can put anything there.
                        crate::output::cell(&k.username),
                        crate::output::cell(&k.hostname),
                        crate::output::cell(&k.created),
                        k.kdf.m_cost,
                        k.kdf.t_cost,
                        k.kdf.p_cost,
                        if k.append_only { "  append-only" } else { "" }
                    ));
                }
            }
            if !damaged.is_empty() {
                return Ok(exit::FATAL);
            }
        }
        Command::Add {
            password,
            append_only,
        } => {
            let pw = new_password(&password)?;
            let _lock = repo.lock(false)?;
            let id = repo.add_key(&pw, KdfParams::for_new_key(), append_only)?;
            report(g, "key_added", &id)?;
        }
        Command::Remove { id } => {
            let _lock = repo.lock(true)?;
            let removed = repo.remove_key(&id)?;
            report(g, "key_removed", &removed)?;
        }
        Command::Passwd(a) => {
            let pw = new_password(&a)?;
            let _lock = repo.lock(true)?;
            let change = repo.change_password(&pw, KdfParams::for_new_key())?;
            if change.finished_earlier && !g.json && !g.quiet {
                crate::say!(
                    "finished an interrupted `key passwd`: key {} for the new password was \
                     there already; the old key is removed",
                    &change.id[..8.min(change.id.len())]
                );
            }
            if let Some(old) = change
                .also_removed
                .as_deref()
                .filter(|_| !g.json && !g.quiet)
            {
                crate::say!(
                    "also removed key {}, which an interrupted `key passwd` left: the password \
                     changed then opens the repository no longer",
                    &old[..8.min(old.len())]
                );
            }
            for other in &change.left {
                let other = &other[..8.min(other.len())];
                crate::warn!(
                    "warning: key {other} was written by an interrupted `key passwd` to replace \
                     the key just changed, and still opens the repository with the password \
                     given then; `cairn key remove {other}` removes it"
                );
            }
            if g.json {
                print_json(&serde_json::json!({
                    "message_type": "password_changed",
                    "id": change.id,
                    "finished_interrupted": change.finished_earlier,
                    "also_removed": change.also_removed,
                    "left": change.left,
                }))?;
            } else {
                report(g, "password_changed", &change.id)?;
            }
        }
    }
    Ok(exit::OK)
}

fn report(g: &Global, what: &str, id: &str) -> Result<()> {
    if g.json {
        print_json(&serde_json::json!({"message_type": what, "id": id}))
    } else {
        if !g.quiet {
            crate::say!("{}: {}", what.replace('_', " "), &id[..8.min(id.len())]);
        }
        Ok(())
    }
}
