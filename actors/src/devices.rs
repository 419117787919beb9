//! The device registry actor: device records (through the persistence actor)
//! and which devices are connected right now. A socket opened with
//! `?device_id=` is bound to that device; the device shows
//! `login_status: true` while any bound socket is open, and its `last_seen`
//! is stamped when a socket binds and when the last one closes. HTTP handlers
//! ask it to add, list and remove devices; sessions report binding and closing.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use smallvec::SmallVec;

use crate::cluster::{Broker, Change};
use crate::error::{ChatError, ChatResult};
use crate::hub::{CloseReason, Disconnect, SessionId};
use crate::model::{DeviceRecord, Timestamp, UserRef};
use crate::persistence::{DeleteDevice, PersistenceActor, RegisterDevice, TouchDevice};
use crate::store::Store;

pub struct DeviceRegistry {
    store: Store,
    persistence: Addr<PersistenceActor>,
    /// Tells other nodes which devices have a socket here, and which were
    /// deleted; knows which have one elsewhere.
    broker: Arc<dyn Broker>,
    /// Device row id → the sockets bound to it on this node. Absent = none here.
    connected: HashMap<i64, SmallVec<[BoundSocket; 1]>>,
}

/// A socket bound to a device, as the registry closes it.
struct BoundSocket {
    session: SessionId,
    close: Recipient<Disconnect>,
}

impl DeviceRegistry {
    pub fn new(store: Store, persistence: Addr<PersistenceActor>, broker: Arc<dyn Broker>) -> Self {
        DeviceRegistry {
            store,
            persistence,
            broker,
            connected: HashMap::new(),
        }
    }

    fn with_status(&self, mut device: DeviceRecord) -> DeviceRecord {
        device.login_status = self.connected.contains_key(&device.id)
            || self.broker.device_connected_elsewhere(device.id);
        device
    }

    /// The device was deleted: its sockets here close (each reports its
    /// close later, finding the device already gone).
    fn close_sockets_of(&mut self, device: i64) {
        let Some(sockets) = self.connected.remove(&device) else {
            return;
        };
        for socket in sockets {
            socket.close.do_send(Disconnect(CloseReason::DeviceRemoved));
        }
        self.broker.device_here(device, false);
    }

    /// Closes one socket bound to a device that turned out to be deleted,
    /// unless [`Self::close_sockets_of`] already did.
    fn close_late_socket(&mut self, device: i64, session: SessionId) {
        let Some(sockets) = self.connected.get_mut(&device) else {
            return;
        };
        let Some(at) = sockets.iter().position(|socket| socket.session == session) else {
            return;
        };
        sockets
            .swap_remove(at)
            .close
            .do_send(Disconnect(CloseReason::DeviceRemoved));
        if sockets.is_empty() {
            self.connected.remove(&device);
            self.broker.device_here(device, false);
        }
    }

    fn touch(&self, device: i64) {
        self.persistence.do_send(TouchDevice {
            device,
            at: Timestamp::now(),
        });
    }
}

impl Actor for DeviceRegistry {
    type Context = Context<Self>;
}

/// Register (or rename) one of the caller's devices.
#[derive(Message)]
#[rtype(result = "ChatResult<DeviceRecord>")]
pub struct AddDevice(pub RegisterDevice);

/// The caller's devices, oldest first, with live `login_status`.
#[derive(Message)]
#[rtype(result = "ChatResult<Vec<DeviceRecord>>")]
pub struct ListDevices {
    pub owner: i64,
}

/// Delete one of the caller's devices and close the sockets bound to it.
#[derive(Message)]
#[rtype(result = "ChatResult<()>")]
pub struct RemoveDevice {
    pub owner: UserRef,
    pub device_id: String,
}

/// Which device row a socket handshake binds to; 404 unless the caller owns it.
#[derive(Message)]
#[rtype(result = "ChatResult<i64>")]
pub struct FindDevice {
    pub owner: i64,
    pub device_id: String,
}

/// A socket bound to a device opened.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeviceConnected {
    pub device: i64,
    pub session: SessionId,
    /// Closes the socket if the device is deleted.
    pub close: Recipient<Disconnect>,
}

