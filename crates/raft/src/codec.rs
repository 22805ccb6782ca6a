//! Encodings: openraft entries on disk, openraft messages on the wire.
//!
//! Both use postcard over openraft's serde derives. A stored entry that does not decode is
//! reported as corruption (an I/O error of kind `InvalidData`), never skipped.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TypeConfig;

pub type Entry = openraft::alias::EntryOf<TypeConfig>;

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("postcard encoding of an in-memory value does not fail")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, std::io::Error> {
    postcard::from_bytes(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("corrupt {what}: {e}"),
        )
    })
}

/// The record batch a stored log entry holds, if it holds one.
pub fn stored_batch(bytes: &[u8]) -> Result<Option<crate::StoredBatch>, std::io::Error> {
    let entry: Entry = decode(bytes, "log entry")?;
    Ok(match entry.payload {
        openraft::EntryPayload::Normal(crate::Request::Batch(b)) => Some(b),
        _ => None,
    })
}
