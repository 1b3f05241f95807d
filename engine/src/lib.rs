//! cairn engine: a content-addressed, deduplicating, encrypted backup
//! repository.
//!
//! Layers, each depending only on those above it in this list:
//! 1. [`id`], [`error`], [`crypto`], [`chunker`], [`compress`] — pure functions over bytes
//! 2. [`backend`] — where objects live
//! 3. [`envelope`], [`pack`], [`indexfile`], [`localindex`] — object formats and the blob index;
//!    [`cachedir`] — the local cache directories that hold it
//! 4. [`tree`], [`snapshot`], [`config`], [`keyfile`], [`lock`] — the records
//! 5. [`repository`] — open/unlock, the one door the layers below go through;
//!    [`bulk_read`] — many blobs read through shared, coalesced pack ranges
//! 6. [`saver`], [`archiver`], [`restorer`], [`check`], [`repair`], [`rewrite`], [`retention`],
//!    [`hold`], [`forget`], [`prune`], [`copy`] — operations; [`upkeep`] —
//!    retention after each snapshot of a long-running command
//! 7. [`pathmatch`], [`walk`], then [`listing`], [`find`], [`diff`], [`dump`], [`stats`] — read-only
//!    views of snapshots
//! 8. [`capture`] (live databases), [`verify`] (restore testing), [`watch`]
//!    (continuous snapshots driven by inotify), [`mount`] (snapshots as a
//!    read-only filesystem), [`activity`] (running commands published for
//!    monitors) and [`overview`] (health and status for dashboards)

pub mod activity;
pub mod archiver;
pub mod audit;
pub mod backend;
pub mod blob;
pub mod bulk_read;
pub mod cachedir;
pub mod capture;
pub mod check;
pub mod child;
pub mod chunker;
pub mod compress;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod deep;
pub mod dict;
pub mod diff;
pub mod dump;
pub mod envelope;
pub mod error;
pub mod exclude;
pub mod find;
pub mod forget;
pub mod frames;
pub mod fsmeta;
pub mod hold;
pub mod hook;
pub mod host;
pub mod id;
pub mod indexfile;
pub mod keyfile;
pub mod lineage;
pub mod listing;
pub mod localindex;
pub mod lock;
pub mod mount;
pub mod overview;
pub mod own_paths;
pub mod owner;
pub mod pack;
pub mod pathmatch;
pub mod posix_acl;
pub mod prune;
pub mod recover;
pub mod repair;
pub mod repository;
pub mod restorer;
pub mod retention;
pub mod rewrite;
pub mod saver;
pub mod schedule;
pub mod scratch;
pub mod snapshot;
pub mod stats;
pub mod tree;
pub mod units;
pub mod unknown;
pub mod upkeep;
pub mod verify;
pub mod walk;
pub mod watch;

pub use error::{Error, Result};
pub use id::Id;
pub use repository::{OpenOptions, Repository};
