//! macOS: the kernel has no UDP GRO and quinn-udp's GSO is off without its
//! `fast-apple-datapath` feature, and utun has no offload header, so
//! everything takes the portable path. This file is where a faster macOS
//! path (`sendmsg_x`/`recvmsg_x`) would go.

pub(crate) use crate::portable::{disable_gro, set_buffers};
#[cfg(feature = "tun")]
pub(crate) use crate::portable::{tun_offload, TunRead, TunWrite, TUN_OFFSET};
