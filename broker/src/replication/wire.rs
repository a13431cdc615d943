//! The replication transport's frames (RFC 0006).
//!
//! A frame is `len u32 | kind u8 | request id u64 | body`, `len` counting everything after
//! itself, all big-endian. A request names its group first (`topic id 16 bytes | partition i32`),
//! then carries a postcard-encoded header; an AppendEntries carries the batch bytes of its data
//! entries raw after the header, and the receiver slices them out of the frame without copying.
//! A response has the request's kind with the high bit set and the same request id; its body is a
//! postcard `Result<reply, String>` (an error reply makes openraft back off and retry).
//!
//! Bounds: a frame longer than [`MAX_FRAME`] is refused from its length alone; every count and
//! length inside a body is checked against the bytes that remain before anything is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::types::{
    log_id, Control, Entry, GroupId, LogId, Membership, PartitionRaftConfig, Record, Vote,
};

/// Largest frame accepted (an AppendEntries is capped well below it).
pub const MAX_FRAME: usize = 64 << 20;
/// Bytes before the body: length, kind, request id.
pub const FRAME_HEAD: usize = 4 + 1 + 8;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// openraft AppendEntries.
    Append = 1,
    /// openraft Vote.
    Vote = 2,
    /// openraft pre-vote.
    PreVote = 3,
    /// A whole snapshot.
    Snapshot = 4,
    /// openraft leadership transfer.
    TransferLeader = 5,
    /// Strata's coalesced heartbeat (one per broker pair).
    Heartbeat = 6,
    /// Strata's request to a group's leader to hand leadership to another replica.
    Transfer = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b & 0x7f {
            1 => Kind::Append,
            2 => Kind::Vote,
            3 => Kind::PreVote,
            4 => Kind::Snapshot,
            5 => Kind::TransferLeader,
            6 => Kind::Heartbeat,
            7 => Kind::Transfer,
            _ => return None,
        })
    }
}

/// A decoded frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// What it carries.
    pub kind: Kind,
    /// A response (high bit of the kind byte).
    pub response: bool,
    /// Matches a response to its request.
    pub request_id: u64,
    /// The body.
    pub body: Bytes,
}

/// Why a frame or body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame is longer than the limit.
    #[error("replication frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Unknown kind byte.
    #[error("unknown replication frame kind {0}")]
    UnknownKind(u8),
    /// A body that does not parse.
    #[error("malformed replication frame: {0}")]
    Malformed(String),
}

impl Frame {
    /// Encodes a frame.
    pub fn encode(kind: Kind, response: bool, request_id: u64, body: &[u8], out: &mut BytesMut) {
        let len = 1 + 8 + body.len();
        out.reserve(4 + len);
        out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        out.put_u8(kind as u8 | if response { 0x80 } else { 0 });
        out.put_u64(request_id);
        out.put_slice(body);
    }

    /// Splits one frame off the front of `buf`, if it holds a whole one.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(len));
        }
        if len < 9 {
            return Err(WireError::Malformed(format!("frame length {len}")));
        }
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(4 + len).freeze();
        frame.advance(4);
        let kind_byte = frame.get_u8();
        let kind = Kind::from_u8(kind_byte).ok_or(WireError::UnknownKind(kind_byte))?;
        let request_id = frame.get_u64();
        Ok(Some(Frame {
            kind,
            response: kind_byte & 0x80 != 0,
            request_id,
            body: frame,
        }))
    }
}

fn malformed(e: impl std::fmt::Display) -> WireError {
    WireError::Malformed(e.to_string())
}

/// Writes the group id.
pub fn put_group(out: &mut BytesMut, g: GroupId) {
    out.put_slice(g.topic_id.as_bytes());
    out.put_i32(g.partition);
}

/// Reads the group id.
pub fn get_group(body: &mut Bytes) -> Result<GroupId, WireError> {
    if body.len() < 20 {
        return Err(malformed("short group id"));
    }
    let topic_id = Uuid::from_slice(&body[..16]).map_err(malformed)?;
    body.advance(16);
    Ok(GroupId {
        topic_id,
        partition: body.get_i32(),
    })
}

/// Encodes a postcard value.
pub fn to_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>, WireError> {
    postcard::to_allocvec(v).map_err(malformed)
}

/// Decodes a postcard value.
pub fn from_bytes<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, WireError> {
    postcard::from_bytes(b).map_err(malformed)
}

/// An entry's header on the wire; data entries' bytes follow the header raw.
#[derive(Debug, Serialize, Deserialize)]
enum WireEntry {
    Blank(u64, u64),
    Membership(u64, u64, Membership),
    Batch {
        term: u64,
        index: u64,
        first_in_segment: bool,
        len: u32,
    },
    Skip(u64, u64),
    Control(u64, u64, Control),
}

