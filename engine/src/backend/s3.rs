//! A repository in S3-compatible object storage (AWS S3, R2, MinIO, Garage, B2).
//!
//! Built on OpenDAL's S3 service; the engine is synchronous, so each call
//! runs on a private Tokio runtime. Every call is retried with exponential
//! backoff and jitter on temporary failures (5xx, SlowDown, timeouts,
//! dropped connections) and given up after a fixed deadline, so a dead
//! server ends in a clear error instead of a hang. A PUT is atomic in S3: an
//! object is either complete or absent, which gives the trait's write
//! guarantee without temporary names.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

mod outage;
mod patience;
mod uploads;

use futures_core::Stream;
use opendal::layers::{RetryEvent, RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

use super::{Backend, FileKind, Listed};
use crate::error::{Error, Result};
use outage::{Allowance, Outage};
use patience::{Attempt, GaveUp, Patience, RETRY_MAX, RETRY_MIN, Timing};
use uploads::{Uploads, credential_chain};

/// How to find the bucket: as a path on the endpoint or as a DNS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketLookup {
    /// Virtual-hosted style for `*.amazonaws.com`, path style elsewhere.
    Auto,
    /// Virtual-hosted style: `https://BUCKET.HOST/KEY`.
    Dns,
    /// Path style: `https://HOST/BUCKET/KEY`.
    Path,
}

impl std::str::FromStr for BucketLookup {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(BucketLookup::Auto),
            "dns" => Ok(BucketLookup::Dns),
            "path" => Ok(BucketLookup::Path),
            _ => Err(Error::InvalidInput(format!(
                "bucket lookup {s:?}: expected auto, dns or path"
            ))),
        }
    }
}

/// Where an S3 repository lives, parsed from `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `http://host:port` or `https://host`.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing slashes.
    pub prefix: String,
}

impl S3Location {
    /// Parses restic's syntax: `s3:https://host[:port]/bucket[/prefix]`, or
    /// `s3:host/bucket[/prefix]` meaning HTTPS.
    pub fn parse(spec: &str) -> Result<S3Location> {
        // Keys put in the address (USER:KEY@HOST, a key holding `/` too)
        // are never quoted: errors go to logs and hooks.
        let shown = match (spec.find("://"), spec.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}…{}", &spec[..s + 3], &spec[at..]),
            _ => spec.to_string(),
        };
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "invalid S3 location {shown:?}: {why} (expected s3:https://HOST[:PORT]/BUCKET[/PREFIX])"
            ))
        };
        let rest = spec
            .strip_prefix("s3:")
            .ok_or_else(|| bad("no s3: prefix"))?;
        let (scheme, rest) = if let Some(r) = rest.strip_prefix("https://") {
            ("https", r)
        } else if let Some(r) = rest.strip_prefix("http://") {
            ("http", r)
        } else if rest.contains("://") {
            return Err(bad("only http and https are supported"));
        } else {
            ("https", rest)
        };
        let mut parts = rest.splitn(3, '/');
        let host = parts.next().filter(|h| !h.is_empty());
        let bucket = parts.next().filter(|b| !b.is_empty());
        // Keys in the address were not used for signing, and every
        // message naming the location showed them: refused. A key with a
        // `/` puts the `@` in the bucket or the prefix, after a host whose
        // "port" is the key's start.
        let port_not_number = host.and_then(|h| h.rsplit_once(':')).is_some_and(|(_, p)| {
            (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) && !p.ends_with(']')
        });
        if host.is_some_and(|h| h.contains('@'))
            || bucket.is_some_and(|b| b.contains('@'))
            || (port_not_number && rest.contains('@'))
        {
            return Err(Error::InvalidInput(
                "invalid S3 location: a user or key in the address (USER:KEY@HOST) is not used \
                 and would show in every message; give the keys as AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or a profile (--s3-profile)"
                    .into(),
            ));
        }
        let (Some(host), Some(bucket)) = (host, bucket) else {
            return Err(bad("host and bucket are required"));
        };
        if host.contains(['?', '#']) || bucket.contains(['?', '#']) {
            return Err(bad("a query or fragment is not part of an S3 location"));
        }
        let prefix = parts.next().unwrap_or("").trim_matches('/').to_string();
        if prefix.split('/').any(|c| c == "." || c == "..") {
            return Err(bad("the prefix may not contain . or .."));
        }
        // A host or port that cannot be read failed only at the first
        // request, in the HTTP client's words.
        let endpoint = format!("{scheme}://{host}");
        match url::Url::parse(&endpoint) {
            Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) && u.path() == "/" => {}
            Ok(_) => return Err(bad(&format!("{host:?} is no HOST[:PORT]"))),
            Err(e) => return Err(bad(&format!("{host:?}: {e}"))),
        }
        Ok(S3Location {
            endpoint,
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

/// Connection settings for [`S3Backend`] beyond the location.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Signing region; `None` reads `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Named profile from the AWS shared config files (`AWS_PROFILE` otherwise).
    pub profile: Option<String>,
    /// Path-style or virtual-hosted addressing.
    pub bucket_lookup: BucketLookup,
    /// Give up on a call after this long spent waiting in vain for the
    /// server (failed attempts and the backoff between them).
    pub give_up_after: Duration,
    /// The slowest transfer rate allowed for, in bytes per second: a call
    /// that moves N bytes is given N / `min_rate` seconds more.
    pub min_rate: u64,
    /// Objects larger than this are uploaded in parts of this size.
    pub multipart_threshold: usize,
    /// Access keys to use instead of those the environment, the profile or
    /// the instance provide (a second repository with keys of its own).
    pub credentials: Option<S3Credentials>,
}

/// An S3 access key pair, and a session token for temporary keys.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// The access key ID.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token of temporary credentials.
    pub session_token: Option<String>,
    /// Where the user gave them, as a refusal's hint names them (e.g. the
    /// variables `copy` reads a source's keys from): an error that named
    /// `AWS_ACCESS_KEY_ID` sent the user to check the wrong keys.
    pub given_as: String,
}

impl std::fmt::Debug for S3Credentials {
    // Secrets stay out of logs and error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("given_as", &self.given_as)
            .finish_non_exhaustive()
    }
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            region: None,
            profile: None,
            bucket_lookup: BucketLookup::Auto,
            give_up_after: Duration::from_secs(60),
            min_rate: DEFAULT_MIN_RATE,
            multipart_threshold: 64 << 20,
            credentials: None,
        }
    }
}

