//! `cairn config append-only [on|off]`

use anyhow::Result;

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
}

pub fn run(g: &Global, c: Command) -> Result<i32> {
    let mut repo = g.open()?;
    let Command::AppendOnly { state } = c;
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
        let word = if on { "on" } else { "off" };
        if state.is_some() && !changed {
            println!("append-only: {word} (unchanged)");
        } else {
            println!("append-only: {word}");
        }
        if repo.key_is_append_only() {
            println!("the key in use is append-only");
        }
    }
    Ok(exit::OK)
}
