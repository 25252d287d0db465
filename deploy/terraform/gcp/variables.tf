variable "project_id" {
  description = "Google Cloud project runvoy is deployed into."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run services and jobs, the key ring, the Artifact Registry repository, the Scheduler job and the Eventarc trigger."
  type        = string
  default     = "us-central1"
}

variable "name" {
  description = "Prefix of every resource name (service accounts, services, topics, ...). Lowercase letters, digits and hyphens."
  type        = string
  default     = "runvoy"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,11}[a-z0-9]$", var.name))
    error_message = "name: 2 to 13 lowercase letters, digits or hyphens, starting with a letter (service account ids are at most 30 characters)."
  }
}

variable "runvoyd_image" {
  description = "The runvoyd image both Cloud Run services run. Empty: <repository>/runvoyd:<image_tag> in the Artifact Registry repository created here."
  type        = string
  default     = ""
}

variable "sidecar_image" {
  description = "The runvoy-sidecar image (it also holds the runner binary it injects) every job runs next to the command. Empty: <repository>/runvoy-sidecar:<image_tag>."
  type        = string
  default     = ""
}

variable "image_tag" {
  description = "Tag of the runvoyd and sidecar images in the Artifact Registry repository, when runvoyd_image or sidecar_image is empty."
  type        = string
  default     = "latest"
}

variable "default_image" {
  description = "Image a run gets when it names none (`runvoy run --image` overrides it)."
  type        = string
  default     = "docker.io/library/debian:bookworm-slim"
}

variable "firestore_database" {
  description = "Firestore database id created for runvoy (`(default)` is the project's default database)."
  type        = string
  default     = "(default)"
}

variable "firestore_location" {
  description = "Firestore location (a region such as us-central1 or a multi-region such as nam5). Empty: the region."
  type        = string
  default     = ""
}

variable "firestore_collection_prefix" {
  description = "Prefix of runvoy's top-level Firestore collections (runvoyd's RUNVOY_GCP_FIRESTORE_COLLECTION_PREFIX; its default is runvoy_)."
  type        = string
  default     = "runvoy_"
}

variable "orchestrator_public" {
  description = "Grant roles/run.invoker to allUsers on the orchestrator. runvoy authenticates API keys itself, so the CLI reaches the API without Google credentials. Organizations with domain-restricted sharing refuse allUsers: set false and put the API behind your own front door."
  type        = bool
  default     = true
}

variable "orchestrator_ingress" {
  description = "Ingress of the orchestrator: INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"
}

variable "processor_ingress" {
  description = "Ingress of the processor. INGRESS_TRAFFIC_INTERNAL_ONLY still admits Pub/Sub, Eventarc and Cloud Scheduler of the same project."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
}

variable "orchestrator_min_instances" {
  description = "Instances of the orchestrator kept running (0 lets it scale to zero; the first request then waits for a start)."
  type        = number
  default     = 1
}

variable "orchestrator_max_instances" {
  description = "Most instances of the orchestrator. Every instance signs log-stream tokens with the key in the token-key secret (RUNVOY_TOKEN_KEY), so any instance accepts a token another issued."
  type        = number
  default     = 10
}

variable "processor_min_instances" {
  description = "Instances of the processor kept running."
  type        = number
  default     = 0
}

variable "processor_max_instances" {
  description = "Most instances of the processor."
  type        = number
  default     = 10
}

variable "service_cpu" {
  description = "CPU limit of each runvoyd instance."
  type        = string
  default     = "1"
}

variable "service_memory" {
  description = "Memory limit of each runvoyd instance (it includes the in-memory /tmp that holds the data dir)."
  type        = string
  default     = "1Gi"
}

variable "request_timeout_seconds" {
  description = "Cloud Run request timeout of both services; it also bounds how long one log WebSocket stays open before the CLI reconnects (at most 3600)."
  type        = number
  default     = 3600
}

variable "max_request_concurrency" {
  description = "Requests one runvoyd instance takes at once; every open log WebSocket counts as one."
  type        = number
  default     = 250
}

variable "public_url" {
  description = "Public base URL of the API (RUNVOY_PUBLIC_URL), e.g. behind a custom domain. Empty: the orchestrator's run.app URL."
  type        = string
  default     = ""
}

variable "push_audience" {
  description = "The aud of every push token (RUNVOY_GCP_PUSH_AUDIENCE), set on the push subscription and the Scheduler job. Empty: the processor's run.app URL."
  type        = string
  default     = ""
}

variable "log_format" {
  description = "runvoyd's RUNVOY_LOG_FORMAT: json is Cloud Logging's structured format (severity, message, time), text is for people."
  type        = string
  default     = "json"
}

variable "extra_env" {
  description = "More environment variables for runvoyd on both services (e.g. RUNVOY_MAX_CONCURRENT_TOTAL); they win over the ones set here."
  type        = map(string)
  default     = {}
}

variable "push_ack_deadline_seconds" {
  description = "Ack deadline of the log push subscription; for push it is also the request timeout of a delivery (10 to 600)."
  type        = number
  default     = 60
}

variable "push_max_delivery_attempts" {
  description = "Deliveries of one log message before the subscription moves it to the dead-letter topic (5 to 100)."
  type        = number
  default     = 10
}

variable "dead_letter_retention" {
  description = "How long the dead-letter subscription keeps messages for inspection."
  type        = string
  default     = "604800s"
}

variable "reconcile_schedule" {
  description = "Cron schedule of the Cloud Scheduler job that POSTs /push/scheduler/reconcile."
  type        = string
  default     = "0 * * * *"
}

variable "reconcile_time_zone" {
  description = "Time zone of reconcile_schedule."
  type        = string
  default     = "Etc/UTC"
}

variable "eventarc_run_job_trigger" {
  description = "Create the Eventarc trigger on Cloud Run's RunJob audit entries (to /push/eventarc). It needs Data Access (DATA_WRITE) audit logs of run.googleapis.com, which this also turns on (they are billed as log volume), and only signals that an execution started."
  type        = bool
  default     = false
}

variable "kms_key_rotation_period" {
  description = "Rotation period of the secrets key (seconds with an s suffix; at least 86400s)."
  type        = string
  default     = "7776000s"
}

variable "job_service_account_roles" {
  description = "Project roles granted to the job service account, the identity every command runs as (e.g. roles/storage.objectViewer). Empty by default: commands can reach no Google API."
  type        = list(string)
  default     = []
}

variable "deletion_protection" {
  description = "Protect the Cloud Run services and the Firestore database from `terraform destroy`."
  type        = bool
  default     = true
}
