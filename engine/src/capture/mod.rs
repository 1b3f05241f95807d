//! Capturing live databases consistently instead of copying their files
//! torn: SQLite through its online backup API, PostgreSQL through pg_dump.

pub mod pgdump;
pub mod postgres;
pub mod restricted;
pub mod sqlite;
