//! SQLite: a transactionally consistent copy of a live database through the
//! online backup API, checked (`PRAGMA quick_check`) and counted (rows per
//! table) before it is stored.
//!
//! In WAL mode the copy runs inside one read transaction on the source, so
//! it sees one snapshot and writers are never blocked (WAL readers do not
//! block writers): its steps follow each other without a pause. In
//! rollback-journal mode a read lock blocks commits, so the copy goes
//! [`PAGES_PER_STEP`] pages at a time with a pause between steps, and SQLite
//! starts it over whenever another connection commits. A writer that
//! commits between every step would keep it from ever finishing, so after
//! [`MAX_RESTARTS`] restarts the rest is copied in one step, holding the
//! read lock for that copy: writers wait once, for about the time the copy
//! takes (a writer whose own busy timeout is shorter gets SQLITE_BUSY), and
//! the capture ends. A lock held elsewhere for longer than the caller's
//! lock timeout ends the capture with an error rather than waiting without
//! end.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// Pages copied per backup step (1 MiB of 4 KiB pages).
pub const PAGES_PER_STEP: i32 = 256;
/// Pause between the steps of a rollback-journal copy, so waiting writers
/// get the lock.
pub const STEP_PAUSE: Duration = Duration::from_millis(2);
/// Restarts of a rollback-journal copy (each caused by a commit elsewhere)
/// after which the rest is copied in one step under one read lock.
pub const MAX_RESTARTS: u32 = 4;
/// How long a capture waits by default for a lock another connection holds
/// (an exclusive transaction, a commit) before it gives up.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The 16-byte header every SQLite 3 database file starts with.
pub const HEADER: &[u8; 16] = b"SQLite format 3\0";

/// A checked copy of a database in a temporary file.
pub struct SqliteCopy {
    /// The private directory holding the copy; removed when dropped.
    scratch: crate::scratch::Dir,
    /// Rows per table in the copy.
    pub tables: BTreeMap<String, u64>,
    /// The SQLite library version that made the copy.
    pub version: String,
    /// The copy's page size in bytes.
    pub page_size: u32,
    /// How often commits elsewhere made SQLite start the copy over.
    pub restarts: u32,
    /// How long the final one-step copy took (waiting for its read lock
    /// included), when restarts forced one (rollback-journal mode only):
    /// writers wait for that lock's release.
    pub one_step: Option<Duration>,
    /// Tables `PRAGMA quick_check` could not check, with SQLite's reason:
    /// they (their indexes) need a collation or function that only the
    /// database's application defines (see [`Checked`]).
    pub unchecked: Vec<(String, String)>,
}

/// What an integrity check found.
#[derive(Debug, Default)]
pub struct Checked {
    /// The problems it reported; empty when what it checked is fine.
    pub problems: Vec<String>,
    /// Tables it could not check, and why. SQLite cannot run a check of a
    /// database whose indexes use a collation or function its application
    /// registers at run time (Calibre's `PYNOCASE`, Android's `LOCALIZED`),
    /// so such a database is checked table by table, and only those
    /// tables are left out.
    pub unchecked: Vec<(String, String)>,
}

/// The smallest fixed chunk a captured database is cut into. Databases
/// change page by page in place, so content-defined chunks (about 1 MiB)
/// re-store nearly the whole file after scattered updates; page-aligned
/// chunks of one 4 KiB page re-store only the pages that changed
/// (docs/databases.md, "Chunking of database files": 100 MB instead of
/// 531 MB added per capture of a 1 GB database with 1 % of rows updated).
pub const MIN_CHUNK: u32 = 4096;

/// The fixed chunk size for a database copy with pages of `page_size`
/// bytes: one page, but at least [`MIN_CHUNK`] (a multiple of every smaller
/// page size, so chunks stay page-aligned).
pub fn chunk_size(page_size: u32) -> u32 {
    page_size.max(MIN_CHUNK)
}

