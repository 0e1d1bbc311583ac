//! A small real API on the schema the app owns (`app/migrations/`), so
//! migrations and backups are exercised by real rows:
//! `POST /items {"name"}` -> 201 with its id, `GET /items/{id}`,
//! `GET /items?limit=N` (newest first). Without DATABASE_URL, or before
//! `app migrate up`, each answers 503 saying so.
use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_postgres::Client;

use crate::state::SharedState;

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const MAX_LIMIT: i64 = 1000;
const COLUMNS: &str =
    "id, name, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

/// One connection, opened on first use and again after it drops; requests
/// share it (tokio-postgres pipelines concurrent queries on one connection).
pub struct Store {
    config: Option<tokio_postgres::Config>,
    client: Mutex<Option<Arc<Client>>>,
}

/// The items routes, merged into the app's router.
pub fn router(state: &SharedState) -> Router<SharedState> {
    let store = Arc::new(Store {
        config: crate::deps::postgres_config(&state.dependencies),
        client: Mutex::new(None),
    });
    Router::new()
        .route("/items", get(list).post(create))
        .route("/items/{id}", get(fetch))
        .with_state(store)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

impl Store {
    async fn client(&self) -> Result<Arc<Client>, Response> {
        let Some(config) = &self.config else {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no database configured: set DATABASE_URL (or DATABASE_URL_FILE) to use /items",
            ));
        };
        let mut held = self.client.lock().await;
        if let Some(client) = held.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tokio_postgres::NoTls)).await;
        let (client, connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("database unavailable: {}", crate::migrate::describe(&e)),
                ))
            }
            Err(_) => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database unavailable: no answer within 2s",
                ))
            }
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(
                    error = crate::migrate::describe(&e),
                    "items: database connection lost"
                );
            }
        });
        let client = Arc::new(client);
        *held = Some(client.clone());
        Ok(client)
    }
}

/// A query error for the client: a missing table means the schema was never migrated.
fn query_failed(e: tokio_postgres::Error) -> Response {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the items table does not exist: run `app migrate up`",
        );
    }
    tracing::warn!(error = crate::migrate::describe(&e), "items: query failed");
    error(StatusCode::SERVICE_UNAVAILABLE, "database error")
}

fn item(row: &tokio_postgres::Row) -> Value {
    json!({ "id": row.get::<_, i64>(0), "name": row.get::<_, String>(1), "created_at": row.get::<_, String>(2) })
}

#[derive(Deserialize)]
struct NewItem {
    name: String,
}

async fn create(
    State(store): State<Arc<Store>>,
    body: Result<Json<NewItem>, JsonRejection>,
) -> Response {
    let Json(new) = match body {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected a JSON body {{\"name\": \"...\"}}: {}",
                    e.body_text()
                ),
            )
        }
    };
    let length = new.name.chars().count();
    if !(1..=200).contains(&length) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name must be 1 to 200 characters",
        );
    }
    let client = match store.client().await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let sql = format!("INSERT INTO items (name) VALUES ($1) RETURNING {COLUMNS}");
    match client.query_one(&sql, &[&new.name]).await {
        Ok(row) => {
            let body = item(&row);
            let location = format!("/items/{}", body["id"]);
            (
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(body),
            )
                .into_response()
        }
        Err(e) => query_failed(e),
    }
}

async fn fetch(State(store): State<Arc<Store>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::BAD_REQUEST, "an item id is a number");
    };
    let client = match store.client().await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let sql = format!("SELECT {COLUMNS} FROM items WHERE id = $1");
    match client.query_opt(&sql, &[&id]).await {
        Ok(Some(row)) => Json(item(&row)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no item {id}")),
        Err(e) => query_failed(e),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
}

async fn list(State(store): State<Arc<Store>>, Query(query): Query<ListQuery>) -> Response {
    let limit = match query.limit.as_deref() {
        None => 50,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("limit must be a number from 1 to {MAX_LIMIT}"),
                )
            }
        },
    };
    let client = match store.client().await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let sql = format!("SELECT {COLUMNS} FROM items ORDER BY id DESC LIMIT $1");
    match client.query(&sql, &[&limit]).await {
        Ok(rows) => {
            Json(json!({ "items": rows.iter().map(item).collect::<Vec<_>>() })).into_response()
        }
        Err(e) => query_failed(e),
    }
}
