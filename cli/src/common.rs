//! What every command shares: global options, passwords, opening the repository.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cairn_engine::backend::{
    Backend, BucketLookup, FAULTS_ENV, FaultBackend, LocalBackend, S3Backend, S3Credentials,
    S3Location, S3Options,
};
use cairn_engine::{OpenOptions, Repository};
use clap::Args;

/// Options accepted by every command.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository location: a directory, or s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// S3 signing region (default: the one an AWS endpoint names, else
    /// $AWS_REGION, $AWS_DEFAULT_REGION, the profile's region in the AWS
    /// config file, else us-east-1)
    #[arg(long, env = "CAIRN_S3_REGION", global = true)]
    pub s3_region: Option<String>,
    /// Profile from the AWS shared config and credentials files (default: $AWS_PROFILE)
    #[arg(long, global = true)]
    pub s3_profile: Option<String>,
    /// How to address the bucket: auto (virtual-hosted on amazonaws.com
    /// unless the bucket's name has a dot, path elsewhere), dns or path
    #[arg(
        long,
        env = "CAIRN_S3_BUCKET_LOOKUP",
        default_value = "auto",
        global = true
    )]
    pub s3_bucket_lookup: String,
    /// Give up on an S3 request after this many seconds spent waiting in
    /// vain for the server (failed attempts and retries); moving data is
    /// given time on top, by --s3-min-rate [env: CAIRN_S3_TIMEOUT] [default: 60]
    // The environment's value is read only for S3 (see `s3_setting`).
    #[arg(long, global = true, value_parser = parse_timeout)]
    pub s3_timeout: Option<u64>,
    /// The slowest S3 transfer rate to allow for, per second (e.g. 64K,
    /// 1M): an upload or read of N bytes may take N / RATE seconds more
    /// than the timeout [env: CAIRN_S3_MIN_RATE] [default: 64K]
    #[arg(long, value_parser = parse_rate, global = true)]
    pub s3_min_rate: Option<u64>,
    /// Read the password from this file (its last newline dropped, and tried
    /// trimmed of surrounding whitespace too, as restic trims it; `init`
    /// stores it trimmed)
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Run this command and use its output as the password (read as a
    /// password file is)
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    pub password_command: Option<String>,
    /// Directory for the local cache, and nothing else: it is tagged CACHEDIR.TAG, which
    /// backups with --exclude-caches leave out (default: $XDG_CACHE_HOME/cairn or ~/.cache/cairn)
    // Read as an OsString: clap's PathBuf parser refuses an empty value,
    // which here means the default.
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true,
          value_parser = clap::builder::TypedValueParser::map(clap::builder::OsStringValueParser::new(), PathBuf::from))]
    pub cache_dir: Option<PathBuf>,
    /// Keep no local cache (the index is rebuilt in memory on every run)
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Print results as JSON
    #[arg(long, global = true)]
    pub json: bool,
    /// Read without taking a lock (read-only repositories; also dry runs of prune, forget and recover); a concurrent prune may then fail the read
    #[arg(long, global = true)]
    pub no_lock: bool,
    /// Print less
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Wait up to this long for a lock another process holds (e.g. 10m,
    /// 2h) instead of failing at once with exit code 11
    #[arg(long, env = "CAIRN_RETRY_LOCK", value_parser = parse_duration, value_name = "DURATION", global = true)]
    pub retry_lock: Option<std::time::Duration>,
    /// S3 keys given for this repository alone (copy's source), instead of
    /// the environment's
    #[arg(skip)]
    pub s3_credentials: Option<S3Credentials>,
}

