//! Repairs that rebuild derived state from what the repository holds, and
//! salvage what damage left.

mod index;
mod packs;
mod snapshots;
pub(crate) mod unindexed;

pub(crate) use crate::repository::read_pack_header;
pub use index::{RepairIndexReport, repair_index};
pub use packs::{LostBlob, PackOutcome, PackRepair, RepairPacksReport, repair_packs};
pub use snapshots::{RepairSnapshotsReport, repair_snapshots};

/// Whether `e` may pass on a second try (a timeout, a 5xx, an I/O error),
/// unlike damage or an object that is gone.
fn passing(e: &crate::error::Error) -> bool {
    use crate::error::Error;
    matches!(e, Error::Backend(_) | Error::Io { .. })
}
