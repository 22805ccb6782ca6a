//! How results reach the user: `text` for people, or `json`, one JSON object per line, for
//! programs. The JSON shapes of records, topics and the cluster live here so every command
//! prints them the same way.
//!
//! Keys and values are bytes. In JSON they are strings when they are valid UTF-8; when the
//! key or the value is not, both are base64 (standard alphabet, padded) and the record's
//! `"encoding"` says `"base64"` instead of `"utf8"`. Text output prints values as UTF-8,
//! with invalid sequences replaced by U+FFFD.

use std::io::Write;

use fjord_client::{
    ClusterMetadata, ConfigEntry, ConsumedRecord, PartitionDescription, TopicDescription,
};
use serde::Serialize;
use serde::ser::SerializeMap;

/// The `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Writes result lines to standard output in the chosen format.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
}

impl Output {
    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Writes one line. A closed pipe (`fjord consume ... | head`) surfaces as an
    /// `io::ErrorKind::BrokenPipe` error, which `main` treats as a normal end.
    pub fn line(&self, line: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")
    }

    /// Writes `text()` or `json()` (one serialized JSON object), whichever the format asks for.
    pub fn emit(
        &self,
        text: impl FnOnce() -> String,
        json: impl FnOnce() -> String,
    ) -> std::io::Result<()> {
        match self.format {
            Format::Text => self.line(&text()),
            Format::Json => self.line(&json()),
        }
    }
}

/// Serializes a value that cannot fail to serialize (plain structs of strings and numbers).
pub fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("plain data serializes to JSON")
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// Structs rather than `json!` maps, so fields print in the documented order.

#[derive(Serialize)]
struct RecordOut {
    partition: u32,
    offset: u64,
    key: Option<String>,
    value: String,
    timestamp: i64,
    encoding: &'static str,
}

/// A consumed record: `{"partition","offset","key","value","timestamp","encoding"}`.
pub fn record_json(r: &ConsumedRecord) -> String {
    let key_text = r.key.as_deref().map(std::str::from_utf8);
    let value_text = std::str::from_utf8(&r.value);
    let all_utf8 = value_text.is_ok() && !matches!(key_text, Some(Err(_)));
    let (key, value, encoding) = if all_utf8 {
        (
            key_text.and_then(Result::ok).map(str::to_string),
            value_text.unwrap_or_default().to_string(),
            "utf8",
        )
    } else {
        (r.key.as_deref().map(base64), base64(&r.value), "base64")
    };
    to_json(&RecordOut {
        partition: r.partition,
        offset: r.offset,
        key,
        value,
        timestamp: r.timestamp_ms,
        encoding,
    })
}

#[derive(Serialize)]
struct PartitionOut<'a> {
    partition: u32,
    leader: Option<u64>,
    leader_epoch: u64,
    replicas: &'a [u64],
}

#[derive(Serialize)]
struct TopicOut<'a> {
    topic: &'a str,
    replication_factor: u32,
    partitions: Vec<PartitionOut<'a>>,
    config: ConfigOut,
}

/// A topic's settings as a JSON object in key order: `{"retention_ms": {"value": 604800000,
/// "default": true}, ...}`. A value is a number where it is one (`cleanup_policy` is a
/// string), `null` when the server did not say.
struct ConfigOut(Vec<ConfigEntry>);

#[derive(Serialize)]
struct SettingOut {
    value: serde_json::Value,
    default: bool,
}

impl Serialize for ConfigOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for e in &self.0 {
            let value = match e.value.as_deref() {
                None => serde_json::Value::Null,
                Some(v) => v
                    .parse::<i64>()
                    .map_or_else(|_| v.into(), serde_json::Value::from),
            };
            let default = e.is_default();
            map.serialize_entry(e.key, &SettingOut { value, default })?;
        }
        map.end()
    }
}

fn topic_out(t: &TopicDescription) -> TopicOut<'_> {
    TopicOut {
        config: ConfigOut(t.config_entries()),
        topic: &t.name,
        replication_factor: t.replication_factor,
        partitions: t
            .partitions
            .iter()
            .map(|p: &PartitionDescription| PartitionOut {
                partition: p.partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: &p.replicas,
            })
            .collect(),
    }
}

/// `{"topic","replication_factor","partitions":[{"partition","leader","leader_epoch","replicas"}],
/// "config":{"<key>":{"value","default"}}}`.
pub fn topic_json(t: &TopicDescription) -> String {
    to_json(&topic_out(t))
}

