//! The field checks the real Cloud Run Admin API v2 makes of a Job and a `RunJobRequest`, from
//! its protos (`google/cloud/run/v2/job.proto`, `execution_template.proto`,
//! `task_template.proto`, `k8s.min.proto`, `vendor_settings.proto`): an unknown field, a value of
//! the wrong JSON type or an unknown enum value is refused with `INVALID_ARGUMENT` and the
//! message Google's JSON transcoding gives (`Invalid JSON payload received. Unknown name "x" at
//! 'job.template': Cannot find field.`). Output-only fields are accepted and ignored, as the real
//! API does.

use serde_json::Value;

/// The JSON shape of one field.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    /// A `google.protobuf.Duration` (`"600s"`).
    Duration,
    Enum(&'static [&'static str]),
    /// A map of strings (`labels`, `annotations`, `limits`).
    StrMap,
    StrList,
    Msg(&'static Message),
    List(&'static Message),
}

/// A message: its fields in JSON (lowerCamelCase) names.
struct Message {
    name: &'static str,
    fields: &'static [(&'static str, Kind)],
}

use Kind::*;

const LAUNCH_STAGES: &[&str] = &[
    "LAUNCH_STAGE_UNSPECIFIED",
    "UNIMPLEMENTED",
    "PRELAUNCH",
    "EARLY_ACCESS",
    "ALPHA",
    "BETA",
    "GA",
    "DEPRECATED",
];

