//! List registers: one virtual interrupt handed to the hardware's virtual
//! CPU interface, in a version-neutral form with exact encoders for
//! - GICv3 `ICH_LR<n>_EL2` (IHI 0069 §12.5.7): vINTID 31:0, pINTID 44:32
//!   (HW = 1) or EOI 41 (HW = 0), Priority 55:48, Group 60, HW 61,
//!   State 63:62;
//! - GICv2 `GICH_LR<n>` (IHI 0048B §5.3.9): VirtualID 9:0, PhysicalID
//!   19:10 (HW = 1) or EOI 19 and CPUID 12:10 (HW = 0), Priority 27:23 (the
//!   top five bits of the 8-bit priority), State 29:28, Grp1 30, HW 31.
//!
//! Encoders mask each field to its width; the vGIC only ever produces
//! INTIDs that fit (below 1020).

/// The state field of a list register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LrState {
    /// Free: 0b00.
    #[default]
    Invalid,
    /// 0b01.
    Pending,
    /// 0b10.
    Active,
    /// 0b11.
    PendingActive,
}

impl LrState {
    /// The 2-bit encoding.
    pub const fn bits(self) -> u64 {
        match self {
            Self::Invalid => 0,
            Self::Pending => 1,
            Self::Active => 2,
            Self::PendingActive => 3,
        }
    }

    /// From the 2-bit encoding (higher bits ignored).
    pub const fn from_bits(bits: u64) -> Self {
        match bits & 3 {
            0 => Self::Invalid,
            1 => Self::Pending,
            2 => Self::Active,
            _ => Self::PendingActive,
        }
    }

    /// From separate pending and active flags.
    pub const fn from_flags(pending: bool, active: bool) -> Self {
        match (pending, active) {
            (false, false) => Self::Invalid,
            (true, false) => Self::Pending,
            (false, true) => Self::Active,
            (true, true) => Self::PendingActive,
        }
    }

    /// Pending or pending and active.
    pub const fn is_pending(self) -> bool {
        matches!(self, Self::Pending | Self::PendingActive)
    }

    /// Active or pending and active.
    pub const fn is_active(self) -> bool {
        matches!(self, Self::Active | Self::PendingActive)
    }
}

/// One list register's content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListRegister {
    /// The virtual INTID the guest sees.
    pub vintid: u32,
    /// The physical INTID for a hardware-linked interrupt (`HW = 1`): the
    /// guest's deactivation deactivates it.
    pub pintid: Option<u32>,
    /// Priority (8-bit; GICv2 LRs keep the top five bits).
    pub priority: u8,
    /// Pending/active state.
    pub state: LrState,
    /// Group 1 (else Group 0).
    pub group1: bool,
    /// Request a maintenance interrupt when the guest deactivates it (the
    /// `EOI` bit; only without `HW`).
    pub eoi_maintenance: bool,
    /// GICv2 SGIs without `HW`: the source CPU (the `CPUID` field, which
    /// the guest reads from `GICC_IAR`). 0 otherwise.
    pub source_cpu: u8,
}

const V3_PINTID_SHIFT: u32 = 32;
const V3_PINTID_MASK: u64 = 0x1fff;
const V3_EOI: u64 = 1 << 41;
const V3_PRIORITY_SHIFT: u32 = 48;
const V3_GROUP: u64 = 1 << 60;
const V3_HW: u64 = 1 << 61;
const V3_STATE_SHIFT: u32 = 62;

const V2_VID_MASK: u32 = 0x3ff;
const V2_PID_SHIFT: u32 = 10;
const V2_CPUID_MASK: u32 = 0x7;
const V2_EOI: u32 = 1 << 19;
const V2_PRIORITY_SHIFT: u32 = 23;
const V2_STATE_SHIFT: u32 = 28;
const V2_GRP1: u32 = 1 << 30;
const V2_HW: u32 = 1 << 31;

impl ListRegister {
    /// An empty list register.
    pub const INVALID: Self = Self {
        vintid: 0,
        pintid: None,
        priority: 0,
        state: LrState::Invalid,
        group1: false,
        eoi_maintenance: false,
        source_cpu: 0,
    };

    /// The `ICH_LR<n>_EL2` value.
    #[inline]
    pub fn to_v3(&self) -> u64 {
        let mut v = u64::from(self.vintid)
            | u64::from(self.priority) << V3_PRIORITY_SHIFT
            | self.state.bits() << V3_STATE_SHIFT;
        if self.group1 {
            v |= V3_GROUP;
        }
        match self.pintid {
            Some(p) => v |= V3_HW | (u64::from(p) & V3_PINTID_MASK) << V3_PINTID_SHIFT,
            None if self.eoi_maintenance => v |= V3_EOI,
            None => {}
        }
        v
    }

    /// Decodes an `ICH_LR<n>_EL2` value.
    pub fn from_v3(v: u64) -> Self {
        let hw = v & V3_HW != 0;
        Self {
            vintid: v as u32,
            pintid: hw.then_some(((v >> V3_PINTID_SHIFT) & V3_PINTID_MASK) as u32),
            priority: (v >> V3_PRIORITY_SHIFT) as u8,
            state: LrState::from_bits(v >> V3_STATE_SHIFT),
            group1: v & V3_GROUP != 0,
            eoi_maintenance: !hw && v & V3_EOI != 0,
            source_cpu: 0,
        }
    }

    /// The `GICH_LR<n>` value.
    #[inline]
    pub fn to_v2(&self) -> u32 {
        let mut v = (self.vintid & V2_VID_MASK)
            | u32::from(self.priority >> 3) << V2_PRIORITY_SHIFT
            | (self.state.bits() as u32) << V2_STATE_SHIFT;
        if self.group1 {
            v |= V2_GRP1;
        }
        match self.pintid {
            Some(p) => v |= V2_HW | (p & V2_VID_MASK) << V2_PID_SHIFT,
            None => {
                v |= (u32::from(self.source_cpu) & V2_CPUID_MASK) << V2_PID_SHIFT;
                if self.eoi_maintenance {
                    v |= V2_EOI;
                }
            }
        }
        v
    }

    /// The same interrupt without its hardware link, asking for an EOI
    /// maintenance interrupt instead: the guest's deactivation then exits
    /// to EL2, which deactivates the physical interrupt itself. For a GIC
    /// whose hardware-linked deactivation does not re-signal a physical
    /// interrupt that became pending meanwhile (QEMU's GICv2 model). An
    /// interrupt without a link is returned unchanged.
    pub const fn with_eoi_instead_of_hw(self) -> Self {
        match self.pintid {
            Some(_) => Self {
                pintid: None,
                eoi_maintenance: true,
                source_cpu: 0,
                ..self
            },
            None => self,
        }
    }

    /// Decodes a `GICH_LR<n>` value.
    pub fn from_v2(v: u32) -> Self {
        let hw = v & V2_HW != 0;
        let pid = (v >> V2_PID_SHIFT) & V2_VID_MASK;
        Self {
            vintid: v & V2_VID_MASK,
            pintid: hw.then_some(pid),
            priority: (((v >> V2_PRIORITY_SHIFT) & 0x1f) << 3) as u8,
            state: LrState::from_bits(u64::from(v >> V2_STATE_SHIFT)),
            group1: v & V2_GRP1 != 0,
            eoi_maintenance: !hw && v & V2_EOI != 0,
            source_cpu: if hw { 0 } else { (pid & V2_CPUID_MASK) as u8 },
        }
    }
}