#[derive(Serialize)]
struct NodeOut<'a> {
    id: u64,
    address: &'a str,
}

#[derive(Serialize)]
struct ClusterOut<'a> {
    nodes: Vec<NodeOut<'a>>,
    metadata_leader: Option<u64>,
    topics: Vec<TopicOut<'a>>,
    /// `{"node","learner_groups","groups"}` while the answering node rebuilds, else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    rebuilding: Option<RebuildOut>,
}

#[derive(Serialize)]
struct RebuildOut {
    node: Option<u64>,
    learner_groups: u32,
    groups: u32,
}

/// `{"nodes":[{"id","address"}],"metadata_leader","topics":[<topic>]}`.
pub fn cluster_json(md: &ClusterMetadata) -> String {
    to_json(&ClusterOut {
        nodes: md
            .nodes
            .iter()
            .map(|(id, address)| NodeOut { id: *id, address })
            .collect(),
        metadata_leader: md.metadata_leader,
        topics: md.topics.iter().map(topic_out).collect(),
        rebuilding: md.rebuilding.map(|(learner_groups, groups)| RebuildOut {
            node: md.answered_by,
            learner_groups,
            groups,
        }),
    })
}

fn node_or_dash(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_string(), |n| n.to_string())
}

fn join_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// A topic's settings as an aligned table, one line per setting: its value in force, and
/// whether that is the topic's own (`topic`) or the cluster default (`default`).
pub fn config_text(t: &TopicDescription) -> String {
    let mut s = format!("{:<22}  {:>20}  SOURCE", "CONFIG", "VALUE");
    for e in t.config_entries() {
        let value = e.value.as_deref().or(e.own.as_deref()).unwrap_or("?");
        let source = if e.is_default() { "default" } else { "topic" };
        s.push_str(&format!("\n{:<22}  {value:>20}  {source}", e.key));
    }
    s
}

/// A topic's partitions as an aligned table, one line per partition, then its settings
/// ([`config_text`]).
pub fn topic_text(t: &TopicDescription) -> String {
    let mut s = format!(
        "topic {}: {} partitions, replication factor {}\n",
        t.name,
        t.partitions.len(),
        t.replication_factor
    );
    s.push_str(&format!(
        "{:>10}  {:>6}  {:>6}  REPLICAS",
        "PARTITION", "LEADER", "EPOCH"
    ));
    for p in &t.partitions {
        s.push_str(&format!(
            "\n{:>10}  {:>6}  {:>6}  {}",
            p.partition,
            node_or_dash(p.leader),
            p.leader_epoch,
            join_ids(&p.replicas)
        ));
    }
    s.push_str("\n\n");
    s.push_str(&config_text(t));
    s
}

