//! Finding the network namespaces of the pods on this node.
//!
//! With `hostPID`, every pod's processes are visible under `/proc`. A process's cgroup path names
//! its pod (`.../kubepods/burstable/pod<uid>/<container>` with the cgroupfs driver,
//! `.../kubepods-burstable-pod<uid_with_underscores>.slice/...` with the systemd driver; cgroup v1
//! and v2 alike), and `/proc/<pid>/ns/net` is its network namespace. All containers of a pod share
//! one namespace, so namespaces are de-duplicated by inode. Named namespaces (`ip netns add`,
//! `/var/run/netns/*`) are read too; they carry no pod UID, so they are matched to pods by name.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where a namespace was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum NetnsOrigin {
    /// Processes of a pod (the lowest PID is used to enter it).
    Pod { uid: String, pids: Vec<u32> },
    /// A named namespace file (`/var/run/netns/NAME`).
    Named { name: String },
}

/// One network namespace to inspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Netns {
    /// A path that opens the namespace (`/proc/PID/ns/net` or the named file).
    pub path: PathBuf,
    /// The namespace's inode: its identity.
    pub inode: u64,
    pub origin: NetnsOrigin,
}

impl Netns {
    /// The pod UID the namespace belongs to, when known from cgroups.
    pub fn pod_uid(&self) -> Option<&str> {
        match &self.origin {
            NetnsOrigin::Pod { uid, .. } => Some(uid),
            NetnsOrigin::Named { .. } => None,
        }
    }

    /// A short label for messages and evidence.
    pub fn label(&self) -> String {
        match &self.origin {
            NetnsOrigin::Pod { pids, .. } => format!(
                "net:[{}] (pid {})",
                self.inode,
                pids.first().copied().unwrap_or_default()
            ),
            NetnsOrigin::Named { name } => format!("net:[{}] ({name})", self.inode),
        }
    }
}

/// The pod UID in a `/proc/<pid>/cgroup` file, if the process belongs to a pod.
pub fn pod_uid_from_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        // `hierarchy-id:controllers:path`; the path may itself contain ':'.
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        if !path.contains("kubepods") {
            continue;
        }
        // The last pod segment wins (nested cgroups repeat nothing, but be strict about order).
        let mut found = None;
        for seg in path.split('/') {
            if let Some(uid) = pod_uid_in_segment(seg) {
                found = Some(uid);
            }
        }
        if found.is_some() {
            return found;
        }
    }
    None
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_in_segment(seg: &str) -> Option<String> {
    let seg = seg.strip_suffix(".slice").unwrap_or(seg);
    let start = if let Some(rest) = seg.strip_prefix("pod") {
        rest
    } else {
        let i = seg.rfind("-pod")?;
        &seg[i + 4..]
    };
    // A UUID (dashes, or underscores with systemd) or a static pod's 32-hex config hash.
    let uid: String = start
        .chars()
        .map(|c| if c == '_' { '-' } else { c })
        .collect();
    let hex = uid.chars().filter(|c| *c != '-').count();
    if hex >= 32 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        Some(uid.to_ascii_lowercase())
    } else {
        None
    }
}

/// The namespace inode of a `.../ns/net` link or a named namespace file.
pub fn netns_inode(path: &Path) -> std::io::Result<u64> {
    fs::metadata(path).map(|m| m.ino())
}

/// Scans `proc_root` (normally `/proc`) for pod processes. The namespace of PID 1 (the host's,
/// with `hostPID`) is never returned: hostNetwork pods share it and have nothing to capture.
pub fn scan_proc(proc_root: &Path) -> std::io::Result<Vec<Netns>> {
    let host = netns_inode(&proc_root.join("1/ns/net")).ok();
    let mut by_inode: BTreeMap<u64, (String, Vec<u32>)> = BTreeMap::new();
    for entry in fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        // Processes come and go while we scan: a vanished one is simply skipped.
        let Ok(cgroup) = fs::read_to_string(dir.join("cgroup")) else {
            continue;
        };
        let Some(uid) = pod_uid_from_cgroup(&cgroup) else {
            continue;
        };
        let Ok(inode) = netns_inode(&dir.join("ns/net")) else {
            continue;
        };
        if Some(inode) == host {
            continue;
        }
        let slot = by_inode.entry(inode).or_insert_with(|| (uid, Vec::new()));
        slot.1.push(pid);
    }
    Ok(by_inode
        .into_iter()
        .map(|(inode, (uid, mut pids))| {
            pids.sort_unstable();
            let path = proc_root.join(format!("{}/ns/net", pids[0]));
            Netns {
                path,
                inode,
                origin: NetnsOrigin::Pod { uid, pids },
            }
        })
        .collect())
}

