# runvoy on Google Cloud: two Cloud Run services running runvoyd (the orchestrator serves the
# API and starts Cloud Run job executions; the processor receives Pub/Sub, Eventarc and
# Scheduler pushes), Firestore as the store, the job logs routed by a Logging sink to Pub/Sub,
# Cloud KMS for secrets. See docs/GCP.md, "Deploy".

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  apis = toset([
    "artifactregistry.googleapis.com",
    "cloudkms.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "eventarc.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
  ])

  project_number = data.google_project.this.number

  orchestrator_name = "${var.name}-orchestrator"
  processor_name    = "${var.name}-processor"

  # Cloud Run's deterministic service URLs (https://SERVICE-PROJECT_NUMBER.REGION.run.app).
  # They are known before the services exist, so each service's own environment can hold
  # them without a reference cycle.
  orchestrator_url = "https://${local.orchestrator_name}-${local.project_number}.${var.region}.run.app"
  processor_url    = "https://${local.processor_name}-${local.project_number}.${var.region}.run.app"

  public_url    = var.public_url != "" ? var.public_url : local.orchestrator_url
  push_audience = var.push_audience != "" ? var.push_audience : local.processor_url

  repository_url = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
  runvoyd_image  = var.runvoyd_image != "" ? var.runvoyd_image : "${local.repository_url}/runvoyd:${var.image_tag}"
  sidecar_image  = var.sidecar_image != "" ? var.sidecar_image : "${local.repository_url}/runvoy-sidecar:${var.image_tag}"

  firestore_location = var.firestore_location != "" ? var.firestore_location : var.region

  pubsub_service_agent = "serviceAccount:service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # What runvoyd reads (cmd/runvoyd: serve.rs, gcp.rs, cipher.rs). Both services get the same
  # configuration: each runs the API, the push endpoints and the reconciler; what differs is
  # who can reach it and which identity it has.
  runvoyd_env = merge({
    RUNVOY_BACKEND_PROVIDER                = "gcp"
    RUNVOY_STORE                           = "firestore"
    RUNVOY_EVENTS                          = "pubsub"
    RUNVOY_CIPHER                          = "kms"
    RUNVOY_GCP_PROJECT_ID                  = var.project_id
    RUNVOY_GCP_REGION                      = var.region
    RUNVOY_GCP_FIRESTORE_DATABASE          = google_firestore_database.runvoy.name
    RUNVOY_GCP_FIRESTORE_COLLECTION_PREFIX = var.firestore_collection_prefix
    RUNVOY_GCP_SIDECAR_IMAGE               = local.sidecar_image
    RUNVOY_GCP_JOB_SERVICE_ACCOUNT         = google_service_account.job.email
    RUNVOY_GCP_SECRETS_KMS_KEY             = google_kms_crypto_key.secrets.id
    RUNVOY_GCP_PUSH_AUDIENCE               = local.push_audience
    RUNVOY_GCP_PUSH_SERVICE_ACCOUNT        = google_service_account.push.email
    RUNVOY_DEFAULT_IMAGE                   = var.default_image
    RUNVOY_LISTEN                          = "0.0.0.0:8080"
    RUNVOY_LOG_FORMAT                      = var.log_format
    RUNVOY_PUBLIC_URL                      = local.public_url
    # The instance's in-memory /tmp: nothing in it outlives the instance (the store is
    # Firestore), runvoyd only needs a private writable directory.
    RUNVOY_DATA_DIR         = "/tmp/runvoy"
    RUNVOY_NO_CLIENT_CONFIG = "true"
  }, var.extra_env)

  # The Logging sink: runvoy's job executions only (every job the Cloud Run compute creates is
  # named runvoy-..., internal/compute-cloudrun/src/names.rs), and only the entries
  # internal/events-gcp understands: runner records on stdout (a jsonPayload with a `runvoy`
  # key), Cloud Run's system log of the execution ("Container called exit(N).") and the
  # system_event audit record of /Jobs.RunJob. Anything else would be refused with a 400 and
  # dead-lettered.
  log_prefix = "projects/${var.project_id}/logs"
  sink_filter = join(" AND ", [
    "resource.type=\"cloud_run_job\"",
    "resource.labels.job_name=~\"^runvoy-\"",
    join("", [
      "(",
      "(logName=\"${local.log_prefix}/run.googleapis.com%2Fstdout\" AND jsonPayload.runvoy:*)",
      " OR logName=\"${local.log_prefix}/run.googleapis.com%2Fvarlog%2Fsystem\"",
      " OR (logName=\"${local.log_prefix}/cloudaudit.googleapis.com%2Fsystem_event\" AND protoPayload.methodName=\"/Jobs.RunJob\")",
      ")",
    ]),
  ])
}

resource "google_project_service" "apis" {
  for_each = local.apis

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
