//! `POST /groups` and `GET /groups/{group_id}/messages`.

use actix_web::{web, HttpResponse};
use parley_actors::model::{GroupMessage, Timestamp};
use parley_actors::persistence::CreateGroup;
use parley_actors::room::CheckMember;
use parley_actors::{ask, validate};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::{path_id, Json, Paging};
use crate::startup::AppState;

#[derive(Deserialize)]
pub struct NewGroup {
    name: String,
    #[serde(default)]
    description: String,
}

#[tracing::instrument(skip_all, fields(creator = %user.username))]
pub async fn create(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    Json(body): Json<NewGroup>,
) -> ApiResult<HttpResponse> {
    validate::group_name(&body.name)?;
    validate::text("description", &body.description, validate::DESCRIPTION_MAX)?;
    let group = ask(
        &state.chat.persistence,
        CreateGroup {
            creator: user,
            name: body.name,
            description: body.description,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(group))
}

/// A group message as REST shows it.
#[derive(Serialize)]
struct GroupMessageView<'a> {
    id: i64,
    content: &'a str,
    sender: &'a str,
    timestamp: Timestamp,
    message_type: &'a str,
}

impl<'a> From<&'a GroupMessage> for GroupMessageView<'a> {
    fn from(m: &'a GroupMessage) -> Self {
        GroupMessageView {
            id: m.id,
            content: &m.content,
            sender: &m.sender,
            timestamp: m.timestamp,
            message_type: &m.message_type,
        }
    }
}

#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn messages(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    group_id: web::Path<String>,
    Paging(page): Paging,
) -> ApiResult<HttpResponse> {
    let group_id = path_id("group_id", &group_id)?;
    let room = state.chat.room(group_id).await?;
    ask(&room, CheckMember { user: user.id }).await?;
    let messages = state.chat.store.group_history(group_id, page).await?;
    let views: Vec<GroupMessageView> = messages.iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(views))
}
