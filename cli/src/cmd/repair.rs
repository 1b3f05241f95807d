//! `cairn repair index | packs | snapshots`

use anyhow::Result;
use cairn_engine::repair::{
    PackOutcome, RepairPacksReport, repair_index, repair_packs, repair_snapshots,
};

use crate::common::{Global, bytes, count, print_json};
use crate::exit;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Rebuild the index from pack headers
    Index,
    /// Salvage the blobs of damaged or missing packs that still read into
    /// new packs, then drop those packs (`check --read-data` names them)
    Packs {
        /// Pack IDs (or unique prefixes of at least 4 hex digits)
        #[arg(required = true, value_name = "PACK", value_parser = pack_prefix)]
        packs: Vec<String>,
        /// Read the packs and show what would be salvaged and lost, changing nothing
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// No copy has the missing dictionary files (`dicts/`) these packs'
        /// blobs were compressed with: drop those blobs for good rather
        /// than stop
        #[arg(long)]
        dictionaries_lost: bool,
    },
    /// Rewrite snapshots that refer to missing data, dropping what cannot be read
    Snapshots {
        /// Remove the original (damaged) snapshot records
        #[arg(long)]
        forget: bool,
        /// Show what would be repaired without writing anything
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
}

pub fn run(g: &Global, c: Command) -> Result<i32> {
    let repo = g.open()?;
    match c {
        Command::Index => {
            let r = repair_index(&repo)?;
            if g.json {
                print_json(&r)?;
            } else {
                for u in &r.unreadable {
                    crate::warn!("warning: {u}");
                }
                if g.quiet {
                    return Ok(exit::OK);
                }
                crate::say!(
                    "indexed {} blobs in {} packs; wrote {} index files, removed {}",
                    r.blobs,
                    r.packs,
                    r.index_files_written,
                    r.index_files_removed
                );
            }
        }
        Command::Packs {
            packs,
            dry_run,
            dictionaries_lost,
        } => {
            let r = repair_packs(&repo, &packs, dry_run, dictionaries_lost)?;
            if g.json {
                print_json(&r)?;
            } else {
                print_packs(g, &r);
            }
        }
        Command::Snapshots { forget, dry_run } => {
            let r = repair_snapshots(&repo, forget, dry_run)?;
            // A record that cannot be read is beyond this repair: the
            // repository is still broken, so the run does not pass.
            let code = if r.unreadable.is_empty() {
                exit::OK
            } else {
                exit::FATAL
            };
            if g.json {
                print_json(&r)?;
            } else {
                for u in &r.unreadable {
                    crate::warn!("error: {u}");
                }
                if !r.unreadable.is_empty() {
                    crate::warn!(
                        "hint: a snapshot record that cannot be read cannot be repaired: \
                         `cairn recover` saves the trees it led to as a snapshot (before any \
                         prune), then `cairn forget ID` removes the record (docs/recovery.md §12)"
                    );
                }
                for p in &r.unusable_packs {
                    crate::warn!("{}", crate::common::unusable_pack_warning(p, "the repair"));
                }
                // What was lost is said even with -q.
                for d in &r.dropped {
                    crate::say!("dropped {d}");
                }
                if r.lost_listings > 0 {
                    crate::warn!(
                        "{} directory listing(s) could not be read: what was below them may \
                         still be stored. Run `cairn recover` before `cairn prune` (which would \
                         delete it): it saves what it finds as a snapshot to restore from",
                        r.lost_listings
                    );
                }
                if g.quiet && !dry_run {
                    return Ok(code);
                }
                if !r.indexed_packs.is_empty() {
                    crate::say!(
                        "{} {} pack(s) no index named (left by a command stopped before it \
                         indexed them), so that what they hold counts as present",
                        if dry_run { "would index" } else { "indexed" },
                        r.indexed_packs.len()
                    );
                }
                for (old, repair) in &r.repaired_before {
                    crate::say!(
                        "snapshot {} was repaired before, as {}: {}",
                        &old[..8],
                        &repair[..8],
                        match (forget, dry_run) {
                            (true, false) => "its damaged record was removed",
                            (true, true) => "its damaged record would be removed",
                            (false, _) => "its damaged record stays (`--forget` removes it)",
                        }
                    );
                }
                for (old, new) in &r.repaired {
                    if dry_run {
                        crate::say!("would repair snapshot {}", &old[..8]);
                    } else {
                        crate::say!("snapshot {} repaired as {}", &old[..8], &new[..8]);
                    }
                }
                crate::say!(
                    "{} of {} {}repaired",
                    r.repaired.len(),
                    count(r.snapshots as u64, "snapshot"),
                    if dry_run { "would be " } else { "" }
                );
            }
            return Ok(code);
        }
    }
    Ok(exit::OK)
}

