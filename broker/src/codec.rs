//! Request decoding and response encoding on top of the kafka-protocol crate.
//!
//! Frames arrive already length-checked (see `connection`). Here the API key and version are checked
//! against what we implement *before* the body is decoded, the KIP-511 fallback is produced for an
//! ApiVersions request newer than ours, and decoding runs under `catch_unwind` so that a bug in the codec
//! can only close one connection, never take the broker down.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::api_versions;

/// A decoded request.
#[derive(Debug)]
pub struct DecodedRequest {
    /// API key.
    pub api_key: ApiKey,
    /// Request header (version, correlation id, client id).
    pub header: RequestHeader,
    /// Request body.
    pub body: RequestKind,
}

/// What a frame turned out to be.
#[derive(Debug)]
pub enum Frame {
    /// A request we implement.
    Request(Box<DecodedRequest>),
    /// An ApiVersions request of a version newer than ours: answer per KIP-511.
    ApiVersionsFallback {
        /// Correlation id to echo.
        correlation_id: i32,
    },
}

/// Why a frame cannot be served; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than a request header needs.
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    /// The API key is not one Kafka defines.
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    /// The API or the version is not implemented here.
    #[error("unsupported {api:?} v{version}")]
    UnsupportedVersion {
        /// API.
        api: ApiKey,
        /// Requested version.
        version: i16,
    },
    /// The header or body does not decode.
    #[error("cannot decode {api:?} v{version}: {message}")]
    Decode {
        /// API.
        api: ApiKey,
        /// Version.
        version: i16,
        /// Decoder message.
        message: String,
    },
    /// An acks=0 produce failed: the connection is closed to tell the producer.
    #[error("acks=0 produce failed; closing the connection to signal the producer")]
    AcksZeroFailed,
    /// A response could not be encoded (a bug).
    #[error("cannot encode {api:?} v{version} response: {message}")]
    Encode {
        /// API.
        api: ApiKey,
        /// Version.
        version: i16,
        /// Encoder message.
        message: String,
    },
}

/// Decodes one request frame (without its length prefix).
pub fn decode_frame(frame: Bytes) -> Result<Frame, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    if api == ApiKey::ApiVersions {
        if let Some(s) = api_versions::support(api) {
            if version > s.max {
                return Ok(Frame::ApiVersionsFallback { correlation_id });
            }
        }
    }
    if !api_versions::accepts(api, version) {
        return Err(FrameError::UnsupportedVersion { api, version });
    }
    let decoded = std::panic::catch_unwind(move || {
        let mut buf = frame;
        let header = RequestHeader::decode(&mut buf, api.request_header_version(version))
            .map_err(|e| e.to_string())?;
        let body = RequestKind::decode(api, &mut buf, api_versions::codec_version(api, version))
            .map_err(|e| format!("{e:#}"))?;
        Ok::<_, String>((header, body))
    });
    match decoded {
        Ok(Ok((header, body))) => Ok(Frame::Request(Box::new(DecodedRequest {
            api_key: api,
            header,
            body,
        }))),
        Ok(Err(message)) => Err(FrameError::Decode {
            api,
            version,
            message,
        }),
        Err(_) => Err(FrameError::Decode {
            api,
            version,
            message: "decoder panicked".into(),
        }),
    }
}

/// Encodes a response with its header and length prefix.
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, FrameError> {
    let err = |e: anyhow::Error| FrameError::Encode {
        api,
        version,
        message: format!("{e:#}"),
    };
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, api.response_header_version(version))
        .map_err(err)?;
    body.encode(&mut buf, api_versions::codec_version(api, version))
        .map_err(err)?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| FrameError::Encode {
        api,
        version,
        message: "response larger than 2 GiB".into(),
    })?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// The KIP-511 answer to an ApiVersions request newer than ours: v0, UNSUPPORTED_VERSION, our ranges.
