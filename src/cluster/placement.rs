//! Where a new session goes. A publisher: this node, another live node with room and clearly less CPU in use, or
//! nowhere (this node is draining or full and no other node can take it). A viewer: this node unless it is draining
//! or full, else a live node with room of this node's region, else of any region.

use std::sync::atomic::Ordering;

use super::{Cluster, lock, read};
use crate::db::cluster::{NodeReport, NodeRow};

/// The placement of a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Accept it here.
    Here,
    /// Redirect it to this node.
    There(NodeRow),
    /// This node cannot take it and no other node can.
    Nowhere,
}

/// Whether `node` can take one more session.
fn has_room(node: &NodeReport) -> bool {
    node.sessions < node.max_sessions
}

/// The other nodes that could take a session, least loaded first (CPU, then egress, then name).
fn candidates<'a>(me: &NodeReport, nodes: &'a [NodeRow]) -> Vec<&'a NodeRow> {
    let mut out: Vec<&NodeRow> = nodes
        .iter()
        .filter(|n| {
            n.alive && !n.report.draining && has_room(&n.report) && n.report.node_id != me.node_id
        })
        .collect();
    out.sort_by(|a, b| {
        (
            a.report.cpu_permille,
            a.report.egress_bps,
            &a.report.node_id,
        )
            .cmp(&(
                b.report.cpu_permille,
                b.report.egress_bps,
                &b.report.node_id,
            ))
    });
    out
}

/// A publisher's placement: here unless this node is draining or full, or another node's CPU use is lower than
/// this node's by more than `margin_permille` (the margin keeps two nodes of near-equal load from sending
/// publishers back and forth).
pub(crate) fn place_publisher(
    me: &NodeReport,
    nodes: &[NodeRow],
    margin_permille: i64,
) -> Placement {
    let others = candidates(me, nodes);
    if me.draining || !has_room(me) {
        return others
            .first()
            .map_or(Placement::Nowhere, |n| Placement::There((*n).clone()));
    }
    match others.first() {
        Some(best) if best.report.cpu_permille + margin_permille < me.cpu_permille => {
            Placement::There((*best).clone())
        }
        _ => Placement::Here,
    }
}

/// A viewer's placement: here unless this node is draining or `full` (no room for one more viewer, as the SFU counts
/// it now); then the least loaded live node with room of this node's region, else of any region, else nowhere.
pub(crate) fn place_viewer(me: &NodeReport, full: bool, nodes: &[NodeRow]) -> Placement {
    if !me.draining && !full {
        return Placement::Here;
    }
    let others = candidates(me, nodes);
    others
        .iter()
        .find(|n| n.report.region == me.region)
        .or_else(|| others.first())
        .map_or(Placement::Nowhere, |n| Placement::There((*n).clone()))
}

impl Cluster {
    /// Where a new viewer should go, `full` telling whether this node has room for one more (see [`place_viewer`]).
    /// From the registry as the last heartbeat read it: the database is not asked.
    pub(crate) fn place_viewer(&self, full: bool) -> Placement {
        let i = &self.inner;
        let Some(mut me) = lock(&i.last_report).clone() else {
            return Placement::Here;
        };
        me.draining = i.draining.load(Ordering::Relaxed);
        place_viewer(&me, full, &read(&i.nodes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, cpu: i64, sessions: i64, draining: bool, alive: bool) -> NodeRow {
        in_region("", id, cpu, sessions, draining, alive)
    }

    fn in_region(
        region: &str,
        id: &str,
        cpu: i64,
        sessions: i64,
        draining: bool,
        alive: bool,
    ) -> NodeRow {
        NodeRow {
            report: NodeReport {
                node_id: id.into(),
                region: region.into(),
                http_url: format!("http://{id}"),
                media_addr: String::new(),
                max_sessions: 10,
                sessions,
                publishers: 0,
                viewers: sessions,
                egress_bps: 0,
                cpu_permille: cpu,
                draining,
                started_at: 0,
            },
            heartbeat_at: 0,
            alive,
        }
    }

    #[test]
    fn a_publisher_stays_unless_another_node_is_clearly_less_loaded() {
        let me = node("a", 500, 1, false, true).report;
        let nodes = vec![
            node("a", 500, 1, false, true),
            node("b", 350, 1, false, true),
        ];
        assert_eq!(place_publisher(&me, &nodes, 200), Placement::Here);
        let nodes = vec![
            node("a", 500, 1, false, true),
            node("b", 250, 1, false, true),
        ];
        assert!(
            matches!(place_publisher(&me, &nodes, 200), Placement::There(n) if n.report.node_id == "b")
        );
    }

    #[test]
    fn dead_draining_and_full_nodes_take_nothing() {
        let me = node("a", 900, 1, false, true).report;
        let nodes = vec![
            node("b", 0, 1, false, false),
            node("c", 0, 1, true, true),
            node("d", 0, 10, false, true),
            node("e", 100, 1, false, true),
        ];
        assert!(
            matches!(place_publisher(&me, &nodes, 200), Placement::There(n) if n.report.node_id == "e")
        );
    }

    #[test]
    fn a_draining_or_full_node_sends_everything_away_or_refuses() {
        let draining = node("a", 0, 1, true, true).report;
        let full = node("a", 0, 10, false, true).report;
        let nodes = vec![node("b", 990, 1, false, true)];
        for me in [&draining, &full] {
            assert!(
                matches!(place_publisher(me, &nodes, 200), Placement::There(n) if n.report.node_id == "b")
            );
            assert_eq!(place_publisher(me, &[], 200), Placement::Nowhere);
        }
    }

    #[test]
    fn a_viewer_stays_unless_this_node_is_full_or_draining() {
        let me = in_region("eu", "a", 900, 1, false, true).report;
        let nodes = vec![in_region("eu", "b", 0, 0, false, true)];
        assert_eq!(place_viewer(&me, false, &nodes), Placement::Here);
        assert!(
            matches!(place_viewer(&me, true, &nodes), Placement::There(n) if n.report.node_id == "b")
        );
        let draining = in_region("eu", "a", 0, 1, true, true).report;
        assert!(
            matches!(place_viewer(&draining, false, &nodes), Placement::There(n) if n.report.node_id == "b")
        );
        assert_eq!(place_viewer(&me, true, &[]), Placement::Nowhere);
    }

    #[test]
    fn a_viewer_goes_to_its_own_region_first_even_to_a_busier_node_else_anywhere() {
        let me = in_region("us", "a", 0, 10, false, true).report;
        let nodes = vec![
            in_region("eu", "b", 0, 1, false, true),
            in_region("us", "c", 800, 5, false, true),
            in_region("us", "d", 0, 1, true, true),
            in_region("us", "e", 0, 1, false, false),
            in_region("us", "f", 0, 10, false, true),
        ];
        assert!(
            matches!(place_viewer(&me, true, &nodes), Placement::There(n) if n.report.node_id == "c")
        );
        // c full too: any region.
        let nodes = vec![
            in_region("eu", "b", 0, 1, false, true),
            in_region("us", "c", 800, 10, false, true),
        ];
        assert!(
            matches!(place_viewer(&me, true, &nodes), Placement::There(n) if n.report.node_id == "b")
        );
    }
}