impl Global {
    /// The backend for `--repo`.
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        // Wrong locations are wrong command lines (exit 2), refused before
        // anything is made.
        let Some(repo) = &self.repo else {
            return Err(crate::exit::usage(
                "no repository given: use -r/--repo or set CAIRN_REPOSITORY",
            ));
        };
        let inner: Box<dyn Backend> = if repo.starts_with("s3:") {
            // A location that cannot be read is a wrong command line.
            let loc = S3Location::parse(repo).map_err(|e| crate::exit::usage(e.to_string()))?;
            let opts = S3Options {
                region: self.s3_region.clone(),
                profile: self.s3_profile.clone(),
                // Read only for S3: a value in the environment must not stop
                // commands on local repositories. Empty means the default.
                bucket_lookup: match self.s3_bucket_lookup.as_str() {
                    "" => BucketLookup::Auto,
                    how => how.parse::<BucketLookup>().map_err(|e| {
                        crate::exit::usage(format!("--s3-bucket-lookup {how:?}: {e}"))
                    })?,
                },
                give_up_after: std::time::Duration::from_secs(s3_setting(
                    self.s3_timeout,
                    "CAIRN_S3_TIMEOUT",
                    60,
                    parse_timeout,
                )?),
                min_rate: s3_setting(self.s3_min_rate, "CAIRN_S3_MIN_RATE", 64 << 10, parse_rate)?,
                credentials: self.s3_credentials.clone(),
                ..S3Options::default()
            };
            // The SDKs' order puts keys in the environment before a named
            // profile's: say so rather than let the profile be ignored.
            if let Some(p) = &self.s3_profile
                && self.s3_credentials.is_none()
                && std::env::var_os("AWS_ACCESS_KEY_ID").is_some_and(|v| !v.is_empty())
                && !self.quiet
            {
                crate::warn!(
                    "warning: the keys in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are used, not \
                     those of --s3-profile {p} (the AWS SDKs' order); unset them to use the profile"
                );
            }
            // What it refuses is the location or an option: a command line.
            Box::new(S3Backend::new(&loc, &opts).map_err(|e| match e {
                cairn_engine::Error::InvalidInput(m) => crate::exit::usage(m),
                e => e.into(),
            })?)
        } else {
            let path = repo.strip_prefix("local:").unwrap_or(repo);
            // Other tools' schemes would otherwise name a local directory
            // (`sftp:host:/srv` made `./sftp:host:/srv`).
            if let Some(scheme) = ["sftp", "rest", "b2", "azure", "gs", "swift", "rclone"]
                .into_iter()
                .find(|s| repo.strip_prefix(s).is_some_and(|r| r.starts_with(':')))
            {
                return Err(crate::exit::usage(format!(
                    "unsupported repository location {repo:?}: cairn has no {scheme}: backend \
                     (directories and s3:http(s)://HOST/BUCKET/PREFIX); for a directory of that \
                     name, write ./{repo}"
                )));
            }
            // `./NAME` and `local:NAME` name a directory whatever it holds.
            let plainly =
                repo.starts_with("local:") || repo.starts_with("./") || repo.starts_with('/');
            if path.contains("://") && !plainly {
                return Err(crate::exit::usage(format!(
                    "unsupported repository location {repo:?}: use a directory or s3:http(s)://HOST/BUCKET/PREFIX"
                )));
            }
            // borg's and scp's HOST:PATH (`me@nas:/srv/repo`) made a local
            // directory of that name, and the backups stayed on this disk.
            if !plainly && path.split('/').next().is_some_and(|p| p.contains(':')) {
                return Err(crate::exit::usage(format!(
                    "unsupported repository location {repo:?}: a remote HOST:PATH (as borg and scp \
                     write it) cannot be reached; cairn stores in directories and in S3 \
                     (s3:http(s)://HOST/BUCKET/PREFIX); for a local directory of that name, write \
                     ./{repo}"
                )));
            }
            // An unset shell variable (`-r "$REPO"`) opened, or made, a
            // repository in the current directory.
            if path.is_empty() {
                return Err(crate::exit::usage(format!(
                    "empty repository location {repo:?}: give a directory (. for the current one) \
                     or s3:http(s)://HOST/BUCKET/PREFIX"
                )));
            }
            Box::new(LocalBackend::new(path))
        };
        // Fault injection exists for the test suite only.
        match std::env::var(FAULTS_ENV) {
            Ok(spec) if !spec.is_empty() => Ok(Arc::new(FaultBackend::new(inner, &spec)?)),
            _ => Ok(Arc::from(inner)),
        }
    }

    /// Where the local index lives.
    pub fn open_options(&self) -> OpenOptions {
        if self.no_cache {
            return OpenOptions {
                cache_dir: None,
                no_object_cache: true,
                ..Default::default()
            };
        }
        // An empty value (`CAIRN_CACHE_DIR=`) means the default, not the
        // current directory.
        let given = self.cache_dir.clone().filter(|d| !d.as_os_str().is_empty());
        let dir = given.or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| cairn_engine::host::home_dir().map(|h| h.join(".cache")))
                .map(|d| d.join("cairn"))
        });
        static TOLD: std::sync::Once = std::sync::Once::new();
        if dir.is_none() && !self.quiet {
            TOLD.call_once(|| {
                crate::warn!(
                    "warning: no cache directory (no --cache-dir, $XDG_CACHE_HOME or home \
                     directory): the index is read from the repository on every run"
                )
            });
        }
        OpenOptions {
            cache_dir: dir,
            no_object_cache: false,
            ..Default::default()
        }
    }

    /// The repository password from the environment, a file, a command or the terminal.
    pub fn password(&self) -> Result<Vec<u8>> {
        read_password(
            "CAIRN_PASSWORD",
            self.password_file.as_deref(),
            self.password_command.as_deref(),
            "repository",
            "CAIRN_PASSWORD, CAIRN_PASSWORD_FILE or CAIRN_PASSWORD_COMMAND",
        )
    }

    /// A shared lock for commands that read data, unless `--no-lock`.
    pub fn read_lock(&self, repo: &Repository) -> Result<Option<cairn_engine::lock::LockGuard>> {
        if self.no_lock {
            return Ok(None);
        }
        Ok(Some(repo.lock(false)?))
    }

    /// Opens the repository bypassing the local object cache, so that what
    /// is read is what the storage holds (for `check`).
    pub fn open_uncached(&self) -> Result<Repository> {
        let mut opts = self.open_options();
        opts.no_object_cache = true;
        self.open_with(&opts)
    }

    /// Opens the repository as `opts` say, waiting for locks as
    /// `--retry-lock` says; tells the user if the cache cannot be used.
    fn open_with(&self, opts: &OpenOptions) -> Result<Repository> {
        let backend = self.backend()?;
        let password = self.password()?;
        let given = self.password_file.is_some() || self.password_command.is_some();
        let mut repo = open_repository(backend, &password, given, opts)?;
        repo.set_lock_wait(self.lock_wait());
        repo.set_warnings(warning_sink(""));
        warn_cache_unusable(&repo);
        Ok(repo)
    }

    /// [`Global::lock_wait`], given up when `stop` is set (by a signal
    /// caught with [`crate::exit::stop_flag`]).
    pub fn lock_wait_until(
        &self,
        stop: &Arc<std::sync::atomic::AtomicBool>,
    ) -> cairn_engine::lock::LockWait {
        cairn_engine::lock::LockWait {
            stop: Some(stop.clone()),
            ..self.lock_wait()
        }
    }

    /// How long locks held by others are waited for (`--retry-lock`).
    pub fn lock_wait(&self) -> cairn_engine::lock::LockWait {
        let up_to = self.retry_lock.unwrap_or_default();
        let quiet = self.quiet;
        cairn_engine::lock::LockWait {
            up_to,
            on_wait: Some(Arc::new(move |who: &str| {
                if !quiet {
                    crate::warn!(
                        "waiting up to {} for the repository: {who}",
                        cairn_engine::units::format_duration(up_to)
                    );
                }
            })),
            stop: None,
        }
    }

    /// Opens the repository.
    pub fn open(&self) -> Result<Repository> {
        let repo = self.open_with(&self.open_options())?;
        note_old_caches(self);
        warn_damaged_index(&repo, "");
        Ok(repo)
    }

    /// [`Global::open`] for a command that runs on (`watch`, `backup
    /// --schedule`): a failure is told to its `on_failure` hook too. A
    /// repository that cannot be opened at start (a disk not mounted after
    /// a reboot, storage unreachable, a password file changed) is the
    /// commonest outage, and a service restarted on failure failed silently
    /// for ever.
    pub fn open_or_tell(&self, on_failure: Option<&str>) -> Result<Repository> {
        self.open().inspect_err(|e| {
            if let Some(Err(hook)) =
                on_failure.map(|h| cairn_engine::hook::run_failure_hook(h, &format!("{e:#}")))
            {
                crate::warn!("cairn: warning: {hook}");
            }
        })
    }
}

