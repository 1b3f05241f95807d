//! `cairn recover`

use anyhow::Result;
use cairn_engine::recover::{LostTree, RECOVERED_TAG, RecoverOptions, recover};

use crate::common::{Global, print_json};
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only the lost trees whose IDs start with these (all by default)
    ids: Vec<String>,
    /// Show what would be recovered without writing anything
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Also take trees below which data is missing (then `cairn check`, which
    /// names the `repair` steps: `repair packs` for packs that are gone,
    /// then `repair snapshots`)
    #[arg(long)]
    allow_incomplete: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let opts = RecoverOptions {
        dry_run: a.dry_run,
        only: a.ids,
        allow_incomplete: a.allow_incomplete,
        no_lock: g.no_lock,
    };
    let r = recover(&repo, &opts)?;
    if g.json {
        print_json(&r)?;
        return Ok(exit::OK);
    }
    for u in &r.unreadable_snapshots {
        crate::warn!("warning: {u}: its trees count as lost");
    }
    for u in &r.unreadable {
        crate::warn!("warning: tree {u}");
    }
    for p in &r.unusable_packs {
        crate::warn!("{}", crate::common::unusable_pack_warning(p, "the search"));
    }
    // Under -q only a dry run's report is said, as what it is asked for,
    // and lost trees left out, which nothing else would name.
    if g.quiet && !r.dry_run {
        if r.snapshot.is_none() && !r.left_out.is_empty() {
            crate::warn!(
                "nothing recovered: {} lost trees left out (incomplete or not chosen; run \
                 without -q to list them)",
                r.left_out.len()
            );
        }
        return Ok(exit::OK);
    }
    if !r.indexed_packs.is_empty() {
        crate::say!(
            "{} pack(s) no index named searched too (left by a command stopped before it \
             indexed them){}",
            r.indexed_packs.len(),
            if r.snapshot.is_some() {
                "; now indexed"
            } else {
                ""
            }
        );
    }
    let lost = r.recovered.len() + r.left_out.len();
    crate::say!(
        "{} trees read, {lost} not referenced by any snapshot or other tree",
        r.trees
    );
    let line = |t: &LostTree, note: &str| {
        crate::say!("  {}  {}  {} entries{note}", &t.id[..16], t.path, t.entries);
    };
    for t in &r.recovered {
        line(t, &incomplete(t));
    }
    for t in &r.left_out {
        let why = if t.complete() {
            " (not chosen)".to_string()
        } else {
            format!("{}; left out, --allow-incomplete takes it", incomplete(t))
        };
        line(t, &why);
    }
    match &r.snapshot {
        Some(id) => crate::say!(
            "snapshot {} saved (tag {RECOVERED_TAG}): each tree is a directory named after its ID; \
             restore it with `--tag {RECOVERED_TAG}` (it is never `latest`), \
             then `cairn forget {}` once you have what you need",
            &id[..8],
            &id[..8]
        ),
        None if r.dry_run && !r.recovered.is_empty() => {
            crate::say!("nothing written (--dry-run)")
        }
        None if !r.left_out.is_empty() => crate::say!(
            "nothing recovered: {} lost trees left out (above)",
            r.left_out.len()
        ),
        None => crate::say!("nothing to recover"),
    }
    Ok(exit::OK)
}

/// What is missing below `t`, as a note for its line.
fn incomplete(t: &LostTree) -> String {
    let mut parts = Vec::new();
    if t.missing_blobs > 0 {
        parts.push(format!(
            "{} blobs missing (not indexed, or their pack is gone)",
            t.missing_blobs
        ));
    }
    if t.unreadable_trees > 0 {
        parts.push(format!("{} unreadable trees", t.unreadable_trees));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(", incomplete: {}", parts.join(", "))
    }
}
