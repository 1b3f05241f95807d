//! The copies prune keeps of blobs stored more than once.
//!
//! A blob stored in two packs (two backups racing, or one run while the
//! index was lost) is kept in one of them and the other copy goes. Which
//! copy is chosen depends on how full each pack is, not on whether it is
//! intact: so before another copy goes, the one kept is read and verified,
//! and a copy that fails is never the one kept (a prune once deleted the
//! intact copy and kept the one `check --read-data` had named damaged).

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use super::Fate;
use crate::backend::FileKind;
use crate::blob::{BlobLocation, PackedBlob};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::indexfile::IndexPack;
use crate::pack;
use crate::repository::Repository;

/// From this many copies to verify in one pack on, the pack is read whole
/// rather than blob by blob (one request instead of many on S3).
const WHOLE_PACK_FROM: usize = 8;

/// A copy of a blob: the pack holding it and the blob's ID.
pub(super) type BlobCopy = (Id, Id);

/// The copies `plan` keeps (by pack) of used blobs of which another copy
/// goes: one in a pack deleted, or repacked without it.
pub(super) fn at_risk(
    packs: &HashMap<Id, IndexPack>,
    plan: &[(Id, Fate, Vec<PackedBlob>)],
    used: &HashSet<Id>,
) -> HashMap<Id, Vec<PackedBlob>> {
    let kept_in: HashMap<Id, (Id, &PackedBlob)> = plan
        .iter()
        .flat_map(|(pack, _, keep)| keep.iter().map(move |b| (b.id, (*pack, b))))
        .collect();
    let mut risky: HashMap<Id, HashMap<Id, PackedBlob>> = HashMap::new();
    for (gone, fate, _) in plan {
        if matches!(fate, Fate::Keep) {
            continue; // its copies stay in the index
        }
        for b in packs[gone].blobs.iter().filter(|b| used.contains(&b.id)) {
            if let Some((pack, kept)) = kept_in.get(&b.id).filter(|(p, _)| p != gone) {
                risky.entry(*pack).or_default().insert(kept.id, **kept);
            }
        }
    }
    risky
        .into_iter()
        .map(|(pack, blobs)| {
            let mut blobs: Vec<PackedBlob> = blobs.into_values().collect();
            blobs.sort_by_key(|b| b.offset);
            (pack, blobs)
        })
        .collect()
}

/// Reads and verifies each copy of `copies` (by pack) as a restore would;
/// returns those that are damaged or gone. Any other failure (the storage
/// cannot be read) fails the prune: nothing is known of the copy.
pub(super) fn failing(
    repo: &Repository,
    copies: &HashMap<Id, Vec<PackedBlob>>,
) -> Result<Vec<BlobCopy>> {
    let failed: Vec<Vec<BlobCopy>> = copies
        .par_iter()
        .map(|(pack, blobs)| failing_in(repo, pack, blobs))
        .collect::<Result<_>>()?;
    Ok(failed.into_iter().flatten().collect())
}

fn failing_in(repo: &Repository, pack: &Id, blobs: &[PackedBlob]) -> Result<Vec<BlobCopy>> {
    let lost = |e: &Error| matches!(e, Error::Corrupt { .. } | Error::Missing(_));
    let mut failed = Vec::new();
    if blobs.len() < WHOLE_PACK_FROM {
        for b in blobs {
            let at = BlobLocation {
                pack: *pack,
                blob: *b,
            };
            // This copy, not another: that is what is in question.
            match repo.load_blob_here(&at) {
                Ok(_) => {}
                Err(e) if lost(&e) => failed.push((*pack, b.id)),
                Err(e) => return Err(e),
            }
        }
        return Ok(failed);
    }
    let bytes = match repo.backend().read(FileKind::Pack, &pack.to_hex()) {
        Ok(bytes) => bytes,
        Err(e) if lost(&e) => return Ok(blobs.iter().map(|b| (*pack, b.id)).collect()),
        Err(e) => return Err(e),
    };
    pack::open_each(
        repo.key(),
        pack,
        &bytes,
        blobs,
        repo,
        |b, opened| match opened {
            Ok(_) => Ok(()),
            Err(e) if lost(&e) => {
                failed.push((*pack, b.id));
                Ok(())
            }
            // A dictionary that could not be read says nothing of this copy.
            Err(e) => Err(e),
        },
    )?;
    Ok(failed)
}
