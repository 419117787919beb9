//! Parley's HTTP layer: configuration, start-up, authentication, the REST and
//! WebSocket routes, and the mapping of errors to responses. The actors and
//! the store live in the `parley-actors` crate.

pub mod asyncapi;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod schema;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod token;
