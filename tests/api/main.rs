//! Black-box tests of Parley's HTTP and WebSocket contract (DESIGN.md §2–§4).
//! Each test starts the real server on port 0 with its own database; see
//! `helpers.rs`. Only `races.rs` reaches inside, to force orderings.

#[macro_use]
mod helpers;

mod access;
mod asyncapi;
mod auth;
mod cluster;
mod conversations;
mod devices;
mod errors;
mod faults;
mod files;
mod group_events;
mod group_membership;
mod group_messages;
mod groups;
mod history_cache;
mod lifecycle;
mod limits;
mod openapi;
mod operations;
mod ordering;
mod path_params;
mod presence;
mod private_messages;
mod races;
mod receipts;
mod search;
mod sync;
mod typing;
mod websocket;