#[derive(Debug, Serialize, Deserialize)]
struct AppendHeader {
    vote: Vote,
    prev_log_id: Option<LogId>,
    leader_commit: Option<LogId>,
    entries: Vec<WireEntry>,
}

/// An AppendEntries request.
pub type AppendRequest = openraft::raft::AppendEntriesRequest<PartitionRaftConfig>;

/// Encodes an AppendEntries request for `group`.
pub fn encode_append(group: GroupId, req: &AppendRequest) -> Result<BytesMut, WireError> {
    let mut payloads: Vec<&Bytes> = Vec::new();
    let entries = req
        .entries
        .iter()
        .map(|e| {
            let (term, index) = (e.log_id.leader_id.term, e.log_id.index);
            Ok(match &e.payload {
                EntryPayload::Blank => WireEntry::Blank(term, index),
                EntryPayload::Membership(m) => WireEntry::Membership(term, index, m.clone()),
                EntryPayload::Normal(Record::Batch {
                    batch,
                    first_in_segment,
                }) => {
                    payloads.push(batch);
                    WireEntry::Batch {
                        term,
                        index,
                        first_in_segment: *first_in_segment,
                        len: u32::try_from(batch.len()).map_err(malformed)?,
                    }
                }
                EntryPayload::Normal(Record::Skip) => WireEntry::Skip(term, index),
                EntryPayload::Normal(Record::Control(c)) => {
                    WireEntry::Control(term, index, c.clone())
                }
                EntryPayload::Normal(other) => {
                    return Err(malformed(format!(
                        "entry {index} cannot be replicated: {other}"
                    )))
                }
            })
        })
        .collect::<Result<Vec<_>, WireError>>()?;
    let header = to_bytes(&AppendHeader {
        vote: req.vote,
        prev_log_id: req.prev_log_id,
        leader_commit: req.leader_commit,
        entries,
    })?;
    let total: usize = payloads.iter().map(|p| p.len()).sum();
    let mut body = BytesMut::with_capacity(20 + 4 + header.len() + total);
    put_group(&mut body, group);
    body.put_u32(u32::try_from(header.len()).map_err(malformed)?);
    body.put_slice(&header);
    for p in payloads {
        body.put_slice(p);
    }
    Ok(body)
}

/// Decodes an AppendEntries body (after the group id); batch bytes are slices of `body`.
pub fn decode_append(mut body: Bytes) -> Result<AppendRequest, WireError> {
    if body.len() < 4 {
        return Err(malformed("short append header length"));
    }
    let hlen = body.get_u32() as usize;
    if hlen > body.len() {
        return Err(malformed("append header longer than the frame"));
    }
    let header_bytes = body.split_to(hlen);
    let header: AppendHeader = from_bytes(&header_bytes)?;
    let mut entries = Vec::with_capacity(header.entries.len().min(body.len() + 1));
    for e in header.entries {
        let entry = match e {
            WireEntry::Blank(t, i) => Entry {
                log_id: log_id(t, i),
                payload: EntryPayload::Blank,
            },
            WireEntry::Membership(t, i, m) => Entry {
                log_id: log_id(t, i),
                payload: EntryPayload::Membership(m),
            },
            WireEntry::Batch {
                term,
                index,
                first_in_segment,
                len,
            } => {
                let len = len as usize;
                if len > body.len() {
                    return Err(malformed("batch longer than the frame"));
                }
                Entry {
                    log_id: log_id(term, index),
                    payload: EntryPayload::Normal(Record::Batch {
                        batch: body.split_to(len),
                        first_in_segment,
                    }),
                }
            }
            WireEntry::Skip(t, i) => Entry {
                log_id: log_id(t, i),
                payload: EntryPayload::Normal(Record::Skip),
            },
            WireEntry::Control(t, i, c) => Entry {
                log_id: log_id(t, i),
                payload: EntryPayload::Normal(Record::Control(c)),
            },
        };
        entries.push(entry);
    }
    if !body.is_empty() {
        return Err(malformed("bytes left after the last batch"));
    }
    Ok(AppendRequest {
        vote: header.vote,
        prev_log_id: header.prev_log_id,
        entries,
        leader_commit: header.leader_commit,
    })
}

/// A body of a group request: group id, then a postcard value.
pub fn encode_group_request<T: Serialize>(group: GroupId, v: &T) -> Result<BytesMut, WireError> {
    let payload = to_bytes(v)?;
    let mut body = BytesMut::with_capacity(20 + payload.len());
    put_group(&mut body, group);
    body.put_slice(&payload);
    Ok(body)
}

