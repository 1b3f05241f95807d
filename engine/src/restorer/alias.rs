//! Snapshot names that one target entry may answer to. On a
//! case-insensitive filesystem (exFAT, FAT, NTFS, CIFS, ext4 or f2fs with
//! casefold) `README` and `readme` are one entry, and where names are
//! normalized so are the composed and decomposed spellings of `é`.
//! Restored side by side, one silently replaced the other; restored at
//! once, a symbolic link made under one name could stand where the other's
//! directory was being filled, and what was written into it landed where
//! the link points.
//!
//! Entries of one directory whose names may alias are restored one after
//! another ([`groups`]), and once one is restored, another whose name
//! reaches an entry of another name is not ([`reaches_other`]).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Dir, statat};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::tree::Node;

/// A key equal for any two names some filesystem may take for one:
/// decomposed, without combining marks and default-ignorable code points
/// (older ext4 casefold skipped those), lowercased. Wider than any one
/// filesystem's folding on purpose: a false match only costs parallelism.
fn fold(name: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(name) {
        Ok(s) if s.is_ascii() => s.to_ascii_lowercase().into_bytes(),
        // Upper then lower case: `ſ`, `ς`, `µ`, `ı` and `ß` are lower
        // case already, yet one name with `s`, `σ`, `μ`, `i` and `ss` where
        // names are folded (FAT and NTFS compare them in upper case).
        Ok(s) => s
            .nfd()
            .filter(|&c| !is_combining_mark(c) && !default_ignorable(c))
            .flat_map(char::to_uppercase)
            .flat_map(char::to_lowercase)
            .collect::<String>()
            .into_bytes(),
        // Filesystems that fold take other bytes as they are (or refuse them).
        Err(_) => name.to_ascii_lowercase(),
    }
}

/// Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties).
fn default_ignorable(c: char) -> bool {
    matches!(
        c as u32,
        0xAD | 0x34F
            | 0x61C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// The nodes of one directory in units to restore in parallel: each a
/// node alone, or nodes whose names may alias ([`fold`]), in tree order,
/// to restore one after another.
pub(super) fn groups(nodes: &[Node]) -> Vec<Vec<&Node>> {
    let mut units: Vec<Vec<&Node>> = Vec::with_capacity(nodes.len());
    let mut by_key: HashMap<Vec<u8>, usize> = HashMap::new();
    for n in nodes {
        let key = fold(&n.name);
        match by_key.get(&key) {
            Some(&i) => units[i].push(n),
            None => {
                by_key.insert(key, units.len());
                units.push(vec![n]);
            }
        }
    }
    units
}

/// The names in the directory open as `dir`, byte for byte.
pub(super) fn listing(dir: &File) -> HashSet<Vec<u8>> {
    let Ok(mut d) = Dir::read_from(dir) else {
        return HashSet::new();
    };
    std::iter::from_fn(|| d.read())
        .flatten()
        .map(|e| e.file_name().to_bytes().to_vec())
        .collect()
}

/// The snapshot's names of one directory that its listing lacks, by
/// [`fold`]: on a target that folds names, an entry the restore went into
/// or found right keeps the spelling it had (`photos` for the snapshot's
/// `Photos`), and is the snapshot's, not an extra entry to delete.
pub(super) struct Unlisted<'t> {
    by_key: HashMap<Vec<u8>, Vec<&'t [u8]>>,
}

impl<'t> Unlisted<'t> {
    /// Those of `nodes` whose names are not in `listed`.
    pub(super) fn new(nodes: &'t [Node], listed: &HashSet<Vec<u8>>) -> Self {
        let mut by_key: HashMap<Vec<u8>, Vec<&[u8]>> = HashMap::new();
        for n in nodes.iter().filter(|n| !listed.contains(&n.name)) {
            by_key.entry(fold(&n.name)).or_default().push(&n.name);
        }
        Unlisted { by_key }
    }

    /// Whether `name`, listed in the directory at `dir`, is the entry the
    /// filesystem gives for one of the snapshot's names: one that folds
    /// alike and, though not listed, is found (a filesystem that keeps
    /// names apart finds no name it does not list).
    pub(super) fn stands_for(&self, dir: &std::path::Path, name: &[u8]) -> bool {
        if self.by_key.is_empty() {
            return false;
        }
        self.by_key.get(&fold(name)).is_some_and(|names| {
            names
                .iter()
                .any(|n| std::fs::symlink_metadata(dir.join(OsStr::from_bytes(n))).is_ok())
        })
    }
}

/// Whether, in the directory open as `dir`, `name` reaches an entry the
/// filesystem also takes one of `done` for (names of its group restored
/// before it), `before` being the directory's listing before any of them
/// was: it reaches one it was not the name of, or the entry it names is
/// where one of `done` went. (Not by inode: a FUSE filesystem may number
/// each name it is asked for apart.)
pub(super) fn reaches_other(
    dir: &File,
    before: &HashSet<Vec<u8>>,
    done: &[&OsStr],
    name: &OsStr,
) -> bool {
    if statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_err() {
        return false;
    }
    if !before.contains(name.as_bytes()) {
        return true;
    }
    // It was there under this name. So were the others, or they are
    // listed under their own names now: entries of their own.
    let made: Vec<&&OsStr> = done
        .iter()
        .filter(|d| !before.contains(d.as_bytes()))
        .collect();
    if made.is_empty() {
        return false;
    }
    let now = listing(dir);
    made.iter().any(|d| !now.contains(d.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differing_in_case_or_form_share_a_key() {
        assert_eq!(fold(b"README"), fold(b"readme"));
        // NFC and NFD spellings of "café".
        assert_eq!(fold("caf\u{e9}".as_bytes()), fold("cafe\u{301}".as_bytes()));
        assert_eq!(
            fold("\u{c9}T\u{c9}".as_bytes()),
            fold("\u{e9}t\u{e9}".as_bytes())
        );
        assert_eq!(fold("a\u{200d}b".as_bytes()), fold(b"AB"));
        for (a, b) in [
            ("\u{17f}", "s"),
            ("\u{3c2}", "\u{3c3}"),
            ("\u{b5}", "\u{3bc}"),
        ] {
            assert_eq!(fold(a.as_bytes()), fold(b.as_bytes()), "{a} {b}");
        }
        assert_eq!(fold("Stra\u{df}e".as_bytes()), fold(b"STRASSE"));
        assert_eq!(fold("\u{131}".as_bytes()), fold(b"I"));
        assert_ne!(fold(b"readme"), fold(b"readme2"));
        assert_eq!(fold(b"A\xff"), fold(b"a\xff"));
        assert_ne!(fold(b"a\xff"), fold(b"a\xfe"));
    }

    #[test]
    fn groups_keep_tree_order_and_leave_others_alone() {
        let node = |name: &[u8]| Node::new(name.to_vec(), crate::tree::NodeKind::File);
        let nodes = [node(b"Docs"), node(b"README"), node(b"docs"), node(b"x")];
        let units: Vec<Vec<&[u8]>> = groups(&nodes)
            .iter()
            .map(|u| u.iter().map(|n| n.name.as_slice()).collect())
            .collect();
        assert_eq!(
            units,
            vec![vec![&b"Docs"[..], b"docs"], vec![b"README"], vec![b"x"]]
        );
    }

    #[test]
    fn hard_links_and_other_names_are_not_aliases() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("README"), "a").unwrap();
        std::fs::hard_link(d.path().join("README"), d.path().join("readme")).unwrap();
        std::fs::write(d.path().join("Other"), "b").unwrap();
        let dir = File::open(d.path()).unwrap();
        let before = listing(&dir);
        let done = [OsStr::new("README")];
        for name in ["readme", "Other", "missing"] {
            assert!(
                !reaches_other(&dir, &before, &done, OsStr::new(name)),
                "{name}"
            );
        }
        // One made by this restore after the listing: the other name is
        // free on a filesystem that keeps case.
        std::fs::write(d.path().join("Made"), "c").unwrap();
        let done = [OsStr::new("Made")];
        assert!(!reaches_other(&dir, &before, &done, OsStr::new("made")));
    }
}
