//! Cassettes: model replies recorded under the hash of their request, replayed by the
//! cassette backend.

use super::{Reply, ToolProtocol};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The hash of a request (messages and tools), for cassettes.
pub(crate) fn request_hash(messages: &[Value], tools: &Value) -> String {
    let mut h = Sha256::new();
    // a JSON value's text (compact, as `to_vec` writes it) cannot fail, unlike `to_vec`
    h.update(json!({"messages": messages, "tools": tools}).to_string().as_bytes());
    emrgym_core::hex(&h.finalize())
}

/// Recorded replies by request hash.
#[derive(Debug, Clone, Default)]
pub struct Cassette {
    pub(super) replies: Arc<Mutex<BTreeMap<String, Reply>>>,
    pub(super) protocol: ToolProtocol,
}

impl Cassette {
    /// A cassette with these replies (native tool calls).
    pub fn new(replies: BTreeMap<String, Reply>) -> Cassette {
        Cassette::with_protocol(replies, ToolProtocol::Native)
    }

    /// A cassette recorded with this tool protocol (the protocol shapes the requests, so a
    /// replay must use the recording's).
    pub fn with_protocol(replies: BTreeMap<String, Reply>, protocol: ToolProtocol) -> Cassette {
        Cassette {
            replies: Arc::new(Mutex::new(replies)),
            protocol,
        }
    }

    /// Recorded replies.
    pub fn len(&self) -> usize {
        emrgym_core::sync::lock(&self.replies).len()
    }

    /// No recorded reply.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record a reply.
    pub fn record(&self, hash: String, reply: Reply) {
        emrgym_core::sync::lock(&self.replies).insert(hash, reply);
    }

    /// Every recorded reply.
    pub fn replies(&self) -> BTreeMap<String, Reply> {
        // a poisoned lock still holds every reply: a saved cassette is never silently empty
        emrgym_core::sync::lock(&self.replies).clone()
    }
}
