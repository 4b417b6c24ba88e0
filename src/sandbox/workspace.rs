//! The guest's `/tmp/workspace`: a tmpfs of its own, sized by `--workspace-size`, made by the
//! engine in the container's mount namespace, reached from the host through a directory fd,
//! and copied out (neutralised) to `RUN_DIR/workspace` at the end.
//!
//! Why a tmpfs: the workspace is the one place the guest writes, and without a limit of its own
//! it could fill the filesystem that holds the audit log. A tmpfs has a hard size and needs no
//! loop device or quota support; its pages are charged to the memory cgroup of the process
//! that writes them, the guest's, so `--memory` bounds it as well.
//!
//! Why the engine mounts it (not idagent on the host): idagent may run in a mount namespace of
//! its own (`ip netns exec`, a CI container) whose new mounts the engine never sees. The host
//! side is one fd, opened through `/proc/<init>/root` while only our parked init runs in the
//! guest; the fd keeps the tmpfs alive after the container's namespaces are gone, so the
//! watcher's final scan and the export walk the same tree after the guest has exited.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Docker's mount flags for the workspace tmpfs: programs the guest writes may run (a build's
/// output, a seeded tool), nothing there gains privileges (`nosuid`) or reaches devices.
const TMPFS_FLAGS: &str = "rw,exec,nosuid,nodev";

/// The `HostConfig.Tmpfs` options for a workspace of `bytes`, owned by `uid:gid`.
pub fn tmpfs_options(bytes: u64, uid: u32, gid: u32) -> String {
    format!("{TMPFS_FLAGS},size={bytes},mode=0755,uid={uid},gid={gid}")
}

/// The guest's workspace, held open; [`Workspace::finish`] exports it.
#[derive(Debug)]
pub struct Workspace {
    root: OwnedFd,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("open the guest's workspace through {path}: {source}")]
    Open { path: PathBuf, source: nix::Error },
    #[error("the guest's {0} is not the tmpfs idagent asked the engine for")]
    NotTmpfs(&'static str),
    #[error("seed the workspace from {seed}: {source}{hint}")]
    Seed {
        seed: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
}

impl Workspace {
    /// Opens the workspace of the container whose init is `init_host_pid`. Call it while init
    /// is parked before `GO`: nothing of the guest's can have changed the path yet.
    pub fn open(init_host_pid: i32) -> Result<Self, WorkspaceError> {
        use nix::fcntl::OFlag;
        let path = PathBuf::from(format!(
            "/proc/{init_host_pid}/root{}",
            crate::GUEST_WORKSPACE
        ));
        let root = nix::fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|source| WorkspaceError::Open { path, source })?;
        let fs = nix::sys::statfs::fstatfs(&root).map_err(|source| WorkspaceError::Open {
            path: PathBuf::from(crate::GUEST_WORKSPACE),
            source,
        })?;
        if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
            return Err(WorkspaceError::NotTmpfs(crate::GUEST_WORKSPACE));
        }
        let path = PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd()));
        Ok(Self { root, path })
    }

    /// The host's path to the workspace (through our fd), valid while `self` lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies `seed` in, every entry owned by `uid:gid` (the guest user); a seed larger than
    /// the tmpfs is a clear error, not a half-seeded run. The root stays the tmpfs's own
    /// (its `uid`/`gid` mount options).
    pub fn seed(&self, seed: &Path, uid: u32, gid: u32) -> Result<(), WorkspaceError> {
        let started = std::time::Instant::now();
        let seeded = super::files::seed_tree(seed, &self.root, uid, gid).map_err(|source| {
            WorkspaceError::Seed {
                seed: seed.to_owned(),
                hint: if source.raw_os_error() == Some(libc::ENOSPC) {
                    " (the seed is larger than --workspace-size)"
                } else {
                    ""
                },
                source,
            }
        })?;
        tracing::info!(
            seed.files = seeded.files,
            seed.dirs = seeded.dirs,
            seed.links = seeded.links,
            seed.bytes = seeded.bytes,
            seed.ms = started.elapsed().as_millis() as u64,
            "workspace seeded"
        );
        Ok(())
    }

    /// Exports the workspace to `dst` (neutralised: see `fswatch::export`) and lets the tmpfs
    /// go. Returns what could not be done, for a notice.
    pub fn finish(
        self,
        dst: &Path,
        sink: &crate::audit::AuditSink,
        deadline: std::time::Instant,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = crate::fswatch::export::export(&self.path, dst, sink, deadline) {
            problems.push(format!("export the workspace to {}: {e}", dst.display()));
        }
        drop(self.root);
        problems
    }
}
