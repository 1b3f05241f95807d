//! `cairn serve`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_engine::overview::OverviewOptions;

use crate::common::{Global, parse_duration, print_json};
use crate::exit;
use crate::web::{Server, router};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on: an IP address or host name, and a port (port 0
    /// picks a free port, printed at start)
    #[arg(long, default_value = "127.0.0.1:8722", value_parser = listen_address)]
    listen: Listen,
    /// File holding the token every request must carry (`Authorization: Bearer TOKEN`,
    /// or the token as a Basic password); required unless listening on loopback
    #[arg(long, env = "CAIRN_SERVE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Serve without a token on a non-loopback address (anyone who reaches it sees file names)
    #[arg(long)]
    insecure_no_auth: bool,
    /// Recovery point objective: a source whose newest snapshot is older fails the health check (e.g. 26h)
    #[arg(long, value_parser = parse_duration)]
    rpo: Option<Duration>,
    /// Warn when no `check` has run on this machine for this long (e.g. 7d)
    #[arg(long, value_parser = parse_duration)]
    check_every: Option<Duration>,
    /// Warn when no restore test (`verify-restore`) has run on this machine for this long (e.g. 30d)
    #[arg(long, value_parser = parse_duration)]
    restore_test_every: Option<Duration>,
    /// Answer from one look at the storage for this long (listing a bucket on every refresh costs)
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    cache_for: Duration,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let token = match &a.token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("reading the token file {}", p.display()))?;
            let t = t.trim().to_string();
            if t.len() < 16 {
                bail!(
                    "the token in {} is shorter than 16 characters: use a long random one (e.g. `openssl rand -hex 32`)",
                    p.display()
                );
            }
            Some(t)
        }
        None => None,
    };
    if token.is_none() && !a.listen.addr.ip().is_loopback() && !a.insecure_no_auth {
        return Err(exit::usage(format!(
            "{} is reachable from other machines: give --token-file (or --insecure-no-auth to serve without one)",
            a.listen.addr
        )));
    }
    let repo = g.open()?;
    let server = Arc::new(Server::new(
        repo,
        OverviewOptions {
            rpo: a.rpo,
            check_every: a.check_every,
            restore_test_every: a.restore_test_every,
        },
        token,
        a.listen.addr,
        a.listen.name.as_deref(),
        a.cache_for,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen.addr)
            .await
            .with_context(|| format!("listening on {}", a.listen.addr))?;
        let addr = listener.local_addr()?;
        if g.json {
            print_json(&serde_json::json!({
                "message_type": "listening",
                "address": addr.to_string(),
                "url": format!("http://{addr}/"),
            }))?;
        } else if !g.quiet {
            crate::say!(
                "serving the dashboard at http://{addr}/ (JSON under /api/v1/, metrics at /metrics)"
            );
        }
        serve_until_stopped(listener, router(server)).await;
        Ok::<_, anyhow::Error>(())
    });
    // Not waited for: a request stuck in a storage read (a hung NFS mount,
    // a slow S3) held the exit off after the drain, signals and all.
    runtime.shutdown_background();
    served?;
    Ok(exit::OK)
}

/// How long a stop waits for the requests under way.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a client has to send a request's head, from the connection or
/// the end of its last answer: one that sent half a request, or nothing,
/// held its connection for ever (a few hundred of them starved the server,
/// token or not).
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A request head's largest size (hyper's default allows about 400 KiB
/// per connection).
const MAX_HEAD: usize = 64 << 10;

/// Serves `app` on `listener` until a stop signal, then lets the requests
/// under way finish, for a while: one a client stalled held the stop off
/// until the client left, and a second signal did nothing.
async fn serve_until_stopped(listener: tokio::net::TcpListener, app: axum::Router) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop_signal(true));
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, or a connection reset before it was
                // taken: the next may do.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_HEAD)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    // New clients are refused at once, not left to hang through the drain.
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        // Not a second SIGHUP: a closed session may send two.
        _ = stop_signal(false) => crate::warn!("cairn: stopped with requests still open"),
        _ = tokio::time::sleep(DRAIN) => crate::warn!("cairn: stopped with requests still open"),
    }
}

/// The next SIGINT or SIGTERM, or SIGHUP if `hangup`.
async fn stop_signal(hangup: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    // A closed session stops it as SIGTERM does (it died by SIGHUP); under
    // nohup, SIGHUP stays ignored.
    let mut hup = (hangup && !exit::ignored(libc::SIGHUP))
        .then(|| signal(SignalKind::hangup()).expect("a SIGHUP handler"));
    let hangup = async {
        match hup.as_mut() {
            Some(h) => {
                h.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hangup => {}
    }
}

/// Where `serve` listens, and the host name it was given as, if any.
#[derive(Debug, Clone)]
struct Listen {
    addr: SocketAddr,
    /// Requests naming it are answered too (see `Server::new`).
    name: Option<String>,
}

/// `--listen`: `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT` (`localhost:8722`),
/// a name taking its first address. An IPv6 address without brackets or
/// a number in a short form (`127.1`) is refused: the resolver would take
/// them (`fd00::10:1` as `[fd00::10]:1`), not always as meant.
fn listen_address(s: &str) -> Result<Listen, String> {
    if let Ok(addr) = s.parse() {
        return Ok(Listen { addr, name: None });
    }
    let bad = |why: &str| {
        format!(
            "{s:?} is not an address to listen on ({why}): give an IP address or host name and \
             a port, e.g. 127.0.0.1:8722, [::1]:8722 or localhost:8722"
        )
    };
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err()
    {
        return Err(bad("the port is not a number up to 65535"));
    }
    if host.starts_with('[') {
        return Err(bad("not an IPv6 address"));
    }
    if host.contains(':') {
        return Err(bad("an IPv6 address goes in brackets"));
    }
    // Parts that are each a number (`127.1`, `0x7f.1`) are an address in a
    // short form the resolver reads (as inet_aton does), not a name.
    let number = |part: &str| {
        let hex = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X"));
        match hex {
            Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
            None => !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()),
        }
    };
    if host.is_empty() || host.split('.').all(number) {
        return Err(bad("not a whole IP address"));
    }
    use std::net::ToSocketAddrs;
    match s.to_socket_addrs() {
        Ok(mut all) => match all.next() {
            Some(addr) => Ok(Listen {
                addr,
                name: Some(host.to_string()),
            }),
            None => Err(bad("it names no address")),
        },
        Err(e) => Err(bad(&e.to_string())),
    }
}
