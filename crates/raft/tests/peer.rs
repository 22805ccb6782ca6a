//! The node-to-node protocol end to end on loopback: each typed client call reaches the
//! handler as the same typed value and comes back as its typed answer, and a handler's error
//! reaches the caller with the status code the handler's crate gives it.

use std::sync::Arc;
use std::time::Duration;

use fjord_meta::{MetaCommand, MetaResponse, NodeId};
use fjord_raft::GroupRegistry;
use fjord_raft::peer::wire::{
    ChangeVoterReply, ChangeVoterRequest, IdentityReply, IdentityRequest, NodeHeartbeat,
    NodeHeartbeatReply, PartitionRead, PartitionReadReply, QuietGroup, RebuildReply,
    RebuildRequest,
};
use fjord_raft::peer::{DispatchError, PeerHandler, PeerPool, PeerServer, TcpConnector};
use tonic::{Code, Status};

const TTL: Duration = Duration::from_secs(5);

/// A handler's error: refused, or a Raft message it could not take.
#[derive(Debug)]
enum TestError {
    Refused(String),
    Dispatch(DispatchError),
}

impl From<DispatchError> for TestError {
    fn from(e: DispatchError) -> Self {
        TestError::Dispatch(e)
    }
}

impl From<TestError> for Status {
    fn from(e: TestError) -> Status {
        match e {
            TestError::Refused(why) => Status::failed_precondition(why),
            TestError::Dispatch(DispatchError::UnknownGroup(g)) => {
                Status::not_found(format!("no group {g}"))
            }
            TestError::Dispatch(e) => Status::internal(e.to_string()),
        }
    }
}

/// Answers from what it is asked, and hosts no group.
struct Echo {
    groups: Arc<GroupRegistry>,
}

impl PeerHandler for Echo {
    type Error = TestError;

    fn node_id(&self) -> NodeId {
        9
    }

    fn groups(&self) -> Result<&GroupRegistry, TestError> {
        Ok(&self.groups)
    }

    async fn meta_write(&self, cmd: MetaCommand) -> Result<MetaResponse, TestError> {
        match cmd {
            MetaCommand::AllocateProducerIdBlock { count } => {
                Ok(MetaResponse::ProducerIdBlock { first: 1000, count })
            }
            other => Err(TestError::Refused(format!("not this one: {other:?}"))),
        }
    }

    async fn move_leader(&self, group: u64, to: NodeId) -> Result<(), TestError> {
        if group == 7 && to == 2 {
            Ok(())
        } else {
            Err(TestError::Refused(format!("group {group} to {to}")))
        }
    }

    async fn change_voter(&self, req: ChangeVoterRequest) -> Result<ChangeVoterReply, TestError> {
        Ok(ChangeVoterReply {
            done: req.promote,
            detail: format!("group {} node {}", req.group_id, req.node),
        })
    }

    async fn check_identity(&self, req: IdentityRequest) -> Result<IdentityReply, TestError> {
        Ok(IdentityReply {
            from: 9,
            cluster_id: 0xc1,
            has_cluster: true,
            recorded: req.announce_generation > 0,
            recorded_incarnation: req.incarnation,
            recorded_generation: req.announce_generation,
            incarnation: 0x99,
        })
    }

    async fn rebuild(&self, req: RebuildRequest) -> Result<RebuildReply, TestError> {
        Err(TestError::Refused(format!(
            "node {} would take a majority with it",
            req.node
        )))
    }

    async fn read_partition(&self, req: PartitionRead) -> Result<PartitionReadReply, TestError> {
        if req.group_id != 5 {
            return Err(TestError::Dispatch(DispatchError::UnknownGroup(
                req.group_id,
            )));
        }
        Ok(PartitionReadReply {
            high_watermark: 10,
            offset: req.offset_for_time.map(|t| t as u64),
            timestamp_ms: req.record_time_at.map(|o| o as i64 * 100),
            log_start_offset: 2,
        })
    }

