//! Image registry handlers: register, list, show, unregister.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runvoy_domain::service::Caller;
use runvoy_proto::{ImageInfo, ImageList, RegisterImageRequest, UnregisterImageResponse};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, Path};

/// Registers an image: 201 with the image when it is new, 200 with the stored one when the
/// same reference and configuration were registered before (nothing is duplicated; only
/// `is_default: true` changes anything then). The first image becomes the default unless
/// `is_default` is false.
#[utoipa::path(post, path = "/api/v1/images/register", request_body = RegisterImageRequest,
    responses((status = 201, body = ImageInfo, description = "registered"),
              (status = 200, body = ImageInfo, description = "already registered with this configuration"),
              (status = 400, body = runvoy_proto::ErrorBody,
               description = "INVALID_REQUEST: a bad reference or value; IMAGE_REJECTED: compute cannot run the image"),
              (status = 403, body = runvoy_proto::ErrorBody),
              (status = 503, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn register(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RegisterImageRequest>,
) -> Result<Response, ApiError> {
    let r = st.service.register_image(&caller, &req).await?;
    tracing::info!(
        image_id = %r.image.id,
        image = %r.image.image,
        is_default = r.image.is_default,
        created = r.created,
        "image registered"
    );
    let status = if r.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(r.image.to_api())).into_response())
}

/// Every registered image, sorted by id.
#[utoipa::path(get, path = "/api/v1/images",
    responses((status = 200, body = ImageList), (status = 403, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(State(st): State<AppState>) -> Result<axum::Json<ImageList>, ApiError> {
    let images = st.service.list_images().await?;
    Ok(axum::Json(ImageList {
        images: images.iter().map(|i| i.to_api()).collect(),
    }))
}

/// One image, by id or by a reference that matches one registered image (`alpine:3.19`,
/// `ghcr.io/acme/tool`). `/` in the reference may be sent as is or as `%2F`.
#[utoipa::path(get, path = "/api/v1/images/{id}", params(("id" = String, Path, description = "image id, or a reference matching exactly one image")),
    responses((status = 200, body = ImageInfo), (status = 404, body = runvoy_proto::ErrorBody),
              (status = 409, body = runvoy_proto::ErrorBody, description = "IMAGE_AMBIGUOUS: several images match; name one by its id")),
    security(("api_key" = [])))]
pub(crate) async fn get(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ImageInfo>, ApiError> {
    Ok(axum::Json(st.service.get_image(&id).await?.to_api()))
}

/// Unregisters an image (named as for `GET`). Unregistering the default image leaves no
/// default: runs that name no image then use the server's `--default-image`. Executions that
/// ran in it keep its id.
#[utoipa::path(delete, path = "/api/v1/images/{id}", params(("id" = String, Path, description = "image id, or a reference matching exactly one image")),
    responses((status = 200, body = UnregisterImageResponse), (status = 404, body = runvoy_proto::ErrorBody),
              (status = 409, body = runvoy_proto::ErrorBody, description = "IMAGE_AMBIGUOUS: several images match; name one by its id"),
              (status = 403, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn unregister(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<UnregisterImageResponse>, ApiError> {
    let img = st.service.unregister_image(&id).await?;
    tracing::info!(image_id = %img.id, image = %img.image, was_default = img.is_default, "image unregistered");
    let message = if img.is_default {
        "image unregistered; it was the default, so no image is the default now".to_owned()
    } else {
        "image unregistered".to_owned()
    };
    Ok(axum::Json(UnregisterImageResponse {
        message,
        image_id: img.id.clone(),
        image: img.to_api(),
    }))
}
