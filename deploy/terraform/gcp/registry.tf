# Images: runvoyd and runvoy-sidecar (built from deploy/docker by `make images`), and any
# image runs use. Cloud Run pulls from a repository of its own project with its service agent.

resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = var.name
  format        = "DOCKER"
  description   = "runvoy images"
  depends_on    = [google_project_service.apis]
}