/// A socket bound to a device closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeviceDisconnected {
    pub device: i64,
    pub session: SessionId,
}

/// Another node of the cluster deleted a device: close its sockets here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeviceRemovedElsewhere {
    pub device: i64,
}

impl Handler<AddDevice> for DeviceRegistry {
    type Result = ResponseActFuture<Self, ChatResult<DeviceRecord>>;

    fn handle(&mut self, msg: AddDevice, _: &mut Self::Context) -> Self::Result {
        let request = self.persistence.send(msg.0);
        Box::pin(
            async move { request.await? }
                .into_actor(self)
                .map(|result, registry, _| result.map(|device| registry.with_status(device))),
        )
    }
}

impl Handler<ListDevices> for DeviceRegistry {
    type Result = ResponseActFuture<Self, ChatResult<Vec<DeviceRecord>>>;

    fn handle(&mut self, msg: ListDevices, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        Box::pin(
            async move { store.devices(msg.owner).await }
                .into_actor(self)
                .map(|result, registry, _| {
                    result.map(|devices| {
                        devices
                            .into_iter()
                            .map(|device| registry.with_status(device))
                            .collect()
                    })
                }),
        )
    }
}

impl Handler<RemoveDevice> for DeviceRegistry {
    type Result = ResponseActFuture<Self, ChatResult<()>>;

    fn handle(&mut self, msg: RemoveDevice, _: &mut Self::Context) -> Self::Result {
        let request = self.persistence.send(DeleteDevice {
            owner: msg.owner,
            device_id: msg.device_id,
        });
        Box::pin(
            async move { request.await? }
                .into_actor(self)
                .map(|result, registry, _| {
                    let device = result?;
                    registry.close_sockets_of(device);
                    registry.broker.share(Change::DeviceRemoved(device));
                    Ok(())
                }),
        )
    }
}

impl Handler<FindDevice> for DeviceRegistry {
    type Result = ResponseFuture<ChatResult<i64>>;

    fn handle(&mut self, msg: FindDevice, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move {
            store
                .device(msg.owner, &msg.device_id)
                .await?
                .map(|device| device.id)
                .ok_or_else(|| ChatError::not_found("device_id: no such device of yours"))
        })
    }
}

impl Handler<DeviceConnected> for DeviceRegistry {
    type Result = ();

    /// The handshake found the device before this turn; its deletion may
    /// have committed since. The socket is recorded first and the device's
    /// row checked after, through the writer that serialises the deletion:
    /// either the deletion's `close_sockets_of` finds the socket here, or
    /// the touch finds no row and closes it.
    fn handle(&mut self, msg: DeviceConnected, ctx: &mut Self::Context) {
        let (device, session) = (msg.device, msg.session);
        let sockets = self.connected.entry(device).or_default();
        sockets.push(BoundSocket {
            session,
            close: msg.close,
        });
        if sockets.len() == 1 {
            self.broker.device_here(device, true);
        }
        let touched = self.persistence.send(TouchDevice {
            device,
            at: Timestamp::now(),
        });
        ctx.spawn(touched.into_actor(self).map(move |exists, registry, _| {
            if let Ok(Ok(false)) = exists {
                registry.close_late_socket(device, session);
            }
        }));
    }
}

impl Handler<DeviceDisconnected> for DeviceRegistry {
    type Result = ();

    fn handle(&mut self, msg: DeviceDisconnected, _: &mut Self::Context) {
        let Some(sessions) = self.connected.get_mut(&msg.device) else {
            return;
        };
        sessions.retain(|socket| socket.session != msg.session);
        if sessions.is_empty() {
            self.connected.remove(&msg.device);
            self.broker.device_here(msg.device, false);
            self.touch(msg.device);
        }
    }
}

impl Handler<DeviceRemovedElsewhere> for DeviceRegistry {
    type Result = ();

    fn handle(&mut self, msg: DeviceRemovedElsewhere, _: &mut Self::Context) {
        self.close_sockets_of(msg.device);
    }
}