static SECRET_KEY_SELECTOR: Message = Message {
    name: "SecretKeySelector",
    fields: &[("secret", Str), ("version", Str)],
};
static ENV_VAR_SOURCE: Message = Message {
    name: "EnvVarSource",
    fields: &[("secretKeyRef", Msg(&SECRET_KEY_SELECTOR))],
};
static ENV_VAR: Message = Message {
    name: "EnvVar",
    fields: &[
        ("name", Str),
        ("value", Str),
        ("valueSource", Msg(&ENV_VAR_SOURCE)),
    ],
};
static RESOURCES: Message = Message {
    name: "ResourceRequirements",
    fields: &[
        ("limits", StrMap),
        ("cpuIdle", Bool),
        ("startupCpuBoost", Bool),
    ],
};
static PORT: Message = Message {
    name: "ContainerPort",
    fields: &[("name", Str), ("containerPort", Int)],
};
static VOLUME_MOUNT: Message = Message {
    name: "VolumeMount",
    fields: &[("name", Str), ("mountPath", Str), ("subPath", Str)],
};
static HTTP_HEADER: Message = Message {
    name: "HTTPHeader",
    fields: &[("name", Str), ("value", Str)],
};
static HTTP_GET: Message = Message {
    name: "HTTPGetAction",
    fields: &[
        ("path", Str),
        ("httpHeaders", List(&HTTP_HEADER)),
        ("port", Int),
    ],
};
static TCP_SOCKET: Message = Message {
    name: "TCPSocketAction",
    fields: &[("port", Int)],
};
static GRPC: Message = Message {
    name: "GRPCAction",
    fields: &[("port", Int), ("service", Str)],
};
static PROBE: Message = Message {
    name: "Probe",
    fields: &[
        ("initialDelaySeconds", Int),
        ("timeoutSeconds", Int),
        ("periodSeconds", Int),
        ("failureThreshold", Int),
        ("httpGet", Msg(&HTTP_GET)),
        ("tcpSocket", Msg(&TCP_SOCKET)),
        ("grpc", Msg(&GRPC)),
    ],
};
static CONTAINER: Message = Message {
    name: "Container",
    fields: &[
        ("name", Str),
        ("image", Str),
        ("command", StrList),
        ("args", StrList),
        ("env", List(&ENV_VAR)),
        ("resources", Msg(&RESOURCES)),
        ("ports", List(&PORT)),
        ("volumeMounts", List(&VOLUME_MOUNT)),
        ("workingDir", Str),
        ("livenessProbe", Msg(&PROBE)),
        ("startupProbe", Msg(&PROBE)),
        ("readinessProbe", Msg(&PROBE)),
        ("dependsOn", StrList),
        ("baseImageUri", Str),
    ],
};
static EMPTY_DIR: Message = Message {
    name: "EmptyDirVolumeSource",
    fields: &[
        ("medium", Enum(&["MEDIUM_UNSPECIFIED", "MEMORY"])),
        ("sizeLimit", Str),
    ],
};
static VOLUME: Message = Message {
    name: "Volume",
    fields: &[("name", Str), ("emptyDir", Msg(&EMPTY_DIR))],
};
static TASK_TEMPLATE: Message = Message {
    name: "TaskTemplate",
    fields: &[
        ("containers", List(&CONTAINER)),
        ("volumes", List(&VOLUME)),
        ("maxRetries", Int),
        ("timeout", Duration),
        ("serviceAccount", Str),
        (
            "executionEnvironment",
            Enum(&[
                "EXECUTION_ENVIRONMENT_UNSPECIFIED",
                "EXECUTION_ENVIRONMENT_GEN1",
                "EXECUTION_ENVIRONMENT_GEN2",
            ]),
        ),
        ("encryptionKey", Str),
        ("nodeSelector", StrMap),
        ("gpuZonalRedundancyDisabled", Bool),
    ],
};
static EXECUTION_TEMPLATE: Message = Message {
    name: "ExecutionTemplate",
    fields: &[
        ("labels", StrMap),
        ("annotations", StrMap),
        ("parallelism", Int),
        ("taskCount", Int),
        ("template", Msg(&TASK_TEMPLATE)),
    ],
};
/// Output-only fields of a Job: accepted in a body and ignored.
const JOB_OUTPUT_ONLY: &[&str] = &[
    "uid",
    "generation",
    "createTime",
    "updateTime",
    "deleteTime",
    "expireTime",
    "creator",
    "lastModifier",
    "observedGeneration",
    "terminalCondition",
    "conditions",
    "executionCount",
    "latestCreatedExecution",
    "reconciling",
    "satisfiesPzs",
    "etag",
];
static JOB: Message = Message {
    name: "Job",
    fields: &[
        ("name", Str),
        ("labels", StrMap),
        ("annotations", StrMap),
        ("client", Str),
        ("clientVersion", Str),
        ("launchStage", Enum(LAUNCH_STAGES)),
        ("template", Msg(&EXECUTION_TEMPLATE)),
        ("startExecutionToken", Str),
        ("runExecutionToken", Str),
    ],
};
static CONTAINER_OVERRIDE: Message = Message {
    name: "ContainerOverride",
    fields: &[
        ("name", Str),
        ("args", StrList),
        ("env", List(&ENV_VAR)),
        ("clearArgs", Bool),
    ],
};
static OVERRIDES: Message = Message {
    name: "Overrides",
    fields: &[
        ("containerOverrides", List(&CONTAINER_OVERRIDE)),
        ("taskCount", Int),
        ("timeout", Duration),
    ],
};
static RUN_JOB_REQUEST: Message = Message {
    name: "RunJobRequest",
    fields: &[
        ("overrides", Msg(&OVERRIDES)),
        ("validateOnly", Bool),
        ("etag", Str),
    ],
};

/// Checks a Job body (create or patch); the error is Google's message.
pub fn check_job(body: &Value) -> Result<(), String> {
    check(&JOB, body, "job", JOB_OUTPUT_ONLY)
}

/// Checks a `jobs.run` body.
pub fn check_run(body: &Value) -> Result<(), String> {
    if body.is_null() {
        return Ok(());
    }
    check(&RUN_JOB_REQUEST, body, "", &[])
}

fn invalid(msg: String) -> Result<(), String> {
    Err(format!("Invalid JSON payload received. {msg}"))
}

fn check(m: &Message, v: &Value, at: &str, ignored: &[&str]) -> Result<(), String> {
    let Some(obj) = v.as_object() else {
        return invalid(format!("Expected an object for {} at '{at}'.", m.name));
    };
    for (k, val) in obj {
        if ignored.contains(&k.as_str()) {
            continue;
        }
        let Some((_, kind)) = m.fields.iter().find(|(n, _)| n == k) else {
            return invalid(format!(
                "Unknown name \"{k}\" at '{at}': Cannot find field."
            ));
        };
        let here = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        check_value(*kind, val, &here)?;
    }
    Ok(())
}

