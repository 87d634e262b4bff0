//! In-process Kubernetes API emulator: what the operator, kube-rs and the
//! real `kubectl` talk to over HTTP on 127.0.0.1 in tests and the demo.
//!
//! It is not Kubernetes. It implements the API behaviour the operator and
//! kubectl depend on — discovery, a generic object store with
//! list/watch/resourceVersion, the status subresource, merge/JSON/apply
//! patches with field ownership, conflicts, finalizers and deletion, garbage
//! collection, CRD registration and validation, Table and
//! PartialObjectMetadata responses, OpenAPI v3, protobuf for common
//! built-ins — plus fault injection and request counters for tests.
//!
//! - [`server`]: the request path (routing, store, watches, apply).
//! - [`schema`], [`openapi`], [`table`], [`protobuf`]: pure functions over
//!   `serde_json::Value` that the request path calls.

pub mod openapi;
pub mod protobuf;
pub mod schema;
pub mod server;
pub mod table;

pub use server::{Counters, Emulator, EmulatorOptions, Faults};
