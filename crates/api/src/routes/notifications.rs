//! The delivery log, dead-letter retry, the admins' test message and per-user
//! notification preferences.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use factoryops_identity::{AuditRecord, Principal};
use factoryops_notify::store::{NewNotification, Preferences};
use factoryops_notify::templates::render_test;
use factoryops_notify::{ChannelKind, Notification, NotificationQuery, NotificationStatus, NotifyError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AlertsWrite, CanRead, SuperAdmin, Tenant};
use crate::problem::{ApiJson, Problem};
use crate::router::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(get_notification))
        .routes(routes!(retry_notification))
        .routes(routes!(send_test))
        .routes(routes!(get_preferences, put_preferences))
}

type ApiResult<T> = Result<T, Problem>;

impl From<NotifyError> for Problem {
    fn from(error: NotifyError) -> Self {
        match error {
            NotifyError::NotFound => Problem::not_found("no such notification"),
            NotifyError::Conflict(message) => Problem::conflict(message),
            NotifyError::Invalid { field, message } => Problem::invalid_field(&field, message),
            NotifyError::InvalidFields(fields) => Problem::validation(
                fields.into_iter().map(|(field, message)| crate::problem::FieldError { field, message }).collect(),
            ),
            other => Problem::internal(&other),
        }
    }
}

#[derive(Deserialize, IntoParams)]
pub struct NotificationParams {
    /// `pending`, `sending`, `delivered` or `dead`.
    pub status: Option<String>,
    /// `email` or `whatsapp`.
    pub channel: Option<String>,
    pub alert_id: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<Notification>,
    pub next_cursor: Option<String>,
}

/// The delivery log of this factory, newest first, dead letters included.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/notifications", tag = "notifications",
    params(("factory_id" = String, Path), NotificationParams), security(("bearer" = [])),
    responses((status = 200, body = NotificationPage), (status = 422, body = Problem)))]
async fn list_notifications(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Query(q): Query<NotificationParams>,
) -> ApiResult<Response> {
    let status = match q.status.as_deref() {
        Some(s) => Some(
            NotificationStatus::parse(s)
                .ok_or_else(|| Problem::invalid_field("status", "must be pending, sending, delivered or dead"))?,
        ),
        None => None,
    };
    let channel = match q.channel.as_deref() {
        Some(c) => {
            Some(ChannelKind::parse(c).ok_or_else(|| Problem::invalid_field("channel", "must be email or whatsapp"))?)
        }
        None => None,
    };
    let query = NotificationQuery { status, channel, alert_id: q.alert_id, cursor: q.cursor, limit: q.limit };
    let page = state.notifications.list(&t.factory, &query).await?;
    Ok(Json(NotificationPage { items: page.items, next_cursor: page.next_cursor }).into_response())
}