/// Opens a repository with `password`; `from_file` when it was read from
/// a file or a command: restic trims those of surrounding whitespace, so a
/// file written for it ("pw  ", "pw\n\n") is read the same way when its
/// bytes as they are fail.
pub fn open_repository(
    backend: std::sync::Arc<dyn cairn_engine::backend::Backend>,
    password: &[u8],
    from_file: bool,
    opts: &OpenOptions,
) -> cairn_engine::Result<Repository> {
    let opts = OpenOptions {
        trimmed_too: from_file,
        ..opts.clone()
    };
    Repository::open(backend, password, &opts)
}

/// Warns of the index files the open left out of the index as damaged;
/// `prefix` names the repository when a command opens two.
pub fn warn_damaged_index(repo: &Repository, prefix: &str) {
    for d in &repo.index_sync_stats().damaged {
        crate::warn!("warning: {prefix}{d}; left out of the index (run `cairn repair index`)");
    }
}

/// The warning for a pack in no index whose header cannot be read, which
/// `what` (repair, recover) went on without.
pub fn unusable_pack_warning(pack: &str, what: &str) -> String {
    format!(
        "warning: pack {pack} is in no index and its header cannot be read: what it holds \
         cannot be found, so {what} goes on without it (`cairn prune` deletes it; move it out \
         of data/ first to keep it)"
    )
}

