terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 6.8 added invoker_iam_disabled to google_cloud_run_v2_service.
      version = ">= 6.8"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
