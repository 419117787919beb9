//! Order under concurrency: every recipient sees one conversation's messages
//! in id order, on every socket, however many senders write at once.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

type Rx = SplitStream<WsStream>;
type Tx = SplitSink<WsStream, Message>;

/// Sends `frames` one by one (each flushed, so that concurrent senders interleave).
async fn send_each(tx: &mut Tx, frames: Vec<Value>) {
    for frame in frames {
        tx.send(Message::text(frame.to_string()))
            .await
            .expect("send a frame");
    }
}

/// What one socket received: its message frames in arrival order, and the
/// acks (client_id → id) it got.
struct Received {
    messages: Vec<Value>,
    acks: BTreeMap<String, i64>,
}

/// Reads `rx` until `messages` message frames and `acks` acks have arrived
/// (presence skipped; anything else fails).
async fn collect(rx: &mut Rx, messages: usize, acks: usize) -> Received {
    let mut received = Received {
        messages: Vec::with_capacity(messages),
        acks: BTreeMap::new(),
    };
    while received.messages.len() < messages || received.acks.len() < acks {
        let frame = ws_recv_skipping_presence(rx).await;
        match frame["type"].as_str() {
            Some("message") => received.messages.push(frame),
            Some("ack") => {
                let client_id = str_field(&frame, "client_id").to_string();
                let previous = received.acks.insert(client_id, int_field(&frame, "id"));
                assert!(previous.is_none(), "acked twice: {frame}");
            }
            _ => panic!("unexpected frame: {frame}"),
        }
        assert!(
            received.messages.len() <= messages,
            "more messages than expected; last {}",
            received.messages.last().unwrap()
        );
    }
    received
}

