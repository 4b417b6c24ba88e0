//! [`ContainerRuntime`] over the Docker Engine API (bollard). The API version is negotiated, so
//! Engine 20.10 (API 1.41) and newer work, and so does Podman's Docker-compatible socket.

use super::{ContainerRuntime, ContainerSpec, Labelled, Output, RuntimeError, LABEL};
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;

/// The Docker Engine behind a unix socket (or TCP address).
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    socket: String,
}

impl DockerRuntime {
    /// Connects to `host` (`unix:///path` or a bare path, or `tcp://`), negotiating the API
    /// version. Fails with [`RuntimeError::Unreachable`] naming the socket.
    pub async fn connect(host: &str) -> Result<Self, RuntimeError> {
        let socket = host.trim_start_matches("unix://").to_owned();
        let unreachable = |reason: String| RuntimeError::Unreachable {
            socket: socket.clone(),
            reason,
        };
        let docker = if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION)
        } else {
            if !std::path::Path::new(&socket).exists() {
                return Err(unreachable("no such socket".into()));
            }
            Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let docker = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            docker.negotiate_version(),
        )
        .await
        .map_err(|_| unreachable("no answer within 10s".into()))?
        .map_err(|e| unreachable(short(&e)))?;
        Ok(Self { docker, socket })
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }
}

/// bollard's errors can be long; the first line is what a user needs.
fn short(e: &bollard::errors::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

fn container_err(op: &'static str, id: &str, e: &bollard::errors::Error) -> RuntimeError {
    RuntimeError::Container {
        op,
        id: id.to_owned(),
        reason: short(e),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Another remover (a concurrent `gc`, or a run's own teardown) got there first: the container
/// is going away, which is what the caller wanted.
fn is_removal_in_progress(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
            if message.contains("already in progress")
    )
}

/// The engine-level shape of a sealed guest: read-only root, no network, no capabilities, no
/// privilege gain, bounded memory and pids.
fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mounts = spec
        .binds
        .iter()
        .map(|b| Mount {
            target: Some(b.guest.clone()),
            source: Some(b.host.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(b.read_only),
            ..Default::default()
        })
        .collect();
    let host_config = HostConfig {
        readonly_rootfs: Some(true),
        network_mode: Some(if spec.network.is_empty() {
            "none".into()
        } else {
            spec.network.clone()
        }),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
        devices: (!spec.devices.is_empty()).then(|| {
            spec.devices
                .iter()
                .map(|d| bollard::models::DeviceMapping {
                    path_on_host: Some(d.clone()),
                    path_in_container: Some(d.clone()),
                    cgroup_permissions: Some("rwm".into()),
                })
                .collect()
        }),
        sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.clone().into_iter().collect()),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        privileged: Some(false),
        memory: Some(spec.memory_bytes),
        memory_swap: Some(spec.memory_bytes),
        pids_limit: Some(spec.pids),
        nano_cpus: (spec.nano_cpus > 0).then_some(spec.nano_cpus),
        tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.clone().into_iter().collect()),
        mounts: Some(mounts),
        init: Some(false),
        ipc_mode: Some("private".into()),
        // The guest's output reaches us through attach and is kept, capped, in
        // `stdout.log`/`stderr.log`; a second, uncapped copy in Docker's json-file log would
        // let a guest fill the engine's disk.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: Some(spec.entrypoint.clone()),
        cmd: Some(spec.cmd.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: Some(spec.user.clone()),
        working_dir: Some(spec.workdir.clone()),
        // Without it the engine names the UTS namespace after the container id, which no
        // /etc/hosts line knows: resolving it would be a DNS query out of the guest.
        hostname: (!spec.hostname.is_empty()).then(|| spec.hostname.clone()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        network_disabled: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

impl ContainerRuntime for DockerRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| RuntimeError::Unreachable {
                socket: self.socket.clone(),
                reason: short(&e),
            })
    }

    async fn image_exists(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(RuntimeError::Image {
                op: "inspect",
                image: image.to_owned(),
                reason: short(&e),
            }),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let opts = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let resp = self
            .docker
            .create_container(Some(opts), create_body(spec))
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    RuntimeError::ImageMissing {
                        image: spec.image.clone(),
                    }
                } else {
                    container_err("create", &spec.name, &e)
                }
            })?;
        Ok(resp.id)
    }

    async fn attach(
        &self,
        id: &str,
        out: tokio::sync::mpsc::Sender<Output>,
    ) -> Result<(), RuntimeError> {
        let opts = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            // Attached before start, so there is no earlier output to replay; and with the
            // `none` log driver (`create_body`) the engine refuses to replay logs at all,
            // ending the stream.
            .logs(false)
            .build();
        let mut attached = self
            .docker
            .attach_container(id, Some(opts))
            .await
            .map_err(|e| container_err("attach", id, &e))?;
        tokio::spawn(async move {
            use bollard::container::LogOutput;
            while let Some(Ok(chunk)) = attached.output.next().await {
                let msg = match chunk {
                    LogOutput::StdErr { message } => Output::Stderr(message.to_vec()),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        Output::Stdout(message.to_vec())
                    }
                    LogOutput::StdIn { .. } => continue,
                };
                if out.send(msg).await.is_err() {
                    break;
                }
            }
        });
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| container_err("start", id, &e))
    }

    async fn init_pid(&self, id: &str) -> Result<i32, RuntimeError> {
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| container_err("inspect", id, &e))?;
        info.state
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .map(|p| p as i32)
            .ok_or_else(|| RuntimeError::Container {
                op: "inspect",
                id: id.to_owned(),
                reason: "container is not running".into(),
            })
    }

    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut stream = self.docker.wait_container(id, Some(opts));
        match stream.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(container_err("wait", id, &e)),
            None => Err(RuntimeError::Container {
                op: "wait",
                id: id.to_owned(),
                reason: "engine closed the wait stream".into(),
            }),
        }
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let opts = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self.docker.kill_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // 409: not running any more, which is what we wanted.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(container_err("kill", id, &e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) || is_removal_in_progress(&e) => Ok(()),
            Err(e) => Err(container_err("remove", id, &e)),
        }
    }

    async fn list_labelled(&self) -> Result<Vec<Labelled>, RuntimeError> {
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_owned(), vec![LABEL.to_owned()])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self.docker.list_containers(Some(opts)).await.map_err(|e| {
            RuntimeError::Unreachable {
                socket: self.socket.clone(),
                reason: short(&e),
            }
        })?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                Some(Labelled {
                    running: c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
                    id: c.id?,
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                })
            })
            .collect())
    }
}
