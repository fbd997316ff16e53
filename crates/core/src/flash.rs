//! The flash a firmware-style guest expects on QEMU `virt`: two 64 MiB NOR
//! banks at guest-physical 0 ([`FLASH`]), erased and write-protected.
//!
//! U-Boot built for `virt` (Debian's `u-boot-qemu`, `qemu_arm64`) reads its
//! saved environment straight from the second bank by address before it
//! has any driver, and takes an external abort where nothing answers. A VM
//! with `firmware = true` gets this device on its bus instead: every read
//! returns all ones, as erased flash does (so the environment's checksum
//! fails and U-Boot uses its built-in one, as on a fresh `virt`), and every
//! write, a CFI command included, is taken and changes nothing. It keeps no
//! state, so it cannot leak anything between VMs or boots. The device tree
//! does not describe it: a driver that probes for flash finds none.

use crate::addr::{Ipa, IpaRange};
use crate::bus::{AccessRefused, DeviceAccess, Effects, MmioDevice};

/// `virt`'s two flash banks.
pub const FLASH: IpaRange = IpaRange {
    start: Ipa(0),
    size: 0x0800_0000,
};

/// The erased, write-protected flash ([module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flash;

impl MmioDevice for Flash {
    fn read(&mut self, access: &DeviceAccess, _fx: &mut Effects) -> Result<u64, AccessRefused> {
        // All ones in the access's width.
        Ok(access.size.mask())
    }

    fn write(
        &mut self,
        _access: &DeviceAccess,
        _value: u64,
        _fx: &mut Effects,
    ) -> Result<(), AccessRefused> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::AccessSize;

    fn at(offset: u64, size: AccessSize) -> DeviceAccess {
        DeviceAccess {
            vcpu: 0,
            region: 0,
            bank: 0,
            offset,
            size,
        }
    }

    #[test]
    fn reads_are_erased_and_writes_change_nothing() {
        let mut f = Flash;
        let mut fx = Effects::default();
        let sizes = [
            (AccessSize::Byte, 0xff),
            (AccessSize::Half, 0xffff),
            (AccessSize::Word, 0xffff_ffff),
            (AccessSize::Double, u64::MAX),
        ];
        for (size, want) in sizes {
            assert_eq!(f.read(&at(0x400_0004, size), &mut fx), Ok(want));
        }
        // A CFI "read query" command, then a program: still erased.
        assert_eq!(
            f.write(&at(0x55 * 4, AccessSize::Word), 0x98, &mut fx),
            Ok(())
        );
        assert_eq!(
            f.write(&at(0x400_0000, AccessSize::Word), 0x1234, &mut fx),
            Ok(())
        );
        assert_eq!(
            f.read(&at(0x400_0000, AccessSize::Word), &mut fx),
            Ok(0xffff_ffff)
        );
        assert!(fx.is_empty(), "no effects");
        assert_eq!(
            FLASH.end(),
            Ipa(0x0800_0000),
            "it ends where the GIC starts"
        );
    }
}