/// How long a failed multipart upload's abort may wait for the server, at
/// least (the budget of `--s3-timeout` if that is longer).
const ABORT_WAIT: Duration = Duration::from_secs(30);
/// How long after a call gave up calls that keep failing are refused, at
/// least (`--s3-timeout` if longer): a command meeting a dead server ends
/// after a budget or two instead of probing it every few seconds.
const OUTAGE_COOL_DOWN: Duration = Duration::from_secs(60);
/// The slowest link a transfer is given time for by default: 64 KiB/s
/// (about 0.5 Mbit/s), at which a 16 MiB pack takes 256 s.
pub const DEFAULT_MIN_RATE: u64 = 64 << 10;

tokio::task_local! {
    /// The running call's failed attempts, as opendal's retries report them.
    static RETRIED: RefCell<Retried>;
}

/// What the failed attempts of one call (retried inside opendal) came to.
struct Retried {
    /// The last one's error, so that a call given up on can say what went
    /// wrong (a refused connection, a TLS handshake with a plain-HTTP
    /// server, a host that does not resolve).
    last: Option<String>,
    /// Time spent waiting in vain, counted as [`Patience`] counts an
    /// upload's: each failed attempt for at most an attempt's time, and
    /// the backoff after it. A call that moves bytes is given time for
    /// them on top, but a server that refuses every attempt moves none: a
    /// 16 MiB read waited its whole transfer allowance (9 minutes at the
    /// defaults) against a dead server.
    wasted: Duration,
    /// When the attempt under way began.
    since: std::time::Instant,
}

impl Retried {
    fn new() -> Retried {
        Retried {
            last: None,
            wasted: Duration::ZERO,
            since: std::time::Instant::now(),
        }
    }

    /// An attempt failed with `err`; the next begins after `backoff`.
    fn failed(&mut self, err: String, backoff: Duration, timing: &Timing) {
        let now = std::time::Instant::now();
        self.wasted += timing.waited_in(now.saturating_duration_since(self.since)) + backoff;
        self.since = now + backoff;
        self.last = Some(err);
    }

    /// Time waited in vain by `now`: the backoff under way counts only as
    /// far as it has run (counted ahead, a call gave up with up to 10 s of
    /// its `--s3-timeout` left, and said it had waited all of it).
    fn waited(&self, now: std::time::Instant) -> Duration {
        self.wasted
            .saturating_sub(self.since.saturating_duration_since(now))
    }
}

/// How long a call may go on once the process was asked to stop (Ctrl-C):
/// the calls a stopped command still makes (its lock's removal, its audit
/// record) go through a working server well within it, retries of a
/// failed attempt included, while a dead or stalled server no longer holds
/// the stop up for the whole `--s3-timeout` (or a pack's transfer time).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Whether the call `seen` belongs to has had its [`STOP_GRACE`]: `seen`
/// holds when it first found the process asked to stop.
fn grace_over(seen: &mut Option<std::time::Instant>) -> bool {
    if !crate::child::stopping() {
        return false;
    }
    seen.get_or_insert_with(std::time::Instant::now).elapsed() >= STOP_GRACE
}

/// Runs `fut` to its end, or `None` once the call's [`STOP_GRACE`] is over.
async fn unless_stopped<T>(
    seen: &mut Option<std::time::Instant>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    loop {
        let tick = tokio::time::Instant::now() + Duration::from_millis(100);
        match tokio::time::timeout_at(tick, &mut fut).await {
            Ok(v) => return Some(v),
            Err(_) if grace_over(seen) => return None,
            Err(_) => {}
        }
    }
}

/// Stores objects under a prefix of an S3 bucket, in the same layout as a
/// local repository (`config`, `keys/ID`, `data/XX/ID`, ...).
pub struct S3Backend {
    /// Sends Content-MD5 with every upload.
    op: Operator,
    /// For uploads in one request: Content-MD5, and neither opendal's
    /// timeouts nor its retries (`upload_whole` times each attempt by the
    /// object's size).
    op_put: Operator,
    /// For multipart uploads, which S3 takes without Content-MD5 (timed and
    /// retried by `upload_in_parts`).
    op_multipart: Operator,
    /// Lists and aborts unfinished multipart uploads.
    uploads: Uploads,
    /// Taken only by `drop`, which shuts it down without waiting.
    runtime: Option<tokio::runtime::Runtime>,
    location: String,
    /// The region requests are signed for.
    region: String,
    /// Where the credentials come from, as a refusal's hint names them.
    keys: String,
    timing: Timing,
    multipart_threshold: usize,
    /// Calls given up on lately (see [`outage`]).
    outage: Outage,
}

