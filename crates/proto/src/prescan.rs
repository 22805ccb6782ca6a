//! Counting the repeated messages of a request on the wire, before decoding it.
//!
//! prost builds a struct for every message it decodes: an empty `Record` is 2 bytes on the
//! wire and 96 in memory, an empty `Header` 2 and 56. A 9 MiB request of empty records would
//! take ~450 MB once decoded, before any check of the server's could refuse it. So the
//! records, headers and batches of a `ProduceRequest` (and of a batch body, a `RecordList`)
//! are counted on the wire first, and a count over its limit is refused without decoding.
//!
//! Every other client request with a repeated message, string or map field is counted the
//! same way ([`METADATA`] and the others beside it, [`over_limit`]), against the limits its handler applies
//! after decoding: 9 MiB of empty `OffsetCommit`s would otherwise take ~300 MB, before
//! authentication.
//!
//! The walk reads each field's key and skips its payload (a group to its matching end, as
//! prost skips it), descending only into `Record`s (to count their headers): linear in the
//! bytes, no allocation. A walk that cannot go on to the end (malformed, or groups nested
//! deeper than prost decodes) is refused as such: a count that stopped early could be too
//! low.

/// Records one produce request may hold in the `records` form, or one batch in its body.
pub const MAX_RECORDS: usize = 100_000;
/// Record headers one produce request may hold, over all its records and batches.
pub const MAX_HEADERS: usize = 100_000;
/// Batches one produce request may hold (one per partition, and a topic has at most 1,024).
pub const MAX_BATCHES: usize = 1_024;

/// What a produce request or a batch body holds, counted on the wire.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub records: usize,
    pub headers: usize,
    pub batches: usize,
    /// The walk stopped before the end: the counts are not all of it.
    pub malformed: bool,
}

impl Counts {
    /// The first limit these counts pass, as a message naming it; `None` within them.
    pub fn over_limit(&self) -> Option<String> {
        let over = |what: &str, n: usize, limit: usize, per: &str| {
            (n > limit).then(|| format!("{n} {what}; the limit is {limit} {per}"))
        };
        if self.malformed {
            return Some("bytes that do not parse as protobuf".to_string());
        }
        over("records", self.records, MAX_RECORDS, "per request or batch")
            .or_else(|| over("record headers", self.headers, MAX_HEADERS, "per request"))
            .or_else(|| over("batches", self.batches, MAX_BATCHES, "per request"))
    }
}

/// `ProduceRequest`'s field numbers (proto/fjord.proto).
const PRODUCE_RECORDS: u32 = 3;
const PRODUCE_BATCHES: u32 = 5;
/// `RecordList.records` and `Record.headers`.
const LIST_RECORDS: u32 = 1;
const RECORD_HEADERS: u32 = 3;

/// The records (with their headers) and batches of an encoded `ProduceRequest`. A batch's
/// body is not looked into: [`record_list`] counts it.
pub fn produce_request(buf: &[u8]) -> Counts {
    let mut c = Counts::default();
    let mut inner_ok = true;
    let complete = each_field(buf, |field, payload| match (field, payload) {
        (PRODUCE_RECORDS, Some(record)) => {
            c.records += 1;
            let (n, ok) = count(record, RECORD_HEADERS);
            c.headers += n;
            inner_ok &= ok;
        }
        (PRODUCE_BATCHES, Some(_)) => c.batches += 1,
        _ => {}
    });
    c.malformed = !(complete && inner_ok);
    c
}

/// The records and headers of an encoded `RecordList` (a batch body).
pub fn record_list(body: &[u8]) -> Counts {
    let mut c = Counts::default();
    let mut inner_ok = true;
    let complete = each_field(body, |field, payload| {
        if let (LIST_RECORDS, Some(record)) = (field, payload) {
            c.records += 1;
            let (n, ok) = count(record, RECORD_HEADERS);
            c.headers += n;
            inner_ok &= ok;
        }
    });
    c.malformed = !(complete && inner_ok);
    c
}