/// Says, once per command that opens a repository with a cache, how many
/// caches went unused for [`cairn_engine::cachedir::OLD_AFTER`] (as restic does): without it they
/// pile up unseen after repositories are re-created or given up.
pub fn note_old_caches(g: &Global) {
    if g.quiet || g.json {
        return;
    }
    let Some(root) = g.open_options().cache_dir else {
        return;
    };
    let Ok(caches) = cairn_engine::cachedir::list(&root, false) else {
        return;
    };
    let now = std::time::SystemTime::now();
    let old = caches
        .iter()
        .filter(|c| c.unused_for(cairn_engine::cachedir::OLD_AFTER, now))
        .count();
    if old > 0 {
        crate::warn!(
            "note: {old} cache(s) in {} not used for {} days; `cairn cache --cleanup` removes them",
            root.display(),
            cairn_engine::cachedir::OLD_AFTER.as_secs() / 86_400
        );
    }
}

/// Says so when the local cache could not be used and the command goes on
/// without it.
pub fn warn_cache_unusable(repo: &Repository) {
    if let Some(why) = repo.cache_unusable() {
        crate::warn!(
            "warning: the local cache cannot be used ({why}); going on without it, as with \
             --no-cache (if its directory cannot be written, set --cache-dir or \
             CAIRN_CACHE_DIR to one that can)"
        );
    }
}

/// Environment variables that carry a password.
const PASSWORD_VARS: [&str; 2] = ["CAIRN_PASSWORD", "CAIRN_FROM_PASSWORD"];

/// The passwords [`PASSWORD_VARS`] held when cairn started.
static ENV_PASSWORDS: std::sync::OnceLock<Vec<(&'static str, std::ffi::OsString)>> =
    std::sync::OnceLock::new();

/// Takes the `CAIRN_*` settings set to the empty string out of the
/// environment: unset, as restic reads its own (`CAIRN_PASSWORD_FILE=`
/// made every command fail with "a value is required"). Passwords are
/// left as they are.
pub fn drop_empty_env_settings() {
    for (var, value) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("CAIRN_") && value.is_empty() && !PASSWORD_VARS.contains(&&*name) {
            // SAFETY: called at the start of main, before any thread exists.
            unsafe { std::env::remove_var(&var) };
        }
    }
}

