//! Reconciler report bodies: `POST /api/v1/health/reconcile` and `GET /api/v1/health/reports`.

use serde::{Deserialize, Serialize};

/// One problem a reconcile sweep found, and what it did about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReconcileIssue {
    /// `error` (needs a person) or `warning` (repaired or informational).
    pub severity: String,
    /// `execution`, `compute`, `logs`, `workspace`.
    pub resource_type: String,
    /// Id of the resource (empty when the issue is about a whole component).
    pub resource_id: String,
    /// `repaired`, `killed`, `removed` or `reported`.
    pub action: String,
    /// What was found.
    pub message: String,
}

/// The result of one reconcile sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReconcileReport {
    /// When the sweep started (RFC 3339).
    pub timestamp: String,
    /// What triggered it: `startup`, `schedule` or `api`.
    pub trigger: String,
    /// Unsettled executions examined.
    pub checked: u64,
    /// Executions whose stored state changed.
    pub reconciled_count: u64,
    /// Executions finalised (terminal status applied).
    #[serde(default)]
    pub finalized: u64,
    /// Kills sent (timeout exceeded, or a kill that did not take).
    #[serde(default)]
    pub killed: u64,
    /// Log records re-read from the durable source and stored.
    #[serde(default)]
    pub log_records_repaired: u64,
    /// Compute executions (workspaces, processes) with no record in the store.
    #[serde(default)]
    pub orphans: u64,
    /// Workspaces of settled executions removed after the retention period.
    #[serde(default)]
    pub workspaces_removed: u64,
    /// Expired rows (e.g. claims) purged.
    #[serde(default)]
    pub purged: u64,
    /// Issues with severity `error`.
    pub error_count: u64,
    /// Everything found.
    pub issues: Vec<ReconcileIssue>,
}

/// `POST /api/v1/health/reconcile` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReconcileResponse {
    /// `ok`.
    pub status: String,
    /// The sweep's report.
    pub report: ReconcileReport,
}

/// `GET /api/v1/health/reports` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReconcileReports {
    /// The most recent sweep reports, newest first.
    pub reports: Vec<ReconcileReport>,
}