fn check_value(kind: Kind, v: &Value, at: &str) -> Result<(), String> {
    let wrong = |what: &str| invalid(format!("Invalid value at '{at}' ({what}), {v}"));
    match kind {
        Str => v
            .as_str()
            .map(|_| ())
            .ok_or(())
            .or_else(|_| wrong("TYPE_STRING")),
        // Proto3 JSON accepts integers as numbers or decimal strings.
        Int => {
            if v.as_i64().is_some() || v.as_str().is_some_and(|s| s.parse::<i64>().is_ok()) {
                Ok(())
            } else {
                wrong("TYPE_INT32")
            }
        }
        Bool => v
            .as_bool()
            .map(|_| ())
            .ok_or(())
            .or_else(|_| wrong("TYPE_BOOL")),
        Duration => match v.as_str() {
            Some(s)
                if s.strip_suffix('s')
                    .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok_and(|x| x >= 0.0)) =>
            {
                Ok(())
            }
            _ => invalid(format!(
                "Invalid value at '{at}' (type.googleapis.com/google.protobuf.Duration), {v}"
            )),
        },
        Enum(values) => match v.as_str() {
            Some(s) if values.contains(&s) => Ok(()),
            _ => invalid(format!("Invalid value at '{at}' (TYPE_ENUM), {v}")),
        },
        StrMap => match v.as_object() {
            Some(m) => m
                .iter()
                .try_for_each(|(k, x)| check_value(Str, x, &format!("{at}[{k}]"))),
            None => wrong("map"),
        },
        StrList => match v.as_array() {
            Some(a) => a
                .iter()
                .enumerate()
                .try_for_each(|(i, x)| check_value(Str, x, &format!("{at}[{i}]"))),
            None => wrong("TYPE_STRING"),
        },
        Msg(m) => check(m, v, at, &[]),
        List(m) => match v.as_array() {
            Some(a) => a
                .iter()
                .enumerate()
                .try_for_each(|(i, x)| check(m, x, &format!("{at}[{i}]"), &[])),
            None => wrong(m.name),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_valid_job_passes_and_output_only_fields_are_ignored() {
        let job = json!({
            "labels": {"runvoy-managed": "true"},
            "uid": "x", "etag": "\"e\"",
            "template": {"taskCount": 1, "template": {
                "containers": [{"name": "runner", "image": "alpine", "env": [{"name": "A", "value": "1"}],
                    "startupProbe": {"tcpSocket": {"port": 8081}, "periodSeconds": 1},
                    "dependsOn": ["sidecar"], "resources": {"limits": {"memory": "512Mi"}}}],
                "volumes": [{"name": "w", "emptyDir": {"medium": "MEMORY", "sizeLimit": "1Gi"}}],
                "maxRetries": 0, "timeout": "600s"}}
        });
        check_job(&job).unwrap();
    }

    #[test]
    fn unknown_fields_wrong_types_and_enum_values_are_refused() {
        let e = check_job(
            &json!({"template": {"template": {"containers": [{"image": "a", "imag": "b"}]}}}),
        )
        .unwrap_err();
        assert!(
            e.contains("Unknown name \"imag\" at 'job.template.template.containers[0]'"),
            "{e}"
        );
        let e = check_job(&json!({"template": {"template": {"volumes": [{"name": "w", "emptyDir": {"medium": "DISK"}}]}}}))
            .unwrap_err();
        assert!(e.contains("TYPE_ENUM"), "{e}");
        let e = check_job(&json!({"template": {"template": {"maxRetries": "zero"}}})).unwrap_err();
        assert!(e.contains("maxRetries"), "{e}");
        let e = check_job(&json!({"template": {"template": {"timeout": "10m"}}})).unwrap_err();
        assert!(e.contains("Duration"), "{e}");
        let e = check_run(
            &json!({"overrides": {"containerOverrides": [{"name": "runner", "command": ["sh"]}]}}),
        )
        .unwrap_err();
        assert!(e.contains("Unknown name \"command\""), "{e}");
        check_run(&json!({"overrides": {"containerOverrides": [{"name": "runner", "env": [{"name": "A", "value": "b"}]}], "taskCount": 1, "timeout": "60s"}}))
            .unwrap();
    }
}
