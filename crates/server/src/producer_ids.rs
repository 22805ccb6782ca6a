//! Producer ids handed out by this node, from blocks the metadata group allocated to it
//! (Kafka's KIP-730): `InitProducer` makes no metadata write, so a producer can start on any
//! node that is up, also on the minority side of a network partition where the metadata group
//! has no majority.
//!
//! What must hold: no id is handed out twice in the cluster's life.
//! - The metadata group allocates blocks and single ids from one counter, so no two blocks
//!   (and no block and single id) overlap.
//! - This node hands out an id only once its block's next free id is durably recorded past it
//!   (one small write per `InitProducer`), so a restart, a crash or a power loss never hands it
//!   out again.
//! - A data directory restored from an old copy would; the boot check refuses to start one
//!   (see `boot`). A wiped directory has no block and asks for a new one.
//!
//! A block is refilled in the background when fewer than [`REFILL_BELOW`] ids are left (the
//! rest of the old block is abandoned: ids are plentiful); only a node with no id left at all
//! needs the metadata group to answer an `InitProducer`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fjord_meta::{MetaCommand, MetaResponse, MetaState, ProducerCheck};
use fjord_storage::{NodeKey, Op, StorageError, Store};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Invalid};
use crate::node::Node;

/// Producer ids the node asks the metadata group for at a time.
pub const BLOCK: u64 = 1000;
/// A block with fewer ids left than this is refilled in the background.
pub const REFILL_BELOW: u64 = 200;

/// The ids `next..end` are this node's to hand out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub next: u64,
    pub end: u64,
}

impl Block {
    /// Ids left.
    pub fn left(&self) -> u64 {
        self.end.saturating_sub(self.next)
    }

    /// The id to hand out and the block after it, or `None` when it is used up.
    pub fn take(&self) -> Option<(u64, Block)> {
        (self.next < self.end).then(|| {
            (
                self.next,
                Block {
                    next: self.next + 1,
                    end: self.end,
                },
            )
        })
    }
}

/// This node's block of producer ids.
#[derive(Debug)]
pub struct ProducerIds {
    block: tokio::sync::Mutex<Block>,
    refilling: AtomicBool,
}

impl ProducerIds {
    /// The block recorded in `store` (none on a new directory).
    pub fn load(store: &Store) -> Result<Self, StorageError> {
        let block = match store.get_node_value(NodeKey::ProducerIds)? {
            Some(b) => postcard::from_bytes(&b).map_err(|source| StorageError::Undecodable {
                what: "producer id block",
                source,
            })?,
            None => Block::default(),
        };
        Ok(ProducerIds {
            block: tokio::sync::Mutex::new(block),
            refilling: AtomicBool::new(false),
        })
    }

    /// Ids left in the block.
    pub async fn left(&self) -> u64 {
        self.block.lock().await.left()
    }

    /// Hands out a producer id: from the block, once the next free id is durably recorded; a
    /// metadata write only if the block is used up.
    pub async fn take(&self, node: &Arc<Node>) -> Result<u64, ApiError> {
        let mut block = self.block.lock().await;
        let (id, after) = match block.take() {
            Some(t) => t,
            None => {
                let fresh = allocate(node).await?;
                fresh.take().ok_or(ApiError::EmptyProducerIdBlock)?
            }
        };
        record(node.store(), after).await?;
        *block = after;
        let low = after.left() < REFILL_BELOW;
        drop(block);
        if low {
            self.refill_in_background(node);
        }
        Ok(id)
    }

    /// Asks for a new block unless a refill is already running, until one is recorded or the
    /// node stops.
    pub fn refill_in_background(&self, node: &Arc<Node>) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let node = node.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                if node.producer_ids().left().await >= REFILL_BELOW {
                    break;
                }
                match allocate(&node).await {
                    Ok(fresh) => {
                        let mut block = node.producer_ids().block.lock().await;
                        if block.left() < REFILL_BELOW {
                            match record(node.store(), fresh).await {
                                Ok(()) => *block = fresh,
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot record a producer id block")
                                }
                            }
                        }
                        if block.left() >= REFILL_BELOW {
                            break;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "no producer id block yet"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = node.stopping() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            node.producer_ids()
                .refilling
                .store(false, Ordering::Release);
        });
    }
}

/// Initialises the named producer `name`: its id and new epoch, which fences its earlier
/// instances (a metadata write).
pub async fn init_named(node: &Node, name: String) -> Result<(u64, u16), ApiError> {
    match node
        .meta_write(MetaCommand::InitNamedProducer { name })
        .await?
    {
        MetaResponse::ProducerEpoch { id, epoch } => Ok((id, epoch)),
        MetaResponse::Error(e) => Err(ApiError::Meta(e)),
        other => Err(ApiError::UnexpectedAnswer {
            to: "a named producer's initialisation",
            got: Box::new(other),
        }),
    }
}

/// What the metadata's view of a batch's producer says of the batch.
#[derive(Debug)]
pub enum Verdict {
    Accept,
    Refuse(ApiError),
    /// This node's view may be behind (an id it has not seen allocated, an epoch above the
    /// latest it knows): ask the metadata group itself.
    Confirm,
}

