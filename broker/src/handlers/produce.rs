//! Produce and InitProducerId.
//!
//! Every partition of a Produce request is appended concurrently; acks=all waits for each partition's
//! group commit, bounded by the request's timeout (REQUEST_TIMED_OUT after it; the data may still
//! become durable, exactly as with Kafka).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::error::BrokerError;
use crate::metrics::TopicLabel;
use crate::services::Services;

/// What to do after a Produce.
pub(super) enum ProduceReply {
    /// Send this response.
    Respond(ProduceResponse),
    /// acks=0 and everything succeeded: send nothing.
    Silent,
    /// acks=0 and a partition failed: close the connection, Kafka's only signal to such a producer
    /// (it then refreshes metadata and reconnects).
    Close,
}

/// Handles Produce.
pub(super) async fn handle(
    broker: &Arc<Services>,
    req: ProduceRequest,
    version: i16,
) -> ProduceReply {
    let acks = req.acks;
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    let transactional = req.transactional_id.is_some();
    let max_request = broker.config.broker.socket_request_max_bytes as usize;
    let topics = req.topic_data.into_iter().map(|topic| {
        let broker = broker.clone();
        async move {
            let name = topic.name.0.to_string();
            let partitions = topic.partition_data.into_iter().map(|pd| {
                let broker = broker.clone();
                let name = name.clone();
                async move {
                    let mut out = PartitionProduceResponse::default();
                    out.index = pd.index;
                    out.base_offset = -1;
                    out.log_append_time_ms = -1;
                    out.log_start_offset = -1;
                    let result = produce_partition(&broker, &name, pd.index, pd.records, acks, timeout, transactional, max_request).await;
                    match result {
                        Ok(r) => {
                            out.base_offset = r.base_offset;
                            out.log_append_time_ms = r.log_append_time_ms;
                            out.log_start_offset = r.log_start_offset;
                        }
                        Err(e) => {
                            tracing::debug!(topic = %name, partition = pd.index, error = %e, "produce failed");
                            out.error_code = e.code();
                            out.error_message = Some(StrBytes::from_string(e.to_string()));
                            if let (BrokerError::InvalidRecord { message, record_indexes }, true) =
                                (&e, version >= 8)
                            {
                                // KIP-467: name each bad record so the client fails only those.
                                out.record_errors = record_indexes
                                    .iter()
                                    .map(|&i| {
                                        let mut r = BatchIndexAndErrorMessage::default();
                                        r.batch_index = i;
                                        r.batch_index_error_message =
                                            Some(StrBytes::from_string(message.clone()));
                                        r
                                    })
                                    .collect();
                            }
                        }
                    }
                    out
                }
            });
            let mut t = TopicProduceResponse::default();
            t.partition_responses = join_all(partitions).await;
            t.name = TopicName(StrBytes::from_string(name));
            t
        }
    });
    let responses = join_all(topics).await;
    if acks == 0 {
        let failed = responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .any(|p| p.error_code != 0);
        return if failed {
            ProduceReply::Close
        } else {
            ProduceReply::Silent
        };
    }
    let mut resp = ProduceResponse::default();
    resp.responses = responses;
    ProduceReply::Respond(resp)
}

#[allow(clippy::too_many_arguments)]
async fn produce_partition(
    broker: &Arc<Services>,
    topic: &str,
    index: i32,
    records: Option<bytes::Bytes>,
    acks: i16,
    timeout: Duration,
    transactional: bool,
    max_request: usize,
) -> Result<crate::replica::ProduceResult, BrokerError> {
    if !matches!(acks, -1..=1) {
        return Err(BrokerError::InvalidRequest(format!(
            "acks={acks} is not -1, 0 or 1"
        )));
    }
    if transactional {
        return Err(BrokerError::Unsupported("transactional produce".into()));
    }
    if crate::topics::is_internal_topic(topic) {
        return Err(BrokerError::InvalidTopic(format!(
            "cannot append to internal topic {topic}"
        )));
    }
    let partition = broker.leader_partition(topic, index)?;
    let records = records
        .filter(|r| !r.is_empty())
        .ok_or_else(|| BrokerError::InvalidRequest("produce without records".into()))?;
    if records.len() > max_request {
        return Err(BrokerError::RecordListTooLarge {
            size: records.len(),
            max: max_request,
        });
    }
    let size = records.len() as u64;
    let result = match tokio::time::timeout(
        timeout.max(Duration::from_millis(1)),
        partition.produce(&records, acks, partition.settings().min_insync_replicas),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => return Err(BrokerError::RequestTimedOut),
    };
    broker
        .metrics
        .bytes_in
        .get_or_create(&TopicLabel {
            topic: topic.to_string(),
        })
        .inc_by(size);
    Ok(result)
}

/// InitProducerId for idempotent producers (transactions come with their own issue).
pub(super) async fn init_producer_id(
    broker: &Arc<Services>,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        resp.error_code = ResponseError::UnsupportedVersion.code();
        return resp;
    }
    // Like Kafka, a producer without a transactional id always gets a fresh id with epoch 0, even when it
    // asks to bump the epoch of its old one (KIP-360).
    match broker.admin.next_producer_id().await {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => resp.error_code = e.code(),
    }
    resp
}