/// Strata's coalesced heartbeat: the groups the sender leads that include the receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sending broker.
    pub from: u64,
    /// (group, term) of each group the sender leads with the receiver as a member.
    pub leads: Vec<(GroupId, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> GroupId {
        GroupId {
            topic_id: Uuid::from_u128(7),
            partition: 3,
        }
    }

    #[test]
    fn append_requests_round_trip_with_raw_batches() {
        let req = AppendRequest {
            vote: Vote::new_committed(4, 2),
            prev_log_id: Some(log_id(3, 9)),
            entries: vec![
                Entry {
                    log_id: log_id(4, 10),
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: log_id(4, 11),
                    payload: EntryPayload::Normal(Record::Batch {
                        batch: Bytes::from_static(b"batch-bytes"),
                        first_in_segment: true,
                    }),
                },
                Entry {
                    log_id: log_id(4, 12),
                    payload: EntryPayload::Membership(Membership::new_with_defaults(
                        vec![[1u64, 2].into()],
                        [1u64, 2, 3],
                    )),
                },
                Entry {
                    log_id: log_id(4, 13),
                    payload: EntryPayload::Normal(Record::Control(Control::Offloaded {
                        next_offset: 5,
                    })),
                },
                Entry {
                    log_id: log_id(4, 14),
                    payload: EntryPayload::Normal(Record::Skip),
                },
            ],
            leader_commit: Some(log_id(4, 10)),
        };
        let body = encode_append(group(), &req).expect("encode");
        let mut frame = BytesMut::new();
        Frame::encode(Kind::Append, false, 77, &body, &mut frame);
        let f = Frame::decode(&mut frame).expect("decode").expect("whole");
        assert_eq!(
            (f.kind, f.response, f.request_id),
            (Kind::Append, false, 77)
        );
        let mut b = f.body;
        assert_eq!(get_group(&mut b).expect("group"), group());
        let back = decode_append(b).expect("append");
        assert_eq!(back.vote, req.vote);
        assert_eq!(back.prev_log_id, req.prev_log_id);
        assert_eq!(back.leader_commit, req.leader_commit);
        assert_eq!(back.entries.len(), 5);
        for (a, b) in back.entries.iter().zip(&req.entries) {
            assert_eq!(a.log_id, b.log_id);
            assert_eq!(format!("{:?}", a.payload), format!("{:?}", b.payload));
        }
    }

    #[test]
    fn hostile_frames_are_errors_not_allocations() {
        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
        assert!(matches!(
            Frame::decode(&mut huge),
            Err(WireError::TooLarge(_))
        ));
        let mut short = BytesMut::from(&[0, 0, 0, 3, 1, 2, 3][..]);
        assert!(Frame::decode(&mut short).is_err());
        let mut partial = BytesMut::from(&[0, 0, 0, 20, 1][..]);
        assert!(Frame::decode(&mut partial).expect("no error").is_none());
        // An append header that claims more batch bytes than the frame holds.
        let req = AppendRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: vec![Entry {
                log_id: log_id(1, 0),
                payload: EntryPayload::Normal(Record::Batch {
                    batch: Bytes::from_static(b"0123456789"),
                    first_in_segment: false,
                }),
            }],
            leader_commit: None,
        };
        let body = encode_append(group(), &req).expect("encode");
        let mut b = body.freeze();
        get_group(&mut b).expect("group");
        let cut = b.slice(..b.len() - 4);
        assert!(decode_append(cut).is_err());
        assert!(decode_append(Bytes::from_static(&[0, 0, 0, 200, 1])).is_err());
    }

    #[test]
    fn votes_and_responses_survive_postcard() {
        let vote_req = openraft::raft::VoteRequest::<PartitionRaftConfig>::new(
            Vote::new(5, 3),
            Some(log_id(4, 100)),
        );
        let b = to_bytes(&vote_req).expect("encode");
        let back: openraft::raft::VoteRequest<PartitionRaftConfig> =
            from_bytes(&b).expect("decode");
        assert_eq!(back.vote, vote_req.vote);
        assert_eq!(back.last_log_id, vote_req.last_log_id);
        let resp = openraft::raft::AppendEntriesResponse::<PartitionRaftConfig>::PartialSuccess(
            Some(log_id(2, 7)),
        );
        let r: Result<_, String> = Ok(resp.clone());
        let back: Result<openraft::raft::AppendEntriesResponse<PartitionRaftConfig>, String> =
            from_bytes(&to_bytes(&r).expect("encode")).expect("decode");
        assert_eq!(back, Ok(resp));
        let hb = Heartbeat {
            from: 2,
            leads: vec![(group(), 9)],
        };
        let back: Heartbeat = from_bytes(&to_bytes(&hb).expect("encode")).expect("decode");
        assert_eq!(back.leads, hb.leads);
    }
}
