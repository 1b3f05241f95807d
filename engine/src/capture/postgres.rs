//! PostgreSQL: a `pg_dump` in plain format (text that deduplicates well
//! between captures) stored as one file through the command-stream path of
//! the archiver, its rows counted per table as the stream goes by, and
//! loaded back with `psql`, stopping at the first error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};

use super::restricted;
use crate::archiver::{BackupOptions, BackupProgress, BackupResult, StdinSource, backup};
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::restorer::{RestoreOptions, restore};
use crate::snapshot::{DatabaseCapture, Snapshot};

/// The dump format recorded in the snapshot.
pub const FORMAT: &str = "plain";

/// `conninfo` without its password, and the password: given to libpq
/// through `PGPASSWORD` instead, it shows neither in `ps` nor in the
/// messages that name the command (a URI keeps its password).
fn split_password(conninfo: &str) -> (String, Option<String>) {
    if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        return split_uri_password(conninfo);
    }
    let Some(pairs) = conninfo_pairs(conninfo) else {
        return (conninfo.to_string(), None);
    };
    let password = pairs
        .iter()
        .rev()
        .find_map(|(k, v)| (k == "password").then(|| v.clone()));
    if password.is_none() {
        return (conninfo.to_string(), None);
    }
    let rest: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k != "password")
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    (rest.join(" "), password)
}

/// Whether `conninfo` holds a password. Its children get it through
/// `PGPASSWORD`, but cairn's own command line shows it in `ps` for as long
/// as cairn runs (a scheduled backup: for good); `PGPASSWORD` or
/// `~/.pgpass` given to cairn reach libpq without that.
pub fn holds_password(conninfo: &str) -> bool {
    split_password(conninfo).1.is_some()
}

/// [`split_password`] for a connection URI: the password in its user
/// part or its `password` parameter, read as libpq reads the URI (the user
/// part ends at the first `@`, and the host list, which may name several
/// hosts or none, at the first `/` or `?`). A URL parser refused the
/// forms libpq allows beyond one host (`@db1:5432,db2:5432/app`,
/// `@/app?host=/run/postgresql`), and the password stayed in `ps`.
fn split_uri_password(uri: &str) -> (String, Option<String>) {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let Some((scheme, rest)) = uri.split_once("://") else {
        return (uri.to_string(), None);
    };
    // The user part runs to the first `@` that comes before any `/`: a
    // `?` or `#` in it is the password's (`u:pa?ss@h`), not the query's.
    let (user, after) = match rest.find(['@', '/']) {
        Some(i) if rest.as_bytes()[i] == b'@' => (Some(&rest[..i]), &rest[i + 1..]),
        _ => (None, rest),
    };
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (hosts, tail) = after.split_at(end);
    let mut password = None;
    let authority = match user {
        Some(user) => match user.split_once(':') {
            Some((name, pw)) => {
                password = Some(decode(pw));
                format!("{name}@{hosts}")
            }
            None => format!("{user}@{hosts}"),
        },
        None => hosts.to_string(),
    };
    // The parameters as libpq reads them: `%XX` decoded, `+` kept (not
    // form encoding, where `+` is a space); the others are left as written.
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let mut kept = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        if decode(k) == "password" {
            password = Some(decode(v));
        } else {
            kept.push(part);
        }
    }
    if password.is_none() {
        return (uri.to_string(), None);
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    (format!("{scheme}://{authority}{path}{query}"), password)
}

/// Runs psql on the database behind `conninfo` with `args`.
fn run_psql(conninfo: &str, args: &[&str]) -> Result<String> {
    run_psql_as(conninfo, args, true)
}

/// [`run_psql`]; `stoppable`: ended by a stop request (see
/// [`crate::child::stop_with`]) with [`Error::Interrupted`]. Clean-up after
/// a stop must not be.
fn run_psql_as(conninfo: &str, args: &[&str], stoppable: bool) -> Result<String> {
    run_psql_fed(
        conninfo,
        args,
        stoppable,
        None::<fn(&mut ChildStdin) -> std::io::Result<()>>,
    )
}

