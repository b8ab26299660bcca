//! What the driver's input queue carries: the events handlers and peer links send it. A leaf, so
//! the peer links ([`super::transport`]) feed the driver without importing it.

use crate::core::{NodeId, NodeStatus, Op, PeerMsg, Reply};
use tokio::sync::oneshot;

/// Something for the node to handle.
pub enum Event {
    Client {
        op: Op,
        reply: oneshot::Sender<Reply>,
    },
    Peer {
        from: NodeId,
        msg: PeerMsg,
    },
    Status(oneshot::Sender<NodeStatus>),
}
