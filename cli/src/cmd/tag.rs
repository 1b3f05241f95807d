//! `cairn tag --add/--remove/--set TAG SNAPSHOT...`

use anyhow::Result;
use cairn_engine::hold::change_tags;

use crate::common::{Global, print_json};
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshots (IDs, unique prefixes or `latest`)
    #[arg(required = true)]
    snapshots: Vec<String>,
    /// Add this tag (repeatable; a,b adds both, as in restic)
    #[arg(long, value_delimiter = ',')]
    add: Vec<String>,
    /// Remove this tag (repeatable; a,b removes both)
    #[arg(long, value_delimiter = ',')]
    remove: Vec<String>,
    /// Replace all tags with these (repeatable or a,b; give `--set ''` for none); rewritten, repaired and recovered stay
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["add", "remove"])]
    set: Vec<String>,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    if a.add.is_empty() && a.remove.is_empty() && a.set.is_empty() {
        return Err(crate::exit::usage("give --add, --remove or --set"));
    }
    let set: Option<Vec<String>> =
        (!a.set.is_empty()).then(|| a.set.iter().filter(|t| !t.is_empty()).cloned().collect());
    cairn_engine::snapshot::check_removable_tags(&a.remove)
        .and_then(|()| cairn_engine::snapshot::check_user_tags(&a.add))
        .and_then(|()| cairn_engine::snapshot::check_user_tags(&a.set))
        .map_err(|e| exit::usage(e.to_string()))?;
    let repo = g.open()?;
    let changes = change_tags(&repo, &a.snapshots, set.as_deref(), &a.add, &a.remove)?;
    if g.json {
        let v: Vec<serde_json::Value> = changes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "old_id": c.old.to_hex(),
                    "id": c.new.to_hex(),
                    "short_id": c.new.short(),
                    "changed": c.changed,
                    "tags": c.snapshot.tags,
                })
            })
            .collect();
        print_json(&v)?;
    } else if !g.quiet {
        for c in &changes {
            if c.changed {
                crate::say!(
                    "snapshot {} now has tags [{}]; its new ID is {}",
                    c.old.short(),
                    c.snapshot.tags.join(", "),
                    c.new.short()
                );
            } else {
                crate::say!("snapshot {} unchanged", c.new.short());
            }
        }
    }
    Ok(exit::OK)
}
