//! Device drivers.
pub mod e1000;
pub mod nic;
pub mod pci;
pub mod serial;
pub mod virtio_net;

use alloc::boxed::Box;
use alloc::vec::Vec;

/// Probes every supported NIC among `devs` (e1000, virtio-net), in bus
/// order; devices that fail to come up are logged and left out.
pub fn probe_nics(devs: &[pci::PciDevice]) -> Vec<Box<dyn nic::Nic>> {
    devs.iter().filter_map(|d| e1000::probe(d).or_else(|| virtio_net::probe(d))).collect()
}