api_test!(
    four_members_with_two_sockets_each_see_the_same_messages_in_the_same_order_while_three_send_concurrently,
    |app| async move {
        const EACH: usize = 50;
        const SENDERS: usize = 3;
        let names = ["alice", "bob", "carol", "dave"];
        let mut users = Vec::new();
        for name in names {
            users.push(app.create_user(name).await);
        }
        let group = app
            .create_group_with(&users[0], "busy", &[&users[1], &users[2], &users[3]])
            .await;

        // Socket 2k and 2k+1 belong to user k; socket 2k sends for k < 3.
        let mut txs = Vec::new();
        let mut rxs = Vec::new();
        for user in &users {
            for _ in 0..2 {
                let (tx, rx) = app.ws_connect(&user.token).await.split();
                txs.push(tx);
                rxs.push(rx);
            }
        }

        let sends = futures_util::future::join_all(txs.iter_mut().enumerate().map(|(socket, tx)| {
            let frames: Vec<Value> = if socket % 2 == 0 && socket / 2 < SENDERS {
                let name = names[socket / 2];
                (0..EACH)
                    .map(|i| {
                        group_socket_message(group, &format!("{name} #{i}"), &format!("{name}-{i}"))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            send_each(tx, frames)
        }));
        let reads = futures_util::future::join_all(rxs.iter_mut().enumerate().map(|(socket, rx)| {
            let sending = socket % 2 == 0 && socket / 2 < SENDERS;
            let (messages, acks) = if sending {
                (EACH * (SENDERS - 1), EACH)
            } else {
                (EACH * SENDERS, 0)
            };
            collect(rx, messages, acks)
        }));
        let (_, received) = tokio::join!(sends, reads);

        // Every id, from the acks of the three sending sockets.
        let mut sent_by_socket: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
        let mut all = BTreeSet::new();
        for socket in (0..SENDERS).map(|k| 2 * k) {
            let acks = &received[socket].acks;
            assert_eq!(acks.len(), EACH);
            let ids: BTreeSet<i64> = acks.values().copied().collect();
            assert_eq!(ids.len(), EACH, "distinct ids per ack");
            all.extend(&ids);
            sent_by_socket.insert(socket, ids);
        }
        assert_eq!(all.len(), EACH * SENDERS);

        for (socket, got) in received.iter().enumerate() {
            let owner = names[socket / 2];
            let expected: Vec<i64> = all
                .iter()
                .copied()
                .filter(|id| {
                    !sent_by_socket
                        .get(&socket)
                        .is_some_and(|own| own.contains(id))
                })
                .collect();
            let ids = ids_of(&got.messages);
            assert_ascending(&ids, &format!("{owner}'s socket {}", socket % 2));
            assert_eq!(
                ids, expected,
                "{owner}'s socket {} sees every message not sent from it, in id order",
                socket % 2
            );
            for frame in &got.messages {
                assert_eq!(int_field(frame, "group_id"), group, "{frame}");
            }
        }

        // The stored history is the same sequence.
        let history = app
            .group_history_ids(&users[3].token, group, "after=0&limit=500")
            .await;
        assert_eq!(history, all.iter().copied().collect::<Vec<_>>());

        // Nothing more arrives anywhere.
        for rx in &mut rxs {
            if let Some(frame) = ws_try_recv(rx, std::time::Duration::from_millis(100)).await {
                assert_eq!(frame["type"], "status", "nothing more: {frame}");
            }
        }
    }
);

api_test!(
    one_recipient_sees_each_conversation_in_id_order_with_many_concurrent_senders,
    |app| async move {
        const EACH: usize = 40;
        let bob = app.create_user("bob").await;
        let names = ["alice", "carol", "dave", "erin"];
        let mut senders = Vec::new();
        for name in names {
            senders.push(app.create_user(name).await);
        }
        let group = app
            .create_group_with(&senders[0], "g", &[&bob, &senders[1]])
            .await;
        let (_bob_tx1, mut bob_rx1) = app.ws_connect(&bob.token).await.split();
        let (_bob_tx2, mut bob_rx2) = app.ws_connect(&bob.token).await.split();

        let mut txs = Vec::new();
        let mut rxs = Vec::new();
        for sender in &senders {
            let (tx, rx) = app.ws_connect(&sender.token).await.split();
            txs.push(tx);
            rxs.push(rx);
        }
        // Each sender writes privately to bob; alice and carol also write to the group.
        let frame_lists: Vec<Vec<Value>> = names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                (0..EACH)
                    .map(|i| {
                        if k < 2 && i % 2 == 1 {
                            group_socket_message(group, &format!("{name} g{i}"), &format!("c{i}"))
                        } else {
                            socket_message("bob", &format!("{name} p{i}"), &format!("c{i}"))
                        }
                    })
                    .collect()
            })
            .collect();
        let sends = futures_util::future::join_all(
            txs.iter_mut()
                .zip(frame_lists)
                .map(|(tx, frames)| send_each(tx, frames)),
        );
        // Senders' own sockets get acks plus the other group member's group messages.
        let acks = futures_util::future::join_all(rxs.iter_mut().enumerate().map(|(k, rx)| {
            let group_messages_from_other = if k < 2 { EACH / 2 } else { 0 };
            collect(rx, group_messages_from_other, EACH)
        }));
        let bob_reads = futures_util::future::join(
            collect(&mut bob_rx1, EACH * names.len(), 0),
            collect(&mut bob_rx2, EACH * names.len(), 0),
        );
        let (_, acked, (phone, laptop)) = tokio::join!(sends, acks, bob_reads);

        let all: BTreeSet<i64> = acked
            .iter()
            .flat_map(|r| r.acks.values().copied())
            .collect();
        assert_eq!(all.len(), EACH * names.len());
        for (which, got) in [("phone", &phone), ("laptop", &laptop)] {
            let ids: BTreeSet<i64> = ids_of(&got.messages).into_iter().collect();
            assert_eq!(
                ids.len(),
                got.messages.len(),
                "bob's {which}: no duplicates"
            );
            assert_eq!(ids, all, "bob's {which}: every message");
            // Per conversation: a group, or a private conversation with one sender.
            let mut conversations: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for frame in &got.messages {
                let key = match frame.get("group_id") {
                    Some(group) => format!("group {group}"),
                    None => format!("with {}", str_field(frame, "sender")),
                };
                conversations
                    .entry(key)
                    .or_default()
                    .push(int_field(frame, "id"));
            }
            assert_eq!(conversations.len(), names.len() + 1, "{conversations:?}");
            for (conversation, ids) in &conversations {
                assert_ascending(ids, &format!("bob's {which}, conversation {conversation}"));
            }
        }
    }
);
