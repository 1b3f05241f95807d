//! Capturing live databases consistently instead of copying their files
//! torn: SQLite through its online backup API.

pub mod sqlite;