/// Entries of a repeated field (or map) one request may hold, where the request's own limit
/// is not stated elsewhere: topics named in a `MetadataRequest`.
pub const MAX_METADATA_TOPICS: usize = 10_000;
/// Keys one `AlterTopicConfigRequest` may set or reset (each list).
pub const MAX_CONFIG_KEYS: usize = 64;
/// Topic names a member's subscription may carry on the wire: ten times the groups'
/// `MAX_SUBSCRIBED_TOPICS` (1,000 distinct names), which the handler counts after removing
/// repeats.
pub const MAX_SUBSCRIPTION_NAMES: usize = 10_000;
/// Partitions (or topic entries) one offsets request may name (the groups'
/// `MAX_OFFSETS_PER_REQUEST`).
pub const MAX_PARTITION_ENTRIES: usize = 10_000;
/// Topic entries, or partitions, a member may say it owns in one heartbeat, and partitions
/// one `ListGroupsRequest` may name: a cluster holds at most 100,000 partitions (the
/// server's `MAX_CLUSTER_PARTITIONS`), so no member owns more.
pub const MAX_OWNED_ENTRIES: usize = 100_000;

/// A repeated field of a request, counted on the wire: the path of field numbers from the
/// request's top level to it (each step before the last a message field, singular or
/// repeated: prost merges a singular message field that comes twice, appending its repeated
/// fields), what it is, and how many entries a request may hold.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    pub path: &'static [u32],
    pub what: &'static str,
    pub limit: usize,
    /// A repeated integer field: its elements are counted (packed, each varint of the
    /// payload; unpacked, each occurrence), 1 byte on the wire and 4 or 8 once decoded.
    pub packed: bool,
}

const fn field(path: &'static [u32], what: &'static str, limit: usize) -> Counted {
    Counted {
        path,
        what,
        limit,
        packed: false,
    }
}

const fn ints(path: &'static [u32], what: &'static str, limit: usize) -> Counted {
    Counted {
        path,
        what,
        limit,
        packed: true,
    }
}

// The repeated message, string, map and integer fields of every client request but
// `Produce` ([`produce_request`] counts its own): an empty entry is 2 bytes on the wire and
// 24 to 96 once decoded. Numbers from proto/fjord.proto.

/// `MetadataRequest`'s counted fields.
pub const METADATA: &[Counted] = &[field(&[1], "topics", MAX_METADATA_TOPICS)];
/// `AlterTopicConfigRequest`'s counted fields.
pub const ALTER_TOPIC_CONFIG: &[Counted] = &[
    field(&[2], "settings", MAX_CONFIG_KEYS),
    field(&[3], "keys to reset", MAX_CONFIG_KEYS),
];
/// `GroupHeartbeatRequest`'s counted fields.
pub const HEARTBEAT: &[Counted] = &[
    field(&[6, 1], "subscribed topic names", MAX_SUBSCRIPTION_NAMES),
    field(&[7, 1], "owned topic entries", MAX_OWNED_ENTRIES),
    ints(&[7, 1, 2], "owned partitions", MAX_OWNED_ENTRIES),
];
/// `CommitOffsetsRequest`'s counted fields.
pub const COMMIT_OFFSETS: &[Counted] = &[field(&[4], "offsets", MAX_PARTITION_ENTRIES)];
/// `FetchOffsetsRequest`'s counted fields.
pub const FETCH_OFFSETS: &[Counted] = &[
    field(&[4], "topic entries", MAX_PARTITION_ENTRIES),
    ints(&[4, 2], "partitions", MAX_PARTITION_ENTRIES),
];
/// `ListGroupsRequest`'s counted fields.
pub const LIST_GROUPS: &[Counted] = &[ints(&[1], "partitions", MAX_OWNED_ENTRIES)];

/// The first of `fields` that `buf` holds more entries of than its limit, as a message
/// naming it; `None` within them all. A walk that cannot reach the end is refused too (a
/// count that stopped early could be too low).
pub fn over_limit(buf: &[u8], fields: &[Counted]) -> Option<String> {
    for c in fields {
        let (n, complete) = count_path(buf, c.path, c.packed);
        if !complete {
            return Some("bytes that do not parse as protobuf".to_string());
        }
        if n > c.limit {
            return Some(format!("{n} {}; the limit is {}", c.what, c.limit));
        }
    }
    None
}

