# The store (internal/store-firestore). Collection names carry the prefix
# (firestore_collection_prefix, runvoyd's default runvoy_); the log batches are the
# subcollection `logs` of each execution document, without prefix.

resource "google_firestore_database" "runvoy" {
  project                 = var.project_id
  name                    = var.firestore_database
  location_id             = local.firestore_location
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy         = var.deletion_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.apis]
}

locals {
  # Documents that carry `expires_at` (a timestamp) for a TTL policy: unclaimed users, their
  # key documents and claims. runvoyd checks expiry itself and never relies on the TTL having
  # run; the policy only removes what is left.
  ttl_collections = toset(["users", "user_keys", "claims"])

  # Fields that are stored and read back but never filtered or ordered on: large arrays and
  # strings whose index entries would only cost writes (a log batch holds up to 500 records).
  index_exempt = {
    log_records = { collection = "logs", field = "records" }
    log_seqs    = { collection = "logs", field = "seqs" }
    server_line = { collection = "${var.firestore_collection_prefix}server_logs", field = "line" }
    report_body = { collection = "${var.firestore_collection_prefix}reports", field = "report" }
  }
}

resource "google_firestore_field" "ttl" {
  for_each = local.ttl_collections

  project    = var.project_id
  database   = google_firestore_database.runvoy.name
  collection = "${var.firestore_collection_prefix}${each.value}"
  field      = "expires_at"

  ttl_config {}

  # Never queried (expiry queries use expires_at_ms / claim_expires_at_ms).
  index_config {}
}

resource "google_firestore_field" "index_exempt" {
  for_each = local.index_exempt

  project    = var.project_id
  database   = google_firestore_database.runvoy.name
  collection = each.value.collection
  field      = each.value.field

  index_config {}
}

# Composite indexes of the store's queries (single-field ones are automatic):
# list_executions orders by created_at_ms, id (both descending), optionally with
# `status IN [...]` and `created_by ==`; server_logs filters request_id and orders by order.
locals {
  execution_list_indexes = {
    all        = []
    status     = ["status"]
    created_by = ["created_by"]
    both       = ["status", "created_by"]
  }
}

resource "google_firestore_index" "executions" {
  for_each = local.execution_list_indexes

  project    = var.project_id
  database   = google_firestore_database.runvoy.name
  collection = "${var.firestore_collection_prefix}executions"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }

  fields {
    field_path = "created_at_ms"
    order      = "DESCENDING"
  }

  fields {
    field_path = "id"
    order      = "DESCENDING"
  }
}

resource "google_firestore_index" "server_logs" {
  project    = var.project_id
  database   = google_firestore_database.runvoy.name
  collection = "${var.firestore_collection_prefix}server_logs"

  fields {
    field_path = "request_id"
    order      = "ASCENDING"
  }

  fields {
    field_path = "order"
    order      = "ASCENDING"
  }
}
