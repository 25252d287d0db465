//! [`DockerCompute`]: the Compute port on a Docker Engine.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    HostConfigLogConfig, Mount, MountType, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListVolumesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use runvoy_compute_local::{Bus, parse_records};
use runvoy_domain::ports::{Compute, ComputeError, ComputeExit, ComputeState, LogSource};
use runvoy_domain::{ExitInfo, ImageSpec, JobSpec, LogRecord, valid_execution_id};
use runvoy_proto::record::env;

/// Label on everything this adapter creates.
pub(crate) const MANAGED_LABEL: &str = "runvoy.managed";
/// Label naming the runvoyd instance (data dir) that owns the object: several instances may
/// share one engine, and each lists, resumes and cleans only its own.
pub(crate) const INSTANCE_LABEL: &str = "runvoy.instance";
/// Label carrying the runvoy execution id.
pub(crate) const EXECUTION_LABEL: &str = "runvoy.execution";
/// Label saying which of the two containers it is.
const ROLE_LABEL: &str = "runvoy.role";
const WORKSPACE: &str = "/workspace";
/// Where the sidecar finds its input (environment, standard input) in its own file system.
const INPUT_DIR: &str = "run/runvoy-input";
/// Failure reason when a kill came before the command started.
const STOPPED_BEFORE_START: &str = "stopped before the command started";

/// Settings of the Docker compute.
#[derive(Debug, Clone)]
pub struct DockerComputeConfig {
    /// The engine's address: `unix:///var/run/docker.sock`, `tcp://HOST:PORT`, `http://…`.
    pub host: String,
    /// The runvoy-sidecar image (holds the static sidecar and runner).
    pub sidecar_image: String,
    /// Path of the static runner inside the sidecar image.
    pub sidecar_runner_path: String,
    /// Names this runvoyd's objects apart from other instances' on the same engine.
    pub instance: String,
    /// Network of runner containers (`none`: no network at all).
    pub network: String,
    /// Memory limit of a run that sets none (MiB; `None`: unlimited).
    pub memory_mb: Option<u64>,
    /// CPU of a run that sets none (thousandths of a core).
    pub cpu_millis: Option<u64>,
    /// Processes and threads of a run that sets none.
    pub pids: Option<u64>,
    /// Size of the in-memory `/tmp` of runner containers (MiB).
    pub tmp_mb: u64,
    /// Mount the runner's root file system read-only (the workspace and `/tmp` stay writable).
    pub read_only_root: bool,
    /// Try to pull an image registered but not present on the engine.
    pub pull: bool,
}