fn print_packs(g: &Global, r: &RepairPacksReport) {
    let would = if r.dry_run { "would be " } else { "" };
    for p in &r.packs {
        let short = &p.pack[..8];
        let problem = p.problem.as_deref().unwrap_or("");
        match p.outcome {
            PackOutcome::Intact if p.problem.is_some() => {
                crate::warn!("warning: pack {short}: {problem}")
            }
            PackOutcome::Intact => {
                if !g.quiet {
                    crate::say!("pack {short} is intact; left as it is");
                }
            }
            PackOutcome::Unknown => crate::warn!("warning: pack {short}: {problem}"),
            // Said even with -q: the store was wrong.
            PackOutcome::PutBack => crate::say!(
                "pack {short} ({problem}): {would}put back from this machine's cache, whose copy \
                 is intact"
            ),
            PackOutcome::Damaged | PackOutcome::Missing => {
                // What was lost is said even with -q.
                crate::say!(
                    "pack {short} ({problem}): {} blobs, {} {would}salvaged, {} held by other packs, {} lost",
                    p.blobs,
                    p.salvaged,
                    p.held_elsewhere,
                    p.lost.len()
                );
                for l in &p.lost {
                    crate::say!("  lost blob {}: {}", l.blob, l.why);
                }
            }
        }
    }
    // Said even with -q: it is a deletion.
    for d in &r.dictionaries_removed {
        crate::say!(
            "dictionary dicts/{d} no longer opens: {}removed (what was compressed with it cannot be read)",
            if r.dry_run { "would be " } else { "" }
        );
    }
    for d in &r.dictionaries_missing {
        if r.dry_run {
            crate::warn!(
                "dictionary dicts/{d} is missing: put it back from a copy of the repository's \
                 dicts/ first, and the blobs compressed with it read again; the repair drops \
                 them only with --dictionaries-lost"
            );
        } else {
            // Said even with -q: what it dropped is gone for good.
            crate::say!(
                "dictionary dicts/{d} is missing: the blobs compressed with it were dropped \
                 (--dictionaries-lost)"
            );
        }
    }
    let dropped = r
        .packs
        .iter()
        .filter(|p| matches!(p.outcome, PackOutcome::Damaged | PackOutcome::Missing))
        .count();
    if !g.quiet && dropped > 0 {
        if r.dry_run {
            crate::say!(
                "{} blobs would be salvaged into new packs and {dropped} packs dropped; {} blobs would be lost",
                r.salvaged,
                r.lost
            );
        } else {
            let missing = dropped - r.packs_deleted;
            crate::say!(
                "salvaged {} blobs into new packs ({}); deleted {} damaged packs{}; {} blobs lost",
                r.salvaged,
                bytes(r.bytes_written),
                r.packs_deleted,
                if missing > 0 {
                    format!(", dropped {missing} missing packs from the index")
                } else {
                    String::new()
                },
                r.lost
            );
        }
    }
    if r.lost > 0 {
        crate::warn!(
            "{} blobs {would}lost: `cairn check` names the snapshot paths that used them; \
             if the source still has those files, back up again (it stores them anew), \
             then `cairn repair snapshots --forget` rewrites the snapshots still missing data",
            r.lost
        );
    }
}

/// A pack ID or prefix as typed: anything else is a usage error.
fn pack_prefix(s: &str) -> std::result::Result<String, String> {
    if s.trim().len() < 4 || !s.trim().bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not a pack ID (at least 4 hex digits; `cairn check --read-data` names damaged packs)"
        ));
    }
    Ok(s.to_string())
}
