//! Directory trees: the Merkle structure of a snapshot.
//!
//! A tree blob lists one directory's entries sorted by name bytes. A
//! directory entry points at its own tree blob by ID, so identical
//! subtrees are stored once and a snapshot's root ID commits to every byte
//! and every piece of metadata below it.

use serde::{Deserialize, Serialize};

use crate::envelope::{from_msgpack, to_msgpack};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::unknown::UnknownFields;

/// What kind of filesystem object a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (stored, never followed).
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    Chardev,
    /// Block device.
    Blockdev,
    /// Unix socket: in the format, but backups leave sockets out, and a
    /// restore makes nothing for one.
    Socket,
}

/// A point in time: seconds since the Unix epoch (may be negative) and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub sec: i64,
    /// Nanoseconds, 0..1e9.
    pub nsec: u32,
}

impl Timestamp {
    /// RFC 3339 in the local time zone, with as many fractional digits as
    /// needed (`2026-01-03T10:15:00.5+01:00`); `None` if out of range.
    pub fn to_rfc3339(&self) -> Option<String> {
        let t = chrono::DateTime::from_timestamp(self.sec, self.nsec)?;
        Some(
            t.with_timezone(&chrono::Local)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
        )
    }
}

/// An extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Attribute name (bytes).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Attribute value (bytes).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// One directory entry and its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name as raw bytes (any byte but `/` and NUL).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Object kind.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission and mode bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner user ID.
    pub uid: u32,
    /// Owner group ID.
    pub gid: u32,
    /// Owner user name, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Owner group name, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Size in bytes (files: content length; symlinks: target length).
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Access time.
    pub atime: Timestamp,
    /// Status change time (for change detection; not restorable).
    pub ctime: Timestamp,
    /// Inode number on the source filesystem.
    pub inode: u64,
    /// Device of the source filesystem (`st_dev`). A writer records it
    /// only where [`Node::keeps_device`] holds and stores 0 elsewhere; a
    /// node the backup stat'ed holds its device until its tree is made.
    pub device: u64,
    /// Hard link count on the source.
    pub links: u64,
    /// Device number of character and block devices.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// File content as a list of data blob IDs, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// Directory contents: the tree blob ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Symlink target as raw bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "serde_bytes")]
    pub link_target: Vec<u8>,
    /// Extended attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// Problems met while reading this entry (e.g. `changed-while-reading`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Node {
    /// A node of `kind` named `name` with every other field zero.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Node {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            size: 0,
            mtime: Timestamp::default(),
            atime: Timestamp::default(),
            ctime: Timestamp::default(),
            inode: 0,
            device: 0,
            links: 0,
            rdev: 0,
            content: Vec::new(),
            subtree: None,
            link_target: Vec::new(),
            xattrs: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Whether the node's `device` is recorded in its tree: only a
    /// hard-linked entry other than a directory needs it, to tell its link
    /// group from an inode of the same number on another filesystem.
    /// Recorded for every entry, it made every tree new when a disk came
    /// back under another device number (a USB disk attached again, a
    /// btrfs, ZFS or LVM snapshot mounted anew), though nothing in it
    /// changed.
    pub fn keeps_device(&self) -> bool {
        self.kind != NodeKind::Dir && self.links > 1
    }

    /// `device` as a tree records it (see [`Node::keeps_device`]).
    pub fn recorded_device(&self) -> u64 {
        if self.keeps_device() { self.device } else { 0 }
    }

    /// The name for display (lossy UTF-8).
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// Whether the name is one entry's name, as the format requires: not
    /// empty, `.` or `..`, no `/` or NUL. A tree written by anyone else
    /// (forged, damaged before encryption) may break it, and a path built
    /// from such a name could leave the directory it is restored into.
    pub fn has_safe_name(&self) -> bool {
        let n = &self.name;
        !(n.is_empty() || n.contains(&b'/') || n.contains(&0) || n == b"." || n == b"..")
    }

    /// The hard link group this node belongs to when restored or mounted:
    /// the names of one source inode recorded with the same content (and
    /// kind and device number). Names
    /// of one inode recorded with different contents (the file changed
    /// between the reads of its names, or a new file got a deleted one's
    /// inode number while the backup ran) are separate files: linked, one
    /// name would show another's bytes.
    pub fn link_group(&self) -> LinkGroup {
        let mut h = blake3::Hasher::new();
        h.update(&self.size.to_le_bytes());
        h.update(&(self.content.len() as u64).to_le_bytes());
        for id in &self.content {
            h.update(&id.0);
        }
        h.update(&self.link_target);
        // A reused inode number must not join a FIFO to a device, or two
        // devices of different numbers.
        h.update(&[self.kind as u8]);
        h.update(&self.rdev.to_le_bytes());
        LinkGroup {
            device: self.device,
            inode: self.inode,
            content: *h.finalize().as_bytes(),
        }
    }

    /// The error for a node whose name [`Node::has_safe_name`] refuses.
    pub fn unsafe_name_error(&self) -> String {
        format!(
            "refusing unsafe name {:?} from the snapshot",
            self.display_name()
        )
    }
}

