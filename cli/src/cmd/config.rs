//! `cairn config append-only [on|off]`, `cairn config format-version [N]`

use anyhow::Result;

use cairn_engine::Repository;
use cairn_engine::config::{FORMAT_VERSION, MIN_FORMAT_VERSION};

use crate::common::{Global, print_json};
use crate::exit;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Show the repository-wide append-only mode, or switch it on or off
    /// (off needs a key that is not append-only)
    AppendOnly {
        /// `on` or `off`; without it, print the current mode
        #[arg(value_parser = ["on", "off"])]
        state: Option<String>,
    },
    /// Show the repository format version, or raise it (3: small files
    /// compressed together from the next backup on; see docs/security.md on
    /// what that leaks). Clients that read only older versions refuse the
    /// repository afterwards: stop running ones (watch, mount, serve) first.
    /// Never lowered
    FormatVersion {
        /// The version to raise to; without it, print the current one
        #[arg(value_parser = clap::value_parser!(u32).range(
            MIN_FORMAT_VERSION as i64..=FORMAT_VERSION as i64))]
        version: Option<u32>,
    },
}

pub fn run(g: &Global, c: Command) -> Result<i32> {
    let mut repo = g.open()?;
    let state = match c {
        Command::AppendOnly { state } => state,
        Command::FormatVersion { version } => return format_version(g, &mut repo, version),
    };
    let changed = match state.as_deref() {
        Some(s) => repo.set_append_only(s == "on")?,
        None => false,
    };
    let on = repo.config().append_only;
    if g.json {
        print_json(&serde_json::json!({
            "message_type": "config",
            "append_only": on,
            "changed": changed,
            "key_append_only": repo.key_is_append_only(),
        }))?;
    } else {
        if !(g.quiet && state.is_some()) {
            let word = if on { "on" } else { "off" };
            if state.is_some() && !changed {
                crate::say!("append-only: {word} (unchanged)");
            } else {
                crate::say!("append-only: {word}");
            }
        }
        // Even with -q: the repository's mode is not all that binds.
        if repo.key_is_append_only() {
            crate::say!("the key in use is append-only");
        }
    }
    Ok(exit::OK)
}

fn format_version(g: &Global, repo: &mut Repository, version: Option<u32>) -> Result<i32> {
    let changed = match version {
        Some(v) => repo.raise_format_version(v)?,
        None => false,
    };
    let now = repo.config().version;
    if g.json {
        print_json(&serde_json::json!({
            "message_type": "config",
            "format_version": now,
            "changed": changed,
        }))?;
    } else if !(g.quiet && version.is_some()) {
        if version.is_some() && !changed {
            crate::say!("format version: {now} (unchanged)");
        } else {
            crate::say!("format version: {now}");
        }
    }
    Ok(exit::OK)
}