impl Drop for S3Backend {
    /// Dropping a runtime waits for its blocking threads, which Tokio
    /// refuses (a panic) inside another runtime's task: `serve` dropped
    /// its repository there as it stopped.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl S3Backend {
    /// The runtime the calls run on.
    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("taken only by drop")
    }

    /// Connects lazily: nothing is sent until the first call.
    pub fn new(loc: &S3Location, opts: &S3Options) -> Result<S3Backend> {
        opendal::install_default();
        let profile = opts
            .profile
            .clone()
            .or_else(|| std::env::var("AWS_PROFILE").ok());
        let region = opts
            .region
            .clone()
            // The SDKs' order: AWS_REGION first, then the profile's.
            // An AWS endpoint names its region: signing for another one
            // (us-east-1 by default) failed the README's first example.
            .or_else(|| aws_region_of(&loc.endpoint))
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .filter(|r| !r.is_empty())
            .or_else(|| profile_region(profile.as_deref()))
            .unwrap_or_else(|| "us-east-1".to_string());
        // A bucket name with a dot cannot be a host name under AWS's
        // certificates (opendal refuses to build it): AWS's SDKs fall back
        // to path style for those, and so does `auto`.
        let dotted = loc.bucket.contains('.');
        let virtual_host = match opts.bucket_lookup {
            BucketLookup::Dns if dotted => {
                return Err(Error::InvalidInput(format!(
                    "bucket {:?} has a dot in its name, which DNS-style bucket lookup \
                     cannot reach: use --s3-bucket-lookup path (or auto)",
                    loc.bucket
                )));
            }
            BucketLookup::Dns => true,
            BucketLookup::Path => false,
            BucketLookup::Auto => loc.endpoint.ends_with(".amazonaws.com") && !dotted,
        };
        let builder = || {
            let mut b = opendal::services::S3::default()
                .endpoint(&loc.endpoint)
                .bucket(&loc.bucket)
                .root(&format!("/{}", loc.prefix))
                .region(&region)
                .credential_provider_chain(credential_chain(
                    profile.as_deref(),
                    opts.credentials.as_ref(),
                ));
            if virtual_host {
                b = b.enable_virtual_host_style();
            }
            b
        };
        let timing = Timing::new(opts.give_up_after, opts.min_rate);
        let untimed = |b: opendal::services::S3| {
            Operator::new(b).map_err(|e| Error::Backend(format!("S3 configuration: {e}")))
        };
        // Requests are signed without their payload (UNSIGNED-PAYLOAD), so
        // nothing else lets the server notice a body changed on the way
        // (plain HTTP, a middlebox): with Content-MD5 it refuses it.
        // Multipart parts carry a CRC32C instead (below). Reads and
        // listings time each piece that arrives, so an attempt's limit
        // bounds a stall, not a transfer.
        let op = untimed(builder().checksum_algorithm("md5"))?
            .layer(
                TimeoutLayer::new()
                    .with_timeout(timing.attempt)
                    .with_io_timeout(timing.attempt),
            )
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_min_delay(RETRY_MIN)
                    .with_max_delay(RETRY_MAX)
                    .with_max_times(10_000)
                    .with_notify(move |event: RetryEvent<'_>| {
                        let _ = RETRIED.try_with(|r| {
                            r.borrow_mut().failed(
                                with_causes(event.err),
                                event.retry_after,
                                &timing,
                            )
                        });
                    }),
            );
        // Uploads go without opendal's timeouts and retries: an upload is
        // one request, timed by its size (see `patience`), and a multipart
        // writer whose call was cut short can no longer be aborted through
        // them, so `upload_in_parts` retries whole uploads itself.
        let op_put = untimed(builder().checksum_algorithm("md5"))?;
        // Multipart parts cannot carry Content-MD5 through opendal, but a
        // CRC32C each (x-amz-checksum-crc32c), which the server checks.
        let op_multipart = untimed(builder().checksum_algorithm("crc32c"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Backend(format!("starting the S3 client runtime: {e}")))?;
        let location = format!(
            "s3:{}/{}{}{}",
            loc.endpoint,
            loc.bucket,
            if loc.prefix.is_empty() { "" } else { "/" },
            loc.prefix
        );
        let uploads = Uploads::new(
            &loc.endpoint,
            &loc.bucket,
            &loc.prefix,
            &region,
            virtual_host,
            credential_chain(profile.as_deref(), opts.credentials.as_ref()),
        );
        Ok(S3Backend {
            op,
            op_put,
            op_multipart,
            uploads,
            runtime: Some(runtime),
            location,
            region: region.clone(),
            keys: opts
                .credentials
                .as_ref()
                .map_or_else(|| ENVIRONMENT_KEYS.to_string(), |k| k.given_as.clone()),
            timing,
            multipart_threshold: opts.multipart_threshold.max(5 << 20),
            outage: Outage::new(timing.give_up_after.max(OUTAGE_COOL_DOWN), timing.attempt),
        })
    }

    fn key(kind: FileKind, name: &str) -> String {
        match kind {
            FileKind::Config => "config".to_string(),
            FileKind::Pack => format!("data/{}/{name}", name.get(..2).unwrap_or("00")),
            k => format!("{}/{name}", k.dir()),
        }
    }

    /// Whether `key` (below the prefix) is where this backend stores an object.
    fn is_repository_key(key: &str) -> bool {
        if key == "config" {
            return true;
        }
        let Some((_, name)) = key.rsplit_once('/') else {
            return false;
        };
        FileKind::ALL
            .iter()
            .any(|&k| k != FileKind::Config && k.is_object_name(name) && Self::key(k, name) == key)
    }

    /// Fails with [`Error::BucketNotFound`] if the bucket is missing: an
    /// empty prefix lists as empty, so a listing "not found" means that.
    fn check_bucket(&self) -> Result<()> {
        match self.run("check the bucket", self.op.list_with("keys/").limit(1)) {
            Ok(_) => Ok(()),
            Err(CallError::NotFound(said)) if said.contains("NoSuchBucket") => {
                Err(Error::BucketNotFound(self.location.clone()))
            }
            // A 404 page of something that is not S3 (a web server on that
            // port, a proxy whose store is down) was called a missing bucket.
            Err(CallError::NotFound(said)) => Err(Error::Backend(format!(
                "{}: the server answered 404 to a bucket listing without S3's NoSuchBucket \
                 code: is this the S3 endpoint (its port, a proxy in front of it)? It said: \
                 {said}",
                self.location
            ))),
            Err(CallError::Failed(e)) => Err(e),
        }
    }

    /// Runs one call to completion within the deadline (opendal's calls
    /// retry inside it).
    fn run<T>(
        &self,
        what: &str,
        fut: impl std::future::IntoFuture<Output = opendal::Result<T>>,
    ) -> std::result::Result<T, CallError> {
        self.run_moving(what, 0, false, fut)
    }

    /// [`Self::run`] for a call that moves `bytes` (see [`Timing::budget`]);
    /// `must_try` gives it an attempt even while calls are refused.
    fn run_moving<T>(
        &self,
        what: &str,
        bytes: u64,
        must_try: bool,
        fut: impl std::future::IntoFuture<Output = opendal::Result<T>>,
    ) -> std::result::Result<T, CallError> {
        let call = self.begin(what, must_try)?;
        let one_attempt = call.one_attempt();
        let budget = if one_attempt {
            self.timing.attempt_for(bytes)
        } else {
            self.timing.budget(bytes)
        };
        // Waiting in vain is bounded as for an upload; the budget bounds
        // the whole call.
        let patience = if one_attempt {
            self.timing.attempt
        } else {
            self.timing.give_up_after
        };
        // The timers are made inside the runtime, which they need.
        let (r, last) =
            self.runtime()
                .block_on(RETRIED.scope(RefCell::new(Retried::new()), async {
                    let deadline = tokio::time::Instant::now() + budget;
                    let mut stop_seen = None;
                    let mut call = std::pin::pin!(fut.into_future());
                    let r = loop {
                        let tick = (tokio::time::Instant::now() + Duration::from_millis(100))
                            .min(deadline);
                        let waited =
                            || RETRIED.with(|r| r.borrow().waited(std::time::Instant::now()));
                        match tokio::time::timeout_at(tick, &mut call).await {
                            Ok(r) => break Ok(r),
                            Err(_) if tokio::time::Instant::now() >= deadline => {
                                break Err(Some(budget));
                            }
                            Err(_) if waited() >= patience => break Err(Some(patience)),
                            // Asked to stop (Ctrl-C) with the server failing
                            // or stalling: not after the whole timeout.
                            Err(_) if grace_over(&mut stop_seen) => break Err(None),
                            Err(_) => {}
                        }
                    };
                    (r, RETRIED.with(|r| r.borrow_mut().last.take()))
                }));
        let r = match r {
            Ok(r) => Ok(r),
            Err(None) => return Err(CallError::Failed(Error::Interrupted)),
            Err(Some(after)) => Err(GaveUp {
                after,
                last,
                one_attempt,
            }),
        };
        self.answer(what, &call, r)
    }

    /// Begins call `what`: the time it gets, or its error if none (see
    /// [`outage`]); `must_try` gives it an attempt even while calls are
    /// refused.
    fn begin(&self, what: &str, must_try: bool) -> std::result::Result<Call, CallError> {
        let allowed = match self.outage.allowance() {
            Allowance::Refused(_) if must_try => Allowance::OneAttempt,
            Allowance::Refused(why) => {
                return Err(CallError::Failed(Error::Backend(format!(
                    "{}: {what}: {why}",
                    self.location
                ))));
            }
            a => a,
        };
        Ok(Call {
            started: std::time::Instant::now(),
            allowed,
        })
    }

    /// The outcome of `call` (`what`), for the caller.
    fn answer<T>(
        &self,
        what: &str,
        call: &Call,
        r: std::result::Result<opendal::Result<T>, GaveUp>,
    ) -> std::result::Result<T, CallError> {
        let gave_up = || {
            let probe = call.allowed == Allowance::Probe;
            self.outage.gave_up(what, call.started, probe)
        };
        match &r {
            // Retries given up on (the raw requests of `uploads` return
            // those): no answer either.
            Ok(Err(e)) if e.is_temporary() => gave_up(),
            Ok(_) => self.outage.answered(),
            Err(_) => gave_up(),
        }
        match r {
            Ok(Ok(v)) => Ok(v),
            // opendal files it as a configuration error; a bucket may also
            // go away under a repository.
            // (`uploads`' raw requests say it their own way.)
            Ok(Err(e))
                if (e.kind() == ErrorKind::ConfigInvalid
                    && e.to_string().contains("code: \"NoSuchBucket\""))
                    || e.to_string().contains(": NoSuchBucket: ") =>
            {
                Err(CallError::Failed(Error::BucketNotFound(
                    self.location.clone(),
                )))
            }
            Ok(Err(e)) if e.kind() == ErrorKind::NotFound => {
                Err(CallError::NotFound(e.message().to_string()))
            }
            Ok(Err(e)) => {
                let said = e.to_string();
                let hint = region_hint(&self.region, &said)
                    .or_else(|| access_hint(&said, &self.keys))
                    .unwrap_or_default();
                Err(CallError::Failed(Error::Backend(format!(
                    "{}: {what}: {said}{hint}",
                    self.location
                ))))
            }
            Err(GaveUp {
                after,
                last,
                one_attempt,
            }) => Err(CallError::Failed(Error::Backend(format!(
                "{}: {what}: gave up after {}s without a successful answer from the server ({}){}",
                self.location,
                after.as_secs(),
                if one_attempt {
                    "given one attempt, as an earlier call had given up: the server may be gone"
                } else {
                    "retrying with backoff; raise --s3-timeout to wait longer, or lower \
                     --s3-min-rate for a slow link"
                },
                last.map(|e| format!("; the last attempt: {e}"))
                    .unwrap_or_default()
            )))),
        }
    }

    /// Uploads `body` in parts. An unfinished multipart upload never
    /// becomes a visible object, but the server keeps (and bills) its parts
    /// until it is aborted: every attempt that fails is aborted (with up to
    /// `ABORT_WAIT` for the server to answer), and a temporary failure
    /// starts a new upload after a backoff, while [`Patience`] lasts.
    fn upload_in_parts(
        &self,
        what: &str,
        key: &str,
        body: opendal::Buffer,
    ) -> std::result::Result<(), CallError> {
        let body = &body;
        self.upload(what, body.len(), |deadline| async move {
            let open = self
                .op_multipart
                .writer_with(key)
                .chunk(self.multipart_threshold)
                .concurrent(4);
            match tokio::time::timeout_at(deadline, open).await {
                Ok(Ok(mut w)) => {
                    let sent = tokio::time::timeout_at(deadline, async {
                        w.write(body.clone()).await?;
                        w.close().await.map(|_| ())
                    })
                    .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        let wait = ABORT_WAIT.max(self.timing.give_up_after);
                        let _ = tokio::time::timeout(wait, w.abort()).await;
                    }
                    sent
                }
                Ok(Err(e)) => Ok(Err(e)),
                Err(e) => Err(e),
            }
        })
    }

    /// Uploads `body` in one request.
    fn upload_whole(
        &self,
        what: &str,
        key: &str,
        body: opendal::Buffer,
    ) -> std::result::Result<(), CallError> {
        let body = &body;
        self.upload(what, body.len(), |deadline| async move {
            let sent = self.op_put.write(key, body.clone());
            tokio::time::timeout_at(deadline, sent)
                .await
                .map(|r| r.map(|_| ()))
        })
    }

    /// Makes attempts at an upload of `bytes` (`attempt` is given its
    /// deadline) until one settles the call (see [`Patience`]).
    fn upload<F, Fut>(
        &self,
        what: &str,
        bytes: usize,
        mut attempt: F,
    ) -> std::result::Result<(), CallError>
    where
        F: FnMut(tokio::time::Instant) -> Fut,
        Fut: std::future::Future<Output = Attempt>,
    {
        let call = self.begin(what, false)?;
        let r = self.runtime().block_on(async {
            let mut patience = Patience::new(self.timing, bytes as u64, call.one_attempt());
            let mut stop_seen = None;
            loop {
                let started = tokio::time::Instant::now();
                let sent =
                    unless_stopped(&mut stop_seen, attempt(patience.deadline(started))).await?;
                let settled =
                    unless_stopped(&mut stop_seen, patience.settle(started, sent)).await?;
                if let Some(done) = settled {
                    return Some(done);
                }
            }
        });
        let Some(r) = r else {
            return Err(CallError::Failed(Error::Interrupted));
        };
        self.answer(what, &call, r)
    }
}