/// A hard link group, as [`Node::link_group`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkGroup {
    device: u64,
    inode: u64,
    /// A digest of the recorded content (size, blob IDs, symlink target).
    content: [u8; 32],
}

/// Every field name [`Node`] knows (a test checks it against serde's).
const NODE_FIELDS: [&str; 20] = [
    "name",
    "type",
    "mode",
    "uid",
    "gid",
    "user",
    "group",
    "size",
    "mtime",
    "atime",
    "ctime",
    "inode",
    "device",
    "links",
    "rdev",
    "content",
    "subtree",
    "link_target",
    "xattrs",
    "warnings",
];

/// What a tree blob holds that this build does not know: map keys a newer
/// cairn wrote, of the tree and of each node. A command that writes the
/// tree again (`copy`, with other blob IDs) keeps them, as spec §8 asks
/// of records written again.
#[derive(Debug, Default)]
pub struct UnknownTreeFields {
    tree: UnknownFields,
    /// By node name.
    nodes: std::collections::HashMap<Vec<u8>, UnknownFields>,
}

impl UnknownTreeFields {
    /// The unknown fields of the tree blob plaintext `data`.
    pub fn of(data: &[u8]) -> UnknownTreeFields {
        let Ok(rmpv::Value::Map(mut entries)) = rmpv::decode::read_value(&mut &data[..]) else {
            return UnknownTreeFields::default();
        };
        let nodes = entries
            .iter()
            .position(|(k, _)| k.as_str() == Some("nodes"))
            .map(|i| entries.remove(i).1);
        let mut out = UnknownTreeFields {
            tree: UnknownFields::among(entries, &[]),
            nodes: Default::default(),
        };
        let Some(rmpv::Value::Array(nodes)) = nodes else {
            return out;
        };
        for node in nodes {
            let rmpv::Value::Map(fields) = node else {
                continue;
            };
            let name = node_name(&fields);
            let unknown = UnknownFields::among(fields, &NODE_FIELDS);
            if let Some(name) = name
                && !unknown.0.is_empty()
            {
                out.nodes.insert(name, unknown);
            }
        }
        out
    }

