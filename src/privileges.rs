//! `--user` and `--group`: the identity workers run as. The master keeps its
//! own (it binds, opens the logs, and may need root for both); each worker
//! drops to this one right after fork, before the application is loaded,
//! in nginx's order: supplementary groups, group, then user.

use std::ffi::CString;

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Group, Uid, User};

/// Who the workers become.
#[derive(Clone, Debug)]
pub struct Identity {
    pub uid: Uid,
    pub gid: Gid,
    /// For the supplementary groups (initgroups), when the user has a name.
    pub name: Option<CString>,
}

impl Identity {
    /// From `--user` and `--group`, each a name or a number; a user alone
    /// brings its primary group.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Identity>> {
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        let (uid, mut gid, name) = match user {
            Some(user) => {
                let found = match user.parse::<u32>() {
                    Ok(uid) => User::from_uid(Uid::from_raw(uid))?,
                    Err(_) => User::from_name(user)?,
                };
                match (found, user.parse::<u32>()) {
                    (Some(u), _) => (u.uid, Some(u.gid), Some(CString::new(u.name)?)),
                    (None, Ok(uid)) => (Uid::from_raw(uid), None, None),
                    (None, Err(_)) => bail!("--user {user:?}: no such user"),
                }
            }
            None => (Uid::current(), None, None),
        };
        if let Some(group) = group {
            gid = Some(match group.parse::<u32>() {
                Ok(gid) => Gid::from_raw(gid),
                Err(_) => {
                    Group::from_name(group)?
                        .with_context(|| format!("--group {group:?}: no such group"))?
                        .gid
                }
            });
        }
        let gid = gid.unwrap_or_else(Gid::current);
        if (uid != Uid::current() || gid != Gid::current()) && !Uid::effective().is_root() {
            bail!("--user/--group need rgun to be started as root to switch identity");
        }
        Ok(Some(Identity { uid, gid, name }))
    }

    /// In a freshly forked worker: become this identity, for good.
    pub fn assume(&self) -> Result<()> {
        if let Some(name) = &self.name {
            nix::unistd::initgroups(name, self.gid).context("initgroups")?;
        } else {
            nix::unistd::setgroups(&[self.gid]).context("setgroups")?;
        }
        nix::unistd::setgid(self.gid).context("setgid")?;
        nix::unistd::setuid(self.uid).context("setuid")?;
        Ok(())
    }
}