/// The page size declared by a database file that starts with `head`
/// (header bytes 16-17, big-endian, where 1 stands for 65536), if `head` is
/// the start of a SQLite 3 database with a valid page size.
pub fn page_size_of(head: &[u8]) -> Option<u32> {
    let declared = head.get(16..18).filter(|_| head.starts_with(HEADER))?;
    let size = match u16::from_be_bytes([declared[0], declared[1]]) {
        1 => 65536,
        n => u32::from(n),
    };
    (size >= 512 && size.is_power_of_two()).then_some(size)
}

/// Whether `path` is a SQLite 3 database in rollback-journal mode (the
/// header's file format versions are 1; WAL mode writes 2). Opened without
/// moving its access time.
pub fn is_rollback_journal_db(path: &Path) -> bool {
    header_versions(path) == Some((1, 1))
}

/// The write and read file format versions of the SQLite 3 database at
/// `path` (header bytes 18 and 19), read without moving its access time.
fn header_versions(path: &Path) -> Option<(u8, u8)> {
    head::<20>(path)
        .filter(|h| &h[..16] == HEADER)
        .map(|h| (h[18], h[19]))
}

/// The first `N` bytes of the regular file at `path`, read without moving
/// its access time (a mail client tells new mail by it), nor following a
/// symbolic link, nor opening anything else put in its place (see
/// [`crate::fsmeta::open_regular_noatime`]).
fn head<const N: usize>(path: &Path) -> Option<[u8; N]> {
    let mut head = [0u8; N];
    crate::fsmeta::open_regular_noatime(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .ok()
        .map(|_| head)
}

/// Whether this process may open the database at `path` as its writers
/// do: write it, and create and delete files beside it (the `-wal` and
/// `-shm` a connection to a WAL database without them makes, and removes
/// as the last one closes). A connection that cannot would fall back to
/// reading only and leave them behind, owned by this process's user, where
/// they stop the database's owner from writing.
pub fn can_add_sidecars(path: &Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    access(path, AccessFlags::W_OK).is_ok()
        && path
            .parent()
            .is_some_and(|dir| access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok())
}

/// Whether `path` is a SQLite 3 database in WAL mode (file format
/// versions 2).
fn is_wal_db(path: &Path) -> bool {
    header_versions(path) == Some((2, 2))
}

/// Whether this process runs as root or as the owner of `path`: files it
/// creates beside it are then the owner's (SQLite hands those it creates
/// as root over to the database's owner).
fn owns(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    me == 0 || std::fs::metadata(path).is_ok_and(|m| m.uid() == me)
}

/// Whether `path` starts with the SQLite 3 header.
pub fn is_sqlite(path: &Path) -> bool {
    head::<16>(path).is_some_and(|h| &h == HEADER)
}

/// The hot-journal siblings SQLite keeps next to a database.
pub const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The database name and the suffix of `name` if it names a `-wal`, `-shm`
/// or `-journal` file (`app.db-wal` gives `app.db` and `-wal`).
pub fn sidecar_of(name: &[u8]) -> Option<(&[u8], &'static str)> {
    SIDECARS.iter().find_map(|s| {
        name.strip_suffix(s.as_bytes())
            .filter(|base| !base.is_empty())
            .map(|base| (base, *s))
    })
}

/// Whether `path` is a SQLite database in use: the header plus a `-wal` or
/// `-journal` sibling, so a plain copy of the file alone could be torn.
pub fn is_live(path: &Path) -> bool {
    has_journal(path) && is_sqlite(path)
}

/// Whether a `-wal` or `-journal` file lies beside `path`.
pub fn has_journal(path: &Path) -> bool {
    beside(path, "-wal").exists() || beside(path, "-journal").exists()
}

/// The path of the database `path`'s file with `suffix` (`-wal`, ...).
pub fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// The first read's error `e`, with its cause where SQLite's own words do
/// not give it: a hot journal that a connection that may only read cannot
/// roll back ("attempt to write a readonly database"), or a WAL database
/// whose `-shm` is missing where this user may not create it ("unable to
/// open database file").
fn explain_first_read(path: &Path, e: Error) -> Error {
    let sidecar = |suffix: &str| std::fs::metadata(beside(path, suffix)).ok();
    let Error::CommandFailed(msg) = &e else {
        return e;
    };
    let why = if msg.contains("readonly") && sidecar("-journal").is_some_and(|m| m.len() > 0) {
        "its -journal is a hot journal, left by a writer stopped in the middle of a \
         transaction, which SQLite rolls back at the next connection that may write, and this \
         one may only read. Open the database once with its application, or `sqlite3 DB \
         'PRAGMA quick_check'`, as its owner, then back it up again"
    } else if msg.contains("unable to open") && is_wal_db(path) && sidecar("-shm").is_none() {
        "it is in WAL mode and its -shm is missing, which only a connection that may create \
         files in its directory can make; back it up as the database's owner or as root, or \
         open it once with its application first"
    } else {
        return e;
    };
    Error::CommandFailed(format!("{msg}: {why}"))
}

fn db_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::CommandFailed(format!("SQLite database {}: {what}: {e}", path.display()))
}