/// [`run_psql_as`], with psql's standard input written by `feed`.
fn run_psql_fed(
    conninfo: &str,
    args: &[&str],
    stoppable: bool,
    feed: Option<impl FnOnce(&mut ChildStdin) -> std::io::Result<()> + Send>,
) -> Result<String> {
    if stoppable && crate::child::stopping() {
        return Err(Error::Interrupted);
    }
    let (conninfo, password) = split_password(conninfo);
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        &conninfo,
    ])
    .envs(password.map(|p| ("PGPASSWORD", p)))
    // What it is given and answers is UTF-8 (a dump sets its own).
    .env("PGCLIENTENCODING", "UTF8")
    .args(args);
    cmd.stdin(Stdio::null());
    let out = if stoppable || feed.is_some() {
        crate::child::output_stoppable_fed(&mut cmd, feed)
    } else {
        crate::child::dies_with_us(&mut cmd).output()
    }
    .map_err(|e| Error::CommandFailed(format!("cannot run psql: {e}")))?;
    if stoppable && crate::child::stopping() {
        return Err(Error::Interrupted);
    }
    if !out.status.success() {
        return Err(Error::CommandFailed(format!(
            "psql exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The database name and server version behind `conninfo`.
pub fn server_info(conninfo: &str) -> Result<(String, String)> {
    // The name in hex: it may hold the separator, newlines or spaces at
    // its ends (`a|b` was recorded as `a`, and restored as `a`).
    let out = run_psql(
        conninfo,
        &[
            "-At",
            "-c",
            "SELECT encode(convert_to(current_database(), 'UTF8'), 'hex') || '|' \
             || current_setting('server_version')",
        ],
    )?;
    let unexpected = || Error::CommandFailed(format!("unexpected answer from psql: {out:?}"));
    let (hex, version) = out.split_once('|').ok_or_else(unexpected)?;
    let bytes = hex::decode(hex).map_err(|_| unexpected())?;
    let db = String::from_utf8(bytes).map_err(|_| unexpected())?;
    Ok((db, version.to_string()))
}

/// The file name a dump of `database` is stored under: `<database>.sql`,
/// with `%` and `/` percent-encoded, so that every name is one file of
/// its own (`a/b` is not `b` in a directory `a`, and `..` no error).
pub fn dump_file_name(database: &str) -> String {
    let escaped = database.replace('%', "%25").replace('/', "%2F");
    format!("{escaped}.sql")
}

/// How long `pg_dump` waits for a table's lock by default, as a SQLite
/// capture does ([`crate::capture::sqlite::LOCK_TIMEOUT`]).
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Backs up the database behind `conninfo` with `pg_dump`; the snapshot
/// (one file, `/<database>.sql` unless `filename` names another, such as
/// `staging/app.sql` for a database of the same name on another server) is
/// written only if pg_dump exits 0. `opts` supplies tags, host and time;
/// its paths must be empty.
pub fn backup_postgres(
    repo: &Repository,
    conninfo: &str,
    filename: Option<&str>,
    opts: &BackupOptions,
    progress: &dyn BackupProgress,
) -> Result<BackupResult> {
    let (database, version) = server_info(conninfo)?;
    let filename = filename.map_or_else(|| dump_file_name(&database), str::to_string);
    // The record's path as the stream's file is stored (`/db2/app.sql` or
    // `db2//app.sql/` is `/db2/app.sql`), so that its row counts and
    // `restore-db --database PATH` find it.
    let path = format!("/{}", crate::archiver::stream_path(&filename)?.join("/"));
    let (conninfo, password) = split_password(conninfo);
    let wait = opts.postgres_lock_timeout.unwrap_or(LOCK_TIMEOUT);
    let mut o = opts.clone();
    o.stdin = Some(StdinSource {
        filename: filename.clone(),
        command: Some(
            [
                "pg_dump",
                "--no-password",
                "--format=plain",
                // Without it a table locked exclusively held the capture,
                // and every scheduled run after it, for as long as the lock.
                &format!("--lock-wait-timeout={}", wait.as_millis().max(1)),
                "--dbname",
                &conninfo,
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: password
            .map(|p| ("PGPASSWORD".to_string(), p))
            .into_iter()
            .collect(),
        label: Some(format!("pg_dump of database {database:?}")),
        allow_empty: false,
        count_copy_rows: true,
    });
    o.databases.push(DatabaseCapture {
        kind: "postgres".into(),
        path,
        database: Some(database),
        server_version: Some(version),
        format: Some(FORMAT.into()),
        ..DatabaseCapture::default()
    });
    backup(repo, &o, progress)
}

/// The database name a keyword/value `conninfo` names (`dbname=...`; the
/// last one, as libpq takes it).
fn dbname(conninfo: &str) -> Option<String> {
    conninfo_pairs(conninfo)?
        .into_iter()
        .rev()
        .find_map(|(k, v)| (k == "dbname").then_some(v))
}

/// Refuses, as [`Error::InvalidInput`], a `conninfo` that is not libpq's
/// keyword/value form, which `what` needs (it adds `dbname=` to it): a URI,
/// or a bare database name (`postgres`), which psql takes alone but not
/// with a keyword after it. Checked before any work, so that a mistyped
/// option is not recorded as a failed restore test.
pub fn check_keyword_conninfo(conninfo: &str, what: &str) -> Result<()> {
    match conninfo_pairs(conninfo) {
        // Empty: libpq takes everything from PGHOST, PGDATABASE and the like.
        Some(_) => Ok(()),
        // Not echoed: it may hold a password.
        _ => Err(Error::InvalidInput(format!(
            "{what} needs a keyword/value CONNINFO such as \"host=/run/postgresql \
             dbname=postgres\"; the one given is {}",
            if conninfo.contains("://") {
                "a URI"
            } else {
                "not one (a word without `=`, or a quote left open)"
            }
        ))),
    }
}

/// The `keyword = value` pairs of a libpq keyword/value connection string:
/// spaces allowed around `=`, values bare or in single quotes, `\`
/// escaping the next character. `None` if it is not one (a URI, say).
fn conninfo_pairs(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    let skip_spaces = |it: &mut std::iter::Peekable<std::str::Chars>| {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_spaces(&mut it);
        if it.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_spaces(&mut it);
        // libpq's keywords are words: `postgresql:///db?host=...` is a
        // URI whose query looked like a keyword, and passed as one.
        let word = key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if key.is_empty() || !word || it.next() != Some('=') {
            return None;
        }
        skip_spaces(&mut it);
        let quoted = it.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match it.peek().copied() {
                None if quoted => return None,
                None => break,
                Some('\'') if quoted => {
                    it.next();
                    break;
                }
                Some(c) if c.is_whitespace() && !quoted => break,
                // A `\\` at the very end escapes nothing, and libpq drops it
                // (an unclosed quote is still an error).
                Some('\\') => {
                    it.next();
                    value.extend(it.next());
                }
                Some(c) => {
                    it.next();
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// The PostgreSQL capture in `snap` of `database` (its name or its path in
/// the snapshot), or its first one when `database` is `None`.
pub fn postgres_capture<'s>(
    snap: &'s Snapshot,
    database: Option<&str>,
) -> Option<&'s DatabaseCapture> {
    snap.databases.iter().find(|d| {
        d.kind == "postgres"
            && database.is_none_or(|n| d.database.as_deref() == Some(n) || d.path == n)
    })
}

/// The paths of the PostgreSQL captures `snaps` hold of `database` (its
/// name or path, as [`postgres_capture`] matches it; any when `None`), one
/// per database captured: with more than one, `restore-db latest` would
/// load whichever was captured last (two servers' `app`, at `/app.sql`
/// and `/db2/app.sql`, are both `--database app`).
pub fn postgres_capture_paths<'s>(
    snaps: impl IntoIterator<Item = &'s Snapshot>,
    database: Option<&str>,
) -> std::collections::BTreeSet<&'s str> {
    snaps
        .into_iter()
        .flat_map(|s| &s.databases)
        .filter(|d| {
            d.kind == "postgres"
                && database.is_none_or(|n| d.database.as_deref() == Some(n) || d.path == n)
        })
        .map(|d| d.path.as_str())
        .collect()
}

/// Loads the PostgreSQL dump of `database` (see [`postgres_capture`]) in
/// `snap` into the database behind `conninfo` with `psql -v
/// ON_ERROR_STOP=1`. With `create`, the database (named by `dbname=` in
/// `conninfo`) is created first through the `postgres` maintenance
/// database. Returns the database name loaded into.
pub fn restore_db(
    repo: &Repository,
    snap: &Snapshot,
    database: Option<&str>,
    conninfo: &str,
    create: bool,
    scratch: &Path,
) -> Result<String> {
    if create {
        check_keyword_conninfo(conninfo, "--create")?;
    }
    let db = postgres_capture(snap, database).ok_or_else(|| {
        Error::InvalidInput(match database {
            Some(n) => format!("this snapshot holds no PostgreSQL dump of {n}"),
            None => "this snapshot holds no PostgreSQL dump".into(),
        })
    })?;
    let dir = crate::scratch::dir(scratch, "cairn-restore-db-")
        .map_err(|e| Error::io("create scratch directory in", scratch, e))?;
    // Restored below the private (0700) scratch directory, whatever mode
    // the restore gives its own target: a dump holds every row.
    let target = dir.path().join("dump");
    let opts = RestoreOptions {
        target: target.clone(),
        subpath: Some(PathBuf::from(&db.path)),
        verify: true,
        numeric_ids: true,
        ..RestoreOptions::default()
    };
    let r = restore(repo, snap, &opts, &crate::restorer::StopRequested)?;
    if r.errors > 0 {
        return Err(Error::corrupt("dump", r.warnings.join("; ")));
    }
    // A file restored by its own path lands under its own name.
    let name = Path::new(&db.path).file_name().unwrap_or_default();
    let file = target.join(name);
    let mut created = None;
    if create {
        let name = dbname(conninfo).ok_or_else(|| {
            Error::InvalidInput("--create needs a keyword/value CONNINFO with dbname=NAME".into())
        })?;
        // A later keyword overrides an earlier one in libpq's conninfo.
        let maintenance = format!("{conninfo} dbname=postgres");
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        // Not stopped half-way: a server finishes a CREATE DATABASE whose
        // client went away, and nothing dropped it. A stop is seen right
        // after, as a failed load (`load_dump` starts no psql then).
        run_psql_as(
            &maintenance,
            // As pg_dump's manual asks for a plain dump: template1 may hold
            // a site's own objects, which the load would collide with.
            &[
                "-q",
                "-c",
                &format!("CREATE DATABASE {quoted} TEMPLATE template0"),
            ],
            false,
        )?;
        created = Some((maintenance, quoted));
    }
    if let Err(e) = load_dump(conninfo, &file) {
        // A database made for the load and left half loaded made the same
        // command fail next time ("already exists"): dropped again (also
        // after a stop).
        let Some((maintenance, quoted)) = created else {
            return Err(e);
        };
        return Err(match drop_database(&maintenance, &quoted) {
            Ok(_) if matches!(e, Error::Interrupted) => e,
            Ok(_) => Error::CommandFailed(format!(
                "{e}; the database {quoted} made for the load was dropped again"
            )),
            Err(d) if matches!(e, Error::Interrupted) => {
                // Stopped all the same (exit 130), but not without a word.
                eprintln!(
                    "cairn: warning: the database {quoted} made for the load is left half \
                     loaded, as it could not be dropped ({}): drop it by hand",
                    crate::error::printable(&d.to_string())
                );
                e
            }
            Err(d) => Error::CommandFailed(format!(
                "{e}; the database {quoted} made for the load is left half loaded, as it \
                 could not be dropped: {d}"
            )),
        });
    }
    // A URI or a conninfo without dbname= names it only to the server.
    match dbname(conninfo) {
        Some(name) => Ok(name),
        None => Ok(server_info(conninfo)?.0),
    }
}

/// Loads the plain dump `file` into the database behind `conninfo` with
/// `psql -v ON_ERROR_STOP=1`: the first error stops the load and is
/// returned with psql's message. psql runs no backslash command of the
/// dump's (see [`restricted`]).
pub fn load_dump(conninfo: &str, file: &Path) -> Result<()> {
    // The name comes from a snapshot's capture record: a forged snapshot
    // whose dump node is a symlink (or a FIFO) must not feed psql a host
    // file (or hang the load).
    let dump = crate::fsmeta::open_noatime_nofollow(file, false)
        .map_err(|e| Error::io("open", file, e))?;
    let kind = dump.metadata().map_err(|e| Error::io("stat", file, e))?;
    if !kind.is_file() {
        return Err(Error::corrupt(
            "dump",
            format!("{} is not a regular file", file.display()),
        ));
    }
    let restrict = format!("\\restrict {}", restricted::fresh_key());
    let feed = |input: &mut ChildStdin| restricted::feed(dump, input);
    match run_psql_fed(
        conninfo,
        &["-q", "-c", &restrict, "-f", "-"],
        true,
        Some(feed),
    ) {
        Err(Error::CommandFailed(m)) if m.contains("invalid command \\restrict") => {
            Err(Error::CommandFailed(format!(
                "{m}: this psql cannot shut off the backslash commands a dump may hold (\\! runs \
                 a shell command); cairn loads dumps only with psql 13.22, 14.19, 15.14, 16.10, \
                 17.6 or later (`cairn dump` writes the dump out for a load by hand)"
            )))
        }
        // A dump names its objects' owners but holds no roles: the usual
        // first failure on a new server after losing the old one.
        Err(Error::CommandFailed(m))
            if m.contains("ERROR:  role \"") && m.contains("does not exist") =>
        {
            Err(Error::CommandFailed(format!(
                "{m}\n(a pg_dump holds no roles: create the roles it names on this server first, \
                 from a capture of `pg_dumpall --globals-only`; see docs/databases.md, \
                 \"Roles, tablespaces and database settings\")"
            )))
        }
        r => r.map(drop),
    }
}

/// Rows in each of `tables` (names as a dump writes them, see
/// [`CopyCounter::tables`](super::pgdump::CopyCounter::tables)) in the
/// database behind `conninfo`, counted as their COPY sections hold them:
/// `ONLY` the table itself for an inheritance parent (`COPY ... TO` dumps
/// its children separately), all of it for a partitioned table (whose
/// COPY, with `--load-via-partition-root`, carries its partitions' rows).
pub fn count_rows(conninfo: &str, tables: &[&str]) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    // One query per few hundred tables: a select list has a column limit.
    for part in tables.chunks(400) {
        let cols: Vec<String> = part
            .iter()
            .map(|t| {
                let lit = t.replace('\'', "''");
                format!(
                    "(SELECT CASE WHEN relkind = 'p' THEN (SELECT count(*) FROM {t}) \
                     ELSE (SELECT count(*) FROM ONLY {t}) END \
                     FROM pg_class WHERE oid = '{lit}'::regclass)"
                )
            })
            .collect();
        let row = run_psql(
            conninfo,
            &[
                "-At",
                "-F",
                ",",
                "-c",
                &format!("SELECT {}", cols.join(", ")),
            ],
        )?;
        let counts: Vec<u64> = row
            .split(',')
            .map(|n| n.parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::CommandFailed(format!("unexpected answer from psql: {row:?}")))?;
        if counts.len() != part.len() {
            return Err(Error::CommandFailed(format!(
                "unexpected answer from psql: {row:?}"
            )));
        }
        out.extend(part.iter().map(|t| t.to_string()).zip(counts));
    }
    Ok(out)
}

/// A database made for one check on the server behind a connection string,
/// named `cairn_verify_<16 hex digits>`, and dropped when this is dropped
/// (also when the check failed half-way).
pub struct ScratchDatabase {
    /// The connection string given, with `dbname=` of the server's database
    /// used to create and drop the scratch one.
    admin: String,
    name: String,
}

impl ScratchDatabase {
    /// Creates an empty scratch database (from `template0`, so nothing a
    /// site added to `template1` can collide with the dump) on the server
    /// behind `conninfo`, connecting to the database `conninfo` names.
    pub fn create(conninfo: &str) -> Result<ScratchDatabase> {
        check_keyword_conninfo(conninfo, "a scratch database")?;
        let mut r = [0u8; 8];
        crate::crypto::fill_random(&mut r);
        let name = format!("cairn_verify_{}", hex::encode(r));
        // Not stopped half-way: a server finishes a CREATE DATABASE whose
        // client went away, and no guard would drop it. A stop is seen
        // right after, with the guard made.
        run_psql_as(
            conninfo,
            &[
                "-q",
                "-c",
                &format!("CREATE DATABASE {name} TEMPLATE template0"),
            ],
            false,
        )?;
        let db = ScratchDatabase {
            admin: conninfo.to_string(),
            name,
        };
        if crate::child::stopping() {
            return Err(Error::Interrupted);
        }
        Ok(db)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection string for it (a later `dbname=` overrides an earlier
    /// one in libpq).
    pub fn conninfo(&self) -> String {
        format!("{} dbname={}", self.admin, self.name)
    }
}

/// Drops the database `name` (an SQL identifier, quoted if need be)
/// through `admin`. WITH (FORCE) ends the sessions a failed or stopped load
/// may have left (psql ended, its server session still running a
/// statement: a plain DROP gave up on it after 5 s); servers before
/// PostgreSQL 13 refuse it, and get the plain statement. Run also when
/// stopping: that is what it is for.
fn drop_database(admin: &str, name: &str) -> Result<String> {
    let drop_it = |how: &str| {
        let sql = format!("DROP DATABASE IF EXISTS {name}{how}");
        run_psql_as(admin, &["-q", "-c", &sql], false)
    };
    drop_it(" WITH (FORCE)").or_else(|_| drop_it(""))
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if let Err(e) = drop_database(&self.admin, &self.name) {
            // It holds a copy of the data: not left without a word.
            eprintln!(
                "cairn: warning: the scratch database {} could not be dropped ({}): \
                 drop it by hand (DROP DATABASE {})",
                self.name,
                crate::error::printable(&e.to_string()),
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_read_as_libpq_reads_it() {
        assert_eq!(dbname("host=/run/pg dbname=app").as_deref(), Some("app"));
        assert_eq!(
            dbname("dbname = app_copy port=5432").as_deref(),
            Some("app_copy")
        );
        assert_eq!(
            dbname("dbname='mini copy' user=x").as_deref(),
            Some("mini copy")
        );
        assert_eq!(dbname(r"dbname='it\'s' ").as_deref(), Some("it's"));
        assert_eq!(dbname(r"dbname=a\ b").as_deref(), Some("a b"));
        // A later keyword overrides an earlier one.
        assert_eq!(dbname("dbname=a dbname=b").as_deref(), Some("b"));
        assert_eq!(dbname("host=x").as_deref(), None);
        assert_eq!(dbname("postgresql://h/app").as_deref(), None);
        assert_eq!(dbname("dbname='unclosed").as_deref(), None);
        // A URI with a query is no keyword/value string (it passed as one,
        // its query taken for a keyword, and failed in psql after the
        // scratch database was made).
        let uri = "postgresql:///postgres?host=/tmp&port=5433";
        assert_eq!(dbname(uri).as_deref(), None);
        let refused = check_keyword_conninfo(uri, "--postgres").unwrap_err();
        assert!(refused.to_string().contains("a URI"), "{refused}");
        check_keyword_conninfo("host=/tmp port=5433 dbname=postgres", "--postgres").unwrap();
        // A trailing `\\` escapes nothing (libpq drops it).
        let (rest, pw) = split_password(r"dbname=a password=ab\");
        assert_eq!((rest.as_str(), pw.as_deref()), ("dbname='a'", Some("ab")));
    }

    #[test]
    fn a_password_leaves_the_conninfo_and_the_rest_reads_the_same() {
        let (rest, pw) = split_password(r"host=/run/pg password='s3 cr\'t' dbname='it\'s'");
        assert_eq!(pw.as_deref(), Some("s3 cr't"));
        assert!(!rest.contains("s3"), "{rest}");
        assert_eq!(dbname(&rest).as_deref(), Some("it's"));
        assert_eq!(
            conninfo_pairs(&rest).unwrap(),
            [
                ("host".into(), "/run/pg".into()),
                ("dbname".into(), "it's".into())
            ]
        );
        // Nothing to move: left as given.
        assert_eq!(split_password("dbname=a"), ("dbname=a".into(), None));
        assert!(!holds_password("dbname=a"));
        assert!(holds_password("dbname=a password=b"));
        assert!(holds_password("postgres://u:p@h/app"));
        let uri = "postgresql://u@h/app";
        assert_eq!(split_password(uri), (uri.into(), None));
        // A URI's, in its user part or its parameters.
        assert_eq!(
            split_password("postgresql://u:p%40ss@h:5433/app?sslmode=disable"),
            (
                "postgresql://u@h:5433/app?sslmode=disable".into(),
                Some("p@ss".into())
            )
        );
        assert_eq!(
            split_password("postgres://h/app?password=s%20x&application_name=c"),
            (
                "postgres://h/app?application_name=c".into(),
                Some("s x".into())
            )
        );
        // libpq decodes only `%XX`: a `+` is a plus sign, in the password
        // and in the parameters passed on (which stay as written).
        assert_eq!(
            split_password("postgresql://h/app?password=ab+cd&options=-c%20search_path%3Dx+y"),
            (
                "postgresql://h/app?options=-c%20search_path%3Dx+y".into(),
                Some("ab+cd".into())
            )
        );
        assert_eq!(
            split_password("postgresql://u:pw@h/app?options=-c%20a%3Db&x=1+2"),
            (
                "postgresql://u@h/app?options=-c%20a%3Db&x=1+2".into(),
                Some("pw".into())
            )
        );
        // Forms with several hosts or none, which a URL parser refused:
        // the password stayed in the arguments psql and pg_dump were given.
        for (uri, without, password) in [
            (
                "postgresql://app:s3cret@db1:5432,db2:5432/app",
                "postgresql://app@db1:5432,db2:5432/app",
                "s3cret",
            ),
            (
                "postgresql://app:s3cret@/app?host=/run/postgresql",
                "postgresql://app@/app?host=/run/postgresql",
                "s3cret",
            ),
            (
                "postgresql:///app?host=/run/postgresql&password=s3cret",
                "postgresql:///app?host=/run/postgresql",
                "s3cret",
            ),
            ("postgresql://:s3cret@h", "postgresql://@h", "s3cret"),
            // libpq ends the user part at the first `@`: a `?` or `#`
            // before it is the password's.
            (
                "postgresql://postgres:pa?ss@/app?host=/tmp",
                "postgresql://postgres@/app?host=/tmp",
                "pa?ss",
            ),
            ("postgresql://u:a#b@h/app", "postgresql://u@h/app", "a#b"),
        ] {
            assert_eq!(split_password(uri), (without.into(), Some(password.into())));
        }
    }
}
