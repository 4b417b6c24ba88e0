//! The container engine behind a narrow trait.
//!
//! Owns: the [`ContainerSpec`] (what a sealed guest container is, as plain data) and the
//! [`ContainerRuntime`] trait the sandbox drives. The real implementation is
//! [`docker::DockerRuntime`] (bollard, Docker Engine API; Podman's compatible socket works);
//! lifecycle logic is unit-tested against a fake. Does not own: networking inside the
//! container (see `netns`) or what runs in it.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub mod docker;

/// Label put on every container idagent creates; `idagent gc` reaps by it.
pub const LABEL: &str = "idagent";
/// Label with the run id.
pub const LABEL_RUN: &str = "idagent.run";
/// Label with the host pid of the idagent process that owns the container.
pub const LABEL_OWNER_PID: &str = "idagent.owner-pid";

/// A bind mount into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// Everything that defines a sealed guest container, independent of the engine.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint (idagent's guest init).
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: String,
    pub workdir: String,
    pub binds: Vec<Bind>,
    pub memory_bytes: i64,
    pub pids: i64,
    /// CPU limit in billionths of a CPU (Docker's NanoCpus); 0 means none.
    pub nano_cpus: i64,
    /// tmpfs mounts the engine makes in the container: guest path → mount options.
    pub tmpfs: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// The UTS hostname (`hostname` in the guest); it must match the bound `/etc/hostname`
    /// and the `/etc/hosts` line, so resolving it is answered locally. Empty: the engine's.
    pub hostname: String,
    /// Docker's network mode: `none` for a sealed guest; a network name, or
    /// `container:<id>` to join another container's namespace (the pod topology).
    pub network: String,
    /// Capabilities added back after dropping all (net-init's `NET_ADMIN`; nothing else).
    pub cap_add: Vec<String>,
    /// Host devices given to the container, same path inside (`/dev/net/tun`).
    pub devices: Vec<String>,
    /// Namespaced sysctls set at creation (a pod holder's IPv6 switch).
    pub sysctls: BTreeMap<String, String>,
}

/// A container created by idagent, as listed by the engine.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// The engine says it is running.
    pub running: bool,
}

/// The label naming a pod container's part (`holder`, `proxy`, `agent`, …).
pub const LABEL_POD_ROLE: &str = "idagent.pod-role";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach the Docker Engine at {socket}: {reason}")]
    Unreachable { socket: String, reason: String },
    #[error("image {image} not found")]
    ImageMissing { image: String },
    #[error("{op} container {id}: {reason}")]
    Container {
        op: &'static str,
        id: String,
        reason: String,
    },
    #[error("{op} image {image}: {reason}")]
    Image {
        op: &'static str,
        image: String,
        reason: String,
    },
}

/// Output chunk from the guest's stdout or stderr.
#[derive(Debug, Clone)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// The operations the sandbox needs from a container engine, and no more.
#[allow(async_fn_in_trait)] // used with concrete types only (generic sandbox), never as dyn
pub trait ContainerRuntime {
    async fn ping(&self) -> Result<(), RuntimeError>;
    async fn image_exists(&self, image: &str) -> Result<bool, RuntimeError>;
    /// Creates the container (not started) and returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    /// Streams the container's output to `out` until it ends. Call before `start`.
    async fn attach(
        &self,
        id: &str,
        out: tokio::sync::mpsc::Sender<Output>,
    ) -> Result<(), RuntimeError>;
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Host pid of the container's PID 1.
    async fn init_pid(&self, id: &str) -> Result<i32, RuntimeError>;
    /// Waits for the container to stop and returns its exit code.
    async fn wait(&self, id: &str) -> Result<i64, RuntimeError>;
    async fn kill(&self, id: &str) -> Result<(), RuntimeError>;
    /// Force-removes the container; a container already gone is not an error.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Every container (running or not) carrying [`LABEL`].
    async fn list_labelled(&self) -> Result<Vec<Labelled>, RuntimeError>;
}

/// Reaps containers whose owning idagent process is gone (or all of them with `all`).
/// Returns the ids removed.
///
/// A pod whose agent or proxy still runs is not a leftover, even with its orchestrator gone:
/// the proxy is idagent too and is still writing the run's log (as a kubelet's death does not
/// stop its pods). It is reaped once both have ended.
pub async fn gc<R: ContainerRuntime>(rt: &R, all: bool) -> Result<Vec<String>, RuntimeError> {
    let mut removed = Vec::new();
    let listed = rt.list_labelled().await?;
    let working_pods: std::collections::BTreeSet<&str> = listed
        .iter()
        .filter(|c| {
            c.running
                && c.labels
                    .get(LABEL_POD_ROLE)
                    .is_some_and(|r| r == "agent" || r == "proxy")
        })
        .filter_map(|c| c.labels.get(LABEL_RUN).map(String::as_str))
        .collect();
    for c in &listed {
        let owner_alive = c
            .labels
            .get(LABEL_OWNER_PID)
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(process_is_idagent);
        let working = c
            .labels
            .get(LABEL_RUN)
            .is_some_and(|r| working_pods.contains(r.as_str()));
        if all || (!owner_alive && !working) {
            rt.remove(&c.id).await?;
            removed.push(c.id.clone());
        }
    }
    Ok(removed)
}

