//! An in-memory smoltcp device: IP packets in and out through two queues, so
//! the userspace TCP/IP stack never touches a real interface and needs no root.

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::collections::VecDeque;

/// MTU of the inner packets, matching the helper's TUN (DESIGN.md, issue 3).
pub const TUNNEL_MTU: usize = 1280;

/// Packets waiting to enter the stack (`rx`) and packets the stack produced
/// (`tx`). The owner moves packets between these queues and the tunnel.
#[derive(Debug, Default)]
pub struct QueueDevice {
    /// Decrypted packets for the stack to read.
    pub rx: VecDeque<Vec<u8>>,
    /// Packets the stack wrote, to be encrypted and sent.
    pub tx: VecDeque<Vec<u8>>,
}

impl QueueDevice {
    /// An empty device.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A received packet handed to smoltcp.
pub struct QueueRxToken(Vec<u8>);

/// A slot for one outgoing packet.
pub struct QueueTxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for QueueRxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

impl phy::TxToken for QueueTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut packet = vec![0u8; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = QueueRxToken;
    type TxToken<'a> = QueueTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((QueueRxToken(packet), QueueTxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        Some(QueueTxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = TUNNEL_MTU;
        caps
    }
}