/// The cluster's nodes, metadata leader and partition leaders.
pub fn cluster_text(md: &ClusterMetadata) -> String {
    let mut s = format!(
        "metadata leader: {}\nnodes:",
        node_or_dash(md.metadata_leader)
    );
    for (id, address) in &md.nodes {
        let mark = if Some(*id) == md.metadata_leader {
            "  (metadata leader)"
        } else {
            ""
        };
        let rebuilding = match md.rebuilding {
            Some((left, total)) if md.answered_by == Some(*id) => {
                format!("  (rebuilding: a learner of {left} of its {total} groups, catching up)")
            }
            _ => String::new(),
        };
        s.push_str(&format!("\n  {id:>3}  {address}{mark}{rebuilding}"));
    }
    if md.topics.is_empty() {
        s.push_str("\ntopics: none");
    } else {
        s.push_str("\ntopics:");
        for t in &md.topics {
            let leaders: Vec<String> = t
                .partitions
                .iter()
                .map(|p| format!("{}→{}", p.partition, node_or_dash(p.leader)))
                .collect();
            s.push_str(&format!(
                "\n  {} (replication {}): partition→leader {}",
                t.name,
                t.replication_factor,
                leaders.join(" ")
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use fjord_client::{EffectiveSettings, TopicSettings};
    use serde_json::{Value, json};

    fn parsed(s: String) -> Value {
        serde_json::from_str(&s).unwrap()
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    fn record(key: Option<&[u8]>, value: &[u8]) -> ConsumedRecord {
        ConsumedRecord {
            partition: 1,
            offset: 42,
            key: key.map(Bytes::copy_from_slice),
            value: Bytes::copy_from_slice(value),
            headers: vec![],
            timestamp_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn utf8_records_are_strings() {
        let line = record_json(&record(Some(b"k"), "héllo".as_bytes()));
        assert!(
            line.starts_with(r#"{"partition":1,"offset":42,"key":"k""#),
            "{line}"
        );
        let v = parsed(line);
        assert_eq!(
            v,
            json!({"partition": 1, "offset": 42, "key": "k", "value": "héllo",
                   "timestamp": 1_700_000_000_000i64, "encoding": "utf8"})
        );
        let v = parsed(record_json(&record(None, b"x")));
        assert_eq!(v["key"], Value::Null);
    }

    #[test]
    fn binary_records_are_base64_and_say_so() {
        let v = parsed(record_json(&record(Some(b"k"), &[0xff, 0x00])));
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["key"], "aw==");
        assert_eq!(v["value"], "/wA=");
        let v = parsed(record_json(&record(Some(&[0xc3]), b"ok")));
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["value"], "b2s=");
    }

    fn topic() -> TopicDescription {
        TopicDescription {
            name: "demo".into(),
            replication_factor: 3,
            partitions: vec![
                PartitionDescription {
                    partition: 0,
                    leader: Some(2),
                    leader_epoch: 4,
                    replicas: vec![2, 3, 1],
                },
                PartitionDescription {
                    partition: 1,
                    leader: None,
                    leader_epoch: 0,
                    replicas: vec![3, 1, 2],
                },
            ],
            config: TopicSettings {
                retention_ms: Some(60_000),
                ..Default::default()
            },
            effective: Some(EffectiveSettings {
                retention_ms: 60_000,
                retention_bytes: -1,
                cleanup_policy: "delete".into(),
                delete_retention_ms: 86_400_000,
                min_compaction_lag_ms: 0,
                max_record_bytes: 1 << 20,
            }),
        }
    }

    #[test]
    fn topic_shapes() {
        let v = parsed(topic_json(&topic()));
        assert_eq!(v["topic"], "demo");
        assert_eq!(v["partitions"][0]["leader"], 2);
        assert_eq!(v["partitions"][1]["leader"], Value::Null);
        assert_eq!(v["partitions"][0]["replicas"], json!([2, 3, 1]));
        assert_eq!(
            v["config"]["retention_ms"],
            json!({"value": 60000, "default": false})
        );
        assert_eq!(
            v["config"]["cleanup_policy"],
            json!({"value": "delete", "default": true})
        );
        let keys: Vec<&String> = v["config"].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        let t = topic_text(&topic());
        assert!(t.contains("       4  2,3,1"), "{t}");
        assert!(t.lines().nth(3).unwrap().contains("       -"), "{t}");
        let line = |key: &str| t.lines().find(|l| l.starts_with(key)).unwrap().to_string();
        assert!(line("retention_ms ").ends_with("60000  topic"), "{t}");
        assert!(line("retention_bytes").ends_with("-1  default"), "{t}");
        assert!(line("cleanup_policy").ends_with("delete  default"), "{t}");
    }

    #[test]
    fn cluster_shapes() {
        let md = ClusterMetadata {
            nodes: vec![(1, "127.0.0.1:7101".into()), (2, "127.0.0.1:7102".into())],
            metadata_leader: Some(2),
            topics: vec![topic()],
            answered_by: Some(1),
            rebuilding: None,
        };
        let v = parsed(cluster_json(&md));
        assert_eq!(v.get("rebuilding"), None);
        assert_eq!(v["nodes"][1], json!({"id": 2, "address": "127.0.0.1:7102"}));
        assert_eq!(v["metadata_leader"], 2);
        assert_eq!(v["topics"][0]["topic"], "demo");
        let t = cluster_text(&md);
        assert!(t.contains("127.0.0.1:7102  (metadata leader)"), "{t}");
        assert!(t.contains("0→2 1→-"), "{t}");
        let md = ClusterMetadata {
            rebuilding: Some((2, 5)),
            ..md
        };
        assert!(
            cluster_text(&md)
                .contains("127.0.0.1:7101  (rebuilding: a learner of 2 of its 5 groups"),
            "{}",
            cluster_text(&md)
        );
        assert_eq!(
            parsed(cluster_json(&md))["rebuilding"],
            json!({"node": 1, "learner_groups": 2, "groups": 5})
        );
    }
}
