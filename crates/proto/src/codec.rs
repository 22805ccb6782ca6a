//! The gRPC codec of fjord's services: prost's, with one check before decoding. A
//! `ProduceRequest` whose records, headers or batches, counted on the wire
//! ([`crate::prescan`]), pass their limits is refused (INVALID_ARGUMENT, naming the limit)
//! without being decoded: decoding builds a struct per record and header, ~48 times the
//! bytes of an empty one, before the server's own checks (or its authentication) run. The
//! other requests with repeated message, string or map fields (metadata topics, topic
//! settings, a heartbeat's subscription and owned partitions, offsets to commit or fetch)
//! are counted the same way against their handlers' limits.

use std::any::TypeId;
use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// See the module doc; generated services and clients use it (`build.rs`).
#[derive(Debug, Clone)]
pub struct FjordCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for FjordCodec<T, U> {
    fn default() -> Self {
        FjordCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for FjordCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = FjordDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        FjordDecoder {
            inner: ProstDecoder::new(BufferSettings::default()),
        }
    }
}

/// prost's decoder, after the produce check of the module doc.
#[derive(Debug, Clone)]
pub struct FjordDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Default + 'static> Decoder for FjordDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if TypeId::of::<U>() == TypeId::of::<crate::v1::ProduceRequest>() {
            check_produce(buf.chunk(), buf.remaining())?;
        } else if let Some((name, fields)) = counted::<U>() {
            check_counts(name, fields, buf.chunk(), buf.remaining())?;
        }
        self.inner.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// The request type's name and its counted fields (`crate::prescan`'s lists), when it has
/// any.
fn counted<U: 'static>() -> Option<(&'static str, &'static [crate::prescan::Counted])> {
    use crate::prescan as p;
    use crate::v1;
    let id = TypeId::of::<U>();
    let known: [(TypeId, &'static str, &'static [p::Counted]); 6] = [
        (
            TypeId::of::<v1::MetadataRequest>(),
            "MetadataRequest",
            p::METADATA,
        ),
        (
            TypeId::of::<v1::AlterTopicConfigRequest>(),
            "AlterTopicConfigRequest",
            p::ALTER_TOPIC_CONFIG,
        ),
        (
            TypeId::of::<v1::GroupHeartbeatRequest>(),
            "GroupHeartbeatRequest",
            p::HEARTBEAT,
        ),
        (
            TypeId::of::<v1::CommitOffsetsRequest>(),
            "CommitOffsetsRequest",
            p::COMMIT_OFFSETS,
        ),
        (
            TypeId::of::<v1::FetchOffsetsRequest>(),
            "FetchOffsetsRequest",
            p::FETCH_OFFSETS,
        ),
        (
            TypeId::of::<v1::ListGroupsRequest>(),
            "ListGroupsRequest",
            p::LIST_GROUPS,
        ),
    ];
    known
        .into_iter()
        .find(|(t, _, _)| *t == id)
        .map(|(_, name, fields)| (name, fields))
}

/// The counts check of a request other than a produce (see [`counted`]).
fn check_counts(
    name: &str,
    fields: &[crate::prescan::Counted],
    chunk: &[u8],
    total: usize,
) -> Result<(), Status> {
    if chunk.len() < total {
        return Ok(());
    }
    match crate::prescan::over_limit(chunk, fields) {
        Some(why) => Err(Status::invalid_argument(format!(
            "the {name} holds {why} (counted before decoding)"
        ))),
        None => Ok(()),
    }
}

