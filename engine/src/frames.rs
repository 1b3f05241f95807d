//! Decoded group frames, kept for their neighbours.
//!
//! A group frame (format version 3) holds many small blobs; reading each of
//! them alone would decrypt and decode the whole frame once per blob. A
//! restore, dump or mount reads neighbours close together in time, so the
//! last few frames decoded are kept, keyed by pack and offset (a pack never
//! changes: its name is the hash of its bytes).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::id::Id;

/// Frames kept at once: a frame decodes to a few hundred KiB at most from
/// the reference writer, so the cache holds a few MiB; one of another
/// writer may decode to the 4 MiB readers accept, 128 MiB for all 32.
const FRAMES_KEPT: usize = 32;

/// A decoded frame and where it is: (pack, offset).
type Kept = ((Id, u32), Arc<Vec<u8>>);

/// The most recently used decoded group frames.
#[derive(Default)]
pub struct FrameCache {
    /// Most recently used first.
    frames: Mutex<VecDeque<Kept>>,
}

impl FrameCache {
    /// The decoded frame at `offset` in `pack`, from the cache or from
    /// `open` (whose result is then kept; an error is not).
    pub fn get_or_open(
        &self,
        pack: &Id,
        offset: u32,
        open: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Arc<Vec<u8>>> {
        if let Some(f) = self.get(pack, offset) {
            return Ok(f);
        }
        // Decoded outside the lock: two threads may both decode one frame,
        // which costs less than making every reader wait on one.
        let frame = Arc::new(open()?);
        let mut frames = self.frames.lock().expect("frame cache");
        if !frames.iter().any(|(k, _)| *k == (*pack, offset)) {
            if frames.len() >= FRAMES_KEPT {
                frames.pop_back();
            }
            frames.push_front(((*pack, offset), frame.clone()));
        }
        Ok(frame)
    }

    /// The decoded frame at `offset` in `pack` if it is kept.
    pub fn get(&self, pack: &Id, offset: u32) -> Option<Arc<Vec<u8>>> {
        let mut frames = self.frames.lock().expect("frame cache");
        let i = frames.iter().position(|(k, _)| *k == (*pack, offset))?;
        let hit = frames.remove(i).expect("found");
        let frame = hit.1.clone();
        frames.push_front(hit);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_frames_and_not_errors() {
        let cache = FrameCache::default();
        let pack = Id([7; 32]);
        let opened = |n: u8| move || Ok(vec![n; 4]);
        for i in 0..FRAMES_KEPT as u32 + 1 {
            cache.get_or_open(&pack, i, opened(i as u8)).unwrap();
        }
        // The first one was the least recently used when the last came in.
        assert!(cache.get(&pack, 0).is_none());
        assert_eq!(*cache.get(&pack, 1).unwrap(), vec![1; 4]);
        let f = cache
            .get_or_open(&pack, 1, || panic!("kept, not opened again"))
            .unwrap();
        assert_eq!(*f, vec![1; 4]);
        let failed = cache.get_or_open(&pack, 999, || {
            Err(crate::error::Error::corrupt("frame", "damaged"))
        });
        assert!(failed.is_err());
        assert!(cache.get(&pack, 999).is_none());
    }
}