/// Docker compute.
pub struct DockerCompute {
    pub(crate) cfg: DockerComputeConfig,
    pub(crate) docker: Docker,
    pub(crate) bus: Bus,
    /// Executions whose record stream this process follows.
    pub(crate) following: Arc<Mutex<HashSet<String>>>,
    starting: tokio::sync::Mutex<()>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ComputeError {
    ComputeError::Unavailable(format!("docker: {what}: {e}"))
}

pub(crate) fn is_status(e: &DockerError, code: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// The container's exit code, when it ended.
pub(crate) fn exited(c: &ContainerInspectResponse) -> Option<i64> {
    let st = c.state.as_ref()?;
    matches!(
        st.status,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
    )
    .then(|| st.exit_code.unwrap_or(-1))
}

fn status_of(c: &ContainerInspectResponse) -> ContainerStateStatusEnum {
    c.state
        .as_ref()
        .and_then(|s| s.status)
        .unwrap_or(ContainerStateStatusEnum::EMPTY)
}

impl DockerCompute {
    /// Connects to the engine at `cfg.host`, negotiating the API version, and checks that it
    /// answers and has the sidecar image.
    pub async fn connect(cfg: DockerComputeConfig, bus: Bus) -> Result<DockerCompute, String> {
        let docker = if cfg.host.starts_with('/') {
            Docker::connect_with_unix(&cfg.host, 120, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_host(&cfg.host)
        }
        .map_err(|e| format!("cannot use Docker host {}: {e}", cfg.host))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| format!("the Docker engine at {} does not answer: {e}", cfg.host))?;
        docker
            .ping()
            .await
            .map_err(|e| format!("the Docker engine at {} does not answer: {e}", cfg.host))?;
        match docker.inspect_image(&cfg.sidecar_image).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {
                return Err(format!(
                    "the sidecar image {} is not on the Docker engine (build it with `make \
                     images`, or `docker pull` it)",
                    cfg.sidecar_image
                ));
            }
            Err(e) => return Err(format!("inspecting {}: {e}", cfg.sidecar_image)),
        }
        tracing::info!(host = %cfg.host, sidecar = %cfg.sidecar_image, network = %cfg.network,
            "compute on the Docker engine");
        Ok(DockerCompute {
            cfg,
            docker,
            bus,
            following: Arc::default(),
            starting: tokio::sync::Mutex::new(()),
        })
    }

    /// The engine's containers of this compute as a record source.
    pub fn log_source(&self) -> DockerLogSource {
        DockerLogSource {
            docker: self.docker.clone(),
            instance: self.cfg.instance.clone(),
        }
    }

    pub(crate) fn volume(&self, id: &str) -> String {
        format!("runvoy-{}-{id}", self.cfg.instance)
    }

    pub(crate) fn sidecar(&self, id: &str) -> String {
        format!("runvoy-{}-{id}-sidecar", self.cfg.instance)
    }

    pub(crate) fn runner(&self, id: &str) -> String {
        container_name(&self.cfg.instance, id)
    }

    fn labels(&self, id: &str, role: Option<&str>) -> HashMap<String, String> {
        let mut l = HashMap::from([
            (MANAGED_LABEL.to_owned(), "true".to_owned()),
            (INSTANCE_LABEL.to_owned(), self.cfg.instance.clone()),
            (EXECUTION_LABEL.to_owned(), id.to_owned()),
        ]);
        if let Some(r) = role {
            l.insert(ROLE_LABEL.to_owned(), r.to_owned());
        }
        l
    }

    pub(crate) async fn inspect(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, ComputeError> {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(unavailable(&format!("inspecting {name}"), e)),
        }
    }

    /// Whether the image is on the engine; when it is not and pulling is on, tries to pull it.
    async fn ensure_image(&self, image: &str) -> Result<(), ComputeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(unavailable(&format!("inspecting image {image}"), e)),
        }
        let missing = |why: String| {
            ComputeError::Rejected(format!(
                "image {image} is not present on the Docker engine{why}; `docker pull` or \
                 `docker load` it there first"
            ))
        };
        if !self.cfg.pull {
            return Err(missing(String::new()));
        }
        let opts = bollard::query_parameters::CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut pull = self.docker.create_image(Some(opts), None, None);
        let pulled = tokio::time::timeout(std::time::Duration::from_secs(300), async {
            while let Some(step) = pull.next().await {
                step?;
            }
            Ok::<_, DockerError>(())
        })
        .await;
        match pulled {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(missing(format!(" and pulling it failed ({e})"))),
            Err(_) => Err(missing(
                " and pulling it did not finish in 5 minutes".into(),
            )),
        }
    }

    fn validate(&self, spec: &JobSpec) -> Result<(), ComputeError> {
        let reject = |m: String| Err(ComputeError::Rejected(m));
        if !valid_execution_id(&spec.execution_id) {
            return reject(format!("invalid execution id {:?}", spec.execution_id));
        }
        if spec.image.trim().is_empty() {
            return reject(
                "a run on Docker compute needs an image: register one (runvoy images register \
                 IMAGE --default) or name one with -i"
                    .into(),
            );
        }
        if let Some(name) = spec.env.keys().find(|n| n.starts_with("RUNVOY_")) {
            return reject(format!("{name} is reserved for runvoy's own settings"));
        }
        if spec.resources.workspace_mb.is_some() {
            return reject(
                "a workspace size cannot be set on Docker compute (a volume on the engine's \
                 disk has no size limit)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The runner's settings (never the run's own environment, which travels to the sidecar
    /// as a file).
    fn runner_env(&self, spec: &JobSpec) -> Vec<String> {
        let mut vars = spec.runner_settings();
        vars.extend([
            (env::WORKDIR, WORKSPACE.to_owned()),
            (env::ENV_FILE, format!("{WORKSPACE}/.env")),
            ("HOME", WORKSPACE.to_owned()),
        ]);
        if spec.stdin.is_some() {
            vars.push((env::STDIN_FILE, ".runvoy/stdin".to_owned()));
        }
        vars.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
    }

    fn workspace_mount(&self, id: &str) -> Vec<Mount> {
        vec![Mount {
            target: Some(WORKSPACE.to_owned()),
            source: Some(self.volume(id)),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            ..Default::default()
        }]
    }

    /// The runner container: the registered image, no network (unless configured), every
    /// capability dropped, no new privileges, the engine's default seccomp profile, limits.
    fn runner_body(&self, spec: &JobSpec) -> ContainerCreateBody {
        let r = &spec.resources;
        let memory = r.memory_mb.or(self.cfg.memory_mb).map(|m| (m << 20) as i64);
        let cpu = r.cpu_millis.or(self.cfg.cpu_millis);
        let pids = r.pids.or(self.cfg.pids);
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(vec![format!("{WORKSPACE}/.runvoy/runvoy-runner")]),
            cmd: Some(Vec::new()),
            env: Some(self.runner_env(spec)),
            working_dir: Some(WORKSPACE.to_owned()),
            labels: Some(self.labels(&spec.execution_id, Some("runner"))),
            // The runner turns SIGTERM into a graceful stop of the command.
            stop_signal: Some("SIGTERM".to_owned()),
            stop_timeout: Some(spec.kill_grace_secs as i64 + 5),
            network_disabled: Some(self.cfg.network == "none"),
            host_config: Some(HostConfig {
                mounts: Some(self.workspace_mount(&spec.execution_id)),
                network_mode: Some(self.cfg.network.clone()),
                memory,
                // No swap beyond the memory limit: a run over it is OOM-killed, not slowed.
                memory_swap: memory,
                nano_cpus: cpu.map(|c| (c * 1_000_000) as i64),
                pids_limit: pids.map(|p| p as i64),
                readonly_rootfs: Some(self.cfg.read_only_root),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_owned(),
                    format!("rw,nosuid,nodev,size={}m", self.cfg.tmp_mb.max(1)),
                )])),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                log_config: Some(kept_log()),
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sidecar_body(&self, spec: &JobSpec) -> ContainerCreateBody {
        let mut cmd = vec![
            "--workspace".to_owned(),
            WORKSPACE.to_owned(),
            "--runner-binary".to_owned(),
            self.cfg.sidecar_runner_path.clone(),
            "--env-json".to_owned(),
            format!("/{INPUT_DIR}/env.json"),
        ];
        if spec.stdin.is_some() {
            cmd.extend(["--stdin-file".to_owned(), format!("/{INPUT_DIR}/stdin")]);
        }
        // Who the runner container runs as is known only once it exists: the owner file comes
        // with the input (empty for root).
        cmd.extend(["--owner-file".to_owned(), format!("/{INPUT_DIR}/owner")]);
        // A sidecar that clones needs a network: the runners' one, or the engine's default
        // bridge when runners have none. Without a checkout it has none at all.
        let network = match (&spec.git, self.cfg.network.as_str()) {
            (None, _) => "none",
            (Some(_), "none") => "bridge",
            (Some(_), n) => n,
        };
        let env: Vec<String> = spec
            .sidecar_settings()
            .into_iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        ContainerCreateBody {
            image: Some(self.cfg.sidecar_image.clone()),
            cmd: Some(cmd),
            env: (!env.is_empty()).then_some(env),
            labels: Some(self.labels(&spec.execution_id, Some("sidecar"))),
            network_disabled: Some(network == "none"),
            host_config: Some(HostConfig {
                mounts: Some(self.workspace_mount(&spec.execution_id)),
                network_mode: Some(network.to_owned()),
                // Root in the sidecar writes into a root-owned volume, then hands the workspace
                // over to the image's user (CHOWN); nothing else is needed.
                cap_drop: Some(vec!["ALL".to_owned()]),
                cap_add: Some(vec!["CHOWN".to_owned()]),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                pids_limit: Some(64),
                log_config: Some(kept_log()),
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The sidecar's input as a tar archive: the environment (and standard input), 0600.
    fn input_archive(spec: &JobSpec, owner: Option<(u32, u32)>) -> std::io::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        let env = serde_json::to_vec(&spec.env).map_err(std::io::Error::other)?;
        let owner = owner
            .map(|(u, g)| format!("{u}:{g}"))
            .unwrap_or_default()
            .into_bytes();
        let mut files = vec![("env.json", env), ("owner", owner)];
        if let Some(stdin) = &spec.stdin {
            files.push(("stdin", stdin.clone()));
        }
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o700);
        dir.set_size(0);
        tar.append_data(&mut dir, INPUT_DIR, std::io::empty())?;
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o600);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, format!("{INPUT_DIR}/{name}"), data.as_slice())?;
        }
        tar.into_inner()
    }

    async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<bool, ComputeError> {
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        match self.docker.create_container(Some(opts), body).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) if is_status(&e, 404) => Err(ComputeError::Rejected(format!(
                "creating {name}: {e}; the image is not on the Docker engine"
            ))),
            Err(e) => Err(unavailable(&format!("creating {name}"), e)),
        }
    }

    /// Removes whatever exists of an execution (force: also a running container). Returns
    /// whether something was removed.
    async fn remove_all(&self, id: &str) -> Result<bool, ComputeError> {
        let mut removed = false;
        for name in [self.runner(id), self.sidecar(id)] {
            let opts = RemoveContainerOptionsBuilder::default().force(true).build();
            match self.docker.remove_container(&name, Some(opts)).await {
                Ok(()) => removed = true,
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(unavailable(&format!("removing {name}"), e)),
            }
        }
        // Not forced: the engine answers a forced removal of a missing volume with success,
        // and whether anything was removed must stay true (the containers using it are gone).
        let opts = RemoveVolumeOptionsBuilder::default().force(false).build();
        match self
            .docker
            .remove_volume(&self.volume(id), Some(opts))
            .await
        {
            Ok(()) => removed = true,
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(unavailable(&format!("removing {}", self.volume(id)), e)),
        }
        Ok(removed)
    }

    /// The uid and gid the runner container runs as (its image's `USER`), when not root: the
    /// sidecar hands the workspace over to them, so a non-root image can use it. Names are
    /// looked up in the image's own `/etc/passwd` and `/etc/group`, as the engine does.
    async fn runner_owner(&self, runner: &str) -> Result<Option<(u32, u32)>, ComputeError> {
        let user = self
            .inspect(runner)
            .await?
            .and_then(|c| c.config)
            .and_then(|c| c.user)
            .unwrap_or_default();
        let (u, g) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        if u.is_empty() || u == "root" || u == "0" {
            return Ok(None);
        }
        let passwd = match (u.parse::<u32>(), g) {
            (Ok(_), Some(_)) => String::new(),
            _ => self.image_file(runner, "/etc/passwd").await?,
        };
        let (uid, primary) = match u.parse::<u32>() {
            Ok(uid) => (
                uid,
                id_entry(&passwd, |e| e[2] == u).map(|e| e[3].to_owned()),
            ),
            Err(_) => match id_entry(&passwd, |e| e[0] == u) {
                Some(e) => (
                    e[2].parse().map_err(|_| bad_user(&user))?,
                    Some(e[3].to_owned()),
                ),
                None => {
                    return Err(ComputeError::Rejected(format!(
                        "the image runs as user {u:?}, which its /etc/passwd does not have"
                    )));
                }
            },
        };
        let gid = match g.map(str::to_owned).or(primary) {
            None => 0,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    let group = self.image_file(runner, "/etc/group").await?;
                    id_entry(&group, |e| e[0] == g)
                        .and_then(|e| e[2].parse().ok())
                        .ok_or_else(|| {
                            ComputeError::Rejected(format!(
                                "the image runs as group {g:?}, which its /etc/group does not have"
                            ))
                        })?
                }
            },
        };
        Ok((uid != 0).then_some((uid, gid)))
    }

    /// A text file of a created container's file system (empty when it has none).
    async fn image_file(&self, container: &str, path: &str) -> Result<String, ComputeError> {
        let opts = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self.docker.download_from_container(container, Some(opts));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => archive.extend_from_slice(&b),
                Err(e) if is_status(&e, 404) => return Ok(String::new()),
                Err(e) => return Err(unavailable(&format!("reading {path} of the image"), e)),
            }
        }
        let mut text = String::new();
        let mut tar = tar::Archive::new(archive.as_slice());
        if let Some(Ok(mut entry)) = tar
            .entries()
            .map_err(|e| unavailable(&format!("reading {path} of the image"), e))?
            .next()
        {
            use std::io::Read;
            // At most 1 MiB: a user database, not a payload.
            let _ = (&mut entry).take(1 << 20).read_to_string(&mut text);
        }
        Ok(text)
    }

    async fn start_inner(&self, spec: &JobSpec) -> Result<(), ComputeError> {
        let id = &spec.execution_id;
        let _one_at_a_time = self.starting.lock().await;
        if self.inspect(&self.runner(id)).await?.is_some() {
            // Already started: start is idempotent.
            self.watch(id, 0);
            return Ok(());
        }
        self.ensure_image(&spec.image).await?;
        let volume = VolumeCreateRequest {
            name: Some(self.volume(id)),
            labels: Some(self.labels(id, None)),
            ..Default::default()
        };
        self.docker
            .create_volume(volume)
            .await
            .map_err(|e| unavailable("creating the workspace volume", e))?;
        // The sidecar first: a runner container without one would never start.
        self.create(&self.sidecar(id), self.sidecar_body(spec))
            .await?;
        self.create(&self.runner(id), self.runner_body(spec))
            .await?;
        let owner = self.runner_owner(&self.runner(id)).await?;
        let input =
            Self::input_archive(spec, owner).map_err(|e| unavailable("packing the input", e))?;
        let opts = UploadToContainerOptionsBuilder::default().path("/").build();
        self.docker
            .upload_to_container(
                &self.sidecar(id),
                Some(opts),
                bollard::body_full(input.into()),
            )
            .await
            .map_err(|e| unavailable("copying the input to the sidecar", e))?;
        match self.docker.start_container(&self.sidecar(id), None).await {
            Ok(()) => {}
            Err(e) if is_status(&e, 304) => {}
            Err(e) => return Err(unavailable("starting the sidecar", e)),
        }
        self.watch(id, 0);
        Ok(())
    }

    /// Follows an execution (idempotent): starts its runner once the sidecar succeeded and
    /// publishes the runner's records after `after_seq` on the bus. Used at start and to
    /// resume after a restart.
    pub fn watch(self: &DockerCompute, id: &str, after_seq: u64) {
        if !self
            .following
            .lock()
            .expect("following")
            .insert(id.to_owned())
        {
            return;
        }
        let f = crate::follow::Follower {
            docker: self.docker.clone(),
            bus: self.bus.clone(),
            id: id.to_owned(),
            sidecar: self.sidecar(id),
            runner: self.runner(id),
        };
        let following = self.following.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            f.run(after_seq).await;
            following.lock().expect("following").remove(&id);
        });
    }

    /// Ids of every execution this instance has anything of on the engine (containers or a
    /// volume), for resuming and cleaning up after a restart.
    async fn ids(&self) -> Result<Vec<String>, ComputeError> {
        let filter = HashMap::from([(
            "label",
            vec![format!("{INSTANCE_LABEL}={}", self.cfg.instance)],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filter)
            .build();
        let containers = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| unavailable("listing containers", e))?;
        let opts = ListVolumesOptionsBuilder::default()
            .filters(&filter)
            .build();
        let volumes = self
            .docker
            .list_volumes(Some(opts))
            .await
            .map_err(|e| unavailable("listing volumes", e))?;
        let mut ids: Vec<String> = containers
            .into_iter()
            .filter_map(|c| c.labels?.get(EXECUTION_LABEL).cloned())
            .chain(
                volumes
                    .volumes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|v| v.labels.get(EXECUTION_LABEL).cloned()),
            )
            .filter(|id| valid_execution_id(id))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// After a restart: resumes following every execution in `unsettled` (from the seq after
    /// which its stored records are contiguous), and removes what a crash left of executions
    /// `known` does not know (created on the engine, never recorded). Returns how many
    /// leftovers were removed.
    pub async fn recover(
        &self,
        unsettled: &[(String, u64)],
        known: impl Fn(&str) -> bool,
    ) -> Result<usize, ComputeError> {
        for (id, after) in unsettled {
            self.watch(id, *after);
        }
        let live: HashSet<&str> = unsettled.iter().map(|(id, _)| id.as_str()).collect();
        let mut removed = 0;
        for id in self.ids().await? {
            if live.contains(id.as_str()) || known(&id) {
                continue;
            }
            tracing::warn!(execution_id = %id, "removing a leftover of an execution the store has no record of");
            if self.remove_all(&id).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Name of an execution's runner container.
pub(crate) fn container_name(instance: &str, id: &str) -> String {
    format!("runvoy-{instance}-{id}-runner")
}

/// The last line of a container's output on one stream (for failure messages).
async fn last_line(docker: &Docker, name: &str, stdout: bool) -> String {
    let opts = LogsOptionsBuilder::default()
        .stdout(stdout)
        .stderr(!stdout)
        .tail("20")
        .build();
    let mut s = docker.logs(name, Some(opts));
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = s.next().await {
        out.extend_from_slice(&chunk.into_bytes());
    }
    String::from_utf8_lossy(&out)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned()
}

/// Reads the runner's stdout (everything the engine kept) and parses it.
pub(crate) async fn read_runner_records(
    docker: &Docker,
    name: &str,
    after_seq: u64,
    tail: Option<&str>,
) -> Result<(Vec<LogRecord>, Option<ExitInfo>), DockerError> {
    let mut b = LogsOptionsBuilder::default().stdout(true).stderr(false);
    if let Some(t) = tail {
        b = b.tail(t);
    }
    let mut s = docker.logs(name, Some(b.build()));
    let mut buf = Vec::new();
    while let Some(chunk) = s.next().await {
        buf.extend_from_slice(&chunk?.into_bytes());
    }
    // Only complete lines: a partial last one is still being written.
    let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let mut out = Vec::new();
    let exit = parse_records(&buf[..end], after_seq, &mut out);
    Ok((out, exit))
}

#[async_trait]
impl Compute for DockerCompute {
    fn platform(&self) -> &str {
        "docker"
    }

    fn runs_images(&self) -> bool {
        true
    }

    async fn prepare_image(&self, image: &ImageSpec) -> Result<(), ComputeError> {
        self.ensure_image(&image.image).await
    }

    async fn start(&self, spec: &JobSpec) -> Result<(), ComputeError> {
        self.validate(spec)?;
        let res = self.start_inner(spec).await;
        if let Err(e) = &res {
            // Leave nothing half-made behind: a later start begins from scratch.
            tracing::warn!(execution_id = %spec.execution_id, error = %e, "start failed");
            let _ = self.remove_all(&spec.execution_id).await;
        }
        res
    }

    async fn state(&self, id: &str) -> Result<ComputeState, ComputeError> {
        if !valid_execution_id(id) {
            return Ok(ComputeState::NotFound);
        }
        let runner = self.inspect(&self.runner(id)).await?;
        let sidecar = self.inspect(&self.sidecar(id)).await?;
        let sidecar_code = sidecar.as_ref().and_then(exited);
        let Some(runner) = runner else {
            return Ok(match sidecar {
                None => ComputeState::NotFound,
                // The runner container is removed only by a kill before it started.
                Some(_) => ComputeState::Exited(ComputeExit {
                    runner: None,
                    process_exit_code: None,
                    failure: Some(STOPPED_BEFORE_START.into()),
                }),
            });
        };
        match status_of(&runner) {
            ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EMPTY => {
                match sidecar_code {
                    Some(code) if code != 0 => {
                        let why = last_line(&self.docker, &self.sidecar(id), false).await;
                        Ok(ComputeState::Exited(ComputeExit {
                            runner: None,
                            process_exit_code: None,
                            failure: Some(format!("sidecar failed (exit {code}): {why}")),
                        }))
                    }
                    _ => Ok(ComputeState::Pending),
                }
            }
            ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD => {
                let st = runner.state.clone().unwrap_or_default();
                let code = st.exit_code.map(|c| c as i32);
                let (_, record) =
                    read_runner_records(&self.docker, &self.runner(id), u64::MAX, Some("5"))
                        .await
                        .map_err(|e| unavailable("reading the runner's output", e))?;
                let failure = if st.oom_killed == Some(true) {
                    let limit = runner
                        .host_config
                        .as_ref()
                        .and_then(|h| h.memory)
                        .filter(|m| *m > 0);
                    Some(match limit {
                        Some(m) => format!(
                            "out of memory: the command reached its memory limit of {} MiB and \
                             was killed",
                            m >> 20
                        ),
                        None => "out of memory: the command was killed".into(),
                    })
                } else {
                    st.error.filter(|e| !e.is_empty())
                };
                Ok(ComputeState::Exited(ComputeExit {
                    runner: record,
                    process_exit_code: code,
                    failure,
                }))
            }
            _ => Ok(ComputeState::Running),
        }
    }

    async fn kill(&self, id: &str) -> Result<(), ComputeError> {
        if !valid_execution_id(id) {
            return Ok(());
        }
        let Some(runner) = self.inspect(&self.runner(id)).await? else {
            return Ok(());
        };
        match status_of(&runner) {
            ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EMPTY => {
                // Not started yet: it never will. Removing the runner container is what says
                // so; the sidecar is stopped too.
                let opts = RemoveContainerOptionsBuilder::default().force(true).build();
                match self
                    .docker
                    .remove_container(&self.runner(id), Some(opts))
                    .await
                {
                    Ok(()) => {}
                    Err(e) if is_status(&e, 404) => {}
                    // 409: it is starting right now; stop it below like a running one.
                    Err(e) if is_status(&e, 409) => return self.stop_runner(id, &runner).await,
                    Err(e) => return Err(unavailable("removing the runner container", e)),
                }
                let opts = KillContainerOptionsBuilder::default()
                    .signal("SIGKILL")
                    .build();
                let _ = self
                    .docker
                    .kill_container(&self.sidecar(id), Some(opts))
                    .await;
                Ok(())
            }
            ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD => Ok(()),
            _ => self.stop_runner(id, &runner).await,
        }
    }

    async fn list(&self) -> Result<Vec<String>, ComputeError> {
        self.ids().await
    }

    async fn cleanup(&self, id: &str) -> Result<bool, ComputeError> {
        if !valid_execution_id(id) || self.following.lock().expect("following").contains(id) {
            return Ok(false);
        }
        if let Some(r) = self.inspect(&self.runner(id)).await?
            && exited(&r).is_none()
            && status_of(&r) != ContainerStateStatusEnum::CREATED
        {
            // Never pull a workspace from under a running command.
            return Ok(false);
        }
        self.remove_all(id).await
    }
}

impl DockerCompute {
    /// SIGTERM to the runner (which stops the command gracefully and writes its final
    /// record), SIGKILL after the grace period and a margin, like `docker stop`.
    async fn stop_runner(
        &self,
        id: &str,
        runner: &ContainerInspectResponse,
    ) -> Result<(), ComputeError> {
        let grace = runner
            .config
            .as_ref()
            .and_then(|c| c.stop_timeout)
            .unwrap_or(15);
        let opts = KillContainerOptionsBuilder::default()
            .signal("SIGTERM")
            .build();
        match self
            .docker
            .kill_container(&self.runner(id), Some(opts))
            .await
        {
            Ok(()) => {}
            // Not running (any more): nothing to stop.
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(unavailable("signalling the runner", e)),
        }
        let (docker, name) = (self.docker.clone(), self.runner(id));
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(grace as u64)).await;
            if let Ok(c) = docker.inspect_container(&name, None).await
                && exited(&c).is_none()
            {
                tracing::warn!(container = %name, "runner still running after the grace period; SIGKILL");
                let opts = KillContainerOptionsBuilder::default()
                    .signal("SIGKILL")
                    .build();
                let _ = docker.kill_container(&name, Some(opts)).await;
            }
        });
        Ok(())
    }
}

