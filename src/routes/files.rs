//! `POST /files/upload` (multipart, field `file`) and `GET /files/{file_id}`.
//! Uploads stream to disk chunk by chunk, never whole in memory; the bytes
//! are named by a server-made UUID, and the client's file name is kept only
//! as metadata, so nothing a client sends reaches a file system path.

use std::path::Path;

use actix_files::NamedFile;
use actix_multipart::{Field, Multipart};
use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use parley_actors::model::{FileRecord, Timestamp};
use parley_actors::persistence::StoreFile;
use parley_actors::{ask, ChatError};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::schema::{self, FileUpload};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadedFile<'a> {
    /// A UUID chosen by the server.
    #[schema(format = Uuid)]
    file_id: &'a str,
    /// The client's file name reduced to its last path component.
    filename: &'a str,
    /// In bytes.
    #[schema(minimum = 0)]
    size: i64,
    #[schema(value_type = String, format = DateTime)]
    upload_time: Timestamp,
    /// `/files/{file_id}`, relative to the server.
    #[schema(example = "/files/6f1c1e0a-3a0e-4d5e-9a43-0b8f7f1c2d3e")]
    url: String,
}

/// Uploads a file as the multipart field `file` (other fields are ignored).
#[utoipa::path(
    post,
    path = "/files/upload",
    operation_id = "upload_file",
    tag = "files",
    security(("bearer" = [])),
    request_body(content = FileUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The stored file", body = UploadedFile),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(uploader = %user.username))]
pub async fn upload(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    mut form: Multipart,
) -> ApiResult<HttpResponse> {
    while let Some(field) = form.next().await {
        let field = field.map_err(bad_multipart)?;
        if field.name() != Some("file") {
            continue;
        }
        let filename = client_file_name(
            field
                .content_disposition()
                .and_then(|disposition| disposition.get_filename()),
        );
        let file_id = uuid::Uuid::new_v4().to_string();
        let path = state.files_dir.join(&file_id);
        let size = save(field, &path, state.max_upload_bytes).await?;
        let file = FileRecord {
            file_id,
            uploader_id: user.id,
            filename,
            size: size as i64,
            upload_time: Timestamp::now(),
        };
        let stored = ask(state.chat.persistence(), StoreFile { file }).await;
        let file = match stored {
            Ok(file) => file,
            Err(error) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(error.into());
            }
        };
        return Ok(HttpResponse::Ok().json(UploadedFile {
            file_id: &file.file_id,
            filename: &file.filename,
            size: file.size,
            upload_time: file.upload_time,
            url: format!("/files/{}", file.file_id),
        }));
    }
    Err(ChatError::invalid("file: missing multipart field").into())
}

/// The client's file name reduced to its last path component, without
/// control characters, at most 255 characters.
fn client_file_name(raw: Option<&str>) -> String {
    let last = raw
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !c.is_control()).take(255).collect();
    match cleaned.as_str() {
        "" | "." | ".." => "file".to_owned(),
        _ => cleaned,
    }
}

/// Streams a field to `path`, stopping with 413 (and leaving nothing
/// behind) as soon as it passes `limit` bytes.
async fn save(mut field: Field, path: &Path, limit: u64) -> ApiResult<u64> {
    let partial_path = path.with_extension("part");
    let written = write_limited(&mut field, &partial_path, limit).await;
    match written {
        Ok(size) => {
            tokio::fs::rename(&partial_path, path)
                .await
                .map_err(ChatError::internal)?;
            Ok(size)
        }
        Err(error) => {
            let _ = tokio::fs::remove_file(&partial_path).await;
            Err(error)
        }
    }
}

async fn write_limited(field: &mut Field, path: &Path, limit: u64) -> ApiResult<u64> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(ChatError::internal)?;
    let mut size: u64 = 0;
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(bad_multipart)?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ChatError::TooLarge(format!(
                "file: larger than the limit of {limit} bytes"
            ))
            .into());
        }
        file.write_all(&chunk).await.map_err(ChatError::internal)?;
    }
    file.flush().await.map_err(ChatError::internal)?;
    Ok(size)
}

fn bad_multipart(error: actix_multipart::MultipartError) -> ApiError {
    ChatError::invalid(format!(
        "body: expected multipart/form-data with a 'file' field: {error}"
    ))
    .into()
}

/// `GET /files/{file_id}`: for the uploader, and for anyone who can see a
/// message that mentions the file (its id or url). Everyone else gets the
/// same 404 as for a file that does not exist.
#[utoipa::path(
    get,
    path = "/files/{file_id}",
    operation_id = "download_file",
    tag = "files",
    security(("bearer" = [])),
    params(("file_id" = String, Path, description = "The `file_id` from the upload")),
    responses(
        (status = 200, description = "The bytes, as an attachment", content_type = "application/octet-stream", body = schema::Binary,
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"…\"`"))),
        (status = 401, response = schema::Unauthorized),
        (status = 404, response = schema::NotFound),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn download(
    req: HttpRequest,
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    file_id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let hidden = || ChatError::not_found("file_id: no such file");
    let record = state
        .chat
        .store()
        .file(&file_id)
        .await?
        .ok_or_else(hidden)?;
    let allowed = record.uploader_id == user.id
        || state
            .chat
            .store()
            .file_visible_to(&record.file_id, user.id)
            .await?;
    if !allowed {
        return Err(hidden().into());
    }
    let file = NamedFile::open_async(state.files_dir.join(&record.file_id))
        .await
        .map_err(|err| {
            tracing::error!(file_id = %record.file_id, %err, "file metadata without bytes");
            hidden()
        })?;
    let file = file
        .set_content_type(mime::APPLICATION_OCTET_STREAM)
        .set_content_disposition(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(record.filename)],
        })
        .use_etag(false)
        .use_last_modified(false);
    let mut response = file.into_response(&req);
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}