pub fn api_versions_fallback(correlation_id: i32) -> Result<Bytes, FrameError> {
    let mut body = api_versions::response();
    body.error_code = ResponseError::UnsupportedVersion.code();
    encode_response(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &ResponseKind::ApiVersions(body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn request_bytes(api: ApiKey, version: i16, body: &RequestKind) -> Bytes {
        let mut buf = BytesMut::new();
        let mut h = RequestHeader::default();
        h.request_api_key = api as i16;
        h.request_api_version = version;
        h.correlation_id = 42;
        h.client_id = Some(StrBytes::from_static_str("test"));
        h.encode(&mut buf, api.request_header_version(version))
            .expect("header");
        body.encode(&mut buf, version).expect("body");
        buf.freeze()
    }

    #[test]
    fn decodes_a_metadata_request() {
        let bytes = request_bytes(
            ApiKey::Metadata,
            12,
            &RequestKind::Metadata(MetadataRequest::default()),
        );
        match decode_frame(bytes).expect("decodes") {
            Frame::Request(r) => {
                assert_eq!(r.api_key, ApiKey::Metadata);
                assert_eq!(r.header.correlation_id, 42);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn newer_api_versions_gets_the_kip_511_fallback() {
        let mut bytes = BytesMut::from(
            &request_bytes(
                ApiKey::ApiVersions,
                3,
                &RequestKind::ApiVersions(ApiVersionsRequest::default()),
            )[..],
        );
        bytes[2..4].copy_from_slice(&99i16.to_be_bytes());
        let Frame::ApiVersionsFallback { correlation_id } =
            decode_frame(bytes.freeze()).expect("fallback")
        else {
            panic!("expected fallback");
        };
        let resp = api_versions_fallback(correlation_id).expect("encode");
        let mut body = resp.slice(8..);
        let decoded = ApiVersionsResponse::decode(&mut body, 0).expect("v0 decodes");
        assert_eq!(decoded.error_code, 35);
        assert!(!decoded.api_keys.is_empty());
        assert_eq!(&resp[4..8], &42i32.to_be_bytes());
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        assert!(matches!(
            decode_frame(Bytes::from_static(b"\0\0")),
            Err(FrameError::TooShort(2))
        ));
        assert!(matches!(
            decode_frame(Bytes::from_static(b"\x7f\x00\x00\x00\x00\x00\x00\x01")),
            Err(FrameError::UnknownApiKey(_))
        ));
        // Produce v9 with a compact array claiming ~2^31 topics and nothing behind it.
        let mut b = BytesMut::new();
        b.put_i16(0);
        b.put_i16(9);
        b.put_i32(1);
        b.put_i16(-1); // client id null
        b.put_u8(0); // header tagged fields
        b.put_u8(0); // transactional id: null compact string
        b.put_i16(1); // acks
        b.put_i32(1000); // timeout
        b.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]); // compact array length varint
        assert!(matches!(
            decode_frame(b.freeze()),
            Err(FrameError::Decode { .. })
        ));
        let v0 = request_bytes(
            ApiKey::Metadata,
            4,
            &RequestKind::Metadata(MetadataRequest::default()),
        );
        let mut produce_v2 = BytesMut::from(&v0[..]);
        produce_v2[0..4].copy_from_slice(&[0, 0, 0, 2]);
        assert!(matches!(
            decode_frame(produce_v2.freeze()),
            Err(FrameError::UnsupportedVersion { .. })
        ));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// The crate's decoder itself (no catch_unwind) must turn any body into Ok or Err, never a
            /// panic, for every API and version we accept; and a claimed huge array must not allocate.
            #[test]
            fn random_bodies_never_panic_the_decoder(
                api_idx in 0usize..api_versions::SUPPORTED.len(),
                version_off in 0i16..20,
                body in proptest::collection::vec(any::<u8>(), 0..300),
            ) {
                let s = api_versions::SUPPORTED[api_idx];
                let version = s.accept_min + version_off % (s.max - s.accept_min + 1);
                let mut buf = Bytes::from(body);
                let _ = RequestKind::decode(s.key, &mut buf, api_versions::codec_version(s.key, version));
            }

            /// Whole frames through decode_frame: never a panic, and only the documented outcomes.
            #[test]
            fn random_frames_are_classified(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
                match decode_frame(Bytes::from(frame)) {
                    Ok(_) | Err(FrameError::TooShort(_)) | Err(FrameError::UnknownApiKey(_))
                    | Err(FrameError::UnsupportedVersion { .. }) | Err(FrameError::Decode { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
        }
    }
}
