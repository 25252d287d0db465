# cp example.tfvars terraform.tfvars, then edit.
project_id = "my-project"
region     = "europe-west1"

# Optional:
# default_image              = "europe-west1-docker.pkg.dev/my-project/runvoy/tools:1"
# orchestrator_min_instances = 0
# job_service_account_roles  = ["roles/storage.objectViewer"]
# extra_env                  = { RUNVOY_MAX_CONCURRENT_TOTAL = "100" }