/// Copies the database at `path` consistently into a temporary file in
/// `$TMPDIR`, runs `PRAGMA quick_check` on the copy and counts its rows.
/// A copy that fails its check is an error: it must not become a snapshot.
/// Waits at most `lock_timeout` for a lock held elsewhere, and stops with
/// [`Error::Interrupted`] between steps once `cancelled` says so.
///
/// `file` is the device and inode the backup found at `path`: a database
/// opened as another file (a symbolic link put in its place or above it
/// since, by a user who may rename entries there) is not copied, or
/// root's backup copied whatever the link pointed to into that user's
/// snapshot: [`Capture::Replaced`] says so, and the caller decides (see
/// [`replaced`]).
pub fn capture(
    path: &Path,
    file: (u64, u64),
    lock_timeout: Duration,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Capture> {
    // SQLite resolves links itself, as paths: given one without any and
    // told to follow none, it refuses one put in since.
    let at = real_path(path)?;
    stall_for_test();
    // A WAL database with no `-wal` beside it is opened as its writers
    // open it (short-lived ones leave it so): a read-only connection would
    // create the `-wal` and `-shm` and leave them behind, where the last
    // connection to close otherwise deletes them. Nothing is written: the
    // copy only reads, and a checkpoint at close has nothing to move.
    let idle_wal = is_wal_db(path) && !has_journal(path);
    let as_writers = idle_wal && can_add_sidecars(path);
    if idle_wal && !as_writers && !owns(path) {
        return Err(db_err(
            path,
            "cannot capture",
            "it is in WAL mode without its -wal, and this user may not write it or its \
             directory: a reading connection would leave -wal and -shm behind, owned by this \
             user, and the database's owner could no longer write it (back it up as its owner \
             or as root)",
        ));
    }
    let access = if as_writers {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    };
    let flags = access | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let mut src = match Connection::open_with_flags(&at, flags) {
        Ok(src) => src,
        Err(rusqlite::Error::SqliteFailure(f, _))
            if f.extended_code == rusqlite::ffi::SQLITE_CANTOPEN_SYMLINK =>
        {
            return Ok(Capture::Replaced);
        }
        Err(e) => return Err(db_err(path, "open", e)),
    };
    if !opened_as(&src, &at, file) {
        return Ok(Capture::Replaced);
    }
    wait_for_locks(lock_timeout);
    src.busy_handler(Some(busy))
        .map_err(|e| db_err(path, "set busy handler", e))?;
    let mode: String = retry_busy(path, lock_timeout, cancelled, "read journal mode", || {
        src.query_row("PRAGMA journal_mode", [], |r| r.get(0))
    })
    .map_err(|e| explain_first_read(path, e))?;
    let wal = mode.eq_ignore_ascii_case("wal");
    if wal {
        // Pin one WAL snapshot for the whole copy: no restarts, no blocking.
        src.execute_batch("BEGIN")
            .map_err(|e| db_err(path, "begin", e))?;
        retry_busy(path, lock_timeout, cancelled, "read schema", || {
            src.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
        })?;
    }
    // In a directory of its own, 0700: SQLite opens the copy's -wal and
    // -journal by name, and in a shared $TMPDIR another user could put one
    // there first, for the copy checked, counted and stored to be theirs.
    let scratch = crate::scratch::dir(&std::env::temp_dir(), "cairn-sqlite-")
        .map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
    let file = scratch.path().join(COPY_NAME);
    let (restarts, one_step) = {
        let mut dst = Connection::open(&file).map_err(|e| db_err(path, "open copy", e))?;
        let backup = Backup::new(&src, &mut dst).map_err(|e| db_err(path, "start backup", e))?;
        copy_pages(path, &backup, wal, lock_timeout, cancelled)?
    };
    if wal {
        src.execute_batch("COMMIT")
            .map_err(|e| db_err(path, "end read transaction", e))?;
    }
    drop(src);
    let copy = Connection::open(&file).map_err(|e| db_err(path, "open copy", e))?;
    // The check and the counts read the whole copy, minutes for a large
    // one: a stop request interrupts them.
    let interrupt = copy.get_interrupt_handle();
    let (checked, tables) = crate::child::ended_when(
        cancelled,
        || interrupt.interrupt(),
        || {
            let checked =
                check(&copy, "quick_check").map_err(|e| db_err(path, "quick_check", e))?;
            if !checked.problems.is_empty() {
                return Err(db_err(
                    path,
                    "PRAGMA quick_check failed on the copy; no snapshot was written",
                    checked.problems.join("; "),
                ));
            }
            let tables = row_counts(&copy).map_err(|e| db_err(path, "count rows", e))?;
            Ok((checked, tables))
        },
    )
    .map_err(|e| if cancelled() { Error::Interrupted } else { e })?;
    let page_size: u32 = copy
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(|e| db_err(path, "read page size", e))?;
    // Leave a self-contained file: fold the copy's own WAL (if any) back in.
    copy.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .map_err(|e| db_err(path, "checkpoint copy", e))?;
    drop(copy);
    Ok(Capture::Copied(SqliteCopy {
        scratch,
        tables,
        version: rusqlite::version().to_string(),
        page_size,
        restarts,
        one_step,
        unchecked: checked.unchecked,
    }))
}

/// The name of the copy in its scratch directory.
const COPY_NAME: &str = "copy.db";

impl SqliteCopy {
    /// Where the copy is.
    pub fn path(&self) -> std::path::PathBuf {
        self.scratch.path().join(COPY_NAME)
    }
}

/// What [`capture`] made of a database.
pub enum Capture {
    /// The consistent, checked copy.
    Copied(SqliteCopy),
    /// Another file than the one listed stood at the database's name as
    /// it was opened; nothing was copied.
    Replaced,
}

/// The error for a database that [`capture`] found replaced at `path`.
pub fn replaced(path: &Path) -> Error {
    db_err(
        path,
        "cannot capture",
        "another file stood at its name as it was opened (a symbolic link put in its place or \
         above it?): not copied",
    )
}

/// `path` through its directory's real path: no symbolic link left in it.
fn real_path(path: &Path) -> Result<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(path.to_path_buf());
    };
    let dir = std::fs::canonicalize(dir).map_err(|e| Error::io("resolve", dir, e))?;
    Ok(dir.join(name))
}