/// How many length-delimited fields at `path` `buf` holds (summed over every message on
/// the way), or with `packed` how many integers the field at `path` holds; and whether every
/// walk reached its end.
fn count_path(buf: &[u8], path: &[u32], packed: bool) -> (usize, bool) {
    match path {
        [] => (0, true),
        [last] if packed => count_ints(buf, *last),
        [last] => count(buf, *last),
        [first, rest @ ..] => {
            let mut n = 0usize;
            let mut inner_ok = true;
            let complete = each_field(buf, |f, payload| {
                if let (true, Some(inner)) = (f == *first, payload) {
                    let (k, ok) = count_path(inner, rest, packed);
                    n = n.saturating_add(k);
                    inner_ok &= ok;
                }
            });
            (n, complete && inner_ok)
        }
    }
}

/// How many integers the repeated integer field numbered `field` holds in `buf`: each
/// varint of a packed payload (a byte without its high bit ends one), and each unpacked
/// occurrence; and whether the walk reached the end.
fn count_ints(buf: &[u8], field: u32) -> (usize, bool) {
    let mut n = 0usize;
    let complete = each_field(buf, |f, payload| {
        if f == field {
            n = n.saturating_add(match payload {
                Some(bytes) => bytes.iter().filter(|b| **b & 0x80 == 0).count(),
                None => 1,
            });
        }
    });
    (n, complete)
}

/// How many length-delimited fields numbered `field` `buf` holds at its top level, and
/// whether the walk reached the end.
fn count(buf: &[u8], field: u32) -> (usize, bool) {
    let mut n = 0;
    let complete = each_field(buf, |f, payload| {
        if f == field && payload.is_some() {
            n += 1;
        }
    });
    (n, complete)
}

/// Groups nested deeper than this are refused (prost's own recursion limit is 100).
const MAX_GROUP_DEPTH: u32 = 100;

/// Calls `f` with each top-level field's number and, for a length-delimited one, its payload;
/// true when the walk reached the end, false when it stopped at a malformed key, length or
/// group.
fn each_field(mut buf: &[u8], mut f: impl FnMut(u32, Option<&[u8]>)) -> bool {
    while !buf.is_empty() {
        match next_field(&mut buf, 0) {
            Some(Field::Value(field, payload)) => f(field, payload),
            // An end of group with no group open.
            Some(Field::GroupEnd(_)) | None => return false,
        }
    }
    true
}

/// One field read off the front of a message.
enum Field<'a> {
    /// Its number and, when length-delimited, its payload (a group is skipped whole).
    Value(u32, Option<&'a [u8]>),
    /// The end of the group numbered so.
    GroupEnd(u32),
}

/// Reads one field off `buf` (`depth`: groups already open around it); `None` when malformed.
fn next_field<'a>(buf: &mut &'a [u8], depth: u32) -> Option<Field<'a>> {
    let key = varint(buf)?;
    let field = u32::try_from(key >> 3).ok()?;
    let skip = match key & 7 {
        0 => {
            varint(buf)?;
            0
        }
        1 => 8,
        5 => 4,
        2 => {
            let len = usize::try_from(varint(buf)?).ok()?;
            let (payload, rest) = buf.split_at_checked(len)?;
            *buf = rest;
            return Some(Field::Value(field, Some(payload)));
        }
        3 => {
            // A group (prost skips one of an unknown field whole): to its matching end.
            if depth >= MAX_GROUP_DEPTH {
                return None;
            }
            loop {
                match next_field(buf, depth + 1)? {
                    Field::GroupEnd(end) if end == field => break,
                    Field::GroupEnd(_) => return None,
                    Field::Value(..) => {}
                }
            }
            return Some(Field::Value(field, None));
        }
        4 => return Some(Field::GroupEnd(field)),
        _ => return None,
    };
    *buf = buf.get(skip..)?;
    Some(Field::Value(field, None))
}

