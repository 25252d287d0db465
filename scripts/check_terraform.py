#!/usr/bin/env python3
"""Static checks of runvoy's Terraform that need no provider download.

`terraform validate` needs the providers, which CI cannot fetch. This parses every .tf file
with python-hcl2 and checks the reference graph and the invariants runvoyd depends on:

* every `var.X`, `local.X`, `data.T.N` and `google_*.N` referenced is declared, every declared
  variable and local is used, every variable has a type and a description, every output a
  description;
* the log push subscription posts to the processor's `/push/pubsub/logs` with an OIDC token of
  the push account and has a dead-letter policy, and the Pub/Sub service agent may dead-letter
  and mint the push tokens;
* the Logging sink selects `cloud_run_job` entries of runvoy's jobs, has its own writer
  identity, and that identity may publish to the sink's topic;
* the Scheduler job posts to the processor's `/push/scheduler/reconcile` with an OIDC token;
* an Eventarc trigger targets the processor's `/push/eventarc` with an event type runvoyd
  accepts;
* nobody but the push account is an invoker of the processor (no allUsers);
* runvoyd's environment carries the variables it needs, and the push audience it checks is the
  one the pushes are minted with.

Usage: check_terraform.py [DIR ...] (default: deploy/terraform/gcp). Exit status 1 on a problem.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import hcl2
except ImportError:  # pragma: no cover - a setup problem, not a finding
    sys.exit("check_terraform: python-hcl2 is missing (pip install python-hcl2)")

PROCESSOR = "google_cloud_run_v2_service.processor"
ORCHESTRATOR = "google_cloud_run_v2_service.orchestrator"
PUSH_SA = "google_service_account.push"

ROUTE_LOGS = "/push/pubsub/logs"
ROUTE_EVENTARC = "/push/eventarc"
ROUTE_RECONCILE = "/push/scheduler/reconcile"
# internal/events-gcp/src/eventarc.rs
EVENTARC_TYPES = {
    "google.cloud.audit.log.v1.written",
    "google.cloud.pubsub.topic.v1.messagePublished",
}
# What runvoyd needs to run on Google Cloud (cmd/runvoyd).
RUNVOYD_ENV = [
    "RUNVOY_BACKEND_PROVIDER",
    "RUNVOY_GCP_PROJECT_ID",
    "RUNVOY_GCP_REGION",
    "RUNVOY_GCP_SIDECAR_IMAGE",
    "RUNVOY_GCP_JOB_SERVICE_ACCOUNT",
    "RUNVOY_GCP_SECRETS_KMS_KEY",
    "RUNVOY_GCP_PUSH_AUDIENCE",
    "RUNVOY_GCP_PUSH_SERVICE_ACCOUNT",
    "RUNVOY_LISTEN",
    "RUNVOY_LOG_FORMAT",
    "RUNVOY_PUBLIC_URL",
    "RUNVOY_DATA_DIR",
]
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")

_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
RE_VAR = re.compile(rf"(?<![\w.])var\.({_NAME})")
RE_LOCAL = re.compile(rf"(?<![\w.])local\.({_NAME})")
RE_DATA = re.compile(rf"(?<![\w.])data\.([a-z][a-z0-9_]*)\.({_NAME})")
RE_RESOURCE = re.compile(rf"(?<![\w.])(google_[a-z0-9_]+)\.({_NAME})")


def meta(key: str) -> bool:
    """python-hcl2's own keys (`__is_block__`, `__comments__`, ...), not the file's."""
    return key.startswith("__")


def unquote(s: str) -> str:
    """A label or string literal without the quotes python-hcl2 (>= 7) keeps."""
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


def _interpolation_end(s: str, i: int) -> int:
    """Index of the `}` closing the `${` whose content starts at `i`."""
    depth = 1
    while i < len(s):
        c = s[i]
        if c == '"':
            i = _string_end(s, i + 1)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return len(s)


def _string_end(s: str, i: int) -> int:
    """Index just past the `"` closing the string literal whose content starts at `i`."""
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        if s.startswith("${", i):
            i = _interpolation_end(s, i + 2) + 1
            continue
        i += 1
    return len(s)


def code_of_expression(expr: str) -> str:
    """The expression without its string literals' text, keeping their interpolations."""
    out, i = [], 0
    while i < len(expr):
        c = expr[i]
        if c == '"':
            j = _string_end(expr, i + 1)
            out.append(" " + code_of_string(expr[i + 1 : j - 1]) + " ")
            i = j
            continue
        out.append(c)
        i += 1
    return "".join(out)


