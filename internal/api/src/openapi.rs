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
        crate::ready::ready,
        crate::executions::reconcile,
        crate::health::reports,
        crate::ws::handler,
        crate::users::list,
        crate::users::create,
        crate::users::claim,
        crate::users::revoke,
        crate::users::set_role,
        crate::users::rotate_key,
        crate::users::me,
        crate::trace::get,
        crate::images::register,
        crate::images::list,
        crate::images::get,
        crate::images::unregister,
        crate::secrets::create,
        crate::secrets::list,
        crate::secrets::get,
        crate::secrets::update,
        crate::secrets::delete,
        crate::secrets::reveal,
        crate::secrets::fetch,
    ),
    components(schemas(
        runvoy_proto::RunRequest, runvoy_proto::RunResponse, runvoy_proto::Execution,
        runvoy_proto::LogEvent, runvoy_proto::LogsResponse,
        runvoy_proto::KillResponse, runvoy_proto::HealthResponse, runvoy_proto::ReadyResponse,
        runvoy_proto::ErrorBody, runvoy_proto::LockHolder,
        runvoy_proto::Status, runvoy_proto::record::Stream, runvoy_proto::ws::Disconnect,
        runvoy_proto::ReconcileReport, runvoy_proto::ReconcileIssue,
        runvoy_proto::ReconcileResponse, runvoy_proto::ReconcileReports,
        runvoy_proto::User, runvoy_proto::UserList, runvoy_proto::CreateUserRequest,
        runvoy_proto::CreateUserResponse, runvoy_proto::ClaimResponse,
        runvoy_proto::RevokeUserRequest, runvoy_proto::SetRoleRequest,
        runvoy_proto::UserChangeResponse, runvoy_proto::TraceResponse,
        runvoy_proto::TraceLogLine, runvoy_proto::TraceResources,
        runvoy_proto::RegisterImageRequest, runvoy_proto::ImageInfo, runvoy_proto::ImageList,
        runvoy_proto::UnregisterImageResponse,
        runvoy_proto::CreateSecretRequest, runvoy_proto::UpdateSecretRequest,
        runvoy_proto::SecretInfo, runvoy_proto::SecretList, runvoy_proto::RevealedSecret,
        runvoy_proto::DeleteSecretResponse, runvoy_proto::SecretsFetchRequest,
        runvoy_proto::FetchedSecret, runvoy_proto::SecretsFetchResponse,
    )),
    modifiers(&Security, &Aliases, &Statuses, &RunShape)
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

/// Routes served by a handler that is documented under another path: `/executions/{id}/status`
/// (same as `/executions/{id}`), `/users/` (same as `/users`), and this document itself.
struct Aliases;

impl Modify for Aliases {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
        use utoipa::openapi::{ContentBuilder, ResponseBuilder};
        let paths = &mut api.paths.paths;
        for (alias, of, id) in [
            (
                "/api/v1/executions/{id}/status",
                "/api/v1/executions/{id}",
                "get_status",
            ),
            ("/api/v1/users/", "/api/v1/users", "list_users_slash"),
        ] {
            let Some(mut op) = paths.get(of).and_then(|p| p.get.clone()) else {
                continue;
            };
            op.operation_id = Some(id.to_owned());
            paths.insert(alias.to_owned(), PathItem::new(HttpMethod::Get, op));
        }
        let doc = OperationBuilder::new()
            .operation_id(Some("openapi"))
            .description(Some("This OpenAPI document (public)."))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The OpenAPI document")
                    .content("application/json", ContentBuilder::new().build()),
            )
            .build();
        paths.insert(
            "/api/v1/openapi.json".to_owned(),
            PathItem::new(HttpMethod::Get, doc),
        );
    }
}

/// The statuses every route can answer besides its own, documented from the access policy
/// and the extractors rather than repeated on each handler: 401/403 and the security
/// requirement on routes that take credentials (403 only where some role is refused or
/// ownership is checked), 429 where failed authentications are rate-limited, 503 where the
/// store is read (it may be unavailable), 400/413/415 on JSON bodies, 400 on path and query
/// parameters, 404 on path parameters. Each with the one error body.
struct Statuses;

impl Modify for Statuses {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use crate::policy::{Access, Grant};
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::security::SecurityRequirement;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in api.paths.paths.iter_mut() {
            let route = path.strip_prefix("/api/v1").unwrap_or(path);
            for (method, op) in [
                ("GET", item.get.as_mut()),
                ("POST", item.post.as_mut()),
                ("PUT", item.put.as_mut()),
                ("DELETE", item.delete.as_mut()),
                ("PATCH", item.patch.as_mut()),
            ] {
                let Some(op) = op else { continue };
                // `{id}` in the document is `{*id}` in the router (image ids hold '/').
                let rule = crate::policy::lookup(method, route)
                    .or_else(|| crate::policy::lookup(method, &route.replace("{id}", "{*id}")));
                let Some(rule) = rule else { continue };
                let mut add: Vec<(&str, &str)> = Vec::new();
                let rate_limited = (
                    "429",
                    "RATE_LIMITED: too many failed authentications from this address",
                );
                match rule.access {
                    Access::Public => {}
                    Access::Key(resource, grants) => {
                        add.push((
                            "401",
                            "UNAUTHORIZED: no API key, or an unknown or revoked one",
                        ));
                        if grants.iter().any(|g| *g != Grant::All)
                            || resource != crate::policy::Resource::None
                        {
                            add.push(("403", "FORBIDDEN: the caller's role may not do this"));
                        }
                        add.push(rate_limited);
                        op.security = Some(vec![SecurityRequirement::new(
                            "api_key",
                            Vec::<String>::new(),
                        )]);
                    }
                    Access::LogToken | Access::SecretsToken => {
                        add.push((
                            "401",
                            "UNAUTHORIZED: no token, or an invalid or expired one",
                        ));
                        add.push(("403", "FORBIDDEN: the token is not good for this execution"));
                        add.push(rate_limited);
                    }
                }
                if route != "/openapi.json" && route != "/health" {
                    add.push(("503", "UNAVAILABLE: the store or compute cannot be reached"));
                }
                let params = op.parameters.as_deref().unwrap_or_default();
                if op.request_body.is_some() {
                    add.push(("400", "INVALID_REQUEST: the body is not valid JSON for this route, or a field is invalid"));
                    add.push(("413", "PAYLOAD_TOO_LARGE: the body is over the limit"));
                    add.push(("415", "UNSUPPORTED_MEDIA_TYPE: the body must be JSON (Content-Type: application/json)"));
                }
                if !params.is_empty() {
                    add.push(("400", "INVALID_REQUEST: a parameter is invalid"));
                }
                if params.iter().any(|p| p.parameter_in == ParameterIn::Path) {
                    add.push(("404", "NOT_FOUND: no such resource"));
                }
                for (status, description) in add {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description));
                }
            }
        }
    }
}

