//! Numbers the virtio 1.2 specification fixes: device status bits (§2.1),
//! reserved feature bits (§6), device IDs (§5), split-virtqueue flags and
//! layout (§2.7), and the virtio-mmio register offsets (§4.2.2).

/// Device status bits (§2.1).
pub mod status {
    /// The guest OS has found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest OS knows how to drive the device.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// The driver has acknowledged the features it understands; feature
    /// negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from until reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
    /// The bits a driver may set.
    pub const DRIVER_BITS: u32 = ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK | FAILED;
}

/// Reserved feature bits (§6) this transport knows.
pub mod feature {
    /// Indirect descriptor tables (`VIRTIO_RING_F_INDIRECT_DESC`).
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event`/`avail_event` notification suppression
    /// (`VIRTIO_RING_F_EVENT_IDX`).
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// A non-legacy device (`VIRTIO_F_VERSION_1`): the only kind there is
    /// on an MMIO version 2 transport.
    pub const VERSION_1: u64 = 1 << 32;
    /// What the transport offers on top of every device's own bits.
    pub const TRANSPORT: u64 = VERSION_1 | RING_INDIRECT_DESC | RING_EVENT_IDX;
    /// The reserved range (bits 24 to 40, §6): a device offers none of these
    /// itself; the transport offers [`TRANSPORT`].
    pub const RESERVED: u64 = ((1 << 41) - 1) & !((1 << 24) - 1);
}

/// Device IDs (§5) of the devices Stratum gives guests.
pub mod device_id {
    /// No device: a placeholder transport, as on QEMU `virt`.
    pub const NONE: u32 = 0;
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Socket device.
    pub const VSOCK: u32 = 19;
}

/// Split-virtqueue flags and layout (§2.7).
pub mod ring {
    /// Descriptor flag: the chain continues at `next`.
    pub const DESC_F_NEXT: u16 = 1;
    /// Descriptor flag: the buffer is device-writable (else device-readable).
    pub const DESC_F_WRITE: u16 = 2;
    /// Descriptor flag: the buffer is a table of descriptors.
    pub const DESC_F_INDIRECT: u16 = 4;
    /// Available-ring flag: the driver asks for no used-buffer
    /// notifications (without `EVENT_IDX`).
    pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
    /// Used-ring flag: the device asks for no available-buffer
    /// notifications (without `EVENT_IDX`).
    pub const USED_F_NO_NOTIFY: u16 = 1;
    /// Bytes of one descriptor (`addr: u64, len: u32, flags: u16, next: u16`).
    pub const DESC_SIZE: u64 = 16;
    /// Bytes of one used element (`id: u32, len: u32`).
    pub const USED_ELEM_SIZE: u64 = 8;
    /// Alignment of the descriptor table.
    pub const DESC_ALIGN: u64 = 16;
    /// Alignment of the available ring (driver area).
    pub const AVAIL_ALIGN: u64 = 2;
    /// Alignment of the used ring (device area).
    pub const USED_ALIGN: u64 = 4;
    /// Largest queue size a split virtqueue may have.
    pub const MAX_QUEUE_SIZE: u16 = 32768;
}

/// virtio-mmio register offsets (§4.2.2, table "MMIO Device Register
/// Layout") and fixed values.
pub mod mmio {
    /// "virt" in little-endian ASCII.
    pub const MAGIC: u32 = 0x7472_6976;
    /// The transport version: 2, the non-legacy interface.
    pub const VERSION: u32 = 2;
    /// The vendor ID Stratum's transports report: "STRA" in little-endian
    /// ASCII.
    pub const VENDOR: u32 = 0x4152_5453;
    /// Bytes one transport's register window spans (QEMU `virt` spaces
    /// them 0x200 apart).
    pub const WINDOW: u64 = 0x200;

    /// `MagicValue` (R).
    pub const MAGIC_VALUE: u64 = 0x000;
    /// `Version` (R).
    pub const VERSION_REG: u64 = 0x004;
    /// `DeviceID` (R).
    pub const DEVICE_ID: u64 = 0x008;
    /// `VendorID` (R).
    pub const VENDOR_ID: u64 = 0x00c;
    /// `DeviceFeatures` (R).
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// `DeviceFeaturesSel` (W).
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// `DriverFeatures` (W).
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// `DriverFeaturesSel` (W).
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// `QueueSel` (W).
    pub const QUEUE_SEL: u64 = 0x030;
    /// `QueueNumMax` (R).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// `QueueNum` (W).
    pub const QUEUE_NUM: u64 = 0x038;
    /// `QueueReady` (RW).
    pub const QUEUE_READY: u64 = 0x044;
    /// `QueueNotify` (W).
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// `InterruptStatus` (R).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// `InterruptACK` (W).
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// `Status` (RW).
    pub const STATUS: u64 = 0x070;
    /// `QueueDescLow` (W).
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// `QueueDescHigh` (W).
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// `QueueDriverLow` (W).
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// `QueueDriverHigh` (W).
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    /// `QueueDeviceLow` (W).
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// `QueueDeviceHigh` (W).
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// `SHMSel` (W).
    pub const SHM_SEL: u64 = 0x0ac;
    /// `SHMLenLow` (R).
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// `SHMLenHigh` (R).
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// `SHMBaseLow` (R).
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    /// `SHMBaseHigh` (R).
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    /// `ConfigGeneration` (R).
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// First byte of the device-specific configuration space.
    pub const CONFIG: u64 = 0x100;

    /// `InterruptStatus` bit: a used buffer was added to a queue.
    pub const INT_USED_BUFFER: u32 = 1;
    /// `InterruptStatus` bit: the device's configuration changed (or it
    /// needs a reset).
    pub const INT_CONFIG: u32 = 2;
}