/// The produce check on the message's bytes (`chunk`, of `total`: tonic's decode buffer is
/// contiguous, so they are all of it).
fn check_produce(chunk: &[u8], total: usize) -> Result<(), Status> {
    if chunk.len() < total {
        // Not contiguous after all: decode without the check rather than misjudge it.
        return Ok(());
    }
    match crate::prescan::produce_request(chunk).over_limit() {
        Some(why) => Err(Status::invalid_argument(format!(
            "the produce request holds {why} (counted before decoding)"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_produce_over_a_limit_is_refused_naming_it() {
        let wire: Vec<u8> = [0x1a, 0x00].repeat(crate::prescan::MAX_RECORDS + 1);
        let e = check_produce(&wire, wire.len()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("100001 records; the limit is 100000"),
            "{}",
            e.message()
        );
        let headers: Vec<u8> = {
            // One record holding 100,001 empty headers.
            let inner: Vec<u8> = [0x1a, 0x00].repeat(crate::prescan::MAX_HEADERS + 1);
            let mut w = vec![0x1a];
            let mut len = inner.len();
            while len >= 0x80 {
                w.push((len as u8) | 0x80);
                len >>= 7;
            }
            w.push(len as u8);
            w.extend(inner);
            w
        };
        let e = check_produce(&headers, headers.len()).unwrap_err();
        assert!(e.message().contains("record headers"), "{}", e.message());
        assert!(check_produce(&[0x1a, 0x00], 2).is_ok());
    }

    #[test]
    fn requests_with_too_many_entries_are_refused_before_decoding() {
        use crate::v1;
        use prost::Message;
        let (name, fields) = counted::<v1::CommitOffsetsRequest>().unwrap();
        // 10,001 empty offsets: 2 bytes each on the wire.
        let wire: Vec<u8> = [0x22, 0x00].repeat(crate::prescan::MAX_PARTITION_ENTRIES + 1);
        let e = check_counts(name, fields, &wire, wire.len()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message()
                .contains("CommitOffsetsRequest holds 10001 offsets; the limit is 10000"),
            "{}",
            e.message()
        );
        let fine: Vec<u8> = [0x22, 0x00].repeat(crate::prescan::MAX_PARTITION_ENTRIES);
        assert!(check_counts(name, fields, &fine, fine.len()).is_ok());
        // A heartbeat's subscription, counted across repeats of the (singular) field,
        // which prost merges.
        let sub = v1::Subscription {
            topics: vec!["t".into(); 600],
            pattern: None,
        };
        let one = v1::GroupHeartbeatRequest {
            subscription: Some(sub),
            ..Default::default()
        }
        .encode_to_vec();
        let twice = [one.clone(), one.clone()].concat();
        assert_eq!(
            v1::GroupHeartbeatRequest::decode(&twice[..])
                .unwrap()
                .subscription
                .unwrap()
                .topics
                .len(),
            1_200
        );
        let (name, fields) = counted::<v1::GroupHeartbeatRequest>().unwrap();
        assert!(check_counts(name, fields, &one, one.len()).is_ok());
        assert!(check_counts(name, fields, &twice, twice.len()).is_ok());
        let many: Vec<u8> = std::iter::repeat_n(one.clone(), 17).flatten().collect();
        let e = check_counts(name, fields, &many, many.len()).unwrap_err();
        assert!(
            e.message()
                .contains("10200 subscribed topic names; the limit is 10000"),
            "{}",
            e.message()
        );
        // Packed integers: each varint counts, in one entry or many.
        let fetch = |partitions: u32, per_entry: u32| {
            v1::FetchOffsetsRequest {
                partitions: (0..partitions / per_entry)
                    .map(|_| v1::TopicPartitions {
                        topic: "t".into(),
                        partitions: (0..per_entry).map(|p| p * 1_000).collect(),
                    })
                    .collect(),
                ..Default::default()
            }
            .encode_to_vec()
        };
        let (name, fields) = counted::<v1::FetchOffsetsRequest>().unwrap();
        for per_entry in [1, 100, 10_000] {
            let ok = fetch(10_000, per_entry);
            assert!(
                check_counts(name, fields, &ok, ok.len()).is_ok(),
                "{per_entry}"
            );
        }
        let over = fetch(10_100, 100);
        let e = check_counts(name, fields, &over, over.len()).unwrap_err();
        assert!(e.message().contains("10100 partitions"), "{}", e.message());
        // Unpacked, each occurrence counts.
        let unpacked: Vec<u8> = [0x08, 0x05].repeat(crate::prescan::MAX_OWNED_ENTRIES + 1);
        let (name, fields) = counted::<v1::ListGroupsRequest>().unwrap();
        assert!(check_counts(name, fields, &unpacked, unpacked.len()).is_err());
        // A map's entries (topic settings).
        let alter = v1::AlterTopicConfigRequest {
            name: "t".into(),
            set: (0..65).map(|i| (format!("k{i}"), "1".into())).collect(),
            reset: vec![],
        }
        .encode_to_vec();
        let (name, fields) = counted::<v1::AlterTopicConfigRequest>().unwrap();
        assert!(check_counts(name, fields, &alter, alter.len()).is_err());
        // Types without counted fields, and bytes that do not parse.
        assert!(counted::<v1::FetchRequest>().is_none());
        let (name, fields) = counted::<v1::MetadataRequest>().unwrap();
        assert!(check_counts(name, fields, &[0x0a, 0x05], 2).is_err());
    }
}
