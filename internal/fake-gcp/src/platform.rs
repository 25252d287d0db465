//! The platform behind the fake Cloud Run: each job execution's two containers run for real on
//! this machine through local compute (the sidecar prepares the workspace, the runner runs the
//! command, sandboxed as runvoyd's local backend sandboxes it), and what Cloud Logging would
//! make of them is written: each runner record as a `LogEntry` (kept for `entries.list` and
//! published to a Pub/Sub emulator topic, as a log sink would), the runner container's
//! `varlog/system` exit entry and the execution's `/Jobs.RunJob` system_event audit record.
//!
//! What differs from Cloud Run, by necessity: the runner runs on the host's userland, not in the
//! job's image; the task is `Running` once local compute has accepted it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use runvoy_compute_local::LocalCompute;
use runvoy_domain::clock::now_ms;
use runvoy_domain::ports::{Compute, ComputeState};
use runvoy_domain::{Event, JobSpec, Resources};
use runvoy_events_gcp::sink::{
    EmulatorSink, EntrySource, container_exit_entry, record_entry, run_job_audit_entry,
    runner_records,
};
use runvoy_proto::record::env;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::cloudrun::{FakeCloudRun, PlatformEvent, short};
use crate::logging::LogStore;

/// One execution the platform runs.
#[derive(Clone)]
struct Run {
    /// Full resource name.
    name: String,
    source: EntrySource,
    cancelled: bool,
    done: bool,
}

/// Runs the fake's executions on local compute.
pub struct LocalPlatform {
    fake: FakeCloudRun,
    compute: Arc<LocalCompute>,
    logs: LogStore,
    sink: Option<EmulatorSink>,
    /// runvoy execution id → its job execution.
    runs: Mutex<HashMap<String, Run>>,
}

/// A runner variable of a task template.
fn var<'a>(vars: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    vars.get(name).map(String::as_str)
}

