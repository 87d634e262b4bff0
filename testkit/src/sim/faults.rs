//! The one fault-injection mechanism every simulator shares: a queue of
//! faults per route, consumed one request at a time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

/// A failure to inject into the next answers of a route.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer with this status (and body, and `Retry-After` seconds).
    Status {
        code: u16,
        body: Option<String>,
        retry_after: Option<u64>,
    },
    /// Wait this long, then answer normally (for client timeouts).
    Delay(Duration),
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with a JSON body cut in half.
    Truncated,
}

impl Fault {
    /// A bare status with the simulator's default body.
    pub fn status(code: u16) -> Self {
        Fault::Status {
            code,
            body: None,
            retry_after: None,
        }
    }

    /// 429 with a `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Fault::Status {
            code: 429,
            body: None,
            retry_after: Some(retry_after_secs),
        }
    }
}

/// Fault queues by route name; cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct Faults(Arc<Mutex<FaultQueues>>);

/// Per route: (requests left, fault), oldest first.
type FaultQueues = HashMap<String, Vec<(usize, Fault)>>;

impl Faults {
    /// The next `count` requests to `route` get `fault`.
    pub fn fail_next(&self, route: &str, count: usize, fault: Fault) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(route.to_string())
            .or_default()
            .push((count, fault));
    }

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Takes the fault for one request to `route`, if any is queued.
    pub fn take(&self, route: &str) -> Option<Fault> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let queue = map.get_mut(route)?;
        let (left, fault) = queue.first_mut()?;
        let fault = fault.clone();
        *left -= 1;
        if *left == 0 {
            queue.remove(0);
        }
        Some(fault)
    }
}

/// Applies a fault: `Some(response)` to answer with, or `None` to answer
/// normally (after any delay). `good` renders the normal JSON body, used to
/// build a truncated one.
pub async fn apply(
    fault: Option<Fault>,
    default_error: impl Fn(u16) -> String,
    good: impl Fn() -> String,
) -> Option<Response> {
    match fault? {
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Fault::Malformed => Some(json_response(StatusCode::OK, "<html>not json</html>".into())),
        Fault::Truncated => {
            let body = good();
            Some(json_response(StatusCode::OK, body[..body.len() / 2].to_string()))
        }
        Fault::Status {
            code,
            body,
            retry_after,
        } => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = json_response(status, body.unwrap_or_else(|| default_error(code)));
            if let Some(secs) = retry_after
                && let Ok(v) = HeaderValue::from_str(&secs.to_string())
            {
                response.headers_mut().insert("retry-after", v);
            }
            Some(response)
        }
    }
}

/// A JSON response with the given status and body.
pub fn json_response(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}
