# The key that signs log-stream tokens, shared by every runvoyd instance (RUNVOY_TOKEN_KEY).
# Terraform creates the secret; its value is added once, outside Terraform, so it never enters
# the state: `openssl rand -hex 32 | gcloud secrets versions add NAME --data-file=-`.

resource "google_secret_manager_secret" "token_key" {
  project   = var.project_id
  secret_id = "${var.name}-token-key"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_iam_member" "token_key" {
  for_each = toset([
    "serviceAccount:${google_service_account.orchestrator.email}",
    "serviceAccount:${google_service_account.processor.email}",
  ])

  project   = var.project_id
  secret_id = google_secret_manager_secret.token_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}
