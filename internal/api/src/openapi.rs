//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// runvoy's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "runvoy", description = "Run commands in ephemeral containers with live logs."),
    paths(
        crate::executions::run,
        crate::executions::list,
        crate::executions::get,
        crate::executions::kill,
        crate::executions::logs,
        crate::executions::health,
        crate::executions::reconcile,
        crate::health::reports,
        crate::ws::handler,
        crate::users::list,
        crate::users::create,
        crate::users::claim,
        crate::users::revoke,
        crate::users::set_role,
        crate::users::rotate_key,
        crate::trace::get,
    ),
    components(schemas(
        runvoy_proto::RunRequest, runvoy_proto::RunResponse, runvoy_proto::Execution,
        runvoy_proto::ExecutionList, runvoy_proto::LogEvent, runvoy_proto::LogsResponse,
        runvoy_proto::KillResponse, runvoy_proto::HealthResponse, runvoy_proto::ErrorBody,
        runvoy_proto::Status, runvoy_proto::record::Stream, runvoy_proto::ws::Disconnect,
        runvoy_proto::ReconcileReport, runvoy_proto::ReconcileIssue,
        runvoy_proto::ReconcileResponse, runvoy_proto::ReconcileReports,
        runvoy_proto::User, runvoy_proto::UserList, runvoy_proto::CreateUserRequest,
        runvoy_proto::CreateUserResponse, runvoy_proto::ClaimResponse,
        runvoy_proto::RevokeUserRequest, runvoy_proto::SetRoleRequest,
        runvoy_proto::UserChangeResponse, runvoy_proto::TraceResponse,
        runvoy_proto::TraceLogLine, runvoy_proto::TraceResources,
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
