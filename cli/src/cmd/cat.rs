//! `cairn cat`: print repository objects for inspection.

use anyhow::Result;
use cairn_engine::Id;
use cairn_engine::backend::FileKind;
use cairn_engine::localindex::load_index_file;
use cairn_engine::pack;

use crate::common::Global;
use crate::exit;

/// What `cat` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Config,
    Snapshot,
    Index,
    Key,
    Tree,
    Blob,
    Pack,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to print
    #[arg(value_enum)]
    kind: Kind,
    /// Object ID (snapshot: also a prefix or `latest`, the default; key: also a prefix, as `key list` shows it)
    id: Option<String>,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    // Checked before the repository is opened: a wrong command line does
    // nothing.
    let id = match (&a.id, a.kind) {
        (_, Kind::Config) => String::new(),
        (None, Kind::Snapshot) => "latest".into(),
        (Some(id), _) => id.clone(),
        (None, k) => {
            let name = clap::ValueEnum::to_possible_value(&k).expect("every kind is named");
            return Err(exit::usage(format!(
                "`cat {}` needs an ID",
                name.get_name()
            )));
        }
    };
    let repo = g.open()?;
    // As the listings: a shared lock keeps prune from deleting the packs
    // read (a record, a key or the config is read whole in one go).
    let _lock = match a.kind {
        Kind::Tree | Kind::Blob | Kind::Pack => g.read_lock(&repo)?,
        _ => None,
    };
    let need_id = || -> Result<Id> { Ok(Id::from_hex(&id)?) };
    let json = match a.kind {
        Kind::Config => serde_json::to_string_pretty(repo.config())?,
        Kind::Snapshot => serde_json::to_string_pretty(&repo.find_snapshot(&id)?.1)?,
        Kind::Index => {
            let id = need_id()?;
            serde_json::to_string_pretty(&load_index_file(&**repo.backend(), repo.key(), &id)?)?
        }
        Kind::Key => {
            // By the ID `key list` shows, as `key remove` takes it. Its
            // bytes as stored, not a line: a copy kept offline and put back
            // must hash to its name (`check` calls it corrupt otherwise).
            let (name, _) = repo.key_named(&id)?;
            return write_raw(&repo.backend().read(FileKind::Key, &name)?);
        }
        Kind::Tree => {
            let mut tree = serde_json::to_value(repo.load_tree(&need_id()?)?)?;
            readable_names(&mut tree);
            serde_json::to_string_pretty(&tree)?
        }
        Kind::Blob => return write_raw(&repo.load_blob(&need_id()?)?),
        Kind::Pack => {
            let id = need_id()?;
            let bytes = repo.backend().read(FileKind::Pack, &id.to_hex())?;
            serde_json::to_string_pretty(&pack::read_header_from_bytes(repo.key(), &id, &bytes)?)?
        }
    };
    println!("{json}");
    Ok(exit::OK)
}

/// Writes `bytes` to standard output as they are. Named as standard
/// output, a reader that went away ends the process by SIGPIPE, as it does
/// for the listings.
fn write_raw(bytes: &[u8]) -> Result<i32> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| cairn_engine::Error::io("write", "<stdout>", e))?;
    Ok(exit::OK)
}

/// Shows the byte strings of a tree's nodes (names, link targets, extended
/// attributes) as JSON strings when they are UTF-8, as people and `jq` read
/// them; others stay arrays of bytes, the only exact form JSON has.
fn readable_names(tree: &mut serde_json::Value) {
    use serde_json::Value;
    fn text(v: &mut Value) {
        let Value::Array(items) = v else { return };
        let bytes: Option<Vec<u8>> = items
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect();
        if let Some(s) = bytes.and_then(|b| String::from_utf8(b).ok()) {
            *v = Value::String(s);
        }
    }
    let Some(nodes) = tree.get_mut("nodes").and_then(Value::as_array_mut) else {
        return;
    };
    for node in nodes {
        for field in ["name", "link_target"] {
            if let Some(v) = node.get_mut(field) {
                text(v);
            }
        }
        for xattr in node
            .get_mut("xattrs")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            for field in ["name", "value"] {
                if let Some(v) = xattr.get_mut(field) {
                    text(v);
                }
            }
        }
    }
}