/// Reads a base-128 varint off the front of `buf` (at most 10 bytes).
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Header, ProduceRequest, Record, RecordBatch, RecordList};
    use prost::Message;

    fn record(headers: usize) -> Record {
        Record {
            key: Some(b"k".to_vec().into()),
            value: b"v".to_vec().into(),
            headers: vec![Header::default(); headers],
            timestamp_ms: 7,
        }
    }

    #[test]
    fn counts_agree_with_what_prost_decodes() {
        let req = ProduceRequest {
            topic: "t".into(),
            records: vec![record(0), record(3), Record::default(), record(1)],
            partition: Some(2),
            batches: vec![RecordBatch::default(); 2],
            timeout_ms: 100,
            ..Default::default()
        };
        let c = produce_request(&req.encode_to_vec());
        assert_eq!((c.records, c.headers, c.batches), (4, 4, 2));
        let list = RecordList {
            records: vec![record(2), record(5)],
        };
        let c = record_list(&list.encode_to_vec());
        assert_eq!((c.records, c.headers, c.batches), (2, 7, 0));
    }

    #[test]
    fn a_request_of_empty_records_over_the_limit_is_refused_before_decoding() {
        // 2 bytes per empty record on the wire.
        let wire: Vec<u8> = [0x1a, 0x00].repeat(MAX_RECORDS + 1);
        let c = produce_request(&wire);
        assert_eq!(c.records, MAX_RECORDS + 1);
        assert!(c.over_limit().unwrap().contains("the limit is 100000"));
        let fine = produce_request(&[0x1a, 0x00].repeat(MAX_RECORDS));
        assert_eq!(fine.over_limit(), None);
    }

    #[test]
    fn malformed_input_is_refused_without_a_panic() {
        for wire in [
            &[0xff; 11][..],
            &[0x1a, 0x05, 0x00],
            &[0x1b],
            &[0x09, 1, 2],
            &[0x7c],
        ] {
            assert!(produce_request(wire).over_limit().is_some(), "{wire:?}");
            assert!(record_list(wire).over_limit().is_some(), "{wire:?}");
        }
        // A record whose headers do not parse.
        assert!(produce_request(&[0x1a, 0x02, 0x1a, 0x05]).malformed);
    }

    #[test]
    fn a_group_does_not_hide_what_follows_it() {
        // An empty group of an unknown field (15; prost skips it), then records.
        let mut wire = vec![0x0a, 0x01, b't', 0x7b, 0x7c];
        wire.extend([0x1a, 0x00].repeat(MAX_RECORDS + 1));
        assert_eq!(produce_request(&wire).records, MAX_RECORDS + 1);
        let decoded = ProduceRequest::decode(&wire[..]).unwrap();
        assert_eq!(
            decoded.records.len(),
            MAX_RECORDS + 1,
            "prost decodes them all"
        );
        // Nested groups, and one holding a field of each kind, skipped whole.
        let mut body = vec![0x13, 0x1b, 0x08, 0x01, 0x1c, 0x14];
        body.extend([0x0a, 0x00].repeat(3));
        let c = record_list(&body);
        assert_eq!((c.records, c.malformed), (3, false));
        // A group inside a record does not hide its headers.
        let record = [0x2b, 0x2c, 0x1a, 0x00, 0x1a, 0x00];
        let mut wire = vec![0x1a, record.len() as u8];
        wire.extend(record);
        assert_eq!(produce_request(&wire).headers, 2);
        // Groups nested past the limit, or not closed, or closed by another number.
        let deep = [0x7b].repeat(MAX_GROUP_DEPTH as usize + 1);
        assert!(produce_request(&deep).malformed);
        assert!(produce_request(&[0x7b, 0x84, 0x01]).malformed);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_counted_without_a_panic(wire in proptest::collection::vec(0u8..=255, 0..512)) {
            let _ = produce_request(&wire);
            let _ = record_list(&wire);
        }
    }
}