/// One delivery with its attempts and last error.
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/notifications/{notification_id}", tag = "notifications",
    params(("factory_id" = String, Path), ("notification_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Notification), (status = 404, body = Problem)))]
async fn get_notification(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(state.notifications.get(&t.factory, &ids.1).await?).into_response())
}

/// Re-queues a dead letter with a fresh attempt budget (`alerts:write`); 409 unless it is dead.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/notifications/{notification_id}/retry", tag = "notifications",
    params(("factory_id" = String, Path), ("notification_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Notification), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn retry_notification(
    State(state): State<AppState>,
    t: Tenant<AlertsWrite>,
    Path(ids): Path<(String, String)>,
) -> ApiResult<Response> {
    let notification = state.notifications.retry(&t.factory, &ids.1, state.clock.now_ms()).await?;
    state.notify_wake.notify_one();
    state
        .identity
        .record_audit(AuditRecord {
            factory: &t.factory,
            actor: t.principal.actor(),
            action: "notification.retried",
            target: Some(&ids.1),
            source_ip: t.ctx.source_ip.as_deref(),
            detail: serde_json::json!({ "channel": notification.channel, "recipient": notification.recipient }),
        })
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(notification).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestNotification {
    /// `email` or `whatsapp`.
    pub channel: String,
    /// An address or E.164 number; default: the caller's own email or phone.
    #[serde(default)]
    pub to: Option<String>,
}

/// Sends a test message through a channel (super admin): "send me a test email / WhatsApp".
/// Answers 202 with the queued notification; follow it in the delivery log.
#[utoipa::path(post, path = "/api/v1/factories/{factory_id}/notifications/test", tag = "notifications",
    params(("factory_id" = String, Path)), request_body = TestNotification, security(("bearer" = [])),
    responses((status = 202, body = Notification), (status = 422, body = Problem)))]
async fn send_test(
    State(state): State<AppState>,
    t: Tenant<SuperAdmin>,
    ApiJson(body): ApiJson<TestNotification>,
) -> ApiResult<Response> {
    let channel = ChannelKind::parse(&body.channel)
        .ok_or_else(|| Problem::invalid_field("channel", "must be email or whatsapp"))?;
    let Principal::User { user_id, .. } = &t.principal else {
        return Err(Problem::forbidden("test notifications are sent on behalf of a user"));
    };
    let user = state
        .identity
        .user(&t.factory, user_id)
        .await
        .map_err(|e| Problem::internal(&e))?
        .ok_or_else(|| Problem::not_found("no such user"))?;
    let to = match (body.to, channel) {
        (Some(to), ChannelKind::Email) if factoryops_notify::is_email(&to) => to,
        (Some(to), ChannelKind::Whatsapp) if factoryops_notify::is_e164(&to) => to,
        (Some(_), ChannelKind::Email) => return Err(Problem::invalid_field("to", "not an email address")),
        (Some(_), ChannelKind::Whatsapp) => return Err(Problem::invalid_field("to", "not an E.164 number (+4915…)")),
        (None, ChannelKind::Email) => user.email.clone(),
        (None, ChannelKind::Whatsapp) => user
            .phone
            .clone()
            .ok_or_else(|| Problem::invalid_field("to", "your profile has no phone number; give `to`"))?,
    };
    let factory_name = state
        .identity
        .factory(&t.factory)
        .await
        .map_err(|e| Problem::internal(&e))?
        .map(|f| f.name)
        .unwrap_or_else(|| t.factory.to_string());
    let now = state.clock.now_ms();
    let rendered = render_test(&factory_name, &user.email, now);
    let row = NewNotification {
        factory_id: Some(t.factory.to_string()),
        alert_id: None,
        kind: "test".into(),
        severity: Some("info".into()),
        channel,
        recipient: to,
        user_id: Some(user.id.clone()),
        sender_name: factory_name,
        subject: rendered.subject,
        body_text: if channel == ChannelKind::Email { rendered.text } else { rendered.short },
        body_html: (channel == ChannelKind::Email).then_some(rendered.html),
        event_key: format!("test:{}", factoryops_types::new_id()),
        max_attempts: 3,
        not_before: now,
    };
    let ids = state.notifications.insert_all(&[row], now).await?;
    state.notify_wake.notify_one();
    let id = ids.first().ok_or_else(|| Problem::internal(&"the test notification was not queued"))?;
    Ok((StatusCode::ACCEPTED, Json(state.notifications.get(&t.factory, id).await?)).into_response())
}

fn own_user(t: &Tenant<CanRead>) -> ApiResult<&str> {
    match &t.principal {
        Principal::User { user_id, .. } => Ok(user_id),
        _ => Err(Problem::forbidden("notification preferences belong to users, not API keys")),
    }
}

/// The caller's notification preferences: channels and quiet hours (factory time zone;
/// non-critical messages wait until the quiet hours end).
#[utoipa::path(get, path = "/api/v1/factories/{factory_id}/notification-preferences", tag = "notifications",
    params(("factory_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Preferences), (status = 403, body = Problem)))]
async fn get_preferences(State(state): State<AppState>, t: Tenant<CanRead>) -> ApiResult<Response> {
    let user = own_user(&t)?;
    Ok(Json(state.notifications.preferences(&t.factory, user).await?).into_response())
}

/// Replaces the caller's notification preferences.
#[utoipa::path(put, path = "/api/v1/factories/{factory_id}/notification-preferences", tag = "notifications",
    params(("factory_id" = String, Path)), request_body = Preferences, security(("bearer" = [])),
    responses((status = 200, body = Preferences), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn put_preferences(
    State(state): State<AppState>,
    t: Tenant<CanRead>,
    ApiJson(prefs): ApiJson<Preferences>,
) -> ApiResult<Response> {
    let user = own_user(&t)?.to_string();
    let saved = state.notifications.set_preferences(&t.factory, &user, &prefs, state.clock.now_ms()).await?;
    Ok(Json(saved).into_response())
}
