# The two runvoyd services: the same image and configuration, different identity, ingress and
# scaling. `runvoyd serve --backend gcp`: Firestore store, Cloud Run compute, Pub/Sub push
# events, Cloud KMS cipher.

resource "google_cloud_run_v2_service" "orchestrator" {
  project             = var.project_id
  name                = local.orchestrator_name
  location            = var.region
  ingress             = var.orchestrator_ingress
  deletion_protection = var.deletion_protection

  template {
    service_account = google_service_account.orchestrator.email
    # Log WebSockets are requests: they last up to the request timeout, then the CLI
    # reconnects from its last seq.
    timeout                          = "${var.request_timeout_seconds}s"
    session_affinity                 = true
    max_instance_request_concurrency = var.max_request_concurrency

    scaling {
      min_instance_count = var.orchestrator_min_instances
      max_instance_count = var.orchestrator_max_instances
    }

    containers {
      image   = local.runvoyd_image
      command = ["runvoyd"]
      args    = ["serve", "--backend", "gcp"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.service_cpu
          memory = var.service_memory
        }
        # runvoyd works between requests: reconcile sweeps, the lock heartbeat, Firestore
        # listen streams of followers.
        cpu_idle          = false
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.runvoyd_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # One signing key for every instance's log-stream tokens (secrets.tf).
      env {
        name = "RUNVOY_TOKEN_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.token_key.secret_id
            version = "latest"
          }
        }
      }
    }
  }

  depends_on = [
    google_project_service.apis,
    google_project_iam_member.orchestrator_run,
    google_project_iam_member.firestore,
    google_project_iam_member.logs_viewer,
    google_kms_crypto_key_iam_member.secrets,
    google_secret_manager_secret_iam_member.token_key,
    google_service_account_iam_member.orchestrator_acts_as_job,
  ]
}

resource "google_cloud_run_v2_service" "processor" {
  project             = var.project_id
  name                = local.processor_name
  location            = var.region
  ingress             = var.processor_ingress
  deletion_protection = var.deletion_protection
  # runvoyd verifies every push token's signature itself (RUNVOY_GCP_PUSH_AUDIENCE and
  # RUNVOY_GCP_PUSH_SERVICE_ACCOUNT). Cloud Run's own invoker check would hand the token on
  # with its signature removed, and runvoyd would refuse it, so the check is off here; the
  # ingress setting keeps the internet out.
  invoker_iam_disabled = true

  template {
    service_account                  = google_service_account.processor.email
    timeout                          = "${var.request_timeout_seconds}s"
    session_affinity                 = true
    max_instance_request_concurrency = var.max_request_concurrency

    scaling {
      min_instance_count = var.processor_min_instances
      max_instance_count = var.processor_max_instances
    }

    containers {
      image   = local.runvoyd_image
      command = ["runvoyd"]
      args    = ["serve", "--backend", "gcp"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.service_cpu
          memory = var.service_memory
        }
        cpu_idle          = false
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.runvoyd_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # One signing key for every instance's log-stream tokens (secrets.tf).
      env {
        name = "RUNVOY_TOKEN_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.token_key.secret_id
            version = "latest"
          }
        }
      }
    }
  }

  depends_on = [
    google_project_service.apis,
    google_project_iam_member.processor_run,
    google_project_iam_member.firestore,
    google_project_iam_member.logs_viewer,
    google_kms_crypto_key_iam_member.secrets,
    google_secret_manager_secret_iam_member.token_key,
  ]
}

# runvoy checks API keys itself; the orchestrator is public unless orchestrator_public is false.
resource "google_cloud_run_v2_service_iam_member" "orchestrator_public" {
  count = var.orchestrator_public ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.orchestrator.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# The push account is the only invoker of the processor. With the invoker check off (above)
# runvoyd's own OIDC check is what admits a push; the binding keeps the processor closed to
# everyone else should the check be turned back on.
resource "google_cloud_run_v2_service_iam_member" "processor_push_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.processor.name
  role     = "roles/run.invoker"
  member   = google_service_account.push.member
}