/// Whether `pid` is a live idagent process (a recycled pid running something else is not).
pub fn process_is_idagent(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| comm.trim_end().starts_with("idagent"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An engine that only lists and removes: enough for `gc`'s decisions.
    #[derive(Default)]
    struct FakeRuntime {
        containers: Mutex<Vec<Labelled>>,
    }

    impl FakeRuntime {
        fn with(owners: &[Option<&str>]) -> Self {
            let containers = owners
                .iter()
                .enumerate()
                .map(|(i, owner)| {
                    let mut labels = BTreeMap::from([(LABEL.to_owned(), "1".to_owned())]);
                    if let Some(o) = owner {
                        labels.insert(LABEL_OWNER_PID.to_owned(), (*o).to_owned());
                    }
                    Labelled {
                        id: format!("c{i}"),
                        labels,
                        running: false,
                    }
                })
                .collect();
            Self {
                containers: Mutex::new(containers),
            }
        }
        fn ids(&self) -> Vec<String> {
            let list = self.containers.lock().expect("lock");
            list.iter().map(|c| c.id.clone()).collect()
        }
    }

    impl ContainerRuntime for FakeRuntime {
        async fn ping(&self) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn image_exists(&self, _: &str) -> Result<bool, RuntimeError> {
            Ok(true)
        }
        async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
            Ok(spec.name.clone())
        }
        async fn attach(
            &self,
            _: &str,
            _: tokio::sync::mpsc::Sender<Output>,
        ) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn start(&self, _: &str) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn init_pid(&self, _: &str) -> Result<i32, RuntimeError> {
            Ok(1)
        }
        async fn wait(&self, _: &str) -> Result<i64, RuntimeError> {
            Ok(0)
        }
        async fn kill(&self, _: &str) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
            self.containers.lock().expect("lock").retain(|c| c.id != id);
            Ok(())
        }
        async fn list_labelled(&self) -> Result<Vec<Labelled>, RuntimeError> {
            Ok(self.containers.lock().expect("lock").clone())
        }
    }

    #[tokio::test]
    async fn gc_keeps_live_runs_and_reaps_the_rest() {
        // Owners that are not a live idagent process — pid 1 (init), no label, garbage, a pid
        // that cannot exist — all mean a dead run. (Live owners are covered end to end: the
        // e2e tests run `idagent gc` while other runs are alive.)
        let rt = FakeRuntime::with(&[Some("1"), None, Some("not-a-pid"), Some("999999999")]);
        let removed = gc(&rt, false).await.expect("gc");
        assert_eq!(removed.len(), 4);
        assert!(rt.ids().is_empty());
    }

    /// A pod whose orchestrator died but whose agent runs is still being recorded by its proxy:
    /// kept whole until its agent has ended, then reaped whole.
    #[tokio::test]
    async fn gc_keeps_a_pod_whose_agent_still_runs() {
        let pod = |run: &str, role: &str, running: bool| Labelled {
            id: format!("{run}-{role}"),
            labels: BTreeMap::from([
                (LABEL.to_owned(), "1".to_owned()),
                (LABEL_RUN.to_owned(), run.to_owned()),
                (LABEL_OWNER_PID.to_owned(), "999999999".to_owned()),
                (LABEL_POD_ROLE.to_owned(), role.to_owned()),
            ]),
            running,
        };
        let rt = FakeRuntime {
            containers: Mutex::new(vec![
                pod("a", "holder", true),
                pod("a", "proxy", true),
                pod("a", "agent", true),
                pod("b", "holder", true),
                pod("b", "proxy", false),
                pod("b", "agent", false),
                // The agent is done and the proxy is finishing the log.
                pod("c", "proxy", true),
                pod("c", "agent", false),
            ]),
        };
        let removed = gc(&rt, false).await.expect("gc");
        assert_eq!(removed, ["b-holder", "b-proxy", "b-agent"]);
        assert_eq!(
            rt.ids(),
            ["a-holder", "a-proxy", "a-agent", "c-proxy", "c-agent"]
        );
    }

    #[tokio::test]
    async fn gc_all_reaps_everything() {
        let rt = FakeRuntime::with(&[Some("1"), Some("2")]);
        assert_eq!(gc(&rt, true).await.expect("gc").len(), 2);
    }

    #[test]
    fn only_idagent_processes_count_as_owners() {
        assert!(!process_is_idagent(1), "pid 1 is not idagent");
        assert!(!process_is_idagent(i32::MAX));
    }
}
