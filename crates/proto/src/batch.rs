//! The record batch body: the prost encoding of a `RecordList`, covered by a CRC-32C.
//!
//! A producer encodes its records once ([`encode`]) and computes the CRC ([`checksum`]);
//! the server checks the CRC when it accepts the batch and again when it reads it back
//! ([`verify`]), and stores and serves the bytes unchanged. Consumers decode with
//! [`decode`], which checks the CRC too. Corruption is an error, never silent data.

use bytes::Bytes;
use prost::Message;

use crate::v1::{Record, RecordList};

/// Why a batch body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The CRC-32C of the bytes is not the one the batch carries.
    Checksum { expected: u32, actual: u32 },
    /// The bytes are not an encoded `RecordList`.
    Malformed(String),
    /// The batch says it has `declared` records but holds `actual`.
    Count { declared: u32, actual: u32 },
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Checksum { expected, actual } => write!(
                f,
                "record batch CRC-32C mismatch: batch says {expected:#010x}, bytes give {actual:#010x}"
            ),
            BatchError::Malformed(e) => write!(f, "record batch is not an encoded RecordList: {e}"),
            BatchError::Count { declared, actual } => write!(
                f,
                "record batch declares {declared} records but holds {actual}"
            ),
        }
    }
}

impl std::error::Error for BatchError {}

/// CRC-32C (Castagnoli) of a batch body.
pub fn checksum(body: &[u8]) -> u32 {
    crc32c::crc32c(body)
}

/// Encodes records into a batch body.
pub fn encode(records: &[Record]) -> Bytes {
    // Cloning into a RecordList would copy every value; encode the repeated field by hand
    // instead (field 1, length-delimited), which is byte-for-byte what prost would write.
    let mut buf = Vec::with_capacity(records.iter().map(|r| r.encoded_len() + 6).sum());
    for r in records {
        prost::encoding::message::encode(1, r, &mut buf);
    }
    Bytes::from(buf)
}

/// Checks a body against the CRC its batch carries.
pub fn verify(body: &[u8], expected: u32) -> Result<(), BatchError> {
    let actual = checksum(body);
    if actual == expected {
        Ok(())
    } else {
        Err(BatchError::Checksum { expected, actual })
    }
}

/// Checks the CRC, then decodes the records of a batch body.
pub fn decode(body: &[u8], expected_crc: u32) -> Result<Vec<Record>, BatchError> {
    verify(body, expected_crc)?;
    decode_unchecked(body)
}

/// Decodes without a CRC check (for bodies whose CRC was just computed locally).
pub fn decode_unchecked(body: &[u8]) -> Result<Vec<Record>, BatchError> {
    RecordList::decode(body)
        .map(|l| l.records)
        .map_err(|e| BatchError::Malformed(e.to_string()))
}

/// The number of bytes a record counts against a record size limit: key, value and headers.
pub fn record_size(r: &Record) -> usize {
    r.key.as_ref().map_or(0, |k| k.len())
        + r.value.len()
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::Header;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(
                ("[a-z]{0,5}", proptest::collection::vec(any::<u8>(), 0..8)),
                0..3,
            ),
            any::<i64>(),
        )
            .prop_map(|(key, value, headers, ts)| Record {
                key: key.map(Bytes::from),
                value: Bytes::from(value),
                headers: headers
                    .into_iter()
                    .map(|(key, value)| Header {
                        key,
                        value: Bytes::from(value),
                    })
                    .collect(),
                timestamp_ms: ts,
            })
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(records in proptest::collection::vec(arb_record(), 0..20)) {
            let body = encode(&records);
            let same = RecordList { records: records.clone() }.encode_to_vec();
            prop_assert_eq!(&body[..], &same[..]);
            let back = decode(&body, checksum(&body)).unwrap();
            prop_assert_eq!(back, records);
        }

        #[test]
        fn any_flipped_bit_is_caught(records in proptest::collection::vec(arb_record(), 1..5), bit in any::<usize>()) {
            let body = encode(&records);
            let crc = checksum(&body);
            let mut bad = body.to_vec();
            let bit = bit % (bad.len() * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
            let is_checksum_error = matches!(decode(&bad, crc), Err(BatchError::Checksum { .. }));
            prop_assert!(is_checksum_error);
        }
    }
}