/// Takes the passwords out of the environment, so that the programs cairn
/// runs do not inherit them: the program of `--stdin-from-command` (whose
/// output is stored), `pg_dump`, `psql`. Hooks, the user's own commands,
/// get `CAIRN_PASSWORD` back (they may run `cairn tag`, `cairn copy`).
/// Call first thing in `main`, while the process has one thread.
pub fn take_env_passwords() {
    let mut taken = Vec::new();
    for var in PASSWORD_VARS {
        if let Some(p) = std::env::var_os(var) {
            taken.push((var, p));
            // SAFETY: called at the start of main, before any thread exists.
            unsafe { std::env::remove_var(var) };
        }
    }
    // Hooks are the user's own commands, documented to run `cairn` again.
    cairn_engine::hook::pass_to_hooks(
        taken
            .iter()
            .filter(|(v, _)| *v == "CAIRN_PASSWORD")
            .map(|(v, p)| (v.to_string(), p.clone()))
            .collect(),
    );
    let _ = ENV_PASSWORDS.set(taken);
}

/// The value `var` had in the environment when cairn started.
pub fn env_password(var: &str) -> Option<std::ffi::OsString> {
    match ENV_PASSWORDS.get() {
        Some(taken) => taken
            .iter()
            .find(|(v, _)| *v == var)
            .map(|(_, p)| p.clone()),
        None => std::env::var_os(var),
    }
}

/// A password from `file`, else the output of `command` (not both), else
/// the environment variable `env`, else the terminal, as restic orders
/// them: a file or command given for this run wins over a password left in
/// the environment. `what` names the repository in the prompt and
/// `sources` lists the options in the error without a terminal. An empty
/// variable means none (a unit file's `CAIRN_PASSWORD=`); its bytes are
/// taken as they are, UTF-8 or not.
pub fn read_password(
    env: &str,
    file: Option<&Path>,
    command: Option<&str>,
    what: &str,
    sources: &str,
) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    if file.is_some() && command.is_some() {
        return Err(crate::exit::usage(
            "give either a password file or a password command, not both",
        ));
    }
    if let Some(f) = file {
        let s =
            std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?;
        let s = strip_newline(s);
        if s.is_empty() {
            bail!("password file {} is empty", f.display());
        }
        return Ok(s);
    }
    // The command is not named in errors: it may hold a secret (a vault
    // token), and errors go to logs and to --on-failure hooks.
    if let Some(cmd) = command {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running the password command")?;
        if !out.status.success() {
            bail!("the password command failed ({})", out.status);
        }
        let s = strip_newline(out.stdout);
        if s.is_empty() {
            bail!("the password command printed no password");
        }
        return Ok(s);
    }
    if let Some(p) = env_password(env).filter(|p| !p.is_empty()) {
        return Ok(p.into_vec());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password given for the {what}: set {sources}, or run on a terminal");
    }
    crate::prompt::password(
        format!("enter password for {what}: "),
        &format!("set {sources}"),
    )
}

/// Warns when new keys will use the test-only weak KDF parameters.
pub fn warn_insecure_kdf() {
    if std::env::var(cairn_engine::keyfile::INSECURE_KDF_ENV).as_deref() == Ok("1") {
        crate::warn!(
            "warning: {}=1: the new key uses deliberately weak Argon2 parameters (for tests only)",
            cairn_engine::keyfile::INSECURE_KDF_ENV
        );
    }
}

/// Warns when a `--postgres` CONNINFO holds a password: cairn's own
/// command line shows it in `ps` (its children get it out of sight).
pub fn warn_password_in_conninfo(conninfo: &str) {
    if cairn_engine::capture::postgres::holds_password(conninfo) {
        crate::warn!(
            "warning: the password in --postgres can be read in `ps` for as long as cairn runs: \
             give it in PGPASSWORD or ~/.pgpass instead"
        );
    }
}

/// Whether `--quiet` was given, for messages printed far from [`Global`].
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `n` and `noun`, singular for one: `1 snapshot`, `2 snapshots`,
/// `3 entries`.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    match (n.into(), noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (n, Some(stem)) => format!("{n} {stem}ies"),
        (n, None) => format!("{n} {noun}s"),
    }
}