/// A call under way: when it began and the time it was given.
struct Call {
    started: std::time::Instant,
    allowed: Allowance,
}

impl Call {
    /// Given one attempt's time rather than the whole budget.
    fn one_attempt(&self) -> bool {
        self.allowed != Allowance::Full
    }
}

enum CallError {
    /// A 404 answer, with what its body said (nothing, to a `HEAD`).
    NotFound(String),
    Failed(Error),
}

impl CallError {
    /// The error of a `GET` or a listing of `name`. Only S3's own
    /// `NoSuchKey` says an object is missing: a 404 page of a proxy in
    /// front of the store (one restarting behind it) taken for it made
    /// `repair index` drop a pack that was there, and `check` call it lost.
    fn into_error(self, kind: FileKind, name: &str) -> Error {
        match self {
            CallError::NotFound(said) if said.contains("code: \"NoSuchKey\"") => {
                Error::Missing(format!("{} {name}", kind.dir()))
            }
            CallError::NotFound(said) => Error::Backend(format!(
                "{} {name}: the server answered 404 Not Found without S3's NoSuchKey, so the \
                 object is not taken for missing (a proxy in front of the store, or the store \
                 restarting?): {}",
                kind.dir(),
                if said.trim().is_empty() {
                    "no body"
                } else {
                    said.trim()
                }
            )),
            CallError::Failed(e) => e,
        }
    }
}

