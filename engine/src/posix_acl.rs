//! POSIX ACLs as the kernel stores them in `system.posix_acl_access` and
//! `system.posix_acl_default`, turned into the short text form of
//! `getfacl -n` (one entry a line, numeric IDs).
//!
//! Tar readers take ACLs from `SCHILY.acl.access` and `SCHILY.acl.default`
//! in this form (GNU tar with `--acls`, bsdtar); the raw xattr alone is
//! restored only by `--xattrs`.

/// Xattr name of a file's or directory's access ACL.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
/// Xattr name of a directory's default ACL.
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

/// The permission bits (0 to 7) an access ACL gives the file's owning
/// group, where it has a mask (the mode's group bits are then the mask,
/// which may grant the group more than its own entry does): what the
/// group bits must be when the ACL itself cannot be restored. `None`
/// without a mask, or for a value that is not a version 2 ACL.
pub fn owning_group_bits(value: &[u8]) -> Option<u32> {
    let (mut group, mut mask) = (None, None);
    for (tag, perm, _) in entries(value)? {
        match tag {
            0x04 => group = Some(u32::from(perm & 0o7)),
            0x10 => mask = Some(u32::from(perm & 0o7)),
            _ => {}
        }
    }
    Some(group? & mask?)
}

/// The entries (tag, permissions, ID) of a version 2 ACL xattr value, or
/// `None` if it is not one.
fn entries(value: &[u8]) -> Option<impl Iterator<Item = (u16, u16, u32)> + '_> {
    let (version, entries) = value.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != 2 || entries.len() % 8 != 0 {
        return None;
    }
    Some(entries.chunks_exact(8).map(|e| {
        (
            u16::from_le_bytes([e[0], e[1]]),
            u16::from_le_bytes([e[2], e[3]]),
            u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
        )
    }))
}

/// The text form of an ACL xattr value (`user::rw-\nuser:1000:r--\n...`,
/// a newline after each entry), or `None` if it is not a version 2 ACL
/// of known entry tags.
pub fn to_text(value: &[u8]) -> Option<String> {
    let mut text = String::new();
    for (tag, perm, id) in entries(value)? {
        let who = match tag {
            0x01 => "user:".to_string(),
            0x02 => format!("user:{id}"),
            0x04 => "group:".to_string(),
            0x08 => format!("group:{id}"),
            0x10 => "mask:".to_string(),
            0x20 => "other:".to_string(),
            _ => return None,
        };
        if perm & !0o7 != 0 {
            return None;
        }
        let bit = |b: u16, c: char| if perm & b != 0 { c } else { '-' };
        text.push_str(&format!(
            "{who}:{}{}{}\n",
            bit(4, 'r'),
            bit(2, 'w'),
            bit(1, 'x')
        ));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tag: u16, perm: u16, id: u32) -> Vec<u8> {
        [
            &tag.to_le_bytes()[..],
            &perm.to_le_bytes(),
            &id.to_le_bytes(),
        ]
        .concat()
    }

    #[test]
    fn text_of_an_access_acl() {
        let none = u32::MAX;
        let v = [
            2u32.to_le_bytes().to_vec(),
            entry(0x01, 6, none),
            entry(0x02, 4, 1000),
            entry(0x04, 4, none),
            entry(0x08, 7, 100),
            entry(0x10, 7, none),
            entry(0x20, 0, none),
        ]
        .concat();
        assert_eq!(
            to_text(&v).unwrap(),
            "user::rw-\nuser:1000:r--\ngroup::r--\ngroup:100:rwx\nmask::rwx\nother::---\n"
        );
    }

    #[test]
    fn what_is_not_an_acl_has_no_text() {
        assert_eq!(to_text(b""), None);
        assert_eq!(to_text(&1u32.to_le_bytes()), None);
        let mut v = 2u32.to_le_bytes().to_vec();
        v.extend(entry(0x40, 4, 0));
        assert_eq!(to_text(&v), None);
        v.truncate(7);
        assert_eq!(to_text(&v), None);
        let mut v = 2u32.to_le_bytes().to_vec();
        v.extend(entry(0x01, 8, 0));
        assert_eq!(to_text(&v), None);
    }
}
