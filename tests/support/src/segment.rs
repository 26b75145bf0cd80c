//! The local stand-in for Segment's batch endpoint (`scripts/lib/segment_standin.py`), as the
//! end-to-end tests see it: controlled, and asked what it received.

use serde_json::Value;

use crate::stack::http;

/// The counts `GET /__stats` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Calls in every request, whatever the answer.
    pub calls_received: u64,
    pub distinct_received: u64,
    /// Calls in requests answered 200.
    pub calls_accepted: u64,
    pub distinct_accepted: u64,
}

/// The Segment stand-in of the local stack.
pub struct StandIn {
    pub url: String,
}

impl StandIn {
    /// The stand-in of the local stack (`SEGMENT_URL`, exported by `scripts/dev up` with
    /// `SEGMENT_LOCAL=1`).
    pub fn of_stack() -> Self {
        let url = std::env::var("SEGMENT_URL").unwrap_or_else(|_| {
            panic!("SEGMENT_URL is not set: run the suite with scripts/test (SEGMENT_LOCAL=1)")
        });
        StandIn { url }
    }

    pub async fn control(&self, order: Value) {
        let (status, body) = http(
            "POST",
            format!("{}/__control", self.url),
            vec![],
            Some(order.to_string().into_bytes()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Counts of the calls whose `messageId` starts with `prefix`.
    pub async fn stats(&self, prefix: &str) -> Stats {
        let (status, body) = http(
            "GET",
            format!("{}/__stats?prefix={prefix}", self.url),
            vec![],
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let stats: Value = serde_json::from_str(&body).expect("stats JSON");
        let n = |name: &str| stats[name].as_u64().unwrap_or_default();
        Stats {
            calls_received: n("calls_received"),
            distinct_received: n("distinct_received"),
            calls_accepted: n("calls_accepted"),
            distinct_accepted: n("distinct_accepted"),
        }
    }

    /// The calls accepted (answered 200) whose `messageId` starts with `prefix`.
    pub async fn accepted(&self, prefix: &str) -> Vec<Value> {
        let (status, body) = http(
            "GET",
            format!("{}/__calls?accepted=1&prefix={prefix}", self.url),
            vec![],
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("calls JSON")
    }

    /// The write keys the requests carried.
    pub async fn write_keys(&self) -> Vec<String> {
        let (_, body) = http("GET", format!("{}/__stats", self.url), vec![], None).await;
        let stats: Value = serde_json::from_str(&body).expect("stats JSON");
        stats["write_keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect()
    }
}