def code_of_string(s: str) -> str:
    """The code of every `${...}` in a template string (python-hcl2 shows expressions so)."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s.startswith("${", i):
            j = _interpolation_end(s, i + 2)
            out.append(code_of_expression(s[i + 2 : j]))
            i = j + 1
            continue
        i += 1
    return " ".join(out)


def strings(value: Any):
    """Every string inside a parsed value (keys excluded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if not meta(k):
                yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def code(value: Any) -> str:
    return " ".join(code_of_string(unquote(s)) for s in strings(value))


def blocks(value: Any) -> list[dict]:
    """A nested block attribute as a list of bodies."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def first(body: dict, name: str) -> dict | None:
    found = blocks(body.get(name))
    return found[0] if found else None


def literal(value: Any) -> Any:
    return unquote(value) if isinstance(value, str) else value


@dataclass
class Config:
    variables: dict[str, dict] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, dict] = field(default_factory=dict)
    data: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    # (where, value) of everything that may hold references
    bodies: list[tuple[str, Any]] = field(default_factory=list)

    def of_type(self, kind: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if k.split(".")[0] == kind}

    def expand(self, value: Any, depth: int = 0) -> str:
        """All text of a value with the locals it names appended, recursively."""
        text = " ".join(unquote(s) for s in strings(value))
        if depth > 8:
            return text
        names = set(RE_LOCAL.findall(code(value)))
        parts = [text] + [
            self.expand(self.locals[n], depth + 1) for n in sorted(names) if n in self.locals
        ]
        return " ".join(parts)


def load(directory: Path) -> tuple[Config, list[str]]:
    cfg, errors = Config(), []
    files = sorted(directory.rglob("*.tf"))
    if not files:
        errors.append(f"{directory}: no .tf files")
    for path in files:
        try:
            with path.open() as f:
                doc = hcl2.load(f)
        except Exception as e:  # python-hcl2 raises lark errors of several kinds
            errors.append(f"{path}: does not parse: {str(e).splitlines()[0]}")
            continue
        where = path.name

        def declare(table: dict, key: str, body: Any, kind: str) -> None:
            if key in table:
                errors.append(f"{where}: {kind} {key} is declared twice")
            table[key] = body
            cfg.bodies.append((f"{where}: {kind} {key}", body))

        for block in doc.get("variable", []):
            for name, body in block.items():
                if not meta(name):
                    declare(cfg.variables, unquote(name), body, "variable")
        for block in doc.get("locals", []):
            for name, value in block.items():
                if not meta(name):
                    declare(cfg.locals, name, value, "local")
        for kind, table in (("resource", cfg.resources), ("data", cfg.data)):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    if meta(rtype):
                        continue
                    for name, body in named.items():
                        if not meta(name):
                            declare(table, f"{unquote(rtype)}.{unquote(name)}", body, kind)
        for block in doc.get("output", []):
            for name, body in block.items():
                if not meta(name):
                    declare(cfg.outputs, unquote(name), body, "output")
        for kind in ("terraform", "provider", "module"):
            for block in doc.get(kind, []):
                cfg.bodies.append((f"{where}: {kind}", block))
    return cfg, errors


def check_references(cfg: Config) -> list[str]:
    errors = []
    used_vars: set[str] = set()
    used_locals: set[str] = set()
    for where, body in cfg.bodies:
        text = code(body)
        for v in RE_VAR.findall(text):
            used_vars.add(v)
            if v not in cfg.variables:
                errors.append(f"{where}: var.{v} is not declared")
        for n in RE_LOCAL.findall(text):
            used_locals.add(n)
            if n not in cfg.locals:
                errors.append(f"{where}: local.{n} is not declared")
        for t, n in RE_DATA.findall(text):
            if f"{t}.{n}" not in cfg.data:
                errors.append(f"{where}: data.{t}.{n} is not declared")
        for t, n in RE_RESOURCE.findall(text):
            if f"{t}.{n}" not in cfg.resources:
                errors.append(f"{where}: {t}.{n} is not a declared resource")
    for v, body in cfg.variables.items():
        if v not in used_vars:
            errors.append(f"variable {v} is declared but never used")
        if not literal(body.get("description", "")):
            errors.append(f"variable {v} has no description")
        if "type" not in body:
            errors.append(f"variable {v} has no type")
    for n in cfg.locals:
        if n not in used_locals:
            errors.append(f"local {n} is declared but never used")
    for o, body in cfg.outputs.items():
        if "value" not in body:
            errors.append(f"output {o} has no value")
        if not literal(body.get("description", "")):
            errors.append(f"output {o} has no description")
    return errors


def names(cfg: Config, value: Any) -> set[str]:
    """The resources a value refers to (as type.name)."""
    return {f"{t}.{n}" for t, n in RE_RESOURCE.findall(code(value))}


def endpoint_ok(value: Any, route: str) -> bool:
    return isinstance(value, str) and unquote(value).endswith(route)


def audience_of(oidc: dict | None) -> str:
    return code((oidc or {}).get("audience", "")).strip()


def check_invariants(cfg: Config) -> list[str]:
    errors = []
    for r in (PROCESSOR, ORCHESTRATOR, PUSH_SA):
        if r not in cfg.resources:
            errors.append(f"{r} is missing")
    if errors:
        return errors

    # runvoyd's environment, and the audience it checks.
    env_audiences = set()
    for svc in (PROCESSOR, ORCHESTRATOR):
        body = cfg.resources[svc]
        text = cfg.expand(body)
        for var in RUNVOYD_ENV:
            if var not in text:
                errors.append(f"{svc}: runvoyd's environment lacks {var}")
        m = re.search(r"RUNVOY_GCP_PUSH_AUDIENCE\"?\s*=\s*([^\s,}]+)", text)
        if m:
            env_audiences.add(m.group(1).strip('"${}'))
        for t in ("template",):
            tmpl = first(body, t) or {}
            timeout = literal(tmpl.get("timeout", ""))
            if not timeout:
                errors.append(f"{svc}: template.timeout is not set (WebSockets need a long one)")
            if literal(tmpl.get("session_affinity")) is not True:
                errors.append(f"{svc}: template.session_affinity is not true")

    push_audiences: dict[str, str] = {}

    # Pub/Sub push subscriptions.
    subs = {k: v for k, v in cfg.of_type("google_pubsub_subscription").items() if first(v, "push_config")}
    if not subs:
        errors.append("no google_pubsub_subscription with a push_config")
    for key, body in subs.items():
        push = first(body, "push_config") or {}
        endpoint = push.get("push_endpoint")
        if PROCESSOR not in names(cfg, endpoint) or not endpoint_ok(endpoint, ROUTE_LOGS):
            errors.append(f"{key}: push_endpoint must be {PROCESSOR}'s URL + {ROUTE_LOGS}")
        oidc = first(push, "oidc_token")
        if oidc is None:
            errors.append(f"{key}: push_config has no oidc_token")
        else:
            if PUSH_SA not in names(cfg, oidc.get("service_account_email")):
                errors.append(f"{key}: oidc_token must be minted for {PUSH_SA}")
            push_audiences[key] = audience_of(oidc)
        dlq = first(body, "dead_letter_policy")
        if dlq is None:
            errors.append(f"{key}: no dead_letter_policy (refused messages would be retried for the whole retention)")
        else:
            if not dlq.get("dead_letter_topic") or "max_delivery_attempts" not in dlq:
                errors.append(f"{key}: dead_letter_policy needs dead_letter_topic and max_delivery_attempts")
            topics = names(cfg, dlq.get("dead_letter_topic"))
            if not any(
                names(cfg, b.get("topic")) & topics
                and "pubsub.publisher" in cfg.expand(b.get("role"))
                and "gcp-sa-pubsub" in cfg.expand(b.get("member"))
                for b in cfg.of_type("google_pubsub_topic_iam_member").values()
            ):
                errors.append(f"{key}: the Pub/Sub service agent cannot publish to the dead-letter topic")
        if not any(
            key in names(cfg, b.get("subscription"))
            and "pubsub.subscriber" in cfg.expand(b.get("role"))
            and "gcp-sa-pubsub" in cfg.expand(b.get("member"))
            for b in cfg.of_type("google_pubsub_subscription_iam_member").values()
        ):
            errors.append(f"{key}: the Pub/Sub service agent cannot acknowledge on it (needed to dead-letter)")

    if not any(
        PUSH_SA in names(cfg, b.get("service_account_id"))
        and "serviceAccountTokenCreator" in cfg.expand(b.get("role"))
        and "gcp-sa-pubsub" in cfg.expand(b.get("member"))
        for b in cfg.of_type("google_service_account_iam_member").values()
    ):
        errors.append(f"the Pub/Sub service agent cannot mint OIDC tokens as {PUSH_SA}")

    # The Logging sink.
    sinks = cfg.of_type("google_logging_project_sink")
    if not sinks:
        errors.append("no google_logging_project_sink")
    for key, body in sinks.items():
        filt = cfg.expand(body.get("filter", ""))
        if "cloud_run_job" not in filt:
            errors.append(f"{key}: filter does not select resource.type cloud_run_job")
        if "job_name" not in filt and "runvoy-managed" not in filt:
            errors.append(f"{key}: filter is not restricted to runvoy's jobs")
        if literal(body.get("unique_writer_identity")) is not True:
            errors.append(f"{key}: unique_writer_identity is not true")
        topics = names(cfg, body.get("destination"))
        if not any(t.startswith("google_pubsub_topic.") for t in topics):
            errors.append(f"{key}: destination is not a declared Pub/Sub topic")
        if not any(
            names(cfg, b.get("topic")) & topics
            and "pubsub.publisher" in cfg.expand(b.get("role"))
            and f"{key}.writer_identity" in code(b.get("member"))
            for b in cfg.of_type("google_pubsub_topic_iam_member").values()
        ):
            errors.append(f"{key}: its writer_identity cannot publish to its topic")

    # Cloud Scheduler.
    jobs = cfg.of_type("google_cloud_scheduler_job")
    if not jobs:
        errors.append("no google_cloud_scheduler_job")
    for key, body in jobs.items():
        target = first(body, "http_target") or {}
        uri = target.get("uri")
        if PROCESSOR not in names(cfg, uri) or not endpoint_ok(uri, ROUTE_RECONCILE):
            errors.append(f"{key}: http_target.uri must be {PROCESSOR}'s URL + {ROUTE_RECONCILE}")
        if literal(target.get("http_method")) != "POST":
            errors.append(f"{key}: http_target.http_method must be POST")
        oidc = first(target, "oidc_token")
        if oidc is None:
            errors.append(f"{key}: http_target has no oidc_token")
        else:
            if PUSH_SA not in names(cfg, oidc.get("service_account_email")):
                errors.append(f"{key}: oidc_token must be minted for {PUSH_SA}")
            push_audiences[key] = audience_of(oidc)

    # Eventarc.
    for key, body in cfg.of_type("google_eventarc_trigger").items():
        run = first(first(body, "destination") or {}, "cloud_run_service") or {}
        if PROCESSOR not in names(cfg, run.get("service")) or literal(run.get("path")) != ROUTE_EVENTARC:
            errors.append(f"{key}: destination must be {PROCESSOR} at path {ROUTE_EVENTARC}")
        if PUSH_SA not in names(cfg, body.get("service_account")):
            errors.append(f"{key}: service_account must be {PUSH_SA}")
        kinds = [
            literal(c.get("value"))
            for c in blocks(body.get("matching_criteria"))
            if literal(c.get("attribute")) == "type"
        ]
        if not kinds or any(k not in EVENTARC_TYPES for k in kinds):
            errors.append(f"{key}: event type {kinds} is not one runvoyd accepts ({sorted(EVENTARC_TYPES)})")

    # Who may invoke the processor.
    for kind in (
        "google_cloud_run_v2_service_iam_member",
        "google_cloud_run_v2_service_iam_binding",
        "google_cloud_run_v2_service_iam_policy",
        "google_cloud_run_service_iam_member",
        "google_cloud_run_service_iam_binding",
        "google_cloud_run_service_iam_policy",
    ):
        for key, body in cfg.of_type(kind).items():
            if PROCESSOR not in names(cfg, body.get("name") or body.get("service")):
                continue
            text = cfg.expand(body)
            for m in PUBLIC_MEMBERS:
                if m in text:
                    errors.append(f"{key}: {m} may invoke the processor")
            if "run.invoker" in text and PUSH_SA not in names(cfg, body):
                errors.append(f"{key}: an invoker of the processor other than {PUSH_SA}")
    for key, body in cfg.of_type("google_cloud_run_v2_service_iam_policy").items():
        if PROCESSOR in names(cfg, body.get("name")):
            errors.append(f"{key}: an authoritative policy on the processor; use members")

    # The audience runvoyd checks is the one the pushes carry.
    if len(env_audiences) > 1:
        errors.append(f"the services check different push audiences: {sorted(env_audiences)}")
    for key, aud in push_audiences.items():
        if not aud:
            errors.append(f"{key}: oidc_token has no explicit audience (runvoyd checks RUNVOY_GCP_PUSH_AUDIENCE)")
        elif env_audiences and aud not in env_audiences:
            errors.append(f"{key}: OIDC audience {aud} differs from RUNVOY_GCP_PUSH_AUDIENCE ({sorted(env_audiences)})")
    return errors


def check(directory: Path) -> list[str]:
    cfg, errors = load(directory)
    if errors:
        return errors
    return check_references(cfg) + check_invariants(cfg)


def main(argv: list[str]) -> int:
    dirs = [Path(a) for a in argv] or [Path(__file__).resolve().parent.parent / "deploy/terraform/gcp"]
    failed = False
    for d in dirs:
        errors = check(d)
        for e in errors:
            print(f"check_terraform: {d}: {e}", file=sys.stderr)
        failed |= bool(errors)
        if not errors:
            print(f"check_terraform: {d}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