/// Whether `conn` has the file `file` (device, inode) open, at `at`: the
/// name holds that file before and after SQLite says its descriptor
/// holds what the name does (the links it did not follow were checked as
/// it resolved the name; this is for one put in between).
fn opened_as(conn: &Connection, at: &Path, file: (u64, u64)) -> bool {
    let named = || std::fs::symlink_metadata(at).is_ok_and(|m| (m.dev(), m.ino()) == file);
    if !named() {
        return false;
    }
    let mut moved: std::ffi::c_int = 0;
    // SAFETY: the handle is the open connection's; "main" is a NUL-ended
    // name; SQLITE_FCNTL_HAS_MOVED writes one int where it is pointed.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_HAS_MOVED,
            (&raw mut moved).cast(),
        )
    };
    rc == rusqlite::ffi::SQLITE_OK && moved == 0 && named()
}

/// Environment variable that makes each capture create the file it names
/// and wait 3 s before it opens the database: a test puts a link in place
/// meanwhile. Tests only.
pub const STALL_ENV: &str = "CAIRN_TEST_SQLITE_STALL_MARK";

fn stall_for_test() {
    if let Some(mark) = std::env::var_os(STALL_ENV) {
        let _ = std::fs::write(mark, b"");
        std::thread::sleep(Duration::from_secs(3));
    }
}

