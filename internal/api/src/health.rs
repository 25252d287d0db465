//! Reconciler reports: `GET /api/v1/health/reports`.

use axum::extract::State;
use runvoy_domain::processor::REPORTS_KEPT;
use runvoy_proto::ReconcileReports;

use crate::AppState;
use crate::error::ApiError;

/// The most recent reconcile sweep reports (startup, schedule, API), newest first.
#[utoipa::path(get, path = "/api/v1/health/reports",
    responses((status = 200, body = ReconcileReports), (status = 403, body = runvoy_proto::ErrorBody),
               (status = 503, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn reports(
    State(st): State<AppState>,
) -> Result<axum::Json<ReconcileReports>, ApiError> {
    let reports = st
        .service
        .store
        .recent_reports(REPORTS_KEPT)
        .await
        .map_err(runvoy_domain::DomainError::Store)?;
    Ok(axum::Json(ReconcileReports { reports }))
}
