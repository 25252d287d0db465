# The key-encryption key of stored secrets (runvoyd --cipher kms). It never leaves KMS.

resource "google_kms_key_ring" "runvoy" {
  project    = var.project_id
  name       = var.name
  location   = var.region
  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key" "secrets" {
  name            = "secrets"
  key_ring        = google_kms_key_ring.runvoy.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.kms_key_rotation_period

  # Destroying the key makes every sealed secret unreadable.
  lifecycle {
    prevent_destroy = true
  }
}
