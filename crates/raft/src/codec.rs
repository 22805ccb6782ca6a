//! postcard encoding with typed errors, for what fjord stores (openraft entries, votes,
//! state machine snapshots) and for the payloads of node-to-node messages
//! ([`crate::peer::wire`]), over serde derives. A stored entry that does not decode is
//! reported as corruption ([`DecodeError`], an I/O error of kind `InvalidData` where openraft
//! wants one), never skipped. Encoding fails only for what postcard cannot represent; the
//! bytes go to a peer or to disk, so that is an error ([`EncodeError`]) there, not a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TypeConfig;

pub type Entry = openraft::alias::EntryOf<TypeConfig>;

/// A value that postcard could not encode.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {what}: {source}")]
pub struct EncodeError {
    pub what: &'static str,
    #[source]
    pub source: postcard::Error,
}

/// Bytes that do not decode as the value they should hold.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {what}: {source}")]
pub struct DecodeError {
    pub what: &'static str,
    #[source]
    pub source: postcard::Error,
}

impl From<EncodeError> for std::io::Error {
    fn from(e: EncodeError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

impl From<DecodeError> for std::io::Error {
    fn from(e: DecodeError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

pub fn encode<T: Serialize>(v: &T, what: &'static str) -> Result<Vec<u8>, EncodeError> {
    postcard::to_stdvec(v).map_err(|source| EncodeError { what, source })
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|source| DecodeError { what, source })
}

/// The record batch a stored log entry holds, if it holds one.
pub fn stored_batch(bytes: &[u8]) -> Result<Option<crate::StoredBatch>, DecodeError> {
    let entry: Entry = decode(bytes, "log entry")?;
    Ok(match entry.payload {
        openraft::EntryPayload::Normal(crate::Request::Batch(b)) => Some(b),
        _ => None,
    })
}
