# The event path (docs/GCP.md, "The event path"): job logs → Logging sink → Pub/Sub topic →
# push subscription → processor /push/pubsub/logs; Cloud Scheduler → /push/scheduler/reconcile;
# optionally Eventarc (RunJob audit entries) → /push/eventarc. Every push carries an OIDC
# token minted for the push account with the audience runvoyd checks.

resource "google_pubsub_topic" "logs" {
  project    = var.project_id
  name       = "${var.name}-logs"
  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "logs_dead_letter" {
  project    = var.project_id
  name       = "${var.name}-logs-dead-letter"
  depends_on = [google_project_service.apis]
}

# Keeps dead-lettered messages for inspection (a topic without a subscription drops them).
resource "google_pubsub_subscription" "logs_dead_letter" {
  project                    = var.project_id
  name                       = "${var.name}-logs-dead-letter"
  topic                      = google_pubsub_topic.logs_dead_letter.id
  message_retention_duration = var.dead_letter_retention
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "logs_push" {
  project = var.project_id
  name    = "${var.name}-logs-push"
  topic   = google_pubsub_topic.logs.id
  # For push this is also the timeout of one delivery; a record is acknowledged only once
  # stored (group commit waits a few ms for the other records of its execution).
  ack_deadline_seconds       = var.push_ack_deadline_seconds
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.processor.uri}/push/pubsub/logs"

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.push_audience
    }
  }

  # runvoyd answers 4xx for a message that can never succeed; Pub/Sub does not tell 4xx from
  # 5xx, so only the dead-letter policy stops such a message from being retried for the whole
  # retention period.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.logs_dead_letter.id
    max_delivery_attempts = var.push_max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "1s"
    maximum_backoff = "60s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_service_account_iam_member.pubsub_mints_push_tokens,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}

# Dead-lettering is done by the Pub/Sub service agent: it publishes to the dead-letter topic
# and acknowledges on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.logs_dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.logs_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

resource "google_logging_project_sink" "job_logs" {
  project                = var.project_id
  name                   = "${var.name}-job-logs"
  destination            = "pubsub.googleapis.com/${google_pubsub_topic.logs.id}"
  filter                 = local.sink_filter
  unique_writer_identity = true
}

resource "google_pubsub_topic_iam_member" "sink_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.logs.name
  role    = "roles/pubsub.publisher"
  member  = google_logging_project_sink.job_logs.writer_identity
}

# The reconcile sweep on a schedule (each runvoyd instance also sweeps at start and hourly;
# this one runs even when every instance is scaled to zero).
resource "google_cloud_scheduler_job" "reconcile" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name}-reconcile"
  description      = "runvoy reconcile sweep"
  schedule         = var.reconcile_schedule
  time_zone        = var.reconcile_time_zone
  attempt_deadline = "600s"

  http_target {
    http_method = "POST"
    uri         = "${google_cloud_run_v2_service.processor.uri}/push/scheduler/reconcile"

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.push_audience
    }
  }

  retry_config {
    retry_count = 1
  }

  depends_on = [google_project_service.apis]
}

# Cloud Run records jobs.run as a Data Access (DATA_WRITE) audit entry, off by default; the
# Eventarc trigger below sees nothing without it. This resource is authoritative for the audit
# configuration of run.googleapis.com in the project.
resource "google_project_iam_audit_config" "run_data_write" {
  count = var.eventarc_run_job_trigger ? 1 : 0

  project = var.project_id
  service = "run.googleapis.com"

  audit_log_config {
    log_type = "DATA_WRITE"
  }
}

# google.cloud.audit.log.v1.written for RunJob: the audit entry names the new Cloud Run
# execution; runvoyd takes it as a hint to reconcile (internal/events-gcp/src/eventarc.rs).
resource "google_eventarc_trigger" "run_job" {
  count = var.eventarc_run_job_trigger ? 1 : 0

  project  = var.project_id
  name     = "${var.name}-run-job"
  location = var.region

  matching_criteria {
    attribute = "type"
    value     = "google.cloud.audit.log.v1.written"
  }

  matching_criteria {
    attribute = "serviceName"
    value     = "run.googleapis.com"
  }

  matching_criteria {
    attribute = "methodName"
    value     = "google.cloud.run.v2.Jobs.RunJob"
  }

  destination {
    cloud_run_service {
      service = google_cloud_run_v2_service.processor.name
      region  = var.region
      path    = "/push/eventarc"
    }
  }

  service_account = google_service_account.push.email

  depends_on = [
    google_project_iam_member.push_event_receiver,
    google_project_iam_audit_config.run_data_write,
    google_cloud_run_v2_service_iam_member.processor_push_invoker,
    google_service_account_iam_member.pubsub_mints_push_tokens,
  ]
}
