//! `GET /api/v1/cluster` (admins): the nodes of the cluster with their load, the stream routes (which node is
//! each live stream's origin, its epoch and lease) and this node's pulls. On a node outside any cluster it says
//! so (`enabled: false`) with empty lists.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::responses::{NotAdmin, Unauthenticated};
use crate::cluster::ClusterView;
use crate::http::AppState;
use crate::http::error::HttpError;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(cluster))
}

/// The cluster as this node sees it.
#[utoipa::path(
    get, path = "/api/v1/cluster", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Nodes, routes and pulls", body = ClusterView),
        Unauthenticated,
        NotAdmin,
        (status = 503, description = "The database cannot be reached", body = crate::http::error::Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn cluster(
    State(state): State<AppState>,
    Admin(_admin): Admin,
) -> Result<Json<ClusterView>, HttpError> {
    match &state.cluster {
        Some(cluster) => Ok(Json(cluster.view().await?)),
        None => Ok(Json(ClusterView {
            enabled: false,
            node_id: state.config.server.node(),
            nodes: Vec::new(),
            routes: Vec::new(),
            pulls: Vec::new(),
        })),
    }
}
