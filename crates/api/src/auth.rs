//! Authentication and tenancy guards. A handler declares what it needs in its
//! signature — `Tenant<CanRead>`, `Tenant<SuperAdmin>`, `Tenant<DevicesWrite>`, `Root` —
//! and the extractor enforces it before the handler runs:
//!
//! 1. a valid bearer credential, else 401;
//! 2. the path's `{factory_id}` equals the principal's factory, else 404 exactly as for a
//!    missing resource (so a 403 never reveals that another factory's thing exists);
//! 3. the requirement, else 403.

use std::marker::PhantomData;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use factoryops_identity::{Permission, Principal, RequestContext};
use factoryops_types::FactoryId;

use crate::problem::Problem;
use crate::router::AppState;

/// What a route requires of a factory principal.
pub trait Requirement: Send + Sync + 'static {
    fn check(principal: &Principal) -> Result<(), Problem>;
}

macro_rules! permission_requirement {
    ($(#[$doc:meta])* $name:ident => $permission:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl Requirement for $name {
            fn check(principal: &Principal) -> Result<(), Problem> {
                if principal.has($permission) {
                    Ok(())
                } else {
                    Err(Problem::forbidden(format!("requires the `{}` permission", $permission)))
                }
            }
        }
    };
}

permission_requirement!(
    /// Read the factory's data: every user; API keys with `data:read`.
    CanRead => Permission::DataRead
);
permission_requirement!(DevicesWrite => Permission::DevicesWrite);
permission_requirement!(RulesWrite => Permission::RulesWrite);
permission_requirement!(AlertsWrite => Permission::AlertsWrite);
permission_requirement!(AnalyticsRun => Permission::AnalyticsRun);
permission_requirement!(ReportsGenerate => Permission::ReportsGenerate);
permission_requirement!(TelemetryWrite => Permission::TelemetryWrite);

/// Users, API keys and the audit log: the factory's super admins only.
pub struct SuperAdmin;

impl Requirement for SuperAdmin {
    fn check(principal: &Principal) -> Result<(), Problem> {
        if principal.is_super_admin() { Ok(()) } else { Err(Problem::forbidden("requires a factory super admin")) }
    }
}

/// Listing users: super admins, or admins granted `users:read`.
pub struct UsersRead;

impl Requirement for UsersRead {
    fn check(principal: &Principal) -> Result<(), Problem> {
        if principal.is_super_admin() || principal.has(Permission::UsersRead) {
            Ok(())
        } else {
            Err(Problem::forbidden("requires a super admin or the `users:read` permission"))
        }
    }
}

/// A factory principal that passed the tenancy check and the route's requirement.
pub struct Tenant<R> {
    pub principal: Principal,
    /// The factory scope: taken from the principal, never from the request.
    pub factory: FactoryId,
    pub ctx: RequestContext,
    _requirement: PhantomData<R>,
}

/// Any authenticated principal (root, user or API key), for `/me`.
pub struct Authenticated {
    pub principal: Principal,
    pub ctx: RequestContext,
}

/// The platform root.
pub struct Root {
    pub ctx: RequestContext,
}

/// The caller's address, for the audit log and rate limits.
pub struct ClientContext(pub RequestContext);

pub(crate) fn request_context(parts: &Parts) -> RequestContext {
    let source_ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string());
    RequestContext { source_ip }
}

async fn principal(parts: &Parts, state: &AppState) -> Result<Principal, Problem> {
    bearer_principal(&parts.headers, state).await
}

/// The principal of the request's bearer credential.
pub(crate) async fn bearer_principal(headers: &HeaderMap, state: &AppState) -> Result<Principal, Problem> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::unauthorized("send `Authorization: Bearer <access token or API key>`"))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| Problem::unauthorized("the Authorization header must use the Bearer scheme"))?;
    state.identity.authenticate(token.trim()).await.map_err(Problem::from)
}

impl FromRequestParts<AppState> for ClientContext {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Problem> {
        Ok(Self(request_context(parts)))
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let principal = principal(parts, state).await?;
        Ok(Self { principal, ctx: request_context(parts) })
    }
}

impl FromRequestParts<AppState> for Root {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        match principal(parts, state).await? {
            Principal::Root => Ok(Self { ctx: request_context(parts) }),
            _ => Err(Problem::forbidden("requires the platform root")),
        }
    }
}

impl<R: Requirement> FromRequestParts<AppState> for Tenant<R> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let principal = principal(parts, state).await?;
        let params =
            RawPathParams::from_request_parts(parts, state).await.map_err(|_| Problem::not_found("no such factory"))?;
        let path_factory = params.iter().find(|(k, _)| *k == "factory_id").map(|(_, v)| v.to_string());
        let Some(factory) = principal.factory_id().cloned() else {
            return Err(Problem::forbidden("the platform root manages factories and cannot access factory data"));
        };
        if path_factory.as_deref() != Some(factory.as_str()) {
            return Err(Problem::not_found("no such factory"));
        }
        R::check(&principal)?;
        Ok(Self { principal, factory, ctx: request_context(parts), _requirement: PhantomData })
    }
}