/// `RunRequest` takes a non-blank `command` or a non-empty `argv` whose first word is not
/// empty, never both: a rule across fields, which the derived schema cannot say alone.
struct RunShape;

impl Modify for RunShape {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{
            AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, Type,
        };
        let Some(c) = api.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(base)) = c.schemas.get("RunRequest").cloned() else {
            return;
        };
        let string = || ObjectBuilder::new().schema_type(Type::String);
        // No NUL anywhere; at least one character that is not white space.
        let command = string()
            .pattern(Some(r"^[^\u0000]*[^\s\u0000][^\u0000]*$"))
            .max_length(Some(runvoy_domain::MAX_COMMAND_BYTES));
        let shell = ObjectBuilder::new()
            .property("command", command)
            .property("argv", ObjectBuilder::new().schema_type(Type::Null))
            .required("command");
        let words = ArrayBuilder::new()
            .items(string().pattern(Some(r"^[^\u0000]*$")))
            .prefix_items([Schema::from(string().min_length(Some(1)))])
            .min_items(Some(1))
            .max_items(Some(runvoy_domain::MAX_ARGV_WORDS));
        let exact = ObjectBuilder::new()
            .property("argv", words)
            .property("command", string().max_length(Some(0)))
            .required("argv");
        let shaped = AllOfBuilder::new()
            .item(base)
            .item(AnyOfBuilder::new().item(shell).item(exact))
            .build();
        c.schemas
            .insert("RunRequest".to_owned(), RefOr::T(Schema::AllOf(shaped)));
    }
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented() {
        let doc = ApiDoc::openapi();
        let mut missing = Vec::new();
        for (method, path, _) in crate::api_routes() {
            // OpenAPI has no catch-all parameter: `{*id}` is documented as `{id}`.
            let item = doc
                .paths
                .paths
                .get(&format!("/api/v1{}", path.replace("{*", "{")));
            let op = item.and_then(|i| match method {
                "GET" => i.get.as_ref(),
                "POST" => i.post.as_ref(),
                "PUT" => i.put.as_ref(),
                "DELETE" => i.delete.as_ref(),
                "PATCH" => i.patch.as_ref(),
                _ => None,
            });
            if op.is_none() {
                missing.push(format!("{method} {path}"));
            }
        }
        assert!(
            missing.is_empty(),
            "routes missing from the OpenAPI document: {missing:?}"
        );
    }

    #[test]
    fn the_run_lock_and_its_409_are_documented() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let run = &doc["paths"]["/api/v1/run"]["post"];
        assert!(
            run["responses"]["409"]["description"]
                .as_str()
                .unwrap()
                .contains("LOCK_HELD"),
            "{run}"
        );
        let schemas = &doc["components"]["schemas"];
        // RunRequest is its fields (allOf[0]) and the command-or-argv rule (allOf[1]).
        assert!(schemas["RunRequest"]["allOf"][0]["properties"]["lock"].is_object());
        assert!(schemas["RunRequest"]["allOf"][1]["anyOf"].is_array());
        assert!(schemas["Execution"]["properties"]["lock"].is_object());
        assert!(schemas["ErrorBody"]["properties"]["lock"].is_object());
        assert!(schemas["LockHolder"]["properties"]["execution_id"].is_object());
    }

    #[test]
    fn the_image_routes_and_fields_are_documented() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = &doc["paths"];
        assert!(paths["/api/v1/images/register"]["post"]["responses"]["201"].is_object());
        assert!(paths["/api/v1/images"]["get"].is_object());
        let one = &paths["/api/v1/images/{id}"];
        for method in ["get", "delete"] {
            assert!(
                one[method]["responses"]["409"]["description"]
                    .as_str()
                    .unwrap()
                    .contains("IMAGE_AMBIGUOUS"),
                "{method}: {one}"
            );
        }
        let info = &doc["components"]["schemas"]["ImageInfo"]["properties"];
        for f in [
            "image_id",
            "image",
            "registry",
            "image_name",
            "image_tag",
            "cpu",
            "memory",
            "timeout",
            "service_account",
            "is_default",
            "created_by",
            "created_at",
        ] {
            assert!(info[f].is_object(), "ImageInfo.{f}");
        }
        let req = &doc["components"]["schemas"]["RegisterImageRequest"]["properties"];
        assert!(req["is_default"].is_object() && req["service_account"].is_object());
    }
}