    fn heartbeat(&self, req: NodeHeartbeat) -> Result<NodeHeartbeatReply, TestError> {
        Ok(NodeHeartbeatReply {
            from: 9,
            version: req.version,
            refused: req.quiet.iter().map(|q| q.group_id).collect(),
            suspects: req.suspects,
        })
    }
}

#[tokio::test]
async fn every_rpc_reaches_the_handler_typed_and_its_errors_keep_their_codes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let service = PeerServer::service(Echo {
        groups: GroupRegistry::new(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let pool = PeerPool::new(Arc::new(TcpConnector));
    let peer = pool.peer(&addr);

    let cmd = MetaCommand::AllocateProducerIdBlock { count: 5 };
    assert_eq!(
        peer.meta_write(&cmd, TTL).await.unwrap(),
        MetaResponse::ProducerIdBlock {
            first: 1000,
            count: 5
        }
    );
    let refused = peer
        .meta_write(&MetaCommand::DeleteTopic { name: "t".into() }, TTL)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::FailedPrecondition), "{refused}");

    peer.move_leader(7, 2, TTL).await.unwrap();
    assert!(peer.move_leader(7, 3, TTL).await.is_err());

    let req = ChangeVoterRequest {
        group_id: 1 << 32,
        node: 3,
        promote: true,
    };
    let reply = peer.change_voter(req, TTL).await.unwrap();
    assert!(reply.done);
    assert_eq!(reply.detail, format!("group {} node 3", 1u64 << 32));

    let announce = IdentityRequest {
        from: 3,
        announce_generation: 4,
        incarnation: 0xabc,
    };
    let identity = peer.check_identity(announce, TTL).await.unwrap();
    assert_eq!(
        (identity.recorded_incarnation, identity.recorded_generation),
        (0xabc, 4)
    );
    assert_eq!((identity.from, identity.cluster_id), (9, 0xc1));

    let rebuild = RebuildRequest {
        node: 3,
        incarnation: 5,
        cluster_id: 0xc1,
        address: "127.0.0.1:1".into(),
        replaces: 4,
    };
    let e = peer.rebuild(rebuild, TTL).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition));
    assert_eq!(e.message(), "node 3 would take a majority with it");

    let read = PartitionRead {
        group_id: 5,
        offset_for_time: None,
        record_time_at: Some(3),
    };
    assert_eq!(
        peer.read_partition(read, TTL).await.unwrap(),
        PartitionReadReply {
            high_watermark: 10,
            offset: None,
            timestamp_ms: Some(300),
            log_start_offset: 2,
        }
    );
    let elsewhere = PartitionRead {
        group_id: 6,
        ..read
    };
    let e = peer.read_partition(elsewhere, TTL).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");

    let beat = NodeHeartbeat {
        from: 1,
        version: 3,
        full: true,
        quiet: vec![QuietGroup {
            group_id: 11,
            term: 2,
            last_index: 40,
        }],
        suspects: vec![4],
    };
    let reply = pool
        .heartbeat_peer(&addr)
        .heartbeat(beat, TTL)
        .await
        .unwrap();
    assert_eq!(
        reply,
        NodeHeartbeatReply {
            from: 9,
            version: 3,
            refused: vec![11],
            suspects: vec![4],
        }
    );

    // A Raft message for a group the node does not host: NOT_FOUND, which a sender's
    // openraft takes as an unreachable peer (it backs off).
    let vote = openraft::raft::VoteRequest::<fjord_raft::TypeConfig>::new(
        openraft::alias::VoteOf::<fjord_raft::TypeConfig>::new(1, 1),
        None,
    );
    let e = peer.vote(12, 9, &vote, TTL).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    assert!(e.is_unreachable());

    // A Raft message meant for another node (the sender's address for node 3 reaches node
    // 9): refused before any group sees it, so node 9 cannot answer as node 3 and count
    // twice towards a majority.
    let e = peer.vote(12, 3, &vote, TTL).await.unwrap_err();
    assert!(!e.is_unreachable(), "{e}");
    assert!(e.to_string().contains("for node 3 reached node 9"), "{e}");
}
