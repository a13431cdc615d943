//! The API versions this broker implements, and the ApiVersions answer built from them.
//!
//! Only versions whose semantics the handlers implement are listed, not the crate's whole decodable
//! range. One deliberate exception: Produce is advertised from v0 although v0-v2 (message format v0/v1)
//! are refused, because librdkafka derives feature flags (e.g. compression support) from Produce's
//! advertised range and misdetects a broker whose Produce range starts above 0. Kafka 4.0 does the same.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// One implemented API: advertised range and the lowest version we actually accept.
#[derive(Debug, Clone, Copy)]
pub struct ApiSupport {
    /// The API.
    pub key: ApiKey,
    /// Lowest version advertised.
    pub min: i16,
    /// Highest version advertised and accepted.
    pub max: i16,
    /// Lowest version accepted (above `min` only for Produce).
    pub accept_min: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> ApiSupport {
    ApiSupport {
        key,
        min,
        max,
        accept_min: min,
    }
}

/// Every implemented API.
pub const SUPPORTED: &[ApiSupport] = &[
    ApiSupport {
        key: ApiKey::Produce,
        min: 0,
        max: 11,
        accept_min: 3,
    },
    api(ApiKey::Fetch, 4, 16),
    api(ApiKey::ListOffsets, 1, 9),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::DescribeLogDirs, 0, 4),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::DescribeQuorum, 0, 2),
    api(ApiKey::FindCoordinator, 0, 6),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    api(ApiKey::ConsumerGroupDescribe, 0, 1),
    api(ApiKey::ElectLeaders, 0, 2),
    api(ApiKey::AlterPartitionReassignments, 0, 1),
    api(ApiKey::ListPartitionReassignments, 0, 0),
];

/// The version the codec uses for a request of `key` at `version`. DescribeLogDirs v0 has exactly v1's
/// layout (v1 only changed throttling) but the crate starts at v1; kafka-python still sends v0.
pub fn codec_version(key: ApiKey, version: i16) -> i16 {
    match (key, version) {
        (ApiKey::DescribeLogDirs, 0) => 1,
        _ => version,
    }
}

/// The support entry for `key`, if implemented.
pub fn support(key: ApiKey) -> Option<&'static ApiSupport> {
    SUPPORTED.iter().find(|s| s.key == key)
}

/// Whether requests of `key` at `version` are accepted.
pub fn accepts(key: ApiKey, version: i16) -> bool {
    support(key).is_some_and(|s| (s.accept_min..=s.max).contains(&version))
}

/// The ApiVersions answer (error code filled by the caller).
pub fn response() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.api_keys = SUPPORTED
        .iter()
        .map(|s| {
            let mut v = ApiVersion::default();
            v.api_key = s.key as i16;
            v.min_version = s.min;
            v.max_version = s.max;
            v
        })
        .collect();
    r.finalized_features_epoch = -1;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Message, Request};

    fn crate_range(key: ApiKey) -> (i16, i16) {
        use kafka_protocol::messages::*;
        let r = match key {
            ApiKey::Produce => ProduceRequest::VERSIONS,
            ApiKey::Fetch => FetchRequest::VERSIONS,
            ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
            ApiKey::Metadata => MetadataRequest::VERSIONS,
            ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
            ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
            ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
            ApiKey::DeleteRecords => DeleteRecordsRequest::VERSIONS,
            ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
            ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::VERSIONS,
            ApiKey::DescribeConfigs => DescribeConfigsRequest::VERSIONS,
            ApiKey::AlterConfigs => AlterConfigsRequest::VERSIONS,
            ApiKey::DescribeLogDirs => DescribeLogDirsRequest::VERSIONS,
            ApiKey::CreatePartitions => CreatePartitionsRequest::VERSIONS,
            ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::VERSIONS,
            ApiKey::DescribeCluster => DescribeClusterRequest::VERSIONS,
            ApiKey::DescribeQuorum => DescribeQuorumRequest::VERSIONS,
            ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
            ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
            ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
            ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
            ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
            ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
            ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
            ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
            ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
            ApiKey::DeleteGroups => DeleteGroupsRequest::VERSIONS,
            ApiKey::OffsetDelete => OffsetDeleteRequest::VERSIONS,
            ApiKey::ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest::VERSIONS,
            ApiKey::ConsumerGroupDescribe => ConsumerGroupDescribeRequest::VERSIONS,
            ApiKey::ElectLeaders => ElectLeadersRequest::VERSIONS,
            ApiKey::AlterPartitionReassignments => AlterPartitionReassignmentsRequest::VERSIONS,
            ApiKey::ListPartitionReassignments => ListPartitionReassignmentsRequest::VERSIONS,
            other => panic!("no range for {other:?}"),
        };
        let _ = ProduceRequest::KEY;
        (r.min, r.max)
    }

    #[test]
    fn every_accepted_version_is_decodable_by_the_crate() {
        for s in SUPPORTED {
            let (min, max) = crate_range(s.key);
            assert!(
                codec_version(s.key, s.accept_min) >= min,
                "{:?} accepts {} < crate min {min}",
                s.key,
                s.accept_min
            );
            assert!(
                s.max <= max,
                "{:?} advertises {} > crate max {max}",
                s.key,
                s.max
            );
        }
    }

    #[test]
    fn produce_is_advertised_from_v0_but_accepted_from_v3() {
        let p = support(ApiKey::Produce).expect("produce");
        assert_eq!(p.min, 0);
        assert!(!accepts(ApiKey::Produce, 2));
        assert!(accepts(ApiKey::Produce, 3));
        assert!(accepts(ApiKey::JoinGroup, 0));
        assert!(accepts(ApiKey::ConsumerGroupHeartbeat, 1));
        assert_eq!(response().api_keys.len(), SUPPORTED.len());
    }
}