/// The engine's own json-file log, never rotated: the record stream must stay complete.
fn kept_log() -> HostConfigLogConfig {
    HostConfigLogConfig {
        typ: Some("json-file".to_owned()),
        config: Some(HashMap::new()),
    }
}

/// The runner containers' stdout, kept by the engine until cleanup, as the durable record
/// source.
#[derive(Clone)]
pub struct DockerLogSource {
    docker: Docker,
    instance: String,
}

#[async_trait]
impl LogSource for DockerLogSource {
    async fn read_records(
        &self,
        execution_id: &str,
        after_seq: u64,
    ) -> Result<(Vec<LogRecord>, Option<ExitInfo>), ComputeError> {
        if !valid_execution_id(execution_id) {
            return Ok((Vec::new(), None));
        }
        let name = container_name(&self.instance, execution_id);
        match read_runner_records(&self.docker, &name, after_seq, None).await {
            Ok(v) => Ok(v),
            Err(e) if is_status(&e, 404) => Ok((Vec::new(), None)),
            Err(e) => Err(unavailable(&format!("reading the output of {name}"), e)),
        }
    }
}

/// The first `name:x:id:...` line of a passwd or group file whose fields pass `pick`.
fn id_entry(file: &str, pick: impl Fn(&[&str]) -> bool) -> Option<Vec<&str>> {
    file.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|e| e.len() >= 4 && pick(e))
}

fn bad_user(user: &str) -> ComputeError {
    ComputeError::Rejected(format!("the image's user {user:?} has no numeric id"))
}
