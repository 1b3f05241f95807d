//! Recursion over directory trees of any depth.
//!
//! Walks over directories recurse once per level. A thread's stack (2 MiB
//! for the backup's workers) held about 390 levels; a deeper tree crashed
//! the process. Each recursive step goes through [`deeper`], which moves to
//! a fresh stack segment when little room is left, so depth is bounded by
//! memory and the open-files limit (a walk holds a descriptor per level;
//! the CLI raises the soft limit), as in restic.

/// Room below which a step moves to a new segment: a level's frames
/// (including rayon's, between levels of a parallel walk) take a few KiB.
const RED_ZONE: usize = 256 << 10;

/// The size of each new segment.
const SEGMENT: usize = 4 << 20;

/// Runs `step` (one level deeper in a recursive walk), on a new stack
/// segment if the current one is nearly used up.
pub fn deeper<R>(step: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(RED_ZONE, SEGMENT, step)
}
