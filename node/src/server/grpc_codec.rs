//! The gRPC server's protobuf codec: prost's, with a check of each request's wire bytes before
//! it is decoded.
//!
//! tonic refuses a message longer than the server's `max_decoding_message_size` before reading
//! it (see [`super::grpc::max_message_bytes`]), but within that size protobuf can still
//! amplify: an empty batch operation is 2 bytes on the wire and a few hundred in memory. So a
//! batch's operations are counted on the wire first, and more than [`MAX_BATCH_OPS`] is refused
//! without decoding any of them — the same limit, checked in the same order, as `POST /v1/batch`.

use super::batch::MAX_BATCH_OPS;
use super::grpc::proto;
use bytes::Buf;
use prost::Message;
use prost::encoding::{DecodeContext, decode_key, skip_field};
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// A request message and what its wire bytes must satisfy before it is decoded.
pub trait Bounded {
    fn check(_wire: &[u8]) -> Result<(), Status> {
        Ok(())
    }
}

impl Bounded for proto::GetRequest {}
impl Bounded for proto::PutRequest {}
impl Bounded for proto::DeleteRequest {}
impl Bounded for proto::ListRequest {}
impl Bounded for proto::StrongGetRequest {}
impl Bounded for proto::StrongPutRequest {}
impl Bounded for proto::StrongDeleteRequest {}

impl Bounded for proto::BatchRequest {
    fn check(wire: &[u8]) -> Result<(), Status> {
        let ops = count_field(wire, 1, MAX_BATCH_OPS)
            .map_err(|e| Status::invalid_argument(format!("bad request: {e}")))?;
        if ops > MAX_BATCH_OPS {
            return Err(Status::resource_exhausted(format!(
                "too many operations: a batch holds at most {MAX_BATCH_OPS} operations"
            )));
        }
        Ok(())
    }
}

/// How many times field `tag` occurs at the top level of the message `wire`, counting stops
/// past `most`. Skipping fields reads only their lengths, never their contents.
fn count_field(mut wire: &[u8], tag: u32, most: usize) -> Result<usize, prost::DecodeError> {
    let mut n = 0;
    while wire.has_remaining() && n <= most {
        let (t, wire_type) = decode_key(&mut wire)?;
        if t == tag {
            n += 1;
        }
        skip_field(wire_type, t, &mut wire, DecodeContext::default())?;
    }
    Ok(n)
}

/// [`tonic_prost::ProstCodec`] whose decoder runs [`Bounded::check`] first.
pub struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Bounded + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(ProstDecoder::default())
    }
}

pub struct BoundedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default + Bounded> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::check(buf.chunk())?;
        self.0.decode(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<u8> {
        proto::BatchRequest {
            ops: vec![proto::BatchOp::default(); n],
            context: "ctx".into(),
        }
        .encode_to_vec()
    }

    #[test]
    fn batches_are_counted_on_the_wire() {
        assert_eq!(count_field(&batch(3), 1, MAX_BATCH_OPS), Ok(3));
        assert!(proto::BatchRequest::check(&batch(MAX_BATCH_OPS)).is_ok());
        let refused = proto::BatchRequest::check(&batch(MAX_BATCH_OPS + 1)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let garbage = proto::BatchRequest::check(&[0x0a, 0xff]).unwrap_err();
        assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
    }
}