/// Whether a batch of producer `id` at `epoch` may be proposed, by what `check` says of the
/// id (pure): accepted at the latest epoch or, for the partition rules to fence, an older
/// one; an id not allocated or an epoch above the latest is refused when `check` is the
/// metadata group's own answer (`authoritative`), and confirmed with it when it is this
/// node's view. An epoch never issued is a forged one: taken, it would fence the real
/// producer on the partition for good, by anyone allowed to write the topic.
pub fn verdict(check: ProducerCheck, id: u64, epoch: u16, authoritative: bool) -> Verdict {
    match check {
        ProducerCheck::Unallocated { .. } if !authoritative => Verdict::Confirm,
        ProducerCheck::Unallocated { next } => Verdict::Refuse(ApiError::UnknownProducer {
            producer_id: id,
            next,
        }),
        ProducerCheck::Named { epoch: current } if epoch < current => {
            Verdict::Refuse(ApiError::ProducerFenced {
                producer_id: id,
                epoch,
                current,
            })
        }
        ProducerCheck::Named { epoch: current } if epoch > current && !authoritative => {
            Verdict::Confirm
        }
        ProducerCheck::Named { epoch: current } if epoch > current => Verdict::Refuse(
            Invalid::EpochNotIssued {
                producer_id: id,
                epoch,
                current,
            }
            .into(),
        ),
        ProducerCheck::Unnamed if epoch > 0 => Verdict::Refuse(
            Invalid::UnnamedEpoch {
                producer_id: id,
                epoch,
            }
            .into(),
        ),
        _ => Verdict::Accept,
    }
}

/// Checks a batch's producer id and epoch against the metadata before it is proposed (see
/// [`verdict`]): against this node's view, and when that view may be behind, against the
/// metadata group itself (a read through its log, so an id allocated or an epoch issued
/// anywhere before the batch was sent is known; UNAVAILABLE without a metadata majority).
pub async fn check_batch(
    node: &Node,
    view: &MetaState,
    id: u64,
    epoch: u16,
) -> Result<(), ApiError> {
    if id == 0 {
        return Ok(());
    }
    let answer = match verdict(view.check_producer(id), id, epoch, false) {
        Verdict::Accept => return Ok(()),
        Verdict::Refuse(e) => return Err(e),
        Verdict::Confirm => node.meta_write(MetaCommand::CheckProducer { id }).await?,
    };
    match answer {
        MetaResponse::ProducerCheck(check) => match verdict(check, id, epoch, true) {
            Verdict::Accept => Ok(()),
            Verdict::Refuse(e) => Err(e),
            Verdict::Confirm => unreachable!("an authoritative check confirms nothing"),
        },
        other => Err(ApiError::UnexpectedAnswer {
            to: "a producer check",
            got: Box::new(other),
        }),
    }
}

/// A fresh block from the metadata group.
async fn allocate(node: &Node) -> Result<Block, ApiError> {
    match node
        .meta_write(MetaCommand::AllocateProducerIdBlock { count: BLOCK })
        .await?
    {
        MetaResponse::ProducerIdBlock { first, count } => Ok(Block {
            next: first,
            end: first.saturating_add(count),
        }),
        MetaResponse::Error(e) => Err(ApiError::Meta(e)),
        other => Err(ApiError::UnexpectedAnswer {
            to: "a producer id block request",
            got: Box::new(other),
        }),
    }
}

async fn record(store: &Store, block: Block) -> Result<(), ApiError> {
    store
        .write(vec![Op::PutNode {
            key: NodeKey::ProducerIds as u8,
            value: fjord_raft::codec::encode(&block, "producer id block")?,
        }])
        .await
        .map_err(ApiError::RecordProducerIds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_checked_against_what_the_metadata_knows_of_its_producer() {
        let code = |v: Verdict| match v {
            Verdict::Accept => Ok(()),
            Verdict::Refuse(e) => Err(e.code()),
            Verdict::Confirm => Err(tonic::Code::Unknown),
        };
        let unallocated = ProducerCheck::Unallocated { next: 10 };
        assert!(matches!(
            verdict(unallocated, 12, 0, false),
            Verdict::Confirm
        ));
        assert_eq!(
            code(verdict(unallocated, 12, 0, true)),
            Err(tonic::Code::FailedPrecondition)
        );
        let named = ProducerCheck::Named { epoch: 3 };
        for authoritative in [false, true] {
            assert!(matches!(
                verdict(named, 5, 2, authoritative),
                Verdict::Refuse(ApiError::ProducerFenced {
                    producer_id: 5,
                    epoch: 2,
                    current: 3
                })
            ));
            assert_eq!(code(verdict(named, 5, 3, authoritative)), Ok(()));
            assert_eq!(
                code(verdict(ProducerCheck::Unnamed, 5, 0, authoritative)),
                Ok(())
            );
            assert_eq!(
                code(verdict(ProducerCheck::Unnamed, 5, 1, authoritative)),
                Err(tonic::Code::InvalidArgument)
            );
        }
        // This node's view may be behind a newer epoch: the metadata group decides; an epoch
        // it never issued is refused (it would fence the real producer for good).
        assert!(matches!(verdict(named, 5, 4, false), Verdict::Confirm));
        let forged = verdict(named, 5, u16::MAX, true);
        assert_eq!(code(forged), Err(tonic::Code::InvalidArgument));
        let Verdict::Refuse(e) = verdict(named, 5, 4, true) else {
            panic!("an epoch never issued is refused");
        };
        assert!(
            e.to_string()
                .contains("epoch 4 of producer 5 was never issued (its latest is 3)"),
            "{e}"
        );
    }

    #[test]
    fn a_block_hands_out_each_id_once_then_is_used_up() {
        let mut b = Block { next: 5, end: 8 };
        let mut got = Vec::new();
        while let Some((id, after)) = b.take() {
            got.push(id);
            b = after;
        }
        assert_eq!(got, vec![5, 6, 7]);
        assert_eq!(b.left(), 0);
        assert_eq!(Block::default().take(), None);
    }
}