thread_local! {
    /// Until when [`busy`] keeps trying, on this thread's connection.
    static BUSY_UNTIL: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// How long [`busy`] sleeps between two attempts at a lock.
const BUSY_POLL: Duration = Duration::from_millis(1);

/// How many polls one wait for a lock lasts before SQLite hands the busy
/// lock back to [`retry_busy`], which looks for a stop and tries again.
const POLLS_PER_WAIT: i32 = 50;

/// The busy handler: try again every [`BUSY_POLL`] until [`BUSY_UNTIL`],
/// for [`POLLS_PER_WAIT`] polls at a time. SQLite's own waits grow to
/// 100 ms, and a writer committing hundreds of times a second holds its
/// lock at nearly every one of those instants: a capture took half a
/// minute, or timed out, with no lock held long.
fn busy(attempts: i32) -> bool {
    match BUSY_UNTIL.get() {
        Some(until) if attempts < POLLS_PER_WAIT && Instant::now() < until => {
            std::thread::sleep(BUSY_POLL);
            true
        }
        _ => false,
    }
}

/// Makes the connection [`busy`] serves wait up to `timeout` from now for a
/// lock held elsewhere.
fn wait_for_locks(timeout: Duration) {
    // A timeout beyond any clock (`--sqlite-lock-timeout 1000y`) is a
    // century: still a wait, never none.
    let timeout = timeout.min(Duration::from_secs(100 * 365 * 86_400));
    BUSY_UNTIL.set(Instant::now().checked_add(timeout));
}

/// Whether the wait [`wait_for_locks`] set is over.
fn lock_wait_over() -> bool {
    BUSY_UNTIL.get().is_none_or(|until| Instant::now() >= until)
}

/// Runs `op` (doing `what` on the database at `path`) again each time a
/// lock held elsewhere turns it away, until it runs or the wait set by
/// [`wait_for_locks`] is over; [`Error::Interrupted`] once `cancelled`
/// says so (a `--sqlite-lock-timeout` of hours otherwise outlasted a stop).
fn retry_busy<T>(
    path: &Path,
    timeout: Duration,
    cancelled: &dyn Fn() -> bool,
    what: &str,
    mut op: impl FnMut() -> rusqlite::Result<T>,
) -> Result<T> {
    loop {
        match op() {
            Err(e) if is_busy(&e) => busy_again(path, timeout, cancelled)?,
            r => return r.map_err(|e| db_err(path, what, e)),
        }
    }
}

/// After a lock held elsewhere turned an attempt away: [`Error::Interrupted`]
/// once `cancelled` says so, the timeout's error once the wait set by
/// [`wait_for_locks`] is over, else a moment's pause before the next try
/// (SQLITE_LOCKED comes back without a wait).
fn busy_again(path: &Path, timeout: Duration, cancelled: &dyn Fn() -> bool) -> Result<()> {
    if cancelled() {
        return Err(Error::Interrupted);
    }
    if lock_wait_over() {
        return Err(lock_timed_out(path, timeout));
    }
    std::thread::sleep(BUSY_POLL);
    Ok(())
}

/// Whether `e` is a lock held elsewhere.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Runs `backup` (of `src`) to the end in steps of [`PAGES_PER_STEP`]:
/// back to back for a WAL snapshot, which cannot restart; else with a pause
/// for writers, and after [`MAX_RESTARTS`] restarts the rest in one step.
/// Returns the restarts and, if it came to that, how long the one step took.
fn copy_pages(
    path: &Path,
    backup: &Backup,
    wal: bool,
    lock_timeout: Duration,
    cancelled: &dyn Fn() -> bool,
) -> Result<(u32, Option<Duration>)> {
    let mut pages = PAGES_PER_STEP;
    let mut restarts = 0;
    let mut copied = 0;
    let mut retry = false;
    loop {
        if cancelled() {
            return Err(Error::Interrupted);
        }
        // The timeout is per lock: each step waits afresh, a retry on.
        if !retry {
            wait_for_locks(lock_timeout);
        }
        let started = Instant::now();
        let step = backup.step(pages).map_err(|e| {
            if is_full(&e) {
                copy_full(path, e)
            } else {
                locked_or(path, lock_timeout, "copy", e)
            }
        })?;
        match step {
            StepResult::Done => {
                let held = (pages < 0).then(|| started.elapsed());
                return Ok((restarts, held));
            }
            // The busy handler gave the lock attempt back: the same step
            // again (SQLite allows it), unless the wait is over.
            StepResult::Busy | StepResult::Locked => {
                busy_again(path, lock_timeout, cancelled)?;
                retry = true;
                continue;
            }
            _ if wal => {}
            _ => {
                let p = backup.progress();
                let now = p.pagecount - p.remaining;
                // A step without a restart moves on by `pages`; one after a
                // restart began again at the first page.
                if now < copied + pages {
                    restarts += 1;
                    if restarts >= MAX_RESTARTS {
                        pages = -1;
                    }
                }
                copied = now;
                std::thread::sleep(STEP_PAUSE);
            }
        }
        retry = false;
    }
}

/// The error for `e`, met doing `what`: a lock held elsewhere beyond the
/// timeout, or whatever else went wrong.
fn locked_or(path: &Path, timeout: Duration, what: &str, e: rusqlite::Error) -> Error {
    if is_busy(&e) {
        lock_timed_out(path, timeout)
    } else {
        db_err(path, what, e)
    }
}

/// Whether a disk was full: only the copy is written.
fn is_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// The error for a copy that filled its disk: it names where the copy
/// goes, not the database (whose disk is not the one that is full).
fn copy_full(path: &Path, e: rusqlite::Error) -> Error {
    Error::CommandFailed(format!(
        "SQLite database {}: the copy taken for the capture filled its disk ({}; {e}): it \
         needs room for the whole database there; set TMPDIR to a directory with more",
        path.display(),
        std::env::temp_dir().display()
    ))
}

fn lock_timed_out(path: &Path, timeout: Duration) -> Error {
    Error::CommandFailed(format!(
        "SQLite database {}: locked by another connection for more than {} s; \
         no copy was taken",
        path.display(),
        timeout.as_secs_f64()
    ))
}

/// Runs `PRAGMA <pragma>` (`quick_check` or `integrity_check`) over the
/// whole database or, where it needs something only the application
/// defines, table by table (see [`Checked`]).
pub fn check(conn: &Connection, pragma: &str) -> rusqlite::Result<Checked> {
    match check_rows(conn, &format!("PRAGMA {pragma}")) {
        Ok(problems) => Ok(Checked {
            problems,
            unchecked: Vec::new(),
        }),
        Err(e) if needs_application(&e) => {
            let mut checked = Checked::default();
            for table in table_names(conn)? {
                let quoted = format!("'{}'", table.replace('\'', "''"));
                match check_rows(conn, &format!("PRAGMA {pragma}({quoted})")) {
                    Ok(p) => checked.problems.extend(p),
                    Err(e) if needs_application(&e) => {
                        checked.unchecked.push((table, e.to_string()));
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(checked)
        }
        Err(e) => Err(e),
    }
}

/// The rows of a check; empty for its one row `ok`.
fn check_rows(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<String>> {
    let rows: Vec<String> = conn
        .prepare(sql)?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(if rows == ["ok"] { Vec::new() } else { rows })
}

/// Whether SQLite failed for want of a collation or function that the
/// database's application registers (not damage).
fn needs_application(e: &rusqlite::Error) -> bool {
    let m = e.to_string();
    m.contains("no such collation sequence")
        || m.contains("no such function")
        || m.contains("unknown function")
}

/// The ordinary tables (not virtual ones: they may need modules this
/// build lacks; their data lives in ordinary shadow tables).
fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
    )?
    .query_map([], |r| r.get(0))?
    .collect()
}

/// Rows in every ordinary table (virtual tables are left out: counting them
/// may need modules this build lacks). `NOT INDEXED`: SQLite counts through
/// the narrowest index, which may use a collation only the database's
/// application registers. A `WITHOUT ROWID` table keyed on such a collation
/// cannot be counted at all: it is left out here, and named by the check
/// as not checked.
pub fn row_counts(conn: &Connection) -> rusqlite::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for name in table_names(conn)? {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let sql = format!("SELECT count(*) FROM {quoted} NOT INDEXED");
        match conn.query_row(&sql, [], |r| r.get::<_, i64>(0)) {
            Ok(n) => {
                out.insert(name, n as u64);
            }
            Err(e) if needs_application(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Checks a restored database: what `PRAGMA integrity_check` found (no
/// problems when it passes) and its rows per table.
pub fn inspect(path: &Path) -> Result<(Checked, BTreeMap<String, u64>)> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| db_err(path, "open", e))?;
    // The check of a large database takes a while: a stop request ends it
    // (verify-restore then removes its copy).
    let interrupt = conn.get_interrupt_handle();
    crate::child::stopped_by(|| interrupt.interrupt(), || inspect_on(path, &conn))
}

fn inspect_on(path: &Path, conn: &Connection) -> Result<(Checked, BTreeMap<String, u64>)> {
    let mut checked = match check(conn, "integrity_check") {
        Ok(c) => c,
        // A database too damaged to run the check fails it.
        Err(e) => Checked {
            problems: vec![e.to_string()],
            unchecked: Vec::new(),
        },
    };
    // The first 10 problems name the damage; thousands more would drown it.
    checked.problems.truncate(10);
    let tables = match row_counts(conn) {
        Ok(t) => t,
        // Already failed: the counts cannot add to the verdict.
        Err(_) if !checked.problems.is_empty() => BTreeMap::new(),
        Err(e) => return Err(db_err(path, "count rows", e)),
    };
    Ok((checked, tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page: [u8; 2]) -> Vec<u8> {
        let mut h = HEADER.to_vec();
        h.extend_from_slice(&page);
        h.extend_from_slice(&[1, 1]);
        h
    }

    #[test]
    fn page_size_is_read_from_the_header() {
        assert_eq!(page_size_of(&header([0x10, 0x00])), Some(4096));
        assert_eq!(page_size_of(&header([0x02, 0x00])), Some(512));
        assert_eq!(page_size_of(&header([0x00, 0x01])), Some(65536));
        // Not a power of two, too small, cut short, not a database.
        assert_eq!(page_size_of(&header([0x03, 0xe8])), None);
        assert_eq!(page_size_of(&header([0x01, 0x00])), None);
        assert_eq!(page_size_of(&header([0x10, 0x00])[..17]), None);
        let mut other = header([0x10, 0x00]);
        other[0] = b's';
        assert_eq!(page_size_of(&other), None);
    }
}