/// Prints a line that informs (not a warning or an error) on stderr,
/// unless `--quiet`: cron mails whatever a quiet job prints.
pub fn note(line: std::fmt::Arguments) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        crate::warn!("{line}");
    }
}

/// A new password read from `from` (a file, a command), trimmed of
/// surrounding whitespace as restic does, and as opening tries: kept, a
/// stray space made a password that the same text typed at the prompt or
/// set in CAIRN_PASSWORD did not open.
pub fn trimmed_new_password(pw: Vec<u8>, from: &str) -> Result<Vec<u8>> {
    let trimmed = pw.trim_ascii();
    if trimmed.is_empty() {
        bail!("the new password from {from} is empty");
    }
    if trimmed.len() != pw.len() {
        crate::warn!(
            "warning: the whitespace around the password in {from} is not part of it (as restic \
             reads such files)"
        );
    }
    Ok(trimmed.to_vec())
}

/// Strips one trailing newline (and a carriage return before it).
pub fn strip_newline(mut s: Vec<u8>) -> Vec<u8> {
    if s.last() == Some(&b'\n') {
        s.pop();
        if s.last() == Some(&b'\r') {
            s.pop();
        }
    }
    s
}

/// Asks for a new password twice on the terminal; off one, fails naming
/// `sources`, the other ways to give it.
pub fn prompt_new(what: &str, sources: &str) -> Result<Vec<u8>> {
    if !std::io::stdin().is_terminal() {
        bail!("no {what} given: {sources}, or run on a terminal");
    }
    let a = crate::prompt::password(format!("enter {what}: "), sources)?;
    let b = crate::prompt::password(format!("enter {what} again: "), sources)?;
    if a != b {
        bail!("the passwords do not match");
    }
    Ok(a)
}

/// Compiles a backup's exclusions before the password is asked for: a
/// pattern that cannot be read (or a pattern file) is exit 2 with nothing
/// done, not found after the lock is taken, nor failing every run of a
/// schedule that never ends.
pub fn check_exclude(o: &cairn_engine::exclude::ExcludeOptions) -> Result<()> {
    // A pattern file that cannot be read (or names an unset variable) is
    // exit 1, as for restore.
    let o = o.resolved()?;
    cairn_engine::exclude::Filter::new(&o)
        .map(drop)
        .map_err(|e| crate::exit::usage(e.to_string()))
}

/// [`check_exclude`] for `--include`/`--exclude` patterns matched against
/// snapshot paths (`restore`, `rewrite`).
pub fn check_path_patterns(
    include: &[String],
    exclude: &[String],
    iinclude: &[String],
    iexclude: &[String],
) -> Result<()> {
    cairn_engine::pathmatch::PathMatcher::new(include, exclude)
        .and_then(|m| m.ignoring_case(iinclude, iexclude))
        .map(drop)
        .map_err(|e| crate::exit::usage(e.to_string()))
}

/// Prints a value as one line of JSON.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// Exit 1, said on stderr, when snapshot records that cannot be read were
/// passed over (each was warned of): what was `done` to the snapshots
/// ("searched", "counted") left some out, which a script must not take
/// for a clean run. Exit 0 otherwise.
pub fn passed_over_exit(repo: &cairn_engine::Repository, done: &str) -> i32 {
    let passed = repo.passed_over_records();
    if passed.is_empty() {
        return crate::exit::OK;
    }
    crate::warn!(
        "error: {} snapshot record(s) that cannot be read were not {done} (`cairn check` \
         names them, `cairn repair snapshots` says more)",
        passed.len()
    );
    crate::exit::FATAL
}

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// Parses sizes like `500K`, `2M`, `1G` for clap.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    cairn_engine::units::parse_size(s).map_err(|e| e.to_string())
}

