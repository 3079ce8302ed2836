//! The interface every NIC driver offers to the network glue.

/// Counters a driver keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct NicStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames the device delivered that the driver refused (bad length,
    /// descriptor errors) or had no room for.
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames not sent: bad length, device gone.
    pub tx_dropped: u64,
    /// Frames refused because the transmit ring was full (the caller
    /// decides: a guest's frame is handed back with `Again`, others are
    /// dropped and counted here).
    pub tx_full: u64,
    pub interrupts: u64,
}

/// A network interface card.
pub trait Nic: Send {
    /// Driver name (`virtio-net`, `e1000`).
    fn name(&self) -> &'static str;
    /// PCI location, `bb:dd.f`.
    fn location(&self) -> alloc::string::String;
    /// The MAC address read from the device.
    fn mac(&self) -> [u8; 6];
    /// Is the link up?
    fn link_up(&self) -> bool;
    /// Queues one Ethernet frame (without FCS, 14..=1514 bytes) for
    /// transmission; false if it was not (ring full: counted in `tx_full`;
    /// bad length or dead device: `tx_dropped`).
    fn transmit(&mut self, frame: &[u8]) -> bool;
    /// Reclaims finished transmit slots; true if none is free, so the next
    /// `transmit` would be refused for a full ring. A device that is gone is
    /// never "full" (its frames are dropped instead).
    fn tx_ring_full(&mut self) -> bool;
    /// Hands up to `budget` received frames to `f`, oldest first, and gives
    /// their buffers back to the device; returns how many were delivered.
    /// Lengths and ring indices from the device are never trusted.
    fn receive(&mut self, budget: usize, f: &mut dyn FnMut(&[u8])) -> usize;
    /// Reads and clears the device's interrupt cause; true if it was this
    /// device's interrupt. Called from the interrupt handler.
    fn handle_irq(&mut self) -> bool;
    /// Receive frames for every destination (needed for bridging guests).
    fn set_promiscuous(&mut self, on: bool);
    /// Counters.
    fn stats(&self) -> NicStats;
    /// The GSI (I/O APIC input) of the device's legacy interrupt, if any.
    fn irq_gsi(&self) -> Option<u32>;
}