/// The job spec local compute runs for a task template, from the runner container's variables
/// (as `runvoy-runner` reads them). `None` when the template names no execution.
fn spec_of(template: &Value) -> Option<JobSpec> {
    let runner = template["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "runner")?;
    let vars: BTreeMap<String, String> = runner["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_owned(),
                v["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let id = var(&vars, env::EXECUTION_ID)?.to_owned();
    let argv = var(&vars, env::ARGV).and_then(|a| serde_json::from_str::<Vec<String>>(a).ok());
    let command = match &argv {
        Some(a) => a.join(" "),
        None => var(&vars, env::COMMAND)?.to_owned(),
    };
    let num = |n: &str| var(&vars, n).and_then(|v| v.parse::<u64>().ok());
    Some(JobSpec {
        execution_id: id,
        command,
        argv,
        stdin: None,
        image: runner["image"].as_str().unwrap_or_default().to_owned(),
        image_settings: None,
        // The run's own variables: everything that is not one of runvoy's settings.
        env: vars
            .iter()
            .filter(|(k, _)| !k.starts_with("RUNVOY_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        timeout_secs: num(env::TIMEOUT),
        kill_grace_secs: num(env::KILL_GRACE).unwrap_or(10),
        banner: var(&vars, env::BANNER)
            .map(|b| b.lines().map(str::to_owned).collect())
            .unwrap_or_default(),
        max_output_bytes: num(env::MAX_OUTPUT_BYTES).unwrap_or(0),
        max_output_lines: num(env::MAX_OUTPUT_LINES).unwrap_or(0),
        resources: Resources::default(),
        secrets: Vec::new(),
        secrets_fetch: None,
        git: git_of(template),
    })
}

/// The run's git checkout, from the sidecar container's variables (as `runvoy-sidecar` reads
/// them).
fn git_of(template: &Value) -> Option<runvoy_proto::git::Checkout> {
    use runvoy_proto::git::env;
    let sidecar = template["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "sidecar")?;
    let get = |name: &str| {
        sidecar["env"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == name)?["value"]
            .as_str()
    };
    runvoy_proto::git::Checkout::from_request(get(env::REPO), get(env::REF), get(env::PATH))
        .ok()
        .flatten()
}

/// `projects/P/locations/L/jobs/J/executions/E` → (P, L, J).
fn parts(name: &str) -> Option<(&str, &str, &str)> {
    let s: Vec<&str> = name.split('/').collect();
    (s.len() == 8 && s[0] == "projects" && s[2] == "locations" && s[4] == "jobs")
        .then(|| (s[1], s[3], s[5]))
}

impl LocalPlatform {
    /// A platform for `fake` on `compute`, publishing entries to `sink` when given.
    pub fn new(
        fake: FakeCloudRun,
        compute: Arc<LocalCompute>,
        logs: LogStore,
        sink: Option<EmulatorSink>,
    ) -> Arc<LocalPlatform> {
        Arc::new(LocalPlatform {
            fake,
            compute,
            logs,
            sink,
            runs: Mutex::default(),
        })
    }

    /// Plays the platform until both channels close.
    pub async fn drive(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<PlatformEvent>,
        mut bus: mpsc::Receiver<Event>,
    ) {
        loop {
            tokio::select! {
                Some(ev) = events.recv() => match ev {
                    PlatformEvent::Run { execution, template } => {
                        self.launch(&execution, &template).await
                    }
                    PlatformEvent::Cancel { execution } => self.cancel(&execution).await,
                },
                Some(ev) = bus.recv() => match ev {
                    Event::Records { execution_id, records, exit } => {
                        let Some(run) = self.run_of(&execution_id) else { continue };
                        let now = now_ms();
                        let entries: Vec<Value> =
                            runner_records(&execution_id, &records, exit.as_ref(), now)
                                .iter()
                                .map(|r| record_entry(&run.source, &execution_id, r, now))
                                .collect();
                        self.write(entries).await;
                    }
                    Event::ComputeChanged { execution_id } => self.observe(&execution_id).await,
                },
                else => return,
            }
        }
    }

    fn run_of(&self, id: &str) -> Option<Run> {
        self.runs.lock().expect("runs").get(id).cloned()
    }

    async fn launch(&self, name: &str, template: &Value) {
        let (Some(spec), Some((project, location, job))) = (spec_of(template), parts(name)) else {
            // The runner refuses to start without its settings.
            tracing::warn!(execution = %name, "task template names no runvoy execution");
            self.fake.finish(name, 2);
            return;
        };
        let source = EntrySource {
            project: project.to_owned(),
            location: location.to_owned(),
            job: job.to_owned(),
            execution: short(name).to_owned(),
        };
        self.runs.lock().expect("runs").insert(
            spec.execution_id.clone(),
            Run {
                name: name.to_owned(),
                source,
                cancelled: false,
                done: false,
            },
        );
        match self.compute.start(&spec).await {
            Ok(()) => {
                tracing::info!(execution = %name, execution_id = %spec.execution_id, "task started");
                self.fake.set_running(name);
                // A fast command may have ended before the task counted as running.
                self.observe(&spec.execution_id).await;
            }
            Err(e) => {
                tracing::warn!(execution = %name, error = %e, "the sidecar failed");
                self.fake.fail_sidecar(name);
            }
        }
    }

    async fn cancel(&self, name: &str) {
        let id = {
            let mut runs = self.runs.lock().expect("runs");
            let Some((id, run)) = runs.iter_mut().find(|(_, r)| r.name == name) else {
                drop(runs);
                self.fake.cancelled(name);
                return;
            };
            run.cancelled = true;
            id.clone()
        };
        if let Err(e) = self.compute.kill(&id).await {
            tracing::warn!(execution = %name, error = %e, "could not stop the task");
        }
        self.observe(&id).await;
    }

    /// Reads the task's state from local compute and reports an ending to the fake.
    async fn observe(&self, id: &str) {
        let Some(run) = self.run_of(id) else { return };
        if run.done {
            return;
        }
        let exit = match self.compute.state(id).await {
            Ok(ComputeState::Exited(x)) => x,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(execution_id = %id, error = %e, "could not read the task's state");
                return;
            }
        };
        if let Some(r) = self.runs.lock().expect("runs").get_mut(id) {
            if r.done {
                return;
            }
            r.done = true;
        }
        let code = exit
            .runner
            .as_ref()
            .map(|r| r.exit_code)
            .or(exit.process_exit_code)
            .unwrap_or(1);
        if exit.runner.is_none() && exit.failure.is_some() {
            self.fake.fail_sidecar(&run.name);
        } else if run.cancelled {
            self.fake.cancelled(&run.name);
        } else {
            self.fake.finish(&run.name, code);
        }
        let now = now_ms();
        let audit = run_job_audit_entry(&run.source, (!run.cancelled).then_some(code), now);
        let exit = container_exit_entry(&run.source, "runner", code, now);
        self.write(vec![exit, audit]).await;
    }

    /// Ingests entries and publishes them, retrying a passing failure of the emulator.
    async fn write(&self, entries: Vec<Value>) {
        for e in &entries {
            self.logs.push(e.clone());
        }
        let Some(sink) = &self.sink else { return };
        // What is not published stays in the log store, where entries.list finds it.
        if let Err(e) = sink.publish_retrying(&entries).await {
            tracing::warn!(error = %e, "gave up publishing log entries");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_spec_comes_from_the_runner_variables() {
        let t = json!({"containers": [
            {"name": "sidecar", "image": "s", "env": [{"name": "RUNVOY_EXECUTION_ID", "value": "no"}]},
            {"name": "runner", "image": "alpine", "env": [
                {"name": "RUNVOY_WORKDIR", "value": "/workspace"},
                {"name": "RUNVOY_EXECUTION_ID", "value": "0123456789abcdef0123456789abcdef"},
                {"name": "RUNVOY_ARGV", "value": "[\"sh\",\"-c\",\"exit 3\"]"},
                {"name": "RUNVOY_TIMEOUT_SECONDS", "value": "30"},
                {"name": "RUNVOY_BANNER", "value": "a\nb"},
                {"name": "STAGE", "value": "prod"}]}]});
        let s = spec_of(&t).unwrap();
        assert_eq!(s.execution_id, "0123456789abcdef0123456789abcdef");
        assert_eq!(s.argv.as_deref().unwrap(), ["sh", "-c", "exit 3"]);
        assert_eq!(s.timeout_secs, Some(30));
        assert_eq!(s.banner, ["a", "b"]);
        assert_eq!(s.env.len(), 1);
        assert_eq!(s.env["STAGE"], "prod");
        assert_eq!(s.image, "alpine");
        assert!(spec_of(&json!({"containers": [{"name": "runner", "env": []}]})).is_none());
    }
}
