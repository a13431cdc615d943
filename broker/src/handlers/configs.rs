//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and the broker.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse as AlterResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::fill_error;
use crate::error::BrokerError;
use crate::services::Services;
use crate::topic_config::{
    source, topic_def, topic_def_by_broker_name, BrokerLayers, DescribedConfig,
};

/// Rows to describe, plus the topic's overrides (None for the broker).
type Described = (Vec<DescribedConfig>, Option<BTreeMap<String, String>>);

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// Which broker config set a resource name addresses.
fn broker_target(broker: &Services, name: &str) -> Result<bool, BrokerError> {
    if name.is_empty() {
        Ok(false)
    } else if name == broker.node_id().to_string() {
        Ok(true)
    } else {
        Err(BrokerError::InvalidRequest(format!(
            "broker resource {name:?} is not this broker ({})",
            broker.node_id()
        )))
    }
}

pub(super) fn describe_configs(
    broker: &Arc<Services>,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let layers = broker.layers();
    let mut resp = DescribeConfigsResponse::default();
    resp.results = req
        .resources
        .into_iter()
        .map(|res| {
            let mut out = DescribeConfigsResult::default();
            out.resource_type = res.resource_type;
            out.resource_name = res.resource_name.clone();
            let name = res.resource_name.to_string();
            let described: Result<Described, BrokerError> = match res.resource_type {
                TOPIC => broker
                    .topic(&name)
                    .map(|t| (layers.describe_topic(&t.configs), Some(t.configs)))
                    .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.clone())),
                BROKER => broker_target(broker, &name).map(|_| (layers.describe_broker(), None)),
                other => Err(BrokerError::InvalidRequest(format!(
                    "resource type {other} is not supported"
                ))),
            };
            match described {
                Ok((rows, overrides)) => {
                    let keys = res.configuration_keys.as_ref();
                    out.configs = rows
                        .into_iter()
                        .filter(|d| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == d.name)))
                        .map(|d| {
                            let synonyms = if req.include_synonyms {
                                synonyms(&layers, &d, overrides.as_ref())
                            } else {
                                Vec::new()
                            };
                            let mut c = DescribeConfigsResourceResult::default();
                            c.name = StrBytes::from_string(d.name);
                            c.value = Some(StrBytes::from_string(d.value));
                            c.read_only = d.read_only;
                            c.config_source = d.source;
                            c.is_sensitive = false;
                            c.synonyms = synonyms;
                            if version >= 3 {
                                c.config_type = d.kind as i8;
                                if req.include_documentation {
                                    c.documentation = Some(StrBytes::from_static_str(d.doc));
                                }
                            }
                            c
                        })
                        .collect();
                }
                Err(e) => {
                    fill_error(&e, &mut out.error_code, &mut out.error_message);
                }
            }
            out
        })
        .collect();
    resp
}

/// The resolution chain of one config, most specific first (Kafka's synonyms).
fn synonyms(
    layers: &BrokerLayers,
    d: &DescribedConfig,
    overrides: Option<&BTreeMap<String, String>>,
) -> Vec<DescribeConfigsSynonym> {
    let def = match overrides {
        Some(_) => topic_def(&d.name),
        None => topic_def_by_broker_name(&d.name),
    };
    let Some(def) = def else {
        return vec![synonym(&d.name, &d.value, d.source)];
    };
    let mut out = Vec::new();
    if let Some(v) = overrides.and_then(|o| o.get(def.name)) {
        out.push(synonym(def.name, v, source::DYNAMIC_TOPIC_CONFIG));
    }
    let b = def.broker_name;
    if let Some(v) = layers.dynamic_broker.get(b) {
        out.push(synonym(b, v, source::DYNAMIC_BROKER_CONFIG));
    }
    if let Some(v) = layers.dynamic_default.get(b) {
        out.push(synonym(b, v, source::DYNAMIC_DEFAULT_BROKER_CONFIG));
    }
    if let Some(v) = layers.static_values.get(b) {
        out.push(synonym(b, v, source::STATIC_BROKER_CONFIG));
    }
    out.push(synonym(b, def.default, source::DEFAULT_CONFIG));
    out
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    let mut s = DescribeConfigsSynonym::default();
    s.name = StrBytes::from_string(name.to_string());
    s.value = Some(StrBytes::from_string(value.to_string()));
    s.source = source;
    s
}

