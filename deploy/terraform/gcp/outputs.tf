output "orchestrator_url" {
  description = "The API: the CLI's api_endpoint (runvoy configure --api-url)."
  value       = google_cloud_run_v2_service.orchestrator.uri
}

output "public_url" {
  description = "RUNVOY_PUBLIC_URL: the base URL runvoyd puts in links."
  value       = local.public_url
}

output "processor_url" {
  description = "The push endpoints' service."
  value       = google_cloud_run_v2_service.processor.uri
}

output "push_audience" {
  description = "The audience every push token carries (RUNVOY_GCP_PUSH_AUDIENCE)."
  value       = local.push_audience
}

output "orchestrator_service_account" {
  description = "Identity of the orchestrator service."
  value       = google_service_account.orchestrator.email
}

output "processor_service_account" {
  description = "Identity of the processor service."
  value       = google_service_account.processor.email
}

output "job_service_account" {
  description = "Identity every command runs as; grant it what commands need (job_service_account_roles)."
  value       = google_service_account.job.email
}

output "push_service_account" {
  description = "Identity of the push tokens (RUNVOY_GCP_PUSH_SERVICE_ACCOUNT)."
  value       = google_service_account.push.email
}

output "kms_key_name" {
  description = "The secrets key (RUNVOY_GCP_SECRETS_KMS_KEY)."
  value       = google_kms_crypto_key.secrets.id
}

output "artifact_registry_repository_url" {
  description = "Where to push the runvoyd and runvoy-sidecar images."
  value       = local.repository_url
}

output "runvoyd_image" {
  description = "The runvoyd image the services run."
  value       = local.runvoyd_image
}

output "sidecar_image" {
  description = "The sidecar image of every job."
  value       = local.sidecar_image
}

output "logs_topic" {
  description = "Topic the Logging sink publishes job entries to."
  value       = google_pubsub_topic.logs.id
}

output "logs_dead_letter_topic" {
  description = "Where undeliverable log messages go."
  value       = google_pubsub_topic.logs_dead_letter.id
}

output "logs_dead_letter_subscription" {
  description = "Pull subscription holding dead-lettered messages for inspection."
  value       = google_pubsub_subscription.logs_dead_letter.id
}

output "firestore_database" {
  description = "The Firestore database (RUNVOY_GCP_FIRESTORE_DATABASE)."
  value       = google_firestore_database.runvoy.name
}

output "token_key_secret" {
  description = "Secret Manager secret holding the log-stream token key (RUNVOY_TOKEN_KEY); add its value once: openssl rand -hex 32 | gcloud secrets versions add SECRET --data-file=-."
  value       = google_secret_manager_secret.token_key.secret_id
}