/// `e` and what caused it: the HTTP client says "error sending request"
/// and keeps the reason (a refused connection, a failed TLS handshake, a
/// name that does not resolve) among its sources.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut said = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_said = c.to_string();
        if !said.contains(&c_said) {
            said = format!("{said}: {c_said}");
        }
        cause = c.source();
    }
    said
}

/// The region an AWS endpoint's host names (`s3.eu-west-1.amazonaws.com`,
/// `s3-eu-west-1.amazonaws.com`, `s3.dualstack.eu-west-1.amazonaws.com`,
/// `bucket.s3.eu-west-1.amazonaws.com`, `...amazonaws.com.cn`); none for
/// the global `s3.amazonaws.com` and for other servers.
fn aws_region_of(endpoint: &str) -> Option<String> {
    let host = endpoint.split_once("://").map_or(endpoint, |(_, h)| h);
    let host = host.split(['/', ':']).next()?.to_ascii_lowercase();
    let stem = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let labels: Vec<&str> = stem.split('.').collect();
    let last = *labels.last()?;
    let is_region =
        |r: &str| r.split('-').count() >= 3 && r.ends_with(|c: char| c.is_ascii_digit());
    let region = match last.strip_prefix("s3-") {
        // The old dash form, `s3-external-1` being us-east-1's.
        Some("external-1") => "us-east-1",
        Some(r) => r,
        None if labels.iter().rev().skip(1).any(|l| l.starts_with("s3")) => last,
        None => return None,
    };
    is_region(region).then(|| region.to_string())
}

/// The `region` the AWS shared config file (`AWS_CONFIG_FILE`, else
/// `~/.aws/config`) sets for `profile` (`[default]` when none is named), as
/// the SDKs read it: a profile made with `aws configure` for another
/// server had its region ignored, and requests were signed for us-east-1.
fn profile_region(profile: Option<&str>) -> Option<String> {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    let path = match std::env::var("AWS_CONFIG_FILE")
        .ok()
        .filter(|p| !p.is_empty())
    {
        Some(p) => match p.strip_prefix("~/") {
            Some(rest) => home()?.join(rest),
            None => PathBuf::from(p),
        },
        None => home()?.join(".aws/config"),
    };
    let conf = ini::Ini::load_from_file(path).ok()?;
    let section = match profile.filter(|p| !p.is_empty()).unwrap_or("default") {
        "default" => "default".to_string(),
        name => format!("profile {name}"),
    };
    let region = conf.section(Some(section))?.get("region")?.trim();
    (!region.is_empty()).then(|| region.to_string())
}

/// What to add to an answer `said` that may come of signing for `region`
/// where the server expects another: AWS names the bucket's region in a
/// header; other servers (Garage) answer 400, to a HEAD request without a
/// reason.
fn region_hint(region: &str, said: &str) -> Option<String> {
    const HEADER: &str = "\"x-amz-bucket-region\": \"";
    if let Some(at) = said.find(HEADER) {
        let rest = &said[at + HEADER.len()..];
        let theirs = &rest[..rest.find('"')?];
        return (theirs != region).then(|| {
            format!(
                " (the bucket is in region {theirs}, requests are signed for {region}: \
                 give --s3-region {theirs})"
            )
        });
    }
    // Other 400s name their reason (BadDigest, InvalidRequest, ...).
    let bare = said.contains("status: 400") && !said.contains("S3Error");
    (bare || said.contains("AuthorizationHeaderMalformed")).then(|| {
        format!(
            " (a 400 answer is often a request signed for another region than the \
             server's: this one is signed for {region}; set --s3-region or AWS_REGION)"
        )
    })
}

/// Where credentials come from unless given for the repository.
const ENVIRONMENT_KEYS: &str =
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or the --s3-profile given";

/// What to check when the server turned the credentials away (403: a HEAD
/// request carries no reason) or none were found: the raw answer named
/// neither the variables nor the profile. `keys` names where the
/// credentials came from.
fn access_hint(said: &str, keys: &str) -> Option<String> {
    // Answers of 403 that are no matter of the credentials (S3's codes;
    // a HEAD's answer has no body, but its date tells a skewed clock).
    if said.contains("RequestTimeTooSkewed") || said.contains("status: 403") && skewed(said) {
        Some(
            " (this machine's clock is too far from the server's: set it right, e.g. with \
             NTP, and run again)"
                .into(),
        )
    } else if said.contains("InvalidObjectState") {
        Some(
            " (the object is in an archive storage class, e.g. moved to Glacier or Deep \
             Archive by a lifecycle rule: restore it in the bucket, or keep the repository's \
             objects out of such rules, docs/s3.md)"
                .into(),
        )
    } else if said.contains("status: 403") {
        Some(format!(
            " (access denied: check the credentials, {keys}, and that they may use this bucket)"
        ))
    } else if said.contains("failed to load signing credential") {
        Some(
            " (no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give \
             --s3-profile with a profile of ~/.aws/credentials)"
                .into(),
        )
    } else {
        None
    }
}

/// Whether the `date` header of the answer in `said` (opendal's error
/// text) is 15 minutes or more from this machine's clock: S3 refuses
/// requests signed so far off.
fn skewed(said: &str) -> bool {
    let Some(at) = said.find("\"date\": \"").map(|i| i + 9) else {
        return false;
    };
    let Some(len) = said[at..].find('"') else {
        return false;
    };
    chrono::DateTime::parse_from_rfc2822(&said[at..at + len]).is_ok_and(|server| {
        chrono::Utc::now()
            .signed_duration_since(server)
            .num_minutes()
            .abs()
            >= 15
    })
}

