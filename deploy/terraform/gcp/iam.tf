# Identities. Each runvoyd service has its own service account with what its code calls; the
# job service account is what users' commands run as; the push account is the identity
# Pub/Sub, Eventarc and Cloud Scheduler mint OIDC tokens for. The matrix is in docs/GCP.md.

resource "google_service_account" "orchestrator" {
  project      = var.project_id
  account_id   = "${var.name}-orchestrator"
  display_name = "runvoy orchestrator (API, launches job executions)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "processor" {
  project      = var.project_id
  account_id   = "${var.name}-processor"
  display_name = "runvoy processor (push endpoints, reconciler)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "job" {
  project      = var.project_id
  account_id   = "${var.name}-job"
  display_name = "runvoy job (what commands run as; extend with job_service_account_roles)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "${var.name}-push"
  display_name = "runvoy push identity (Pub/Sub, Eventarc, Scheduler OIDC tokens)"
  depends_on   = [google_project_service.apis]
}

# The Cloud Run Admin API calls of internal/compute-cloudrun: one job per image (get, create,
# patch, list), a run is jobs.run with container overrides, its state is executions.get and
# the execution's tasks, kill is executions.cancel, cleanup after the retention is
# executions.delete; create and patch return operations it waits on.
resource "google_project_iam_custom_role" "orchestrator" {
  project     = var.project_id
  role_id     = "${replace(var.name, "-", "_")}_orchestrator"
  title       = "runvoy orchestrator"
  description = "Creates and runs runvoy's Cloud Run jobs and manages their executions."
  permissions = [
    "run.executions.cancel",
    "run.executions.delete",
    "run.executions.get",
    "run.executions.list",
    "run.jobs.create",
    "run.jobs.get",
    "run.jobs.list",
    "run.jobs.run",
    "run.jobs.runWithOverrides",
    "run.jobs.update",
    "run.operations.get",
    "run.tasks.get",
    "run.tasks.list",
  ]
}

# The processor never creates or starts a job. Its reconciler reads executions and their
# tasks, lists the managed jobs' executions (orphans), cancels an execution past its timeout
# or whose kill did not land, and deletes finished executions past the retention.
resource "google_project_iam_custom_role" "processor" {
  project     = var.project_id
  role_id     = "${replace(var.name, "-", "_")}_processor"
  title       = "runvoy processor"
  description = "Reads, cancels and deletes executions of runvoy's Cloud Run jobs."
  permissions = [
    "run.executions.cancel",
    "run.executions.delete",
    "run.executions.get",
    "run.executions.list",
    "run.jobs.get",
    "run.jobs.list",
    "run.operations.get",
    "run.tasks.get",
    "run.tasks.list",
  ]
}

resource "google_project_iam_member" "orchestrator_run" {
  project = var.project_id
  role    = google_project_iam_custom_role.orchestrator.id
  member  = google_service_account.orchestrator.member
}

resource "google_project_iam_member" "processor_run" {
  project = var.project_id
  role    = google_project_iam_custom_role.processor.id
  member  = google_service_account.processor.member
}

# Jobs run as the job account: creating or running them needs actAs on it, and on it only.
resource "google_service_account_iam_member" "orchestrator_acts_as_job" {
  service_account_id = google_service_account.job.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.orchestrator.member
}

# Firestore access is granted per project (Firestore has no per-collection IAM).
resource "google_project_iam_member" "firestore" {
  for_each = {
    orchestrator = google_service_account.orchestrator.member
    processor    = google_service_account.processor.member
  }

  project = var.project_id
  role    = "roles/datastore.user"
  member  = each.value
}

# Both services reconcile, and a reconcile re-reads records missing from the store from
# Cloud Logging (the durable log source).
resource "google_project_iam_member" "logs_viewer" {
  for_each = {
    orchestrator = google_service_account.orchestrator.member
    processor    = google_service_account.processor.member
  }

  project = var.project_id
  role    = "roles/logging.viewer"
  member  = each.value
}

# runvoyd refuses to start without one encrypt/decrypt round trip with the key, so both
# services need it.
resource "google_kms_crypto_key_iam_member" "secrets" {
  for_each = {
    orchestrator = google_service_account.orchestrator.member
    processor    = google_service_account.processor.member
  }

  crypto_key_id = google_kms_crypto_key.secrets.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}

# What commands may reach. Nothing by default.
resource "google_project_iam_member" "job" {
  for_each = toset(var.job_service_account_roles)

  project = var.project_id
  role    = each.value
  member  = google_service_account.job.member
}

# Pub/Sub mints the push subscription's OIDC tokens (and those of Eventarc's subscription) as
# the push account.
resource "google_service_account_iam_member" "pubsub_mints_push_tokens" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# Eventarc delivers audit-log events only for a trigger account that may receive them.
resource "google_project_iam_member" "push_event_receiver" {
  count = var.eventarc_run_job_trigger ? 1 : 0

  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.push.member
}
