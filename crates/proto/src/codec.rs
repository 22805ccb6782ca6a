//! The gRPC codec of fjord's services: prost's, with one check before decoding. A
//! `ProduceRequest` whose records, headers or batches, counted on the wire
//! ([`crate::prescan`]), pass their limits is refused (INVALID_ARGUMENT, naming the limit)
//! without being decoded: decoding builds a struct per record and header, ~48 times the
//! bytes of an empty one, before the server's own checks (or its authentication) run.

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
        }
        self.inner.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
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
}
