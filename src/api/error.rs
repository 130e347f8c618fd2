//! What an endpoint answers when it cannot do what was asked: always JSON,
//! `{"error": "…"}`, with the status that says whose fault it is. Requests the API cannot
//! parse (unknown query parameters, a malformed body) are answered the same way,
//! through [`ApiQuery`] and [`ApiJson`].

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use queries::search::SearchError;
use queries::sql::SqlError;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid bearer token came with a call that needs one.
    #[error("a valid bearer token is required")]
    Unauthenticated,
    /// The caller's role is below what the call needs.
    #[error("{actor} has role {role}; this needs {needs}")]
    Forbidden {
        actor: String,
        role: &'static str,
        needs: &'static str,
    },
    /// A parameter's value is not one the endpoint takes.
    #[error("{0}")]
    BadRequest(String),
    /// The query string, path or body does not parse (axum's own explanation).
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The target exists but cannot take this change.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Search(#[from] SearchError),
    /// The pipeline that applies changes has stopped (the daemon is shutting down).
    #[error(transparent)]
    Stopped(#[from] pipeline::Stopped),
    /// The daemon failed on its side.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Rejected { status, .. } => *status,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Sql(e) => match e {
                SqlError::ReadOnly(_) => StatusCode::FORBIDDEN,
                SqlError::Invalid(_) => StatusCode::BAD_REQUEST,
                SqlError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                SqlError::TooLarge(_) | SqlError::Failed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            },
            ApiError::Search(SearchError::Query { .. }) => StatusCode::BAD_REQUEST,
            ApiError::Search(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Stopped(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Who was refused, for the audit: on 401 and 403 only.
    fn refused(&self) -> Option<super::Refused> {
        match self {
            ApiError::Unauthenticated => Some(super::Refused {
                actor: "unauthenticated".into(),
                role: "none",
            }),
            ApiError::Forbidden { actor, role, .. } => Some(super::Refused {
                actor: actor.clone(),
                role,
            }),
            _ => None,
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("a worker task failed: {e}"))
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::Internal(format!("cannot encode the answer: {e}"))
    }
}

impl From<arrow::error::ArrowError> for ApiError {
    fn from(e: arrow::error::ArrowError) -> Self {
        ApiError::Internal(format!("cannot encode the answer: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Json(json!({ "error": self.to_string() }));
        let mut response = if status == StatusCode::UNAUTHORIZED {
            (
                status,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"driftwatch\"")],
                body,
            )
                .into_response()
        } else {
            (status, body).into_response()
        };
        if let Some(r) = self.refused() {
            response.extensions_mut().insert(r);
        }
        response
    }
}

/// Query parameters, refused as a JSON [`ApiError`] when they do not parse.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::Rejected {
                status: rejection.status(),
                message: rejection.body_text(),
            }),
        }
    }
}

/// A JSON body, refused as a JSON [`ApiError`] when it does not parse.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError::Rejected {
                status: rejection.status(),
                message: rejection.body_text(),
            }),
        }
    }
}
