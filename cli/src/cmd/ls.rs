//! `cairn ls`

use anyhow::Result;
use cairn_engine::Repository;
use cairn_engine::restorer::resolve;
use cairn_engine::tree::{Node, NodeKind};

use crate::common::Global;
use crate::snapshot_arg::select;
use crate::{exit, timefmt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot ID, unique prefix or `latest`
    snapshot: Option<String>,
    /// Directory inside the snapshot to list (default: everything)
    path: Option<String>,
    /// Instead of a snapshot ID: the newest snapshot at or before this time
    #[arg(long)]
    at: Option<String>,
    /// Long listing: mode, owner, size, time
    #[arg(short, long)]
    long: bool,
    /// Only the named directory, not its subdirectories
    #[arg(long)]
    no_recursive: bool,
}

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
        NodeKind::Socket => 's',
        NodeKind::File => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (n.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn emit(g: &Global, long: bool, path: &str, n: &Node) -> Result<()> {
    if g.json {
        let kind = serde_json::to_value(n.kind)?;
        println!(
            "{}",
            serde_json::json!({
                "path": path, "type": kind, "mode": n.mode, "uid": n.uid, "gid": n.gid,
                "size": n.size, "mtime": format!("{}.{:09}", n.mtime.sec, n.mtime.nsec),
                "link_target": (n.kind == NodeKind::Symlink).then(|| String::from_utf8_lossy(&n.link_target).into_owned()),
            })
        );
    } else if long {
        let t = chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec)
            .map(|t| timefmt::show(&t.fixed_offset()))
            .unwrap_or_default();
        let link = if n.kind == NodeKind::Symlink {
            format!(" -> {}", String::from_utf8_lossy(&n.link_target))
        } else {
            String::new()
        };
        println!(
            "{} {:>6} {:>6} {:>12} {} {}{}",
            mode_string(n),
            n.uid,
            n.gid,
            n.size,
            t,
            path,
            link
        );
    } else {
        println!("{path}");
    }
    Ok(())
}

fn walk(
    repo: &Repository,
    g: &Global,
    long: bool,
    recursive: bool,
    prefix: &str,
    tree: &cairn_engine::tree::Tree,
) -> Result<()> {
    for n in &tree.nodes {
        let path = format!("{prefix}/{}", n.display_name());
        emit(g, long, &path, n)?;
        if recursive && let Some(sub) = n.subtree {
            walk(repo, g, long, recursive, &path, &repo.load_tree(&sub)?)?;
        }
    }
    Ok(())
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let (_, snap) = select(&repo, a.snapshot.as_deref(), a.at.as_deref())?;
    let sub = a.path.as_deref().unwrap_or("/");
    let prefix = sub.trim_end_matches('/');
    let tree = match resolve(&repo, &snap, sub)? {
        None => repo.load_tree(&snap.tree)?,
        Some(n) => match n.subtree {
            Some(t) => repo.load_tree(&t)?,
            None => {
                emit(g, a.long, prefix, &n)?;
                return Ok(exit::OK);
            }
        },
    };
    walk(&repo, g, a.long, !a.no_recursive, prefix, &tree)?;
    Ok(exit::OK)
}