/// Whether the server refused an upload because its body no longer matched
/// the checksum sent with it (S3 answers BadDigest, Garage also
/// InvalidDigest for a CRC32C).
fn damaged_on_the_way(e: &Error) -> bool {
    let m = e.to_string();
    m.contains("BadDigest") || m.contains("InvalidDigest")
}

fn is_object_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/')
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create(&self) -> Result<()> {
        // S3 has no directories; this only proves the bucket is there and
        // reachable with these credentials before a key is generated.
        self.check_bucket()
    }

    /// A plain `HEAD`: unlike [`Backend::stored_size`], a pack or index
    /// file it says is absent is not asked for again. Its callers ask
    /// before writing (an append-only repository's check that it writes
    /// nothing over, a new dictionary's name), where an object taken for
    /// absent is only written, never removed, and the confirming `GET`
    /// cost one more request per object stored.
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        if kind == FileKind::Config {
            return Ok(self.stored_size(kind, name)?.is_some());
        }
        let key = Self::key(kind, name);
        match self.run(&format!("stat {key}"), self.op.stat(&key)) {
            Ok(_) => Ok(true),
            Err(CallError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into_error(kind, name)),
        }
    }

    fn stored_size(&self, kind: FileKind, name: &str) -> Result<Option<u64>> {
        let key = Self::key(kind, name);
        match self.run(&format!("stat {key}"), self.op.stat(&key)) {
            Ok(m) => Ok(Some(m.content_length())),
            // A HEAD answer has no body to tell a missing bucket from a
            // missing object: without a config, whose absence means "no
            // repository, run init", the bucket is looked at too.
            Err(CallError::NotFound(_)) if kind == FileKind::Config => {
                self.check_bucket()?;
                Ok(None)
            }
            // A HEAD answer has no body to say whose 404 it is (the
            // object's, the bucket's, a proxy's): for packs and index
            // files, whose absence prune and repair act on, a one-byte GET
            // tells.
            Err(CallError::NotFound(_)) if matches!(kind, FileKind::Pack | FileKind::Index) => {
                let what = format!("read {key} at 0+1");
                match self.run(&what, self.op.read_with(&key).range(0..1)) {
                    Ok(_) => Err(Error::Backend(format!(
                        "{}: {key}: a HEAD answered 404 Not Found and a GET gave the object: \
                         the store answers inconsistently",
                        self.location
                    ))),
                    Err(e) => match e.into_error(kind, name) {
                        Error::Missing(_) => Ok(None),
                        e => Err(e),
                    },
                }
            }
            Err(CallError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into_error(kind, name)),
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<Listed>> {
        if kind == FileKind::Config {
            let key = Self::key(kind, "config");
            return match self.run("stat config", self.op.stat(&key)) {
                Ok(m) => Ok(vec![Listed {
                    name: "config".into(),
                    size: m.content_length(),
                    modified: m.last_modified().map(std::time::SystemTime::from),
                }]),
                Err(CallError::NotFound(_)) => Ok(Vec::new()),
                Err(e) => Err(e.into_error(kind, "config")),
            };
        }
        let dir = format!("{}/", kind.dir());
        let what = format!("list {dir}");
        // An empty prefix lists as empty; "not found" means the bucket
        // is missing or the request went astray, and taking it for
        // "nothing here" would let prune take every pack for unused.
        let failed = |e: CallError| e.into_error(kind, &dir);
        let mut lister = self
            .run(
                &what,
                self.op.lister_with(&dir).recursive(kind == FileKind::Pack),
            )
            .map_err(failed)?;
        // Entry by entry, each a call of its own: the time given to a call
        // bounds each page's wait, not the whole listing (hundreds of pages
        // for a large repository, or over a slow link).
        let mut entries = Vec::new();
        loop {
            let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut lister).poll_next(cx));
            match self.run(&what, async { next.await.transpose() }) {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => break,
                Err(e) => return Err(failed(e)),
            }
        }
        let mut out: Vec<Listed> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file() && kind.is_object_name(e.name()))
            // Packs are read only from `data/<first two digits>/`: one
            // moved elsewhere under `data/` is not there (as on disk).
            .filter(|e| kind != FileKind::Pack || e.path() == Self::key(kind, e.name()))
            .map(|e| Listed {
                name: e.name().to_string(),
                size: e.metadata().content_length(),
                modified: e
                    .metadata()
                    .last_modified()
                    .map(std::time::SystemTime::from),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let key = Self::key(kind, name);
        // Packs and index files are large: their size, asked first, gives
        // the read its time to move them at --s3-min-rate, as a range read
        // has. Without it a read on a slow link was cut off after
        // --s3-timeout however steadily the bytes came (prune's index files
        // of 65,536 blobs are several MiB). Other objects are small enough
        // for the budget alone, and not worth a second request each.
        let size = if matches!(kind, FileKind::Pack | FileKind::Index) {
            match self.stored_size(kind, name)? {
                Some(size) => size,
                // Told by the GET's answer (see `stored_size`): a missing
                // pack is damage.
                None => return Err(Error::Missing(format!("{} {name}", kind.dir()))),
            }
        } else {
            0
        };
        self.run_moving(&format!("read {key}"), size, false, self.op.read(&key))
            .map(|b| b.to_vec())
            .map_err(|e| e.into_error(kind, name))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let key = Self::key(kind, name);
        let read = self.run_moving(
            &format!("read {key} at {offset}+{len}"),
            len,
            false,
            self.op.read_with(&key).range(offset..offset + len),
        );
        let buf = match read {
            Ok(buf) => buf,
            Err(e) => {
                // A range past the object's end is answered 416, or a body
                // cut short at it: the object is truncated, which is damage
                // to the blobs read (as on disk), not a storage that failed
                // (a restore stopped there, leaving intact files undone).
                // Only those answers are worth a HEAD to tell: after an
                // outage's, it would only add its own wait.
                let short = |said: &str| {
                    ["RangeNotSatisfied", "too little data", "ContentIncomplete"]
                        .iter()
                        .any(|m| said.contains(m))
                };
                if matches!(&e, CallError::Failed(Error::Backend(said)) if short(said))
                    && let Ok(Some(size)) = self.stored_size(kind, name)
                    && size < offset + len
                {
                    return Err(Error::corrupt(
                        format!("{} {name}", kind.dir()),
                        format!(
                            "truncated: the object has {size} bytes, cannot read {len} at offset {offset}"
                        ),
                    ));
                }
                return Err(e.into_error(kind, name));
            }
        };
        if buf.len() as u64 != len {
            return Err(Error::corrupt(
                format!("{} {name}", kind.dir()),
                format!(
                    "truncated: read {} bytes of {len} at offset {offset}",
                    buf.len()
                ),
            ));
        }
        Ok(buf.to_vec())
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        if kind != FileKind::Config && !is_object_name(name) {
            return Err(Error::InvalidInput(format!("invalid object name {name:?}")));
        }
        let key = Self::key(kind, name);
        if kind == FileKind::Config && self.exists(kind, name)? {
            return Err(Error::RepositoryExists(self.location()));
        }
        let body = opendal::Buffer::from(data.to_vec());
        let what = format!("upload {key}");
        // A body (or a part) the server found changed on the way, by its
        // Content-MD5 or CRC32C, is sent again; opendal does not retry that
        // answer itself. A multipart attempt that failed was aborted.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = if data.len() > self.multipart_threshold {
                self.upload_in_parts(&what, &key, body.clone())
            } else {
                self.upload_whole(&what, &key, body.clone())
            };
            match sent {
                Err(CallError::Failed(e)) if attempts < 3 && damaged_on_the_way(&e) => continue,
                r => return r.map_err(|e| e.into_error(kind, name)),
            }
        }
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let key = Self::key(kind, name);
        // A lock left behind blocks others (on other hosts, until it goes
        // stale): its removal gets an attempt even while calls are refused.
        let must_try = kind == FileKind::Lock;
        match self.run_moving(&format!("delete {key}"), 0, must_try, self.op.delete(&key)) {
            Ok(()) | Err(CallError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into_error(kind, name)),
        }
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn stale_temporaries(&self, age: Duration, remove: bool) -> Result<usize> {
        // A key may be kept from listing uploads on purpose (an append-only
        // host's), or the server lack the call: only a prune, which would
        // remove them, needs to say it could not look.
        let listing = async {
            match self.uploads.list().await {
                Err(e)
                    if !remove
                        && matches!(
                            e.kind(),
                            ErrorKind::PermissionDenied | ErrorKind::Unsupported
                        ) =>
                {
                    Ok(Vec::new())
                }
                r => r,
            }
        };
        let found = self
            .run("list unfinished uploads", listing)
            .map_err(|e| e.into_error(FileKind::Pack, "unfinished uploads"))?;
        // Only uploads of the repository's own objects, and only old ones:
        // a bucket (or a prefix above the repository) may hold others'.
        let stale = found
            .iter()
            .filter(|u| Self::is_repository_key(&u.key) && u.age.is_some_and(|a| a > age));
        if !remove {
            return Ok(stale.count());
        }
        let (mut aborted, mut failed, mut first_failure) = (0, 0, None);
        for u in stale {
            let what = format!("abort the unfinished upload of {}", u.key);
            match self.run(&what, self.uploads.abort(u)) {
                Ok(()) => aborted += 1,
                // Aborted or completed meanwhile.
                Err(CallError::NotFound(_)) => {}
                Err(CallError::Failed(e)) => {
                    failed += 1;
                    first_failure.get_or_insert(e);
                }
            }
        }
        match first_failure {
            None => Ok(aborted),
            Some(e) => Err(Error::Backend(format!(
                "aborted {aborted} unfinished uploads, {failed} could not be: {e}"
            ))),
        }
    }

    fn replace_config(&self, data: &[u8]) -> Result<()> {
        // A PUT replaces an object atomically: readers see the old or the new one.
        let body = opendal::Buffer::from(data.to_vec());
        self.upload_whole("replace config", "config", body)
            .map_err(|e| e.into_error(FileKind::Config, "config"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_403_for_a_clock_or_an_archived_object_is_no_matter_of_credentials() {
        let said = |code: &str| format!("PermissionDenied (status: 403) <Code>{code}</Code>");
        assert!(
            access_hint(&said("RequestTimeTooSkewed"), ENVIRONMENT_KEYS)
                .unwrap()
                .contains("clock")
        );
        assert!(
            access_hint(&said("InvalidObjectState"), ENVIRONMENT_KEYS)
                .unwrap()
                .contains("archive")
        );
        assert!(
            access_hint(&said("AccessDenied"), ENVIRONMENT_KEYS)
                .unwrap()
                .contains("credentials")
        );
        // A HEAD's 403 has no body: its date tells the clock apart.
        let head = |date: String| {
            format!("PermissionDenied (status: 403) headers: {{\"date\": \"{date}\"}}")
        };
        let off = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc2822();
        assert!(
            access_hint(&head(off), ENVIRONMENT_KEYS)
                .unwrap()
                .contains("clock")
        );
        let now = chrono::Utc::now().to_rfc2822();
        assert!(
            access_hint(&head(now), ENVIRONMENT_KEYS)
                .unwrap()
                .contains("credentials")
        );
        assert!(access_hint("NotFound (status: 404)", ENVIRONMENT_KEYS).is_none());
    }

    #[test]
    fn a_bucket_name_with_dots_is_reached_by_path_on_aws() {
        let loc = S3Location::parse("s3:https://s3.eu-west-1.amazonaws.com/backups.example.com/p")
            .unwrap();
        S3Backend::new(&loc, &S3Options::default()).unwrap();
        let dns = S3Options {
            bucket_lookup: BucketLookup::Dns,
            ..S3Options::default()
        };
        let e = S3Backend::new(&loc, &dns).err().unwrap();
        assert!(e.to_string().contains("--s3-bucket-lookup path"), "{e}");
    }

    #[test]
    fn a_backend_dropped_inside_an_async_task_does_not_panic() {
        let loc = S3Location::parse("s3:http://127.0.0.1:9/bucket").unwrap();
        let b = S3Backend::new(&loc, &S3Options::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move { drop(b) });
    }

    #[test]
    fn failed_attempts_count_their_waiting_not_their_transfer_time() {
        // Attempts of 20 s.
        let timing = Timing::new(Duration::from_secs(60), 64 << 10);
        let mut r = Retried::new();
        // Refused at once, three times: only the backoffs count.
        for _ in 0..3 {
            r.since = std::time::Instant::now();
            r.failed("refused".into(), Duration::from_secs(1), &timing);
        }
        assert!(r.wasted >= Duration::from_secs(3) && r.wasted < Duration::from_secs(4));
        // One that ran long (moving bytes, then cut off) counts an attempt.
        r.since = std::time::Instant::now() - Duration::from_secs(300);
        r.failed("reset".into(), Duration::ZERO, &timing);
        assert!(r.wasted < Duration::from_secs(24), "{:?}", r.wasted);
        assert_eq!(r.last.as_deref(), Some("reset"));
        // A backoff is waited as it runs, not ahead (a call gave up with
        // up to 10 s of its timeout left).
        let mut r = Retried::new();
        r.failed("refused".into(), Duration::from_secs(10), &timing);
        let now = std::time::Instant::now();
        assert!(
            r.waited(now) < Duration::from_secs(1),
            "{:?}",
            r.waited(now)
        );
        let later = now + Duration::from_secs(10);
        assert!(r.waited(later) >= Duration::from_secs(10));
    }

    #[test]
    fn the_region_an_aws_endpoint_names_is_taken() {
        for (endpoint, region) in [
            ("https://s3.eu-west-1.amazonaws.com", Some("eu-west-1")),
            ("https://S3.EU-WEST-1.amazonaws.com:443", Some("eu-west-1")),
            (
                "https://s3-ap-southeast-2.amazonaws.com",
                Some("ap-southeast-2"),
            ),
            (
                "https://s3.dualstack.us-west-2.amazonaws.com",
                Some("us-west-2"),
            ),
            (
                "https://bucket.s3.eu-central-1.amazonaws.com",
                Some("eu-central-1"),
            ),
            ("https://s3.cn-north-1.amazonaws.com.cn", Some("cn-north-1")),
            ("https://s3-external-1.amazonaws.com", Some("us-east-1")),
            ("https://s3.amazonaws.com", None),
            ("https://bucket.s3.amazonaws.com", None),
            ("http://127.0.0.1:3900", None),
            ("https://eu-west-1.example.com", None),
            ("https://s3.eu-west-1.wasabisys.com", None),
        ] {
            assert_eq!(aws_region_of(endpoint).as_deref(), region, "{endpoint}");
        }
    }

    #[test]
    fn an_answer_to_a_request_signed_for_the_wrong_region_says_so() {
        // AWS: a redirect or 400 naming the bucket's region in a header.
        let aws =
            r#"status: 301, headers: {"x-amz-bucket-region": "eu-west-1", "server": "AmazonS3"}"#;
        let hint = region_hint("us-east-1", aws).unwrap();
        assert!(hint.contains("give --s3-region eu-west-1"), "{hint}");
        assert_eq!(region_hint("eu-west-1", aws), None);
        // Garage: a bare 400.
        let hint = region_hint("us-east-1", "status: 400, version: HTTP/1.1").unwrap();
        assert!(hint.contains("signed for us-east-1"), "{hint}");
        assert_eq!(region_hint("us-east-1", "status: 403"), None);
    }

    #[test]
    fn refused_or_missing_credentials_say_what_to_check() {
        let said = "PermissionDenied (persistent) at stat, context: { status: 403 }";
        let denied = access_hint(said, ENVIRONMENT_KEYS);
        assert!(denied.unwrap().contains("AWS_SECRET_ACCESS_KEY"));
        // Keys given for this repository are named as the user gave them.
        let given = access_hint(said, "CAIRN_FROM_AWS_ACCESS_KEY_ID").unwrap();
        assert!(given.contains("CAIRN_FROM_AWS_ACCESS_KEY_ID"), "{given}");
        assert!(!given.contains(" AWS_SECRET"), "{given}");
        let none = access_hint(
            "signing http request, source: failed to load signing credential",
            ENVIRONMENT_KEYS,
        );
        assert!(none.unwrap().contains("--s3-profile"));
        assert_eq!(access_hint("status: 500", ENVIRONMENT_KEYS), None);
    }

    #[test]
    fn parses_restic_syntax() {
        let l = S3Location::parse("s3:http://127.0.0.1:3900/bucket/some/prefix/").unwrap();
        assert_eq!(l.endpoint, "http://127.0.0.1:3900");
        assert_eq!(l.bucket, "bucket");
        assert_eq!(l.prefix, "some/prefix");
        let l = S3Location::parse("s3:s3.amazonaws.com/b").unwrap();
        assert_eq!(l.endpoint, "https://s3.amazonaws.com");
        let l = S3Location::parse("s3:http://[::1]:3900/b").unwrap();
        assert_eq!(l.endpoint, "http://[::1]:3900");
        assert_eq!(l.prefix, "");
        for bad in [
            "s3:",
            "s3:http://host",
            "s3:ftp://h/b",
            "s3:h/b/../x",
            "/tmp/x",
            "s3:http://127.0.0.1:99999/b",
            "s3:http://[::1/b",
            "s3:http://h st/b",
            "s3:https://user@/b",
            "s3:http://127.0.0.1:9?x=1/b/p",
            "s3:http://h#f/b",
            "s3:http://127.0.0.1:9/b?x=1",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
        // Keys in the address, with a `/` in the key, or no bucket.
        for keyed in [
            "s3:http://AKIAX:s3cr3tKEY@127.0.0.1:9/b/p",
            "s3:https://AKIAX:s3cr3t/K7MDENG@127.0.0.1:9/bucket",
            "s3:https://AKIAX:s3cr3t/a/b@127.0.0.1:9/bucket",
            "s3:https://AKIAX:s3cr3t@127.0.0.1:9/",
            "s3:https://AKIAX:/s3cr3t/K7MD@127.0.0.1:9/bucket",
        ] {
            let Err(e) = S3Location::parse(keyed) else {
                panic!("keys in the address taken: {keyed}");
            };
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
        }
        // An `@` in the prefix is a key name's.
        let l = S3Location::parse("s3:http://127.0.0.1:9/b/me@host").unwrap();
        assert_eq!(l.prefix, "me@host");
    }

    #[test]
    fn only_the_repository_s_own_keys_are_taken_for_its_uploads() {
        let pack = "ab".to_string() + &"0".repeat(62);
        for key in [
            "config".to_string(),
            format!("data/ab/{pack}"),
            format!("index/{pack}"),
            format!("snapshots/{pack}"),
            "dicts/0123abcd".to_string(),
        ] {
            assert!(S3Backend::is_repository_key(&key), "{key}");
        }
        for key in [
            format!("data/cd/{pack}"),
            format!("data/{pack}"),
            "other/backup.tar".to_string(),
            "sub/repo/index/0123".to_string(),
            "index/.tmp".to_string(),
            "index/".to_string(),
            "locks/README".to_string(),
            "index/0123".to_string(),
        ] {
            assert!(!S3Backend::is_repository_key(&key), "{key}");
        }
    }
}