/// An S3 setting: given on the command line, else from the environment
/// variable `var` (read only here, for S3: a value there that cannot be
/// read must not stop commands on local repositories), else `default`.
fn s3_setting(
    given: Option<u64>,
    var: &str,
    default: u64,
    parse: impl Fn(&str) -> std::result::Result<u64, String>,
) -> Result<u64> {
    if let Some(v) = given {
        return Ok(v);
    }
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => {
            parse(&v).map_err(|e| crate::exit::usage(format!("{var}={v:?}: {e}")))
        }
        _ => Ok(default),
    }
}

/// Seconds of `--s3-timeout`, at least one.
fn parse_timeout(s: &str) -> std::result::Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err("a whole number of seconds above 0".into()),
        Ok(n) => Ok(n),
    }
}

/// A rate in bytes per second: 0 would allow a byte a second, waiting on
/// a stalled server practically for ever.
fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    match parse_size(s)? {
        0 => Err("a rate must be above 0 (e.g. 64K; also where CAIRN_S3_MIN_RATE sets it)".into()),
        n => Ok(n),
    }
}

/// An object ID or a prefix of one, as `key list` or `snapshots` show it:
/// hex digits, taken in lower case (a prefix that is not hex matched
/// nothing, silently).
pub fn id_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not an ID or a prefix of one (1 to 64 hex digits)"
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// A time option's value (`2026-01-31 12:00`, RFC 3339), read with the
/// command line so that a bad one is a usage error.
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    crate::timefmt::parse(s).map_err(|e| e.to_string())
}

/// [`parse_time`] for a lower bound (`--since`, `--oldest`): a bare date
/// is the start of that day, not its end.
pub fn parse_time_from(s: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    crate::timefmt::parse_from(s).map_err(|e| e.to_string())
}

/// [`parse_time_from`] for a time to record in a snapshot: one that
/// nanosecond timestamps (which retention computes with) cannot hold is
/// refused.
pub fn parse_snapshot_time(s: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    let t = parse_time_from(s)?;
    match t.timestamp_nanos_opt() {
        Some(_) => Ok(t),
        None => Err(format!(
            "time {s:?} is out of range: give one between the years 1678 and 2261"
        )),
    }
}

/// [`parse_time`] for an option kept as written (messages quote it).
pub fn checked_time(s: &str) -> Result<String, String> {
    parse_time(s).map(|_| s.to_string())
}

/// Parses durations like `500ms`, `1s`, `10m`, `1h30m`, `2d` (a bare
/// number is seconds), for clap.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    cairn_engine::units::parse_duration(s).map_err(|e| e.to_string())
}

/// Where a repository's warnings go: standard error, each after `prefix`
/// (which names the repository where a command opens two).
pub fn warning_sink(prefix: &'static str) -> cairn_engine::repository::WarningSink {
    Arc::new(move |w: &str| crate::warn!("warning: {prefix}{w}"))
}

/// The error saying `lock` was lost (taken over after its stale age, a
/// machine asleep meanwhile), if it was. Errors met after that may be a
/// prune's work, not damage. A storage that fails to answer about the lock
/// says nothing of it, and no lock (a read-only repository) is never lost.
pub fn lock_lost(lock: Option<&cairn_engine::lock::LockGuard>) -> Option<cairn_engine::Error> {
    match lock.map(|l| l.check()) {
        Some(Err(e @ cairn_engine::Error::Locked(_))) => Some(e),
        _ => None,
    }
}

/// `e`, from a command reading under the shared `lock`, as it is told: a
/// missing or damaged object met after the lock was lost (a machine asleep
/// past its stale age, a prune meanwhile) may be the prune's work, not
/// damage, so it ends as "lock lost" (exit 11) with `e` named and the
/// advice to run `command` again. Anything else is told as it is.
pub fn unless_lock_lost(
    lock: Option<&cairn_engine::lock::LockGuard>,
    e: cairn_engine::Error,
    command: &str,
) -> anyhow::Error {
    use cairn_engine::Error;
    if matches!(e, Error::Missing(_) | Error::Corrupt { .. })
        && let Some(lost) = lock_lost(lock)
    {
        return anyhow::Error::from(lost).context(format!(
            "{e}; this came after the {command} lost its lock: a prune may have moved what it \
             was reading, so run the {command} again before taking it for damage"
        ));
    }
    e.into()
}
