//! Encodings: openraft entries on disk, openraft messages on the wire.
//!
//! Both use postcard over openraft's serde derives. A stored entry that does not decode is
//! reported as corruption ([`DecodeError`], an I/O error of kind `InvalidData` where openraft
//! wants one), never skipped. Encoding fails only for what postcard cannot represent; the
//! bytes go to a peer or to disk, so that is an error ([`EncodeError`]) there, not a panic.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

/// The error half of a Raft RPC's answer on the wire: the text of the peer's openraft error
/// (the requester takes the RPC as failed and only reports it). Serialized as a bare string,
/// so the answer encodes as postcard's `Result<_, String>`, as it always has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
#[error("{message}")]
pub struct RemoteError {
    pub message: String,
}

impl RemoteError {
    pub fn of(e: impl std::fmt::Display) -> Self {
        RemoteError {
            message: e.to_string(),
        }
    }
}

/// A Raft RPC's answer as the wire carries it.
pub type WireResult<T> = Result<T, RemoteError>;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_error_encodes_as_the_string_it_replaced() {
        // Peers of an older build send and expect `Result<T, String>`.
        let old: Result<u64, String> = Err("raft stopped".into());
        let new: WireResult<u64> = Err(RemoteError::of("raft stopped"));
        let bytes = encode(&old, "old").unwrap();
        assert_eq!(bytes, encode(&new, "new").unwrap());
        assert_eq!(decode::<WireResult<u64>>(&bytes, "answer").unwrap(), new);
    }
}
