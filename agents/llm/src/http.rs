//! The HTTP side every remote provider shares: one POST with a time-out,
//! transport failures classed as overload, and the API key masked in
//! anything quoted back.

use std::time::Duration;

use reqwest::header::HeaderMap;

use super::{ErrorClass, LlmError};
use crate::secret::Secret;

/// Error bodies are quoted up to this many bytes.
const BODY_QUOTE: usize = 300;

pub struct HttpClient {
    client: reqwest::Client,
    key: Option<Secret>,
}

/// A reply as received: status, headers, body with the key masked.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl HttpClient {
    pub fn new(timeout: Duration, key: Option<Secret>) -> Result<Self, LlmError> {
        Self::with_connect_timeout(timeout, timeout, key)
    }

    /// A client whose requests end after `timeout` and whose connections
    /// are given up after `connect` (at most 10 s).
    pub fn with_connect_timeout(
        timeout: Duration,
        connect: Duration,
        key: Option<Secret>,
    ) -> Result<Self, LlmError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| LlmError::new(ErrorClass::Permanent, None, format!("HTTP client: {e}")))?;
        Ok(Self { client, key })
    }

    pub fn key(&self) -> Option<&Secret> {
        self.key.as_ref()
    }

    /// POST `body` as JSON to `url` with `auth` applied to the request.
    pub async fn post(
        &self,
        url: &str,
        body: &serde_json::Value,
        auth: impl FnOnce(reqwest::RequestBuilder, &Secret) -> reqwest::RequestBuilder,
    ) -> Result<Reply, LlmError> {
        let mut request = self.client.post(url).json(body);
        if let Some(key) = &self.key {
            request = auth(request, key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, url))?;
        let status = response.status().as_u16();
        let headers = owned(response.headers());
        let text = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e, url))?;
        Ok(Reply {
            status,
            headers,
            body: self.redact(&text),
        })
    }

    fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) => key.redact(text),
            None => text.to_string(),
        }
    }

    fn transport_error(&self, e: &reqwest::Error, url: &str) -> LlmError {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "connection failed"
        };
        let detail = self.redact(&error_chain(e));
        LlmError::new(
            ErrorClass::Overload,
            None,
            format!("{what}: {url}: {detail}"),
        )
    }
}

/// The headers copied: hyper's header values share the connection's read
/// buffer, so a reply kept a while (see [`crate::inflight`]) with them would
/// hold on to the whole buffer, kilobytes a reply.
fn owned(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .map(|(name, value)| {
            let mut copy = reqwest::header::HeaderValue::from_bytes(value.as_bytes())
                .expect("the bytes of a header value are a header value");
            copy.set_sensitive(value.is_sensitive());
            (name.clone(), copy)
        })
        .collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The class of an HTTP status that carries no more specific code.
pub fn class_of_status(status: u16) -> ErrorClass {
    match status {
        408 | 409 | 425 | 429 => ErrorClass::Overload,
        400..=499 => ErrorClass::Permanent,
        _ => ErrorClass::Overload,
    }
}

/// A malformed 2xx reply, quoting its start.
pub fn malformed(status: u16, what: &str, body: &str) -> LlmError {
    LlmError::new(
        ErrorClass::Malformed,
        Some(status),
        format!("{what}: {}", quote(body)),
    )
}

/// The start of `body`, cut on a character boundary.
pub fn quote(body: &str) -> String {
    let body = body.trim();
    if body.len() <= BODY_QUOTE {
        return body.to_string();
    }
    let mut end = BODY_QUOTE;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut_on_a_char_boundary() {
        let body = "é".repeat(400);
        let q = quote(&body);
        assert!(q.len() <= BODY_QUOTE + 3);
        assert!(q.ends_with('…'));
    }

    #[test]
    fn statuses_without_codes_map_to_classes() {
        for s in [500, 502, 503, 504, 429, 408] {
            assert_eq!(class_of_status(s), ErrorClass::Overload, "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert_eq!(class_of_status(s), ErrorClass::Permanent, "{s}");
        }
    }
}