/// Lists named namespaces in `dir` (e.g. `/var/run/netns`), de-duplicated by inode.
pub fn scan_named(dir: &Path) -> std::io::Result<Vec<Netns>> {
    let mut out: BTreeMap<u64, Netns> = BTreeMap::new();
    let mut entries: Vec<_> = fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(inode) = netns_inode(&path) else {
            continue;
        };
        out.entry(inode).or_insert(Netns {
            path,
            inode,
            origin: NetnsOrigin::Named { name },
        });
    }
    Ok(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_systemd() {
        let t = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b7f1e2a_90c1_4d2e_8a55_1f0c2b3d4e5f.slice/cri-containerd-0123abcd.scope\n";
        assert_eq!(
            pod_uid_from_cgroup(t).as_deref(),
            Some("6b7f1e2a-90c1-4d2e-8a55-1f0c2b3d4e5f")
        );
    }

    #[test]
    fn cgroup_v1_cgroupfs() {
        let t = "12:pids:/kubepods/besteffort/pod6b7f1e2a-90c1-4d2e-8a55-1f0c2b3d4e5f/0123abcd\n\
                 11:memory:/kubepods/besteffort/pod6b7f1e2a-90c1-4d2e-8a55-1f0c2b3d4e5f/0123abcd\n";
        assert_eq!(
            pod_uid_from_cgroup(t).as_deref(),
            Some("6b7f1e2a-90c1-4d2e-8a55-1f0c2b3d4e5f")
        );
    }

    #[test]
    fn guaranteed_qos_and_static_pod_hash() {
        let t = "0::/kubepods.slice/kubepods-pod0f3a9c1be2d44b1c9a8e7d6c5b4a3f21.slice/cri-containerd-x.scope\n";
        assert_eq!(
            pod_uid_from_cgroup(t).as_deref(),
            Some("0f3a9c1be2d44b1c9a8e7d6c5b4a3f21")
        );
    }

    #[test]
    fn not_a_pod() {
        assert_eq!(
            pod_uid_from_cgroup("0::/system.slice/containerd.service\n"),
            None
        );
        assert_eq!(
            pod_uid_from_cgroup("0::/kubepods.slice/kubepods-burstable.slice\n"),
            None
        );
        assert_eq!(
            pod_uid_from_cgroup("0::/user.slice/podman-1234.scope\n"),
            None
        );
    }

    #[test]
    fn scans_a_fake_proc() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Two processes of one pod share a namespace; a third is not a pod.
        let own_ns = std::fs::canonicalize("/proc/self/ns/net").ok();
        let Some(_) = own_ns else { return };
        for (pid, cgroup) in [
            (
                "10",
                "0::/kubepods/burstable/pod6b7f1e2a-90c1-4d2e-8a55-1f0c2b3d4e5f/a\n",
            ),
            (
                "11",
                "0::/kubepods/burstable/pod6b7f1e2a-90c1-4d2e-8a55-1f0c2b3d4e5f/b\n",
            ),
            ("12", "0::/system.slice/x.service\n"),
        ] {
            let p = root.join(pid);
            std::fs::create_dir_all(p.join("ns")).unwrap();
            std::fs::write(p.join("cgroup"), cgroup).unwrap();
            std::fs::write(p.join("ns/net"), "").unwrap();
            if pid == "11" {
                std::fs::remove_file(p.join("ns/net")).unwrap();
                std::os::unix::fs::symlink(root.join("10/ns/net"), p.join("ns/net")).unwrap();
            }
        }
        let found = scan_proc(root).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].origin,
            NetnsOrigin::Pod {
                uid: "6b7f1e2a-90c1-4d2e-8a55-1f0c2b3d4e5f".into(),
                pids: vec![10, 11]
            }
        );
        assert_eq!(found[0].path, root.join("10/ns/net"));
    }
}