    /// `encoded`, a tree blob this build wrote, with these fields after
    /// its own: the tree's, and each node's where a node of its name is.
    pub fn appended_to(&self, encoded: Vec<u8>) -> Vec<u8> {
        if self.nodes.is_empty() {
            return self.tree.appended_to(encoded);
        }
        let mut v = rmpv::decode::read_value(&mut &encoded[..]).expect("just encoded");
        if let rmpv::Value::Map(entries) = &mut v {
            for (k, nodes) in entries.iter_mut() {
                let (Some("nodes"), rmpv::Value::Array(nodes)) = (k.as_str(), nodes) else {
                    continue;
                };
                for node in nodes {
                    if let rmpv::Value::Map(fields) = node
                        && let Some(extra) = node_name(fields).and_then(|n| self.nodes.get(&n))
                    {
                        extra.push_onto(fields);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(encoded.len() * 2);
        rmpv::encode::write_value(&mut out, &v).expect("writing to memory");
        self.tree.appended_to(out)
    }
}

/// A node's name, from its decoded map: bin, or str from another writer.
fn node_name(fields: &[(rmpv::Value, rmpv::Value)]) -> Option<Vec<u8>> {
    match &fields.iter().find(|(k, _)| k.as_str() == Some("name"))?.1 {
        rmpv::Value::Binary(b) => Some(b.clone()),
        rmpv::Value::String(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

/// The payload of a tree blob (MessagePack with named fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by name bytes, names unique.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Sorts entries by name, as the format requires.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Finds an entry by name.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// The encoded blob plaintext.
    pub fn encode(&self) -> Vec<u8> {
        to_msgpack(self)
    }

    /// Decodes a tree blob; `what` names it in errors. A tree whose names
    /// are not unique and in order is corrupt (format-spec §13.2): no writer
    /// makes one, and a restore given one by a forged or damaged repository
    /// could make the same path twice, once as a symlink out of the target
    /// and once as a directory written into.
    pub fn decode(data: &[u8], what: &str) -> Result<Tree> {
        let t: Tree = from_msgpack(data, what)?;
        if let Some(w) = t.nodes.windows(2).find(|w| w[0].name >= w[1].name) {
            return Err(Error::corrupt(
                what,
                format!(
                    "entry {:?} is not after {:?}: names must be unique and sorted",
                    w[1].display_name(),
                    w[0].display_name()
                ),
            ));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_fields_are_what_serde_writes_and_unknown_ones_come_back() {
        let mut n = Node::new(b"f".to_vec(), NodeKind::Dir);
        n.user = "u".into();
        n.group = "g".into();
        n.rdev = 1;
        n.content = vec![Id([1; 32])];
        n.subtree = Some(Id([2; 32]));
        n.link_target = b"t".to_vec();
        n.xattrs = vec![Xattr {
            name: b"user.a".to_vec(),
            value: b"v".to_vec(),
        }];
        n.warnings = vec!["w".into()];
        let tree = Tree {
            nodes: vec![n, Node::new(b"g".to_vec(), NodeKind::File)],
        };
        let encoded = tree.encode();
        let rmpv::Value::Map(top) = rmpv::decode::read_value(&mut &encoded[..]).unwrap() else {
            panic!("not a map")
        };
        let rmpv::Value::Array(nodes) = &top[0].1 else {
            panic!("no nodes")
        };
        let rmpv::Value::Map(fields) = &nodes[0] else {
            panic!("not a map")
        };
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str().unwrap()).collect();
        assert_eq!(keys, NODE_FIELDS);
        // A newer writer's fields, on the tree and on node "g".
        let mut v = rmpv::decode::read_value(&mut &encoded[..]).unwrap();
        let rmpv::Value::Map(top) = &mut v else {
            panic!()
        };
        if let rmpv::Value::Array(nodes) = &mut top[0].1
            && let rmpv::Value::Map(fields) = &mut nodes[1]
        {
            fields.push(("future".into(), 7.into()));
        }
        top.push(("later".into(), "x".into()));
        let mut newer = Vec::new();
        rmpv::encode::write_value(&mut newer, &v).unwrap();
        let unknown = UnknownTreeFields::of(&newer);
        assert_eq!(unknown.appended_to(tree.encode()), newer);
        assert!(UnknownTreeFields::of(&encoded).nodes.is_empty());
    }

    fn tree(names: &[&str]) -> Vec<u8> {
        let nodes = names
            .iter()
            .map(|n| Node::new(n.as_bytes().to_vec(), NodeKind::File))
            .collect();
        Tree { nodes }.encode()
    }

    #[test]
    fn a_tree_with_names_out_of_order_or_twice_is_corrupt() {
        assert_eq!(
            Tree::decode(&tree(&["a", "b", "c"]), "t")
                .unwrap()
                .nodes
                .len(),
            3
        );
        assert!(Tree::decode(&tree(&[]), "t").unwrap().nodes.is_empty());
        for bad in [&["a", "a"][..], &["b", "a"], &["a", "c", "b"]] {
            let e = Tree::decode(&tree(bad), "tree x").unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains("unique and sorted"), "{e}");
        }
    }
}
