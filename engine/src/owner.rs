//! User and group names for IDs, and back, with caching (lookups go through
//! NSS and can be slow).

use std::collections::HashMap;
use std::sync::Mutex;

use nix::unistd::{Gid, Group, Uid, User};

/// Caches name lookups for one backup or restore.
#[derive(Default)]
pub struct Owners {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
    uids: Mutex<HashMap<String, Option<u32>>>,
    gids: Mutex<HashMap<String, Option<u32>>>,
}

impl Owners {
    /// The name of user `uid` (empty if it has none).
    pub fn user_name(&self, uid: u32) -> String {
        let mut c = self.users.lock().expect("user cache");
        c.entry(uid)
            .or_insert_with(|| {
                User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }

    /// The name of group `gid` (empty if it has none).
    pub fn group_name(&self, gid: u32) -> String {
        let mut c = self.groups.lock().expect("group cache");
        c.entry(gid)
            .or_insert_with(|| {
                Group::from_gid(Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_default()
            })
            .clone()
    }

    /// The local ID of user `name`, if it exists here.
    pub fn uid_of(&self, name: &str) -> Option<u32> {
        let mut c = self.uids.lock().expect("uid cache");
        *c.entry(name.to_string())
            .or_insert_with(|| User::from_name(name).ok().flatten().map(|u| u.uid.as_raw()))
    }

    /// The local ID of group `name`, if it exists here.
    pub fn gid_of(&self, name: &str) -> Option<u32> {
        let mut c = self.gids.lock().expect("gid cache");
        *c.entry(name.to_string()).or_insert_with(|| {
            Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        })
    }
}