/// Applies a change to a topic's or the broker's config set.
async fn apply(
    broker: &Services,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), BrokerError>,
) -> Result<(), BrokerError> {
    match resource_type {
        TOPIC => {
            broker
                .admin
                .alter_topic_configs(name, change, validate_only)
                .await
        }
        BROKER => {
            let per_broker = broker_target(broker, name)?;
            broker
                .admin
                .alter_broker_configs(per_broker, change, validate_only)
                .await
        }
        other => Err(BrokerError::InvalidRequest(format!(
            "resource type {other} is not supported"
        ))),
    }
}

pub(super) async fn alter_configs(
    broker: &Arc<Services>,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for res in req.resources {
        resp.responses.push({
            let mut out = AlterResult::default();
            out.resource_type = res.resource_type;
            out.resource_name = res.resource_name.clone();
            // Non-incremental: the given set replaces every override.
            let result = apply(
                broker,
                res.resource_type,
                &res.resource_name,
                req.validate_only,
                |cfg| {
                    cfg.clear();
                    for c in &res.configs {
                        if let Some(v) = &c.value {
                            cfg.insert(c.name.to_string(), v.to_string());
                        }
                    }
                    Ok(())
                },
            )
            .await;
            if let Err(e) = result {
                fill_error(&e, &mut out.error_code, &mut out.error_message);
            }
            out
        });
    }
    resp
}

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub(super) async fn incremental_alter_configs(
    broker: &Arc<Services>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let layers = broker.layers();
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        resp.responses.push({
            let mut out = IncResult::default();
            out.resource_type = res.resource_type;
            out.resource_name = res.resource_name.clone();
            let is_topic = res.resource_type == TOPIC;
            let result = apply(
                broker,
                res.resource_type,
                &res.resource_name,
                req.validate_only,
                |cfg| {
                    for c in &res.configs {
                        let key = c.name.to_string();
                        let value = c.value.as_ref().map(|v| v.to_string());
                        match c.config_operation {
                            SET => {
                                let v = value.ok_or_else(|| {
                                    BrokerError::InvalidRequest(format!(
                                        "SET of `{key}` without a value"
                                    ))
                                })?;
                                cfg.insert(key, v);
                            }
                            DELETE => {
                                cfg.remove(&key);
                            }
                            APPEND | SUBTRACT => {
                                let def = if is_topic {
                                    topic_def(&key)
                                } else {
                                    topic_def_by_broker_name(&key)
                                };
                                let def = def
                                    .filter(|d| d.kind == crate::topic_config::ConfigType::List)
                                    .ok_or_else(|| {
                                        BrokerError::InvalidConfig(format!(
                                            "`{key}` is not a list config"
                                        ))
                                    })?;
                                let current = cfg.get(&key).cloned().unwrap_or_else(|| {
                                    if is_topic {
                                        layers.broker_value(def).0
                                    } else {
                                        def.default.to_string()
                                    }
                                });
                                let mut items: Vec<String> = current
                                    .split(',')
                                    .map(|s| s.trim().to_string())
                                    .filter(|s| !s.is_empty())
                                    .collect();
                                for v in value
                                    .unwrap_or_default()
                                    .split(',')
                                    .map(str::trim)
                                    .filter(|s| !s.is_empty())
                                {
                                    if c.config_operation == APPEND {
                                        if !items.iter().any(|i| i == v) {
                                            items.push(v.to_string());
                                        }
                                    } else {
                                        items.retain(|i| i != v);
                                    }
                                }
                                cfg.insert(key, items.join(","));
                            }
                            op => {
                                return Err(BrokerError::InvalidRequest(format!(
                                    "unknown config operation {op} for `{key}`"
                                )))
                            }
                        }
                    }
                    Ok(())
                },
            )
            .await;
            if let Err(e) = result {
                fill_error(&e, &mut out.error_code, &mut out.error_message);
            }
            out
        });
    }
    resp
}
