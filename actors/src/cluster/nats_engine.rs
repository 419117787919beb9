//! NATS as the cluster engine: core publish/subscribe on one subject, with
//! a flush (a round trip to the server) after each batch so the writer knows
//! its pushes were taken. The client reconnects and resubscribes by itself.
//! Used by [`super::relay`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::relay::{Engine, Inbound, SUBJECT};
use crate::error::{ChatError, ChatResult};

/// How long connecting or one publish round trip may take.
const ROUND_TRIP: Duration = Duration::from_secs(1);
/// The longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

pub struct NatsEngine {
    client: Client,
    /// Connection changes, reported by the client's callback, until `listen`
    /// takes them.
    changes: Mutex<Option<mpsc::UnboundedReceiver<Inbound>>>,
}

impl NatsEngine {
    pub async fn connect(url: &str) -> ChatResult<NatsEngine> {
        let (report, changes) = mpsc::unbounded_channel();
        let options = ConnectOptions::new()
            .connection_timeout(ROUND_TRIP)
            .reconnect_delay_callback(|attempts| {
                MAX_RECONNECT_DELAY.min(Duration::from_millis(100) * attempts as u32)
            })
            .event_callback(move |event| {
                let change = match event {
                    Event::Connected => Some(Inbound::Connected),
                    Event::Disconnected => Some(Inbound::Disconnected),
                    // This node fell behind and NATS dropped events for it:
                    // pushes were lost (clients catch up with `sync`).
                    Event::SlowConsumer(_) => {
                        tracing::warn!("fell behind the NATS subject; some pushes were dropped");
                        None
                    }
                    _ => None,
                };
                if let Some(change) = change {
                    let _ = report.send(change);
                }
                async {}
            });
        let client = options.connect(url).await.map_err(|error| {
            ChatError::Unavailable(format!("cannot reach the cluster engine: {error}").into())
        })?;
        Ok(NatsEngine {
            client,
            changes: Mutex::new(Some(changes)),
        })
    }

    async fn publish_all(&self, events: &[Bytes]) -> Result<(), String> {
        let sent = async {
            for event in events {
                self.client
                    .publish(SUBJECT, event.clone())
                    .await
                    .map_err(|error| error.to_string())?;
            }
            self.client.flush().await.map_err(|error| error.to_string())
        };
        tokio::time::timeout(ROUND_TRIP, sent)
            .await
            .map_err(|_| "timed out publishing to NATS".to_string())?
    }
}

impl Engine for NatsEngine {
    fn publish<'a>(&'a self, events: &'a [Bytes]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.publish_all(events))
    }

    fn listen(self: Arc<Self>, inbox: mpsc::UnboundedSender<Inbound>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let taken = self
                .changes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let Some(mut changes) = taken else {
                return;
            };
            let mut subscription = loop {
                match self.client.subscribe(SUBJECT).await {
                    Ok(subscription) => break subscription,
                    Err(error) => {
                        tracing::debug!(%error, "cannot subscribe to NATS yet");
                        tokio::time::sleep(MAX_RECONNECT_DELAY).await;
                    }
                }
            };
            // The first connection was made before the callback could be
            // heard; later ones are reported by it.
            if inbox.send(Inbound::Connected).is_err() {
                return;
            }
            loop {
                let inbound = tokio::select! {
                    message = subscription.next() => match message {
                        Some(message) => Inbound::Event(message.payload),
                        None => return,
                    },
                    Some(change) = changes.recv() => change,
                };
                if inbox.send(inbound).is_err() {
                    return;
                }
            }
        })
    }
}
