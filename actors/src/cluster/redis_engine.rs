//! Redis as the cluster engine: PUBLISH on one connection (pipelined, so one
//! round trip per batch of events), SUBSCRIBE on another. Both reconnect by
//! themselves when Redis comes back. Used by [`super::relay`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use super::relay::{Engine, Inbound, SUBJECT};
use crate::error::{ChatError, ChatResult};

/// How long connecting or one publish round trip may take.
const ROUND_TRIP: Duration = Duration::from_secs(1);
/// Pause between attempts to subscribe again.
const RESUBSCRIBE: Duration = Duration::from_millis(250);

pub struct RedisEngine {
    client: redis::Client,
    /// Cloned out for each publish (it multiplexes); `None` after a failure,
    /// so the next publish connects afresh.
    publisher: Mutex<Option<MultiplexedConnection>>,
}

impl RedisEngine {
    pub async fn connect(url: &str) -> ChatResult<RedisEngine> {
        let client = redis::Client::open(url)
            .map_err(|error| ChatError::invalid(format!("cluster URL: {error}")))?;
        let engine = RedisEngine {
            client,
            publisher: Mutex::new(None),
        };
        engine.connection().await.map_err(|error| {
            ChatError::Unavailable(format!("cannot reach the cluster engine: {error}").into())
        })?;
        Ok(engine)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let cached = self
            .publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(connection) = cached {
            return Ok(connection);
        }
        let connection =
            tokio::time::timeout(ROUND_TRIP, self.client.get_multiplexed_async_connection())
                .await
                .map_err(|_| "timed out connecting to Redis".to_string())?
                .map_err(|error| error.to_string())?;
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = Some(connection.clone());
        Ok(connection)
    }

    async fn publish_all(&self, events: &[Bytes]) -> Result<(), String> {
        let mut connection = self.connection().await?;
        let mut pipe = redis::pipe();
        for event in events {
            pipe.cmd("PUBLISH")
                .arg(SUBJECT)
                .arg(event.as_ref())
                .ignore();
        }
        let sent = tokio::time::timeout(ROUND_TRIP, pipe.query_async::<()>(&mut connection))
            .await
            .map_err(|_| "timed out publishing to Redis".to_string())
            .and_then(|result| result.map_err(|error| error.to_string()));
        if sent.is_err() {
            *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        sent
    }
}

impl Engine for RedisEngine {
    fn publish<'a>(&'a self, events: &'a [Bytes]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.publish_all(events))
    }

    fn listen(self: Arc<Self>, inbox: mpsc::UnboundedSender<Inbound>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                let subscribed = async {
                    let mut pubsub =
                        tokio::time::timeout(ROUND_TRIP, self.client.get_async_pubsub())
                            .await
                            .map_err(|_| "timed out connecting to Redis".to_string())?
                            .map_err(|error| error.to_string())?;
                    pubsub
                        .subscribe(SUBJECT)
                        .await
                        .map_err(|error| error.to_string())?;
                    Ok::<_, String>(pubsub)
                };
                match subscribed.await {
                    Ok(mut pubsub) => {
                        if inbox.send(Inbound::Connected).is_err() {
                            return;
                        }
                        let mut messages = pubsub.on_message();
                        while let Some(message) = messages.next().await {
                            let bytes = Bytes::copy_from_slice(message.get_payload_bytes());
                            if inbox.send(Inbound::Event(bytes)).is_err() {
                                return;
                            }
                        }
                        if inbox.send(Inbound::Disconnected).is_err() {
                            return;
                        }
                    }
                    Err(error) => tracing::debug!(%error, "cannot subscribe to Redis yet"),
                }
                tokio::time::sleep(RESUBSCRIBE).await;
            }
        })
    }
}
