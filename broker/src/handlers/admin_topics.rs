//! CreateTopics, DeleteTopics and CreatePartitions.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::fill_error;
use crate::error::BrokerError;
use crate::services::Services;

pub(super) async fn create_topics(
    broker: &Arc<Services>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    let mut resp = CreateTopicsResponse::default();
    for t in req.topics {
        resp.topics.push({
            let name = t.name.0.to_string();
            let mut out = CreatableTopicResult::default();
            out.name = t.name.clone();
            out.num_partitions = -1;
            out.replication_factor = -1;
            let checked = (|| {
                if crate::topics::is_internal_topic(&name) {
                    return Err(BrokerError::InvalidTopic(format!(
                        "{name} is an internal topic; the broker creates it"
                    )));
                }
                if duplicates.contains(&name) {
                    return Err(BrokerError::InvalidRequest(format!(
                        "topic {name} is listed more than once"
                    )));
                }
                let mut configs = BTreeMap::new();
                for c in &t.configs {
                    let value = c.value.as_ref().ok_or_else(|| {
                        BrokerError::InvalidConfig(format!("config `{}` has a null value", c.name))
                    })?;
                    configs.insert(c.name.to_string(), value.to_string());
                }
                if t.assignments.is_empty() {
                    return Ok((t.num_partitions, t.replication_factor, None, configs));
                }
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err(BrokerError::InvalidRequest(
                        "give either assignments or partition count and replication factor".into(),
                    ));
                }
                let mut sets: Vec<(i32, Vec<i32>)> = t
                    .assignments
                    .iter()
                    .map(|a| {
                        (
                            a.partition_index,
                            a.broker_ids.iter().map(|b| b.0).collect(),
                        )
                    })
                    .collect();
                sets.sort_by_key(|(i, _)| *i);
                if sets
                    .iter()
                    .enumerate()
                    .any(|(i, (p, _))| usize::try_from(*p).ok() != Some(i))
                {
                    return Err(BrokerError::InvalidReplicaAssignment(
                        "assignments must number the partitions 0, 1, 2, ...".into(),
                    ));
                }
                let sets: Vec<Vec<i32>> = sets.into_iter().map(|(_, b)| b).collect();
                Ok((-1, -1, Some(sets), configs))
            })();
            let result = match checked {
                Ok((partitions, rf, sets, configs)) => {
                    broker
                        .admin
                        .create_topic_with(&name, partitions, rf, sets, configs, req.validate_only)
                        .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(created) => {
                    out.topic_id = if req.validate_only {
                        Uuid::nil()
                    } else {
                        created.id
                    };
                    out.num_partitions = created.partitions;
                    out.replication_factor = created.replication_factor;
                    if version >= 5 {
                        let overrides: BTreeMap<String, String> = t
                            .configs
                            .iter()
                            .filter_map(|c| {
                                c.value
                                    .as_ref()
                                    .map(|v| (c.name.to_string(), v.to_string()))
                            })
                            .collect();
                        out.configs = Some(
                            broker
                                .layers()
                                .describe_topic(&overrides)
                                .into_iter()
                                .map(|d| {
                                    let mut c = CreatableTopicConfigs::default();
                                    c.name = StrBytes::from_string(d.name);
                                    c.value = Some(StrBytes::from_string(d.value));
                                    c.read_only = d.read_only;
                                    c.config_source = d.source;
                                    c
                                })
                                .collect(),
                        );
                    }
                }
                Err(e) => {
                    fill_error(&e, &mut out.error_code, &mut out.error_message);
                }
            }
            out
        });
    }
    resp
}

pub(super) async fn delete_topics(
    broker: &Arc<Services>,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6+ in `topics` by name or id.
    let mut targets: Vec<(Option<String>, Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    targets.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut resp = DeleteTopicsResponse::default();
    for (name, id) in targets {
        resp.responses.push({
            let mut out = DeletableTopicResult::default();
            let resolved = match &name {
                Some(n) => Some(n.clone()),
                None => broker.topic_by_id(id).map(|t| t.name),
            };
            out.name = resolved
                .clone()
                .map(|n| TopicName(StrBytes::from_string(n)));
            out.topic_id = id;
            match resolved {
                None => out.error_code = ResponseError::UnknownTopicId.code(),
                Some(n) if crate::topics::is_internal_topic(&n) => {
                    let e =
                        BrokerError::InvalidTopic(format!("internal topic {n} cannot be deleted"));
                    fill_error(&e, &mut out.error_code, &mut out.error_message);
                }
                Some(n) => match broker
                    .admin
                    .delete_topic(&n, broker.replicas.tiered())
                    .await
                {
                    Ok(deleted_id) => out.topic_id = deleted_id,
                    Err(e) => {
                        fill_error(&e, &mut out.error_code, &mut out.error_message);
                    }
                },
            }
            out
        });
    }
    resp
}

pub(super) async fn create_partitions(
    broker: &Arc<Services>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    for t in req.topics {
        let mut out = CreatePartitionsTopicResult::default();
        let name = t.name.0.to_string();
        out.name = t.name;
        let sets = t.assignments.map(|a| {
            a.iter()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect()
        });
        let result = broker
            .admin
            .create_partitions(&name, t.count, sets, req.validate_only)
            .await;
        if let Err(e) = result {
            fill_error(&e, &mut out.error_code, &mut out.error_message);
        }
        resp.results.push(out);
    }
    resp
}
